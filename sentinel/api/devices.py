"""``/api/v1/devices``: each device's stored state (``sentinel devices list``) joined with
what the pipeline worker holds of it now -- in memory or idle, and its current threshold.

The stored half comes from the ``device_state`` table through ``AlertStore.devices``; the
live half is asked of the worker (``Pipeline.describe_devices``), which alone owns the
thresholds. A worker that does not answer within two seconds (blocked on a database that
cannot commit) leaves ``state`` as ``unknown`` rather than holding the request.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request

from sentinel.api.alerts import DEVICE_PATTERN, MAX_OFFSET, STREAM_PATTERN, Since
from sentinel.api.context import ApiContext
from sentinel.api.schemas import (
    DATABASE_DOWN,
    Device,
    DevicePage,
    DeviceState,
    Problem,
    ScoreHistory,
    ScoreMinute,
    Threshold,
    device_fields,
)
from sentinel.store import DeviceRecord

if TYPE_CHECKING:
    from sentinel.worker.commands import DeviceView

__all__ = ["router"]

_DAY = timedelta(days=1)

router = APIRouter(prefix="/devices", tags=["devices"], responses=DATABASE_DOWN)


def _views(context: ApiContext, records: list[DeviceRecord]) -> list[Device]:
    models = context.model_versions()
    skew = context.config().ingest.max_future_skew
    horizon = time.time() + skew
    live = context.describe_devices([(r.stream, r.device) for r in records]) if records else {}
    return [_view(r, models, live, horizon) for r in records]


def _view(
    record: DeviceRecord,
    models: dict[str, str | None],
    live: dict[tuple[str, str], DeviceView] | None,
    horizon: float,
) -> Device:
    view = live.get((record.stream, record.device)) if live is not None else None
    threshold = view.threshold if view is not None else None
    fields: dict[str, Any] = {
        **device_fields(record),
        "ahead_of_clock": record.last_ts > horizon,
        "model_version": models.get(record.stream),
        "threshold": Threshold.model_validate(
            {
                "method": threshold.method,
                "value": threshold.value,
                "history": threshold.history,
                "risk": threshold.risk,
                "warm": threshold.warm,
            }
        )
        if threshold is not None
        else None,
    }
    state: DeviceState
    if record.stream not in models or live is None:
        state = "unknown"
    elif models[record.stream] is None:
        state = "no_model"
    elif record.open_alerts > 0:
        state = "alerting"
    elif view is None or not view.held:
        state = "idle"
    elif threshold is None or not threshold.warm:
        state = "warming_up"
    else:
        state = "normal"
    return Device(state=state, **fields)


def _context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


@router.get("", response_model=DevicePage, summary="Every device's state, by stream and name")
def list_devices(
    request: Request,
    stream: Annotated[str | None, Query(pattern=STREAM_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> DevicePage:
    context = _context(request)
    records = context.store.devices(stream, limit=limit + 1, offset=offset)
    more = len(records) > limit
    return DevicePage(
        items=_views(context, records[:limit]),
        limit=limit,
        offset=offset,
        next_offset=offset + limit if more else None,
    )


@router.get(
    "/{stream}/{device}",
    response_model=Device,
    summary="One device: last reading, current threshold, state",
    responses={404: {"model": Problem, "description": "No stored state for that device."}},
)
def show_device(
    request: Request,
    stream: Annotated[str, Path(pattern=STREAM_PATTERN)],
    device: Annotated[str, Path(pattern=DEVICE_PATTERN)],
) -> Device:
    context = _context(request)
    records = context.store.devices(stream, device=device)
    if not records:
        raise HTTPException(
            status_code=404, detail=f"no stored state for device {device!r} of stream {stream!r}"
        )
    return _views(context, records)[0]


@router.get(
    "/{stream}/{device}/history",
    response_model=ScoreHistory,
    summary="One device's score, threshold and anomalous windows per minute over a time range",
)
def device_history(
    request: Request,
    stream: Annotated[str, Path(pattern=STREAM_PATTERN)],
    device: Annotated[str, Path(pattern=DEVICE_PATTERN)],
    since: Annotated[
        Since | None,
        Query(
            description="Minutes from: a duration ago (30m, 2h, 7d) or an ISO 8601 time "
            "(naive means UTC); default one day ago.",
        ),
    ] = None,
    until: Annotated[
        Since | None,
        Query(description="Minutes before: as since; default now."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=50_000)] = 1440,
) -> ScoreHistory:
    """What the history holds (``[history]``); a device with none, or with history off,
    has an empty list rather than a 404: its minutes may simply not have come yet."""
    context = _context(request)
    now = datetime.now(UTC)
    try:
        start = since.astimezone(UTC) if since is not None else now - _DAY
        end = until.astimezone(UTC) if until is not None else None
    except OverflowError:  # beyond the calendar
        return ScoreHistory(stream=stream, device=device, items=[], limit=limit, truncated=False)
    buckets = context.store.score_history(stream, device, start, end, limit=limit + 1)
    truncated = len(buckets) > limit
    return ScoreHistory(
        stream=stream,
        device=device,
        items=[
            ScoreMinute(
                start=datetime.fromtimestamp(b.start, UTC),
                windows=b.windows,
                anomalous=b.anomalous,
                max_score=b.max_score,
                threshold=b.threshold,
                max_ratio=b.max_ratio,
            )
            for b in buckets[-limit:]
        ],
        limit=limit,
        truncated=truncated,
    )
