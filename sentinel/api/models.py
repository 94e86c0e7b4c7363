"""``/api/v1/models``: list, show, activate, rollback -- ``sentinel models ...`` over HTTP.

Listing and switching go through ``sentinel.model.versions``, as the CLI does: a version is
loaded before it becomes active, so one that cannot be loaded never does. The CLI then
tells a running daemon through its control socket to swap the new active version in; the
API runs inside the daemon and calls the handler behind that socket command directly
(``ApiContext.reload_model``). With retraining off the daemon serves no such command, and
the activation takes effect at its next start -- the answer says which happened.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from sentinel.api.alerts import MAX_OFFSET, STREAM_PATTERN
from sentinel.api.auth import require_token
from sentinel.api.context import ApiContext
from sentinel.api.schemas import (
    Activation,
    ModelDetail,
    ModelPage,
    ModelVersion,
    Problem,
    epoch_to_utc,
)
from sentinel.errors import ModelError, SentinelError
from sentinel.model.versions import read_meta, switch_version, version_rows

__all__ = ["router"]

router = APIRouter(prefix="/models", tags=["models"])

VERSION_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
Stream = Annotated[str, Path(pattern=STREAM_PATTERN)]
Version = Annotated[str, Path(pattern=VERSION_PATTERN)]
NOT_FOUND: dict[int | str, dict[str, object]] = {
    404: {"model": Problem, "description": "No such stream or version."}
}
WRITE_RESPONSES: dict[int | str, dict[str, object]] = {
    **NOT_FOUND,
    401: {"model": Problem, "description": "No or a wrong bearer token."},
    403: {"model": Problem, "description": "No API token is configured: writes are off."},
    409: {
        "model": Problem,
        "description": "The version cannot be loaded, or there is none "
        "to roll back to; the active version is unchanged.",
    },
}


def _context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


def _check_stream(context: ApiContext, stream: str) -> None:
    names = [s.name for s in context.config().streams]
    if stream not in names:
        raise HTTPException(
            status_code=404,
            detail=f"no stream {stream!r} in the config (streams: {', '.join(names)})",
        )


def _check_version(context: ApiContext, stream: str, version: str) -> None:
    _check_stream(context, stream)
    if version in (".", "..") or version not in context.registry.versions(stream):
        raise HTTPException(
            status_code=404, detail=f"no model version {version!r} of stream {stream!r}"
        )


@router.get(
    "",
    response_model=ModelPage,
    summary="Model versions with their role and status",
    responses=NOT_FOUND,
)
def list_models(
    request: Request,
    stream: Annotated[str | None, Query(pattern=STREAM_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> ModelPage:
    context = _context(request)
    if stream is not None:
        _check_stream(context, stream)
    streams = [stream] if stream is not None else [s.name for s in context.config().streams]
    rows = version_rows(context.registry, streams)
    page = rows[offset : offset + limit]
    return ModelPage(
        items=[
            ModelVersion.model_validate(
                {
                    "stream": r.stream,
                    "version": r.version,
                    "role": r.role,
                    "status": r.status,
                    "data_from": epoch_to_utc(r.trained_on.first_ts),
                    "data_to": epoch_to_utc(r.trained_on.last_ts),
                    "rows": r.trained_on.rows,
                    "merit": r.merit,
                    "parent": r.parent,
                }
            )
            for r in page
        ],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if len(rows) > offset + limit else None,
    )


@router.get(
    "/{stream}/{version}",
    response_model=ModelDetail,
    summary="One version in full: metadata, status, metrics",
    responses={
        **NOT_FOUND,
        409: {"model": Problem, "description": "Its metadata cannot be read."},
    },
)
def show_model(request: Request, stream: Stream, version: Version) -> ModelDetail:
    context = _context(request)
    _check_version(context, stream, version)
    registry = context.registry
    try:
        meta = read_meta(registry, stream, version)
    except ModelError as err:
        raise HTTPException(status_code=409, detail=str(err)) from None
    calibration = meta.get("calibration")
    if isinstance(calibration, dict):
        calibration.pop("scores", None)  # 20,000 numbers help nobody here
    return ModelDetail(
        stream=stream,
        version=version,
        active=registry.active_version(stream) == version,
        previous=registry.previous_version(stream) == version,
        running=context.model_versions().get(stream) == version,
        status=registry.status(stream, version),
        meta=meta,
    )


def _switch(context: ApiContext, stream: str, version: str, reason: str) -> Activation:
    try:
        switch_version(context.registry, stream, version, reason)
    except ModelError as err:
        raise HTTPException(status_code=409, detail=f"not activated: {err}") from None
    swapped = False
    if context.reload_model is None:
        detail = (
            f"{version} is active; the running daemon swaps models only with retraining "
            "on ([retrain] enabled): it picks this version up at its next start"
        )
    else:
        try:
            installed = context.reload_model(stream)
        except (SentinelError, KeyError, ValueError) as err:
            detail = f"{version} is active, but the running daemon refused it: {err}"
        else:
            swapped = True
            detail = f"{version} is active; the running daemon is swapping in {installed}"
    return Activation(stream=stream, version=version, swapped=swapped, detail=detail)


@router.post(
    "/{stream}/{version}/activate",
    response_model=Activation,
    summary="Make a version active (the running daemon swaps it in)",
    dependencies=[Depends(require_token)],
    responses=WRITE_RESPONSES,
)
def activate_model(request: Request, stream: Stream, version: Version) -> Activation:
    context = _context(request)
    _check_version(context, stream, version)
    return _switch(context, stream, version, "manual: api activate")


@router.post(
    "/{stream}/rollback",
    response_model=Activation,
    summary="Reactivate the version that was active before the current one",
    dependencies=[Depends(require_token)],
    responses=WRITE_RESPONSES,
)
def rollback_model(request: Request, stream: Stream) -> Activation:
    context = _context(request)
    _check_stream(context, stream)
    previous = context.registry.previous_version(stream)
    if previous is None:
        raise HTTPException(
            status_code=409, detail=f"stream {stream}: no previous version to roll back to"
        )
    return _switch(context, stream, previous, "manual: api rollback")
