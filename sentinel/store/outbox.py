"""The alert outbox: which alert changes become MQTT events, and the table behind them.

Every alert change the pipeline commits goes through ``record_events`` inside the writer's
transaction, so an event exists exactly when the change it describes does (the
transactional-outbox pattern): a crash can lose neither, and a broker that is away only
delays the publisher (``sentinel/publish/publisher.py``), which sends unpublished rows in
``id`` order and marks them once the broker acknowledged them.

Which changes are events (docs/MQTT.md):

* ``new`` -- the first change of an alert seen with publishing on;
* ``end`` -- the alert closed;
* ``update`` -- the alert is open and its peak score grew by ``peak_factor`` since its last
  event, or ``interval`` seconds of event time passed since then (0 turns that off), or a
  user acknowledged it (written by ``AlertStore.acknowledge``).

Every other change (the next anomalous window of an open alert, every few readings) is
stored but not published. Each alert's events are numbered 1, 2, ... (``seq``); consumers
de-duplicate by ``(uid, seq)``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import aliased

from sentinel.records import Alert, AlertStatus
from sentinel.store.schema import AlertOutboxRow, AlertRow

__all__ = [
    "OutboxEvent",
    "OutboxPolicy",
    "alert_payload",
    "decide",
    "mark_published",
    "pending_events",
    "prune_published",
    "record_acknowledgement",
    "record_events",
    "record_resolution",
]

_CHUNK = 500  # uids per IN (...) list


@dataclass(frozen=True, slots=True)
class OutboxPolicy:
    """When an open alert's change is worth an ``update`` event."""

    peak_factor: float = 1.25
    interval: float = 600.0  # seconds of event time; 0: never for that reason

    def __post_init__(self) -> None:
        if self.peak_factor < 1.0 or self.interval < 0:
            raise ValueError("peak_factor >= 1 and interval >= 0")


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One unpublished row, as the publisher sends it."""

    id: int
    uid: str
    seq: int
    event: str
    stream: str
    device: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Last:
    """An alert's latest event, the baseline the next change is measured against."""

    seq: int
    event: str
    payload: dict[str, Any]

    @property
    def peak_score(self) -> float:
        value = self.payload.get("peak_score")
        return float(value) if isinstance(value, int | float) else math.inf

    @property
    def updated_at(self) -> float:
        value = self.payload.get("updated_at")
        if not isinstance(value, str):
            return math.inf
        return datetime.fromisoformat(value).timestamp()


def _json_value(name: str, value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return _json_value(name, value.value)
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None  # JSON has no NaN/inf; strict consumers would reject the message
        if name.endswith("_at"):
            return datetime.fromtimestamp(value, UTC).isoformat()
        return value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _json_value(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)
        }
    if isinstance(value, dict):
        return {str(k): _json_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_value("", v) for v in value]
    return str(value)


def alert_payload(alert: Any) -> dict[str, Any]:
    """Every field of an alert dataclass as JSON-safe data, whatever fields it has.

    Generic on purpose: a field added to ``Alert`` later is published without a change here.
    Enums become their values, float fields named ``*_at`` ISO 8601 UTC strings, nested
    dataclasses objects, non-finite floats null.
    """
    if not dataclasses.is_dataclass(alert) or isinstance(alert, type):
        raise TypeError(f"not a dataclass instance: {type(alert).__name__}")
    payload: dict[str, Any] = _json_value("", alert)
    # The alert's own ``reason`` (why it fired: threshold state, config hash) is published
    # as ``why``: ``reason`` in an event names why the event was sent (docs/MQTT.md).
    if "reason" in payload:
        payload["why"] = payload.pop("reason")
    return payload


def decide(last: _Last | None, alert: Alert, policy: OutboxPolicy) -> tuple[str, str] | None:
    """``(event, reason)`` for this change given the alert's latest event, or None."""
    closed = AlertStatus(alert.status) is AlertStatus.CLOSED
    if last is None:
        return ("end", "closed") if closed else ("new", "opened")
    if last.event == "end":
        # Only a reopening follows an end: a device that turns anomalous again within
        # alerts.cooldown continues its previous alert, under the same uid.
        return None if closed else ("new", "reopened")
    if closed:
        return "end", "closed"
    if (
        alert.peak_score > last.peak_score
        and alert.peak_score >= last.peak_score * policy.peak_factor
    ):
        return "update", "peak"
    if policy.interval > 0 and alert.updated_at - last.updated_at >= policy.interval:
        return "update", "interval"
    return None


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _last_events_query() -> Select[Any]:
    latest = (
        select(AlertOutboxRow.uid, func.max(AlertOutboxRow.seq).label("seq"))
        .where(AlertOutboxRow.uid.in_(bindparam("uids", expanding=True)))
        .group_by(AlertOutboxRow.uid)
        .subquery()
    )
    return select(
        AlertOutboxRow.uid, AlertOutboxRow.seq, AlertOutboxRow.event, AlertOutboxRow.payload
    ).join(latest, and_(AlertOutboxRow.uid == latest.c.uid, AlertOutboxRow.seq == latest.c.seq))


# Built once, run with each commit's uids (an expanding IN): building a statement cost the
# writer more than running it (issue #23's drain profile).
_LAST_EVENTS = _last_events_query()
_STORED = select(
    AlertRow.id, AlertRow.uid, AlertRow.status, AlertRow.acknowledged_at, AlertRow.ack_note
).where(AlertRow.uid.in_(bindparam("uids", expanding=True)))


def _last_events(conn: Connection, uids: Sequence[str]) -> dict[str, _Last]:
    found: dict[str, _Last] = {}
    for chunk in _chunks(uids):
        for row in conn.execute(_LAST_EVENTS, {"uids": list(chunk)}):
            found[row.uid] = _Last(seq=row.seq, event=row.event, payload=dict(row.payload))
    return found


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def record_events(
    conn: Connection, changes: Sequence[Alert], policy: OutboxPolicy, now: datetime
) -> int:
    """Write the outbox rows for alert changes, in order; call after the alerts upsert.

    ``changes`` are every change of the transaction in the order the pipeline made them
    (not folded per alert), so an alert that opens and closes within one transaction still
    gets its ``new`` and its ``end``. Returns how many events were written.
    """
    if not changes:
        return 0
    uids = list(dict.fromkeys(a.uid for a in changes))
    last = _last_events(conn, uids)
    stored: dict[str, Any] = {}
    for chunk in _chunks(uids):
        stored.update({row.uid: row for row in conn.execute(_STORED, {"uids": list(chunk)})})
    rows: list[dict[str, Any]] = []
    for alert in changes:
        previous = last.get(alert.uid)
        decision = decide(previous, alert, policy)
        if decision is None:
            continue
        event, reason = decision
        seq = previous.seq + 1 if previous is not None else 1
        payload = {"event": event, "seq": seq, "reason": reason, **alert_payload(alert)}
        row = stored.get(alert.uid)
        if row is not None:
            payload["id"] = row.id
            # The daemon's own record says "open" after a user acknowledged the alert.
            if row.status == AlertStatus.ACKNOWLEDGED.value and payload["status"] == "open":
                payload["status"] = row.status
            payload["acknowledged_at"] = _iso(row.acknowledged_at)
            payload["ack_note"] = row.ack_note
        payload["emitted_at"] = now.isoformat()
        rows.append(
            {
                "uid": alert.uid,
                "seq": seq,
                "event": event,
                "stream": alert.stream,
                "device": alert.device,
                "payload": payload,
                "created_at": now,
                "published_at": None,
            }
        )
        last[alert.uid] = _Last(seq=seq, event=event, payload=payload)
    if rows:
        conn.execute(insert(AlertOutboxRow), rows)
    return len(rows)


def record_acknowledgement(conn: Connection, alert: dict[str, Any], now: datetime) -> bool:
    """Write an ``update`` for a user's acknowledgement; call in the acknowledging transaction.

    ``alert`` is the acknowledged alert as ``AlertRecord.to_dict()`` gives it. Only alerts
    whose earlier events went to the outbox get one (publishing was on for them), only when
    the status changed to acknowledged, and never after the ``end``.
    """
    return _record_operator_event(
        conn, alert, now, AlertStatus.ACKNOWLEDGED, event="update", reason="acknowledged"
    )


def record_resolution(conn: Connection, alert: dict[str, Any], now: datetime) -> bool:
    """Write the ``end`` of an alert an operator resolved; call in the resolving transaction.

    Same rules as ``record_acknowledgement``: only published alerts, once, never after an
    ``end`` (an alert that had closed already has told its consumers).
    """
    return _record_operator_event(
        conn, alert, now, AlertStatus.RESOLVED, event="end", reason="resolved"
    )


def _record_operator_event(
    conn: Connection,
    alert: dict[str, Any],
    now: datetime,
    status: AlertStatus,
    *,
    event: str,
    reason: str,
) -> bool:
    if alert.get("status") != status.value:
        return False
    previous = _last_events(conn, [alert["uid"]]).get(alert["uid"])
    if previous is None or previous.event == "end":
        return False
    if previous.payload.get("status") == status.value:
        return False  # the same change again, e.g. to change the note
    seq = previous.seq + 1
    payload = {
        **previous.payload,
        **alert,
        "event": event,
        "seq": seq,
        "reason": reason,
        "emitted_at": now.isoformat(),
    }
    conn.execute(
        insert(AlertOutboxRow),
        [
            {
                "uid": alert["uid"],
                "seq": seq,
                "event": event,
                "stream": alert["stream"],
                "device": alert["device"],
                "payload": payload,
                "created_at": now,
                "published_at": None,
            }
        ],
    )
    return True


def pending_events(engine: Engine, limit: int) -> list[OutboxEvent]:
    """The oldest unpublished rows, in the order they were written."""
    query = (
        select(
            AlertOutboxRow.id,
            AlertOutboxRow.uid,
            AlertOutboxRow.seq,
            AlertOutboxRow.event,
            AlertOutboxRow.stream,
            AlertOutboxRow.device,
            AlertOutboxRow.payload,
        )
        .where(AlertOutboxRow.published_at.is_(None))
        .order_by(AlertOutboxRow.id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [
            OutboxEvent(
                id=r.id,
                uid=r.uid,
                seq=r.seq,
                event=r.event,
                stream=r.stream,
                device=r.device,
                payload=dict(r.payload),
            )
            for r in conn.execute(query)
        ]


def mark_published(engine: Engine, ids: Sequence[int], now: datetime) -> None:
    if not ids:
        return
    with engine.begin() as conn:
        for chunk in range(0, len(ids), _CHUNK):
            conn.execute(
                update(AlertOutboxRow)
                .where(AlertOutboxRow.id.in_(ids[chunk : chunk + _CHUNK]))
                .values(published_at=now)
            )


def prune_published(engine: Engine, before: datetime) -> int:
    """Delete rows published before ``before``; returns how many.

    Each alert's latest row is kept until its ``end`` is published: the next change of an
    open alert is measured against it and numbered after it.
    """
    newer = aliased(AlertOutboxRow)
    has_newer = (
        select(newer.id)
        .where(newer.uid == AlertOutboxRow.uid, newer.seq > AlertOutboxRow.seq)
        .exists()
    )
    stmt = delete(AlertOutboxRow).where(
        AlertOutboxRow.published_at.is_not(None),
        AlertOutboxRow.published_at < before,
        or_(AlertOutboxRow.event == "end", has_newer),
    )
    with engine.begin() as conn:
        return int(conn.execute(stmt).rowcount)
