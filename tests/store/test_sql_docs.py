"""The SQL views of revision 0002 and every query in docs/SQL.md, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect

from sentinel.records import AlertStatus, FeatureContribution, WriteBatch
from sentinel.store import AlertStore
from sentinel.store.db import MIGRATIONS_DIR
from tests.store.helpers import T0, documented_queries, make_alert, make_progress, run_sql

VIEWS = {
    "open_alerts",
    "alerts_per_device_day",
    "time_to_acknowledge",
    "score_history_minutes",  # revision 0005
    "score_history_hourly",
}


def _f(*pairs: tuple[str, float]) -> tuple[FeatureContribution, ...]:
    return tuple(FeatureContribution(name, share) for name, share in pairs)


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@pytest.fixture
def sql_store(database_url: str) -> Iterator[AlertStore]:
    store = AlertStore(database_url, busy_timeout_ms=1000)
    store.open()
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def seed_fixed(store: AlertStore) -> dict[str, int]:
    """Four alerts around T0 (2023-11-14 22:13:20 UTC); returns uid -> id."""
    alerts = [
        # Acknowledged while open, two minutes in.
        make_alert(
            "a1",
            device="p1",
            started_at=T0,
            updated_at=T0 + 90.5,
            peak_score=3.0,
            threshold=1.5,
            windows=3,
            top_features=_f(("current", 0.75), ("vibration", 0.25)),
        ),
        # 90 minutes long, closed; acknowledged ten minutes in.
        make_alert(
            "a2",
            device="p1",
            status=AlertStatus.CLOSED,
            started_at=T0 + 3600,
            updated_at=T0 + 9000,
            ended_at=T0 + 9000,
            peak_score=4.0,
            threshold=2.0,
            windows=10,
            top_features=_f(("vibration", 0.6), ("current", 0.4)),
        ),
        # Open, never acknowledged, started after midnight UTC.
        make_alert(
            "a3",
            device="p2",
            started_at=T0 + 7200,
            updated_at=T0 + 7230,
            peak_score=1.2,
            threshold=1.0,
            windows=2,
            top_features=_f(("current", 1.0)),
        ),
        # The day before, another stream.
        make_alert(
            "a4",
            stream="fan",
            device="f1",
            status=AlertStatus.CLOSED,
            started_at=T0 - 86400,
            updated_at=T0 - 86400 + 60.25,
            ended_at=T0 - 86400 + 60.25,
            peak_score=5.0,
            threshold=2.5,
            windows=4,
            model_version="fan-v1",
            top_features=_f(("rpm", 0.8), ("temp", 0.2)),
        ),
    ]
    for alert in alerts:
        store.write([WriteBatch(alerts=(alert,))])
    ids = {r.uid: r.id for r in store.list_alerts()}
    store.acknowledge(ids["a1"], now=_dt(T0 + 120.25))
    store.acknowledge(ids["a2"], note="bearing", now=_dt(T0 + 4200))
    store.acknowledge(ids["a4"], now=_dt(T0 - 86400 + 30))
    return ids


def seed_recent(store: AlertStore, now: float) -> dict[str, int]:
    """Three alerts in the last few days and two devices' progress; returns uid -> id."""
    alerts = [
        make_alert(
            "b1",
            stream="fan",
            device="f2",
            started_at=now - 3600,
            updated_at=now - 3000,
            peak_score=2.0,
            threshold=1.0,
            windows=2,
            model_version="fan-v1",
            top_features=_f(("temp", 1.0)),
        ),
        make_alert(
            "b2",
            stream="fan",
            device="f2",
            status=AlertStatus.CLOSED,
            started_at=now - 2 * 86400,
            updated_at=now - 2 * 86400 + 120,
            ended_at=now - 2 * 86400 + 120,
            peak_score=3.0,
            threshold=1.0,
            windows=3,
            model_version="fan-v1",
            top_features=_f(("temp", 0.9), ("rpm", 0.1)),
        ),
        make_alert(
            "b3",
            device="p3",
            status=AlertStatus.CLOSED,
            started_at=now - 20 * 3600,
            updated_at=now - 20 * 3600 + 60,
            ended_at=now - 20 * 3600 + 60,
            windows=1,
            top_features=_f(("current", 0.5), ("pressure", 0.5)),
        ),
    ]
    for alert in alerts:
        store.write([WriteBatch(alerts=(alert,))])
    store.write(
        [
            WriteBatch(
                progress=(
                    make_progress("p1", last_ts=now - 7200, readings=500),
                    make_progress("f2", last_ts=now - 10, readings=90, stream="fan"),
                )
            )
        ]
    )
    return {r.uid: r.id for r in store.list_alerts()}


def test_views_exist_and_add_no_drift(sql_store: AlertStore) -> None:
    insp = inspect(sql_store.engine)
    assert set(insp.get_view_names()) == VIEWS
    assert not VIEWS & set(insp.get_table_names())
    with sql_store.engine.connect() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection"] = conn
        command.check(cfg)  # raises AutogenerateDiffsDetected on drift


def test_downgrade_drops_views(sql_store: AlertStore) -> None:
    with sql_store.engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    insp = inspect(sql_store.engine)
    assert not VIEWS & set(insp.get_view_names())
    assert "alerts" in insp.get_table_names()


def test_open_alerts_view(sql_store: AlertStore) -> None:
    ids = seed_fixed(sql_store)
    rows = run_sql(sql_store, "SELECT * FROM open_alerts ORDER BY started_at DESC, id DESC")
    assert rows == [
        {
            "id": ids["a3"],
            "stream": "pump",
            "device": "p2",
            "status": "open",
            "started_at": _dt(T0 + 7200),
            "updated_at": _dt(T0 + 7230),
            "duration_seconds": 30.0,
            "peak_score": 1.2,
            "threshold": 1.0,
            "peak_over_threshold": 1.2,
            "model_version": "pump-v1",
            "acknowledged_at": None,
        },
        {
            "id": ids["a1"],
            "stream": "pump",
            "device": "p1",
            "status": "acknowledged",
            "started_at": _dt(T0),
            "updated_at": _dt(T0 + 90.5),
            "duration_seconds": 90.5,
            "peak_score": 3.0,
            "threshold": 1.5,
            "peak_over_threshold": 2.0,
            "model_version": "pump-v1",
            "acknowledged_at": _dt(T0 + 120.25),
        },
    ]


def test_alerts_per_device_day_view(sql_store: AlertStore) -> None:
    seed_fixed(sql_store)
    rows = run_sql(sql_store, "SELECT * FROM alerts_per_device_day ORDER BY day, stream, device")
    assert rows == [
        {"stream": "fan", "device": "f1", "day": "2023-11-13", "alerts": 1,
         "anomalous_windows": 4, "total_alert_seconds": 60.25},
        {"stream": "pump", "device": "p1", "day": "2023-11-14", "alerts": 2,
         "anomalous_windows": 13, "total_alert_seconds": 5490.5},
        {"stream": "pump", "device": "p2", "day": "2023-11-15", "alerts": 1,
         "anomalous_windows": 2, "total_alert_seconds": 30.0},
    ]  # fmt: skip


@pytest.mark.postgres
def test_alerts_per_device_day_ignores_session_time_zone(postgres_url: str) -> None:
    # Only PostgreSQL has a session time zone; the day must still be the UTC date.
    store = AlertStore(postgres_url)
    store.open()
    try:
        store.migrate()
        seed_fixed(store)
        with store.engine.connect() as conn:
            conn.exec_driver_sql("SET TIME ZONE 'Pacific/Kiritimati'")  # UTC+14
            days = conn.exec_driver_sql("SELECT day FROM alerts_per_device_day ORDER BY day")
            assert [d for (d,) in days] == ["2023-11-13", "2023-11-14", "2023-11-15"]
    finally:
        store.close()


def test_time_to_acknowledge_view(sql_store: AlertStore) -> None:
    ids = seed_fixed(sql_store)
    rows = run_sql(sql_store, "SELECT * FROM time_to_acknowledge ORDER BY id")
    assert rows == [
        {"id": ids["a1"], "stream": "pump", "device": "p1", "started_at": _dt(T0),
         "acknowledged_at": _dt(T0 + 120.25), "seconds_to_ack": 120.25},
        {"id": ids["a2"], "stream": "pump", "device": "p1", "started_at": _dt(T0 + 3600),
         "acknowledged_at": _dt(T0 + 4200), "seconds_to_ack": 600.0},
        {"id": ids["a3"], "stream": "pump", "device": "p2", "started_at": _dt(T0 + 7200),
         "acknowledged_at": None, "seconds_to_ack": None},
        {"id": ids["a4"], "stream": "fan", "device": "f1", "started_at": _dt(T0 - 86400),
         "acknowledged_at": _dt(T0 - 86400 + 30), "seconds_to_ack": 30.0},
    ]  # fmt: skip


def _expected(ids: dict[str, int], now: float) -> dict[str, list[dict[str, Any]]]:
    """What each documented query returns on the data of seed_fixed and seed_recent."""
    return {
        "open_now": [
            {"id": ids["b1"], "stream": "fan", "device": "f2", "status": "open",
             "started_at": _dt(now - 3600), "duration_seconds": 600.0,
             "peak_over_threshold": 2.0, "acknowledged_at": None},
            {"id": ids["a3"], "stream": "pump", "device": "p2", "status": "open",
             "started_at": _dt(T0 + 7200), "duration_seconds": 30.0,
             "peak_over_threshold": 1.2, "acknowledged_at": None},
            {"id": ids["a1"], "stream": "pump", "device": "p1", "status": "acknowledged",
             "started_at": _dt(T0), "duration_seconds": 90.5, "peak_over_threshold": 2.0,
             "acknowledged_at": _dt(T0 + 120.25)},
        ],
        "last_24h_by_device": [
            {"stream": "fan", "device": "f2", "alerts": 1, "anomalous_windows": 2},
            {"stream": "pump", "device": "p3", "alerts": 1, "anomalous_windows": 1},
        ],
        "noisiest_devices_week": [
            {"stream": "fan", "device": "f2", "alerts": 2, "anomalous_windows": 5,
             "alert_seconds": 720.0},
            {"stream": "pump", "device": "p3", "alerts": 1, "anomalous_windows": 1,
             "alert_seconds": 60.0},
        ],
        "device_per_day": [
            {"day": "2023-11-14", "alerts": 2, "anomalous_windows": 13,
             "total_alert_seconds": 5490.5},
        ],
        "mean_time_to_ack": [
            {"stream": "fan", "alerts": 3, "acknowledged": 1, "mean_seconds_to_ack": 30.0},
            {"stream": "pump", "alerts": 4, "acknowledged": 2,
             "mean_seconds_to_ack": 360.125},
        ],
        "longer_than_an_hour": [
            {"id": ids["a2"], "stream": "pump", "device": "p1", "status": "closed",
             "started_at": _dt(T0 + 3600), "hours": 1.5},
        ],
        "top_features": [
            {"feature": "current", "alerts": 4, "mean_share": pytest.approx(0.6625)},
            {"feature": "temp", "alerts": 3, "mean_share": pytest.approx(0.7)},
            {"feature": "rpm", "alerts": 2, "mean_share": pytest.approx(0.45)},
            {"feature": "vibration", "alerts": 2, "mean_share": pytest.approx(0.425)},
            {"feature": "pressure", "alerts": 1, "mean_share": pytest.approx(0.5)},
        ],
        "silent_devices": [
            {"stream": "pump", "device": "p1", "last_reading_at": _dt(now - 7200),
             "readings": 500},
        ],
        # Revision 0004; tests/store/test_resolve.py runs these on resolved and audited data.
        "open_by_severity": [{"severity": "info", "alerts": 3}],
        "resolved_by_operators": [],
        "rebaselines": [],
        # Revision 0005; tests/store/test_history.py runs these on score history.
        "device_score_last_hour": [],
        "closest_to_threshold_day": [],
        "before_open_alerts": [],
    }  # fmt: skip


def test_every_documented_query_returns_expectedquery_rows(sql_store: AlertStore) -> None:
    now = float(int(time.time()))  # whole seconds: SQLite's datetime() drops fractions
    seed_fixed(sql_store)
    ids = seed_recent(sql_store, now)
    expected = _expected(ids, now)
    queries = documented_queries(sql_store.dialect)
    # Every query documented for this database has an expectation here, and vice versa.
    assert sorted(queries) == sorted(expected)
    for name, sql in queries.items():
        assert run_sql(sql_store, sql) == expected[name], name
