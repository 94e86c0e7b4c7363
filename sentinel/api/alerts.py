"""``/api/v1/alerts``: list (the filters of ``sentinel alerts list``), show, ack, resolve.

Each goes through the ``AlertStore`` function the CLI calls, so an acknowledgement or a
resolution from the API is the same row change, audit event and outbox message as one from
the command line, and a running daemon learns of a resolution the same way (its writer is
told by the store which alerts an operator resolved).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BeforeValidator, TypeAdapter, WithJsonSchema

from sentinel.api.auth import require_token
from sentinel.api.schemas import (
    DATABASE_DOWN,
    Alert,
    AlertPage,
    AlertStatusName,
    NoteBody,
    Problem,
)
from sentinel.store import AlertStore

__all__ = ["router"]

# Names as the daemon takes them: a stream per the config's rule, a device a topic level.
STREAM_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
DEVICE_PATTERN = r"^[^\x00/+#]{1,128}$"
MAX_ID = 2**63 - 1  # the column is a 64-bit integer
MAX_OFFSET = 1_000_000_000

router = APIRouter(prefix="/alerts", tags=["alerts"], responses=DATABASE_DOWN)

_DURATION = r"^[0-9]{1,5}(\.[0-9]{1,3})?[smhdw]$"  # five digits: 99999w is in the calendar
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME = TypeAdapter(datetime)


def _since(value: object) -> object:
    """``--since`` of ``sentinel alerts list``: a duration ago, or an ISO 8601 time (not
    the bare epoch number pydantic would also take); naive means UTC."""
    if not isinstance(value, str):
        return value
    if re.match(_DURATION, value):  # as sentinel.cli.main.parse_since reads it
        return datetime.now(UTC) - timedelta(**{_UNITS[value[-1]]: float(value[:-1])})
    if not _ISO_DATE.match(value):
        raise ValueError(f"{value[:40]!r}: use a duration like 30m, 2h, 7d, or an ISO 8601 time")
    when = _DATETIME.validate_python(value)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


Since = Annotated[
    datetime,
    BeforeValidator(_since),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "pattern": _DURATION},
            ]
        }
    ),
]
AlertId = Annotated[int, Path(ge=1, le=MAX_ID, description="The alert's id (alerts list).")]
WRITE_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": Problem, "description": "The body is not JSON."},
    401: {"model": Problem, "description": "No or a wrong bearer token."},
    403: {"model": Problem, "description": "No API token is configured: writes are off."},
    404: {"model": Problem, "description": "No alert with that id."},
}


def _store(request: Request) -> AlertStore:
    store: AlertStore = request.app.state.context.store
    return store


@router.get("", response_model=AlertPage, summary="Alerts, newest first")
def list_alerts(
    request: Request,
    since: Annotated[
        Since | None,
        Query(
            description="Only alerts started since: a duration ago (30m, 2h, 7d; s m h d w) "
            "or an ISO 8601 time (naive means UTC).",
        ),
    ] = None,
    device: Annotated[str | None, Query(pattern=DEVICE_PATTERN)] = None,
    stream: Annotated[str | None, Query(pattern=STREAM_PATTERN)] = None,
    status: AlertStatusName | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> AlertPage:
    try:
        started = since.astimezone(UTC) if since is not None else None
    except OverflowError:  # beyond the calendar: before it everything, after it nothing
        if isinstance(since, datetime) and since.year > 1:
            return AlertPage(items=[], limit=limit, offset=offset, next_offset=None)
        started = None
    # One more than asked: whether a next page exists, without a count query.
    records = _store(request).list_alerts(
        since=started, device=device, stream=stream, status=status, limit=limit + 1, offset=offset
    )
    more = len(records) > limit
    return AlertPage(
        items=[Alert.of(r) for r in records[:limit]],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if more else None,
    )


@router.get(
    "/{alert_id}",
    response_model=Alert,
    summary="One alert in full",
    responses={404: {"model": Problem, "description": "No alert with that id."}},
)
def show_alert(request: Request, alert_id: AlertId) -> Alert:
    record = _store(request).get_alert(alert_id)
    if record is None:
        raise HTTPException(status_code=404, detail=f"no alert with id {alert_id}")
    return Alert.of(record)


@router.post(
    "/{alert_id}/ack",
    response_model=Alert,
    summary="Acknowledge an alert",
    description="An open alert becomes acknowledged; a closed or resolved one keeps its "
    "status and records the acknowledgement. A note replaces an earlier one.",
    dependencies=[Depends(require_token)],
    responses=WRITE_RESPONSES,
)
def ack_alert(request: Request, alert_id: AlertId, body: NoteBody | None = None) -> Alert:
    try:
        record = _store(request).acknowledge(alert_id, note=body.note if body else None)
    except KeyError:
        raise HTTPException(status_code=404, detail=f"no alert with id {alert_id}") from None
    return Alert.of(record)


@router.post(
    "/{alert_id}/resolve",
    response_model=Alert,
    summary="Close an alert for good",
    description="It becomes resolved and stays so: a running daemon stops updating it and "
    "opens no new alert on that device within alerts.cooldown.",
    dependencies=[Depends(require_token)],
    responses=WRITE_RESPONSES,
)
def resolve_alert(request: Request, alert_id: AlertId, body: NoteBody | None = None) -> Alert:
    try:
        record = _store(request).resolve(alert_id, note=body.note if body else None)
    except KeyError:
        raise HTTPException(status_code=404, detail=f"no alert with id {alert_id}") from None
    return Alert.of(record)
