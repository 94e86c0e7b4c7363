"""AlertStore reads and writes, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from sentinel.errors import StoreError
from sentinel.records import (
    Ack,
    AlertStatus,
    DeviceProgress,
    DeviceReset,
    FeatureContribution,
    WriteBatch,
)
from sentinel.store import AlertStore
from sentinel.store.db import normalize_url
from tests.store.helpers import T0, make_alert, make_progress


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def test_insert_then_read_every_column(store: AlertStore) -> None:
    alert = make_alert(updated_at=T0 + 1.5, peak_score=3.25, threshold=1.5, windows=3)
    store.write([WriteBatch(alerts=(alert,))])

    [record] = store.list_alerts()
    assert record.uid == "a-1"
    assert (record.stream, record.device) == ("pump", "p1")
    assert record.status is AlertStatus.OPEN
    assert record.started_at == _utc(T0)
    assert record.updated_at == _utc(T0 + 1.5)
    assert record.started_at.tzinfo is not None
    assert record.started_at.utcoffset() == timedelta(0)
    assert record.ended_at is None
    assert (record.peak_score, record.threshold, record.windows) == (3.25, 1.5, 3)
    assert record.top_features == alert.top_features
    assert record.model_version == "pump-v1"
    assert record.acknowledged_at is None
    assert record.ack_note is None
    assert store.get_alert(record.id) == record

    data = json.loads(json.dumps(record.to_dict()))
    assert data["status"] == "open"
    assert data["started_at"] == "2023-11-14T22:13:20+00:00"
    assert data["ended_at"] is None
    assert data["top_features"] == [
        {"feature": "current", "share": 0.75},
        {"feature": "vibration", "share": 0.25},
    ]


def test_update_keeps_started_at_and_threshold(store: AlertStore) -> None:
    store.write([WriteBatch(alerts=(make_alert(threshold=1.0),))])
    later = make_alert(
        started_at=T0 + 100,  # the daemon never changes these; the stored ones win anyway
        threshold=9.0,
        updated_at=T0 + 10,
        peak_score=7.5,
        windows=6,
        top_features=(FeatureContribution("pressure", 1.0),),
        model_version="pump-v2",
    )
    store.write([WriteBatch(alerts=(later,))])

    [record] = store.list_alerts()
    assert record.started_at == _utc(T0)
    assert record.threshold == 1.0
    assert record.updated_at == _utc(T0 + 10)
    assert (record.peak_score, record.windows, record.model_version) == (7.5, 6, "pump-v2")
    assert record.top_features == (FeatureContribution("pressure", 1.0),)
    assert record.status is AlertStatus.OPEN


def test_close_sets_status_and_end(store: AlertStore) -> None:
    store.write([WriteBatch(alerts=(make_alert(),))])
    closed = make_alert(status=AlertStatus.CLOSED, updated_at=T0 + 20, ended_at=T0 + 20)
    store.write([WriteBatch(alerts=(closed,))])

    [record] = store.list_alerts()
    assert record.status is AlertStatus.CLOSED
    assert record.ended_at == _utc(T0 + 20)
    assert store.open_alerts() == []


def test_acknowledgement_survives_daemon_updates(store: AlertStore) -> None:
    store.write([WriteBatch(alerts=(make_alert(),))])
    alert_id = store.list_alerts()[0].id
    store.acknowledge(alert_id, note="on it", now=_utc(T0 + 5))

    store.write([WriteBatch(alerts=(make_alert(updated_at=T0 + 8, peak_score=9.0),))])
    record = store.get_alert(alert_id)
    assert record is not None
    assert record.status is AlertStatus.ACKNOWLEDGED
    assert record.peak_score == 9.0

    store.write([WriteBatch(alerts=(make_alert(status=AlertStatus.CLOSED, ended_at=T0 + 9),))])
    record = store.get_alert(alert_id)
    assert record is not None
    assert record.status is AlertStatus.CLOSED
    assert record.acknowledged_at == _utc(T0 + 5)
    assert record.ack_note == "on it"


def test_same_uid_in_one_write_last_wins(store: AlertStore) -> None:
    batches = [
        WriteBatch(alerts=(make_alert(windows=2), make_alert("b-1", device="p2"))),
        WriteBatch(alerts=(make_alert(windows=3, updated_at=T0 + 1),)),
        WriteBatch(alerts=(make_alert(windows=4, updated_at=T0 + 2, peak_score=5.0),)),
    ]
    store.write(batches)

    records = {r.uid: r for r in store.list_alerts()}
    assert set(records) == {"a-1", "b-1"}
    assert records["a-1"].windows == 4
    assert records["a-1"].peak_score == 5.0
    assert records["a-1"].updated_at == _utc(T0 + 2)


def test_device_progress_keeps_max_ts_and_running_total(store: AlertStore) -> None:
    exact = T0 + 0.123456  # compared exactly by the daemon: must round-trip bit for bit
    store.write([WriteBatch(progress=(make_progress("p1", exact, 10),))])
    assert store.device_progress() == {("pump", "p1"): make_progress("p1", exact, 10)}

    # An older timestamp (a redelivered message) never moves last_ts back.
    store.write([WriteBatch(progress=(make_progress("p1", exact - 50, 15),))])
    assert store.device_progress()[("pump", "p1")] == make_progress("p1", exact, 15)

    store.write(
        [
            WriteBatch(progress=(make_progress("p1", exact + 1, 16), make_progress("p2", T0, 1))),
            WriteBatch(progress=(make_progress("p1", exact + 2, 17),)),
        ]
    )
    assert store.device_progress() == {
        ("pump", "p1"): make_progress("p1", exact + 2, 17),
        ("pump", "p2"): make_progress("p2", T0, 1),
    }


def test_device_progress_of_some_devices_of_one_stream(store: AlertStore) -> None:
    """What the daemon recalls for devices it does not hold: one query per stream, bounded
    IN lists however many devices a pass brings."""
    names = [f"p{i:04d}" for i in range(1200)]
    progress = tuple(make_progress(name, T0 + i, i + 1) for i, name in enumerate(names))
    other = DeviceProgress("fan", "p0001", T0, 7)
    store.write([WriteBatch(progress=(*progress, other))])
    wanted = {*names[::2], "never-seen"}
    found = store.device_progress("pump", wanted)
    assert found == {("pump", p.device): p for p in progress[::2]}
    assert store.device_progress("fan", ["p0001", "p0002"]) == {("fan", "p0001"): other}
    assert store.device_progress("pump", []) == {}


def test_alerts_and_progress_commit_together(store: AlertStore) -> None:
    # A readings count of None: the types forbid it, and so must the NOT NULL column.
    bad = DeviceProgress("pump", "p9", T0, None)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="write to"):
        store.write(
            [
                WriteBatch(alerts=(make_alert(),), progress=(make_progress(),)),
                WriteBatch(progress=(bad,)),
            ]
        )
    assert store.list_alerts() == []
    assert store.device_progress() == {}


def test_write_with_nothing_to_store_is_a_no_op(store: AlertStore) -> None:
    store.write([WriteBatch(acks=(Ack(1, 1), Ack(2, 1))), WriteBatch()])
    assert store.list_alerts() == []
    assert store.device_progress() == {}


def test_open_alerts_round_trip(store: AlertStore) -> None:
    opened = make_alert("a-1", updated_at=T0 + 0.25)
    acked = make_alert("a-2", device="p2", started_at=T0 + 1)
    closed = make_alert("a-3", device="p3", status=AlertStatus.CLOSED, ended_at=T0 + 3)
    no_features = make_alert("a-4", device="p4", started_at=T0 + 2, top_features=())
    store.write([WriteBatch(alerts=(opened, acked, closed, no_features))])
    store.acknowledge(store.list_alerts(device="p2")[0].id)

    assert store.open_alerts() == [
        opened,
        make_alert("a-2", device="p2", started_at=T0 + 1, status=AlertStatus.ACKNOWLEDGED),
        no_features,
    ]


def test_list_alerts_filters_and_order(store: AlertStore) -> None:
    alerts = [
        make_alert("a-0", device="p1", started_at=T0),
        make_alert("a-1", device="p2", started_at=T0 + 60),
        make_alert("a-2", device="p1", stream="fan", started_at=T0 + 120),
        make_alert("a-3", device="p1", started_at=T0 + 180, status=AlertStatus.CLOSED),
    ]
    store.write([WriteBatch(alerts=tuple(alerts))])

    def uids(**filters: Any) -> list[str]:
        return [r.uid for r in store.list_alerts(**filters)]

    assert uids() == ["a-3", "a-2", "a-1", "a-0"]
    assert uids(since=_utc(T0 + 60)) == ["a-3", "a-2", "a-1"]
    assert uids(since=_utc(T0 + 60).replace(tzinfo=None)) == ["a-3", "a-2", "a-1"]
    plus_two = timezone(timedelta(hours=2))
    assert uids(since=_utc(T0 + 60).astimezone(plus_two)) == ["a-3", "a-2", "a-1"]
    assert uids(device="p1") == ["a-3", "a-2", "a-0"]
    assert uids(stream="fan") == ["a-2"]
    assert uids(status="closed") == ["a-3"]
    assert uids(status=AlertStatus.OPEN, device="p1", stream="pump") == ["a-0"]
    assert uids(limit=2) == ["a-3", "a-2"]
    assert uids(device="nope") == []
    with pytest.raises(ValueError, match="snoozed"):
        store.list_alerts(status="snoozed")
    with pytest.raises(ValueError, match="limit"):
        store.list_alerts(limit=0)


def test_get_missing_alert_is_none(store: AlertStore) -> None:
    assert store.get_alert(12345) is None


def test_acknowledge(store: AlertStore) -> None:
    store.write([WriteBatch(alerts=(make_alert(),))])
    alert_id = store.list_alerts()[0].id

    record = store.acknowledge(alert_id, note="pump inspected", now=_utc(T0 + 30))
    assert record.status is AlertStatus.ACKNOWLEDGED
    assert record.acknowledged_at == _utc(T0 + 30)
    assert record.ack_note == "pump inspected"
    assert store.get_alert(alert_id) == record

    # Without a note the earlier one stays; a naive time is read as UTC.
    again = store.acknowledge(alert_id, now=_utc(T0 + 40).replace(tzinfo=None))
    assert again.ack_note == "pump inspected"
    assert again.acknowledged_at == _utc(T0 + 40)

    with pytest.raises(KeyError):
        store.acknowledge(alert_id + 1000)


def test_acknowledge_closed_alert_stays_closed(store: AlertStore) -> None:
    store.write([WriteBatch(alerts=(make_alert(status=AlertStatus.CLOSED, ended_at=T0 + 9),))])
    alert_id = store.list_alerts()[0].id
    before = datetime.now(UTC)

    record = store.acknowledge(alert_id, note="false alarm")
    assert record.status is AlertStatus.CLOSED
    assert record.ack_note == "false alarm"
    assert record.acknowledged_at is not None
    assert record.acknowledged_at >= before - timedelta(seconds=1)


def test_ids_autoincrement(store: AlertStore) -> None:
    store.write([WriteBatch(alerts=(make_alert("a-1"), make_alert("a-2", started_at=T0 + 1)))])
    store.write([WriteBatch(alerts=(make_alert("a-3", started_at=T0 + 2),))])
    ids = [r.id for r in store.list_alerts()]
    assert len(set(ids)) == 3
    assert ids == sorted(ids, reverse=True)


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    store = AlertStore(
        f"sqlite:///{tmp_path / 'new' / 'dir' / 'sentinel.db'}", busy_timeout_ms=1234
    )
    store.open()
    try:
        store.migrate()
        store.write([WriteBatch(alerts=(make_alert(),))])
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 1234
            # FULL: a commit is on disk before its readings are acknowledged (issue #22).
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 2
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert (tmp_path / "new" / "dir" / "sentinel.db-wal").exists()
    finally:
        store.close()


def test_sqlite_unsafe_durability_is_opt_in(tmp_path: Path) -> None:
    store = AlertStore(
        f"sqlite:///{tmp_path / 'sentinel.db'}", sqlite_durability="unsafe-on-power-loss"
    )
    store.open()
    try:
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        store.close()


def test_url_normalisation() -> None:
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"
    with pytest.raises(StoreError, match="unsupported"):
        AlertStore("mysql://u@h/db")
    with pytest.raises(StoreError, match="not a database URL"):
        AlertStore("not a url")


def test_store_must_be_opened_first(tmp_path: Path) -> None:
    store = AlertStore(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(RuntimeError, match="open"):
        store.list_alerts()
    assert not (tmp_path / "x.db").exists()  # the constructor did no I/O


def test_a_reset_deletes_the_progress_before_it_and_keeps_what_follows(
    store: AlertStore,
) -> None:
    """Issue #19: a far-future last_ts blinds a device until an operator resets it; the
    reset is ordered with the daemon's progress around it, even within one commit."""
    future = 253_402_214_400.0  # 9999-12-31
    store.write([WriteBatch(progress=(make_progress("p1", future, 5), make_progress("p2")))])
    reset = DeviceReset("pump", "p1", T0 + 60, "far-future ts from a bad publisher")
    store.write(
        [
            WriteBatch(progress=(make_progress("p1", future, 6),)),  # queued before the reset
            WriteBatch(resets=(reset,)),
            WriteBatch(progress=(make_progress("p1", T0 + 61, 1),)),
        ]
    )
    assert store.device_progress() == {
        ("pump", "p1"): make_progress("p1", T0 + 61, 1),
        ("pump", "p2"): make_progress("p2"),
    }
    [event] = store.audit_events(device="p1")
    assert (event["kind"], event["stream"]) == ("device_reset", "pump")
    assert event["detail"] == {
        "last_ts": future,
        "readings": 5,
        "note": "far-future ts from a bad publisher",
    }
    assert event["at"] == _utc(T0 + 60).isoformat()


def test_reset_devices_without_a_daemon_deletes_and_audits(store: AlertStore) -> None:
    store.write([WriteBatch(progress=(make_progress("p1"), make_progress("p2")))])
    assert store.reset_devices("pump", ["p1", "never-seen"], note="by hand") == 1
    assert set(store.device_progress()) == {("pump", "p2")}
    events = store.audit_events()
    assert sorted(e["device"] for e in events) == ["never-seen", "p1"]
    assert all(e["kind"] == "device_reset" for e in events)


def test_devices_lists_stored_state_with_open_alerts(store: AlertStore) -> None:
    store.write(
        [
            WriteBatch(
                alerts=(
                    make_alert("a-1", device="p2"),
                    make_alert("a-2", device="p2", status=AlertStatus.CLOSED, ended_at=T0),
                ),
                progress=(
                    make_progress("p2", T0 + 2, 9),
                    make_progress("p1", T0 + 1, 3),
                    DeviceProgress("fan", "f1", T0, 1),
                ),
            )
        ]
    )
    records = store.devices()
    assert [(r.stream, r.device, r.readings, r.open_alerts) for r in records] == [
        ("fan", "f1", 1, 0),
        ("pump", "p1", 3, 0),
        ("pump", "p2", 9, 1),
    ]
    assert [r.device for r in store.devices("pump")] == ["p1", "p2"]
    data = records[2].to_dict()
    assert data["last_ts"] == T0 + 2
    assert data["last_reading_at"] == _utc(T0 + 2).isoformat()
    assert data["updated_at"].endswith("+00:00")  # written in UTC, read back aware
