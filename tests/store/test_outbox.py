"""The alert outbox on SQLite and PostgreSQL: which changes become events, atomicity, pruning."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from sentinel.records import AlertStatus, WriteBatch
from sentinel.store import AlertStore
from sentinel.store.outbox import (
    OutboxPolicy,
    mark_published,
    pending_events,
    prune_published,
)
from sentinel.store.schema import AlertOutboxRow
from tests.store.helpers import T0, make_alert

POLICY = OutboxPolicy(peak_factor=1.5, interval=60.0)


@pytest.fixture
def pub_store(db_url: str) -> Iterator[AlertStore]:
    """A store that records outbox events, as the daemon's does with publishing on."""
    store = AlertStore(db_url, busy_timeout_ms=1000, outbox=POLICY)
    store.open()
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def events(store: AlertStore) -> list[tuple[str, int, str, str]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(
                AlertOutboxRow.uid, AlertOutboxRow.seq, AlertOutboxRow.event, AlertOutboxRow.payload
            ).order_by(AlertOutboxRow.id)
        ).all()
    return [(r.uid, r.seq, r.event, r.payload["reason"]) for r in rows]


def payloads(store: AlertStore) -> list[dict[str, Any]]:
    return [e.payload for e in pending_events(store.engine, 1000)]


def test_lifecycle_new_updates_end_with_sequence_numbers(pub_store: AlertStore) -> None:
    changes = [
        make_alert(peak_score=2.0, windows=2),
        make_alert(updated_at=T0 + 4, peak_score=2.5, windows=3),  # < 1.5x: not published
        make_alert(updated_at=T0 + 8, peak_score=3.0, windows=4),  # 1.5x the 2.0 published
        make_alert(updated_at=T0 + 12, peak_score=3.5, windows=5),  # < 1.5 x 3.0
        make_alert(updated_at=T0 + 68, peak_score=3.5, windows=6),  # 60 s after the last event
        make_alert(updated_at=T0 + 72, peak_score=3.5, windows=7),
        make_alert(status=AlertStatus.CLOSED, updated_at=T0 + 72, ended_at=T0 + 72, peak_score=3.5),
    ]
    # One change per transaction, as a slow stream commits them.
    for change in changes:
        pub_store.write([WriteBatch(alerts=(change,))])
    assert events(pub_store) == [
        ("a-1", 1, "new", "opened"),
        ("a-1", 2, "update", "peak"),
        ("a-1", 3, "update", "interval"),
        ("a-1", 4, "end", "closed"),
    ]
    first, *_, last = payloads(pub_store)
    [record] = pub_store.list_alerts()
    assert first["id"] == record.id
    assert first["status"] == "open"
    assert first["peak_score"] == 2.0
    assert first["started_at"] == "2023-11-14T22:13:20+00:00"
    assert first["ended_at"] is None
    assert first["top_features"] == [
        {"feature": "current", "share": 0.75},
        {"feature": "vibration", "share": 0.25},
    ]
    assert first["model_version"] == "pump-v1"
    assert {"uid", "stream", "device", "threshold", "windows", "emitted_at"} <= set(first)
    assert last["status"] == "closed"
    assert last["ended_at"] == datetime.fromtimestamp(T0 + 72, UTC).isoformat()
    json.dumps(last, allow_nan=False)  # publishable as strict JSON


def test_changes_folded_into_one_transaction_keep_every_event(pub_store: AlertStore) -> None:
    """A backlog can open and close an alert inside one writer transaction."""
    pub_store.write(
        [
            WriteBatch(alerts=(make_alert(peak_score=2.0),)),
            WriteBatch(alerts=(make_alert(updated_at=T0 + 4, peak_score=5.0),)),
            WriteBatch(
                alerts=(
                    make_alert(
                        status=AlertStatus.CLOSED,
                        updated_at=T0 + 4,
                        ended_at=T0 + 4,
                        peak_score=5.0,
                    ),
                )
            ),
        ]
    )
    assert [e[2] for e in events(pub_store)] == ["new", "update", "end"]
    # The "new" carries the state it had then, not the final row's.
    assert payloads(pub_store)[0]["status"] == "open"
    assert payloads(pub_store)[0]["peak_score"] == 2.0


def test_acknowledgement_is_an_update_and_later_events_say_acknowledged(
    pub_store: AlertStore, db_url: str
) -> None:
    pub_store.write([WriteBatch(alerts=(make_alert(peak_score=2.0),))])
    [record] = pub_store.list_alerts()
    # The CLI acknowledges through a store of its own, with no outbox policy.
    cli = AlertStore(db_url)
    cli.open()
    try:
        cli.acknowledge(record.id, note="on it")
        cli.acknowledge(record.id, note="still on it")  # already acknowledged: no event
    finally:
        cli.close()
    pub_store.write([WriteBatch(alerts=(make_alert(updated_at=T0 + 4, peak_score=9.0),))])
    assert events(pub_store) == [
        ("a-1", 1, "new", "opened"),
        ("a-1", 2, "update", "acknowledged"),
        ("a-1", 3, "update", "peak"),
    ]
    _, ack, peak = payloads(pub_store)
    assert ack["status"] == "acknowledged"
    assert ack["ack_note"] == "on it"
    assert ack["acknowledged_at"] is not None
    assert ack["peak_score"] == 2.0
    # The daemon's record of the alert says "open"; the event tells the truth.
    assert peak["status"] == "acknowledged"
    assert peak["ack_note"] == "still on it"


def test_resolution_is_the_end_and_the_daemons_later_changes_publish_nothing(
    pub_store: AlertStore, db_url: str
) -> None:
    pub_store.write([WriteBatch(alerts=(make_alert(peak_score=2.0),))])
    [record] = pub_store.list_alerts()
    cli = AlertStore(db_url)
    cli.open()
    try:
        cli.resolve(record.id, note="valve replaced")
        cli.resolve(record.id)  # resolved again: no second end
    finally:
        cli.close()
    # The daemon has not heard yet and keeps updating, then closes: its row is final.
    resolved = pub_store.write(
        [
            WriteBatch(alerts=(make_alert(updated_at=T0 + 4, peak_score=9.0),)),
            WriteBatch(alerts=(make_alert(status=AlertStatus.CLOSED, ended_at=T0 + 9),)),
        ]
    )
    assert resolved == {"a-1"}
    assert events(pub_store) == [("a-1", 1, "new", "opened"), ("a-1", 2, "end", "resolved")]
    end = payloads(pub_store)[1]
    assert (end["status"], end["resolve_note"]) == ("resolved", "valve replaced")


def test_a_closed_alert_that_reopens_within_the_cooldown_starts_again(
    pub_store: AlertStore,
) -> None:
    pub_store.write([WriteBatch(alerts=(make_alert(),))])
    pub_store.write([WriteBatch(alerts=(make_alert(status=AlertStatus.CLOSED, ended_at=T0),))])
    pub_store.write([WriteBatch(alerts=(make_alert(updated_at=T0 + 30),))])
    assert events(pub_store) == [
        ("a-1", 1, "new", "opened"),
        ("a-1", 2, "end", "closed"),
        ("a-1", 3, "new", "reopened"),
    ]


def test_no_outbox_without_a_policy(store: AlertStore) -> None:
    store.write([WriteBatch(alerts=(make_alert(),))])
    [record] = store.list_alerts()
    store.acknowledge(record.id)
    assert events(store) == []


def test_a_failed_transaction_writes_neither_alert_nor_event(pub_store: AlertStore) -> None:
    """The outbox row and the alert change commit together or not at all."""

    def fail_outbox_insert(
        conn: Connection, cursor: Any, statement: str, *args: Any, **kwargs: Any
    ) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO ALERT_OUTBOX"):
            raise RuntimeError("disk full")

    event.listen(pub_store.engine, "before_cursor_execute", fail_outbox_insert)
    try:
        with pytest.raises(RuntimeError, match="disk full"):
            pub_store.write([WriteBatch(alerts=(make_alert(),))])
    finally:
        event.remove(pub_store.engine, "before_cursor_execute", fail_outbox_insert)
    assert pub_store.list_alerts() == []
    assert events(pub_store) == []
    pub_store.write([WriteBatch(alerts=(make_alert(),))])  # the writer's retry
    assert [e[2] for e in events(pub_store)] == ["new"]
    assert len(pub_store.list_alerts()) == 1


def test_pending_mark_and_prune_keep_each_open_alerts_latest_row(pub_store: AlertStore) -> None:
    pub_store.write([WriteBatch(alerts=(make_alert("a-1"), make_alert("b-1", device="p2")))])
    pub_store.write([WriteBatch(alerts=(make_alert("a-1", updated_at=T0 + 1, peak_score=9.0),))])
    pub_store.write(
        [
            WriteBatch(
                alerts=(
                    make_alert(
                        "b-1", device="p2", status=AlertStatus.CLOSED, ended_at=T0, updated_at=T0
                    ),
                )
            )
        ]
    )
    pending = pending_events(pub_store.engine, 10)
    assert [(e.uid, e.seq, e.event) for e in pending] == [
        ("a-1", 1, "new"),
        ("b-1", 1, "new"),
        ("a-1", 2, "update"),
        ("b-1", 2, "end"),
    ]
    assert [e.id for e in pending] == sorted(e.id for e in pending)
    assert [e.uid for e in pending_events(pub_store.engine, 2)] == ["a-1", "b-1"]

    now = datetime.now(UTC)
    mark_published(pub_store.engine, [e.id for e in pending[:3]], now - timedelta(days=2))
    assert [(e.uid, e.seq) for e in pending_events(pub_store.engine, 10)] == [("b-1", 2)]
    # Unpublished rows are never pruned, however old.
    assert prune_published(pub_store.engine, now - timedelta(days=1)) == 2
    assert events(pub_store) == [("a-1", 2, "update", "peak"), ("b-1", 2, "end", "closed")]
    mark_published(pub_store.engine, [pending[3].id], now - timedelta(days=2))
    assert prune_published(pub_store.engine, now - timedelta(days=1)) == 1
    # a-1 is still open: its latest row stays, so its next event is numbered after it.
    assert events(pub_store) == [("a-1", 2, "update", "peak")]
    pub_store.write(
        [
            WriteBatch(
                alerts=(
                    make_alert(
                        "a-1", status=AlertStatus.CLOSED, ended_at=T0 + 1, updated_at=T0 + 1
                    ),
                )
            )
        ]
    )
    assert events(pub_store)[-1] == ("a-1", 3, "end", "closed")


def test_sequence_numbers_are_unique_per_alert(pub_store: AlertStore) -> None:
    pub_store.write([WriteBatch(alerts=(make_alert(),))])
    with pytest.raises(IntegrityError), pub_store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO alert_outbox (uid, seq, event, stream, device, payload, "
                "created_at) VALUES ('a-1', 1, 'new', 'pump', 'p1', '{}', :now)"
            ),
            {"now": datetime.now(UTC)},
        )
