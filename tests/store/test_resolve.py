"""Operator resolution, reopening, severity, reasons and audit events, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest

from sentinel.records import (
    AlertReason,
    AlertStatus,
    AuditEvent,
    Severity,
    ThresholdState,
    WriteBatch,
)
from sentinel.store import AlertStore, AlertWriter
from tests.store.helpers import T0, documented_queries, make_alert, run_sql

REASON = AlertReason(ThresholdState("spot", 2.5, 4100, 1e-3, True), 3e-5, "cafe0123cafe0123")


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def test_resolve_is_final_and_the_daemons_updates_are_left_alone(store: AlertStore) -> None:
    store.write([WriteBatch(alerts=(make_alert(updated_at=T0 + 8),))])
    alert_id = store.list_alerts()[0].id
    record = store.resolve(alert_id, note="false alarm: sensor swap", now=_utc(T0 + 60))
    assert record.status is AlertStatus.RESOLVED
    assert record.resolved_at == _utc(T0 + 60)
    assert record.ended_at == _utc(T0 + 8)  # its last anomalous window
    assert record.resolve_note == "false alarm: sensor swap"

    # The daemon has not heard yet: its next update and its close must not undo the resolve.
    update = make_alert(updated_at=T0 + 90, peak_score=50.0, windows=9)
    assert store.write([WriteBatch(alerts=(update,))]) == {"a-1"}
    closing = make_alert(status=AlertStatus.CLOSED, updated_at=T0 + 95, ended_at=T0 + 95)
    assert store.write([WriteBatch(alerts=(closing,))]) == {"a-1"}
    after = store.get_alert(alert_id)
    assert after is not None
    assert after.status is AlertStatus.RESOLVED
    assert after.peak_score == 2.5
    assert after.ended_at == _utc(T0 + 8)
    assert store.open_alerts() == []
    assert store.list_alerts(status="resolved")[0].id == alert_id

    events = store.audit_events()
    assert [e["kind"] for e in events] == ["alert_resolved"]
    assert events[0]["detail"] == {
        "alert_id": alert_id,
        "uid": "a-1",
        "note": "false alarm: sensor swap",
    }
    with pytest.raises(KeyError):
        store.resolve(424242)


def test_a_second_resolve_keeps_the_first_time(store: AlertStore) -> None:
    store.write([WriteBatch(alerts=(make_alert(),))])
    alert_id = store.list_alerts()[0].id
    store.resolve(alert_id, now=_utc(T0 + 10))
    again = store.resolve(alert_id, note="later note", now=_utc(T0 + 99))
    assert again.resolved_at == _utc(T0 + 10)
    assert again.resolve_note == "later note"
    # One resolution, one audit event: the second call only changed the note.
    events = store.audit_events()
    assert [e["kind"] for e in events] == ["alert_resolved"]
    assert events[0]["at"] == _utc(T0 + 10).isoformat()
    assert events[0]["detail"]["note"] is None


def test_a_closed_alert_reopened_by_the_daemon_is_open_again(store: AlertStore) -> None:
    closed = make_alert(status=AlertStatus.CLOSED, updated_at=T0 + 5, ended_at=T0 + 5)
    store.write([WriteBatch(alerts=(closed,))])
    reopened = make_alert(updated_at=T0 + 40, windows=5, severity=Severity.WARNING)
    assert store.write([WriteBatch(alerts=(reopened,))]) == set()
    record = store.list_alerts()[0]
    assert record.status is AlertStatus.OPEN
    assert record.ended_at is None
    assert record.windows == 5
    assert record.severity is Severity.WARNING


def test_severity_and_reason_round_trip(store: AlertStore) -> None:
    alert = make_alert(severity=Severity.CRITICAL, reason=REASON)
    store.write([WriteBatch(alerts=(alert,))])
    record = store.list_alerts()[0]
    assert record.severity is Severity.CRITICAL
    assert record.reason == REASON.to_dict()
    assert record.to_dict()["reason"]["config_hash"] == "cafe0123cafe0123"
    restored = store.open_alerts()[0]
    assert restored.reason == REASON
    assert restored.severity is Severity.CRITICAL
    # A later update (e.g. with a higher severity) keeps the reason fixed at opening.
    store.write([WriteBatch(alerts=(make_alert(updated_at=T0 + 4, severity=Severity.CRITICAL),))])
    assert store.list_alerts()[0].reason == REASON.to_dict()


def test_audit_events_commit_with_the_batch(store: AlertStore) -> None:
    event = AuditEvent(
        "pump",
        "p1",
        T0 + 30,
        "threshold_rebaselined",
        {"method": "spot", "threshold_before": 2.0, "threshold_after": 9.5},
    )
    store.write([WriteBatch(audit=(event,))])
    events = store.audit_events(device="p1")
    assert len(events) == 1
    assert events[0]["kind"] == "threshold_rebaselined"
    assert events[0]["at"] == _utc(T0 + 30).isoformat()
    assert events[0]["detail"]["threshold_after"] == 9.5


def test_last_ended_alerts_gives_each_devices_latest(store: AlertStore) -> None:
    alerts = (
        make_alert("old", status=AlertStatus.CLOSED, updated_at=T0 + 1, ended_at=T0 + 1),
        make_alert("new", status=AlertStatus.CLOSED, updated_at=T0 + 9, ended_at=T0 + 9),
        make_alert("other", device="p2", updated_at=T0 + 3),
        make_alert(
            "p3", device="p3", status=AlertStatus.CLOSED, updated_at=T0 + 2, ended_at=T0 + 2
        ),
    )
    store.write([WriteBatch(alerts=alerts)])
    p3 = next(r for r in store.list_alerts() if r.uid == "p3")
    store.resolve(p3.id)
    ended = {a.uid: a for a in store.last_ended_alerts()}
    assert set(ended) == {"new", "p3"}
    assert ended["p3"].status is AlertStatus.RESOLVED
    assert ended["new"].ended_at == T0 + 9


def test_the_writer_reports_resolved_alerts(store: AlertStore) -> None:
    store.write([WriteBatch(alerts=(make_alert(),))])
    store.resolve(store.list_alerts()[0].id)
    seen: list[str] = []
    done = threading.Event()

    def on_resolved(uids: Iterable[str]) -> None:
        seen.extend(uids)
        done.set()

    writer = AlertWriter(store, flush_interval=0.01, on_resolved=on_resolved)
    writer.start()
    try:
        writer.submit(WriteBatch(alerts=(make_alert(updated_at=T0 + 50),)))
        assert done.wait(10)
    finally:
        writer.stop()
    assert seen == ["a-1"]


def test_documented_queries_on_resolved_and_audited_data(store: AlertStore) -> None:
    store.write(
        [
            WriteBatch(
                alerts=(
                    make_alert("r1", severity=Severity.CRITICAL),
                    make_alert("r2", device="p2", severity=Severity.WARNING),
                    make_alert("r3", device="p3"),
                ),
                audit=(
                    AuditEvent(
                        "pump",
                        "p3",
                        T0 + 700,
                        "threshold_rebaselined",
                        {"method": "quantile", "threshold_before": 3.0, "threshold_after": 15.5},
                    ),
                ),
            )
        ]
    )
    ids = {r.uid: r.id for r in store.list_alerts()}
    store.resolve(ids["r2"], note="known maintenance", now=_utc(T0 + 50))
    queries = documented_queries(store.dialect)
    # open_alerts (the view) never lists a resolved alert
    assert {r["id"] for r in run_sql(store, "SELECT id FROM open_alerts")} == {ids["r1"], ids["r3"]}
    assert run_sql(store, queries["open_by_severity"]) == [
        {"severity": "critical", "alerts": 1},
        {"severity": "info", "alerts": 1},
    ]
    assert run_sql(store, queries["resolved_by_operators"]) == [
        {"id": ids["r2"], "stream": "pump", "device": "p2", "severity": "warning",
         "started_at": _utc(T0), "resolved_at": _utc(T0 + 50),
         "resolve_note": "known maintenance"},
    ]  # fmt: skip
    assert run_sql(store, queries["rebaselines"]) == [
        {"stream": "pump", "device": "p3", "at": _utc(T0 + 700), "method": "quantile",
         "threshold_before": 3.0, "threshold_after": 15.5},
    ]  # fmt: skip
