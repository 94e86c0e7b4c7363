"""/metrics and /healthz against real outages: the broker stopped, the database failing."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from structlog.testing import capture_logs

from sentinel.daemon.app import EXIT_WRITER_GAVE_UP
from sentinel.store import AlertStore
from simulators.broker import PrivateBroker
from tests.e2e_helpers import daemon_config, readings_committed, running_app, wait_for
from tests.ops_helpers import (
    VERSION,
    healthz,
    install_untrained_model,
    metrics,
    publish_fleet,
    sample,
)

pytestmark = [pytest.mark.integration]


def test_healthz_and_metrics_follow_a_broker_outage(
    private_broker: PrivateBroker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    install_untrained_model(state)
    url = f"sqlite:///{state / 'sentinel.db'}"
    config = daemon_config(state, private_broker, database_url=url, client_id="ops-broker")
    with running_app(config) as running:
        server = running.app.health_server
        assert server is not None
        port = server.port
        sent = publish_fleet(private_broker.url, private_broker.protocol, devices=2, steps=100)
        wait_for(lambda: readings_committed(url) == sent, 60, "readings committed")
        status, body = healthz(port)
        assert (status, body["status"]) == (200, "ok"), body
        assert body["checks"]["models"] == {"pump": VERSION}
        scraped = metrics(port)
        assert sample(scraped, "sentinel_readings_total") == sent
        assert sample(scraped, "sentinel_mqtt_connected") == 1
        assert sample(scraped, "sentinel_model_active", stream="pump", version=VERSION) == 1
        windows = sample(scraped, "sentinel_windows_total", outcome="scored")
        assert windows > 0
        assert sample(scraped, "sentinel_scoring_seconds_count", stream="pump") > 0
        assert sample(scraped, "sentinel_database_up") == 1
        pipeline = running.app.pipeline
        assert pipeline is not None
        for event in ("opened", "reopened", "closed"):
            counted = getattr(pipeline.stats, f"alerts_{event}")
            assert sample(scraped, "sentinel_alerts_total", event=event) == counted
        broken = sample(scraped, "sentinel_windows_relation_broken_total")
        assert broken == pipeline.stats.relation_broken
        assert sample(scraped, "process_resident_memory_bytes") > 10e6
        assert sample(scraped, "sentinel_state_dir_bytes") > 0
        # The same numbers as a plain dict, for a periodic stats message.
        stats = running.app.metrics.stats()
        assert stats is not None
        assert stats["readings"] == sent
        assert stats["mqtt_connected"] is True
        assert stats["models"] == {"pump": VERSION}
        assert json.loads(json.dumps(stats)) == stats

        private_broker.stop()
        wait_for(lambda: healthz(port)[0] == 503, 60, "/healthz to report the outage")
        status, body = healthz(port)
        assert body["status"] == "degraded"
        assert any(p.startswith("mqtt:") for p in body["problems"]), body
        assert body["checks"]["mqtt"]["connected"] is False
        assert sample(metrics(port), "sentinel_mqtt_connected") == 0

        private_broker.start()
        wait_for(lambda: healthz(port)[0] == 200, 60, "/healthz to recover")
        scraped = metrics(port)
        assert sample(scraped, "sentinel_mqtt_connected") == 1
        assert sample(scraped, "sentinel_mqtt_connects_total") >= 2


def test_healthz_without_a_model_is_degraded(mqtt_broker: PrivateBroker, tmp_path: Path) -> None:
    config = daemon_config(
        tmp_path / "state", mqtt_broker, client_id="ops-nomodel", health={"port": 0}
    )
    with running_app(config) as running:
        assert running.app.health_server is not None
        port = running.app.health_server.port
        status, body = healthz(port)
        assert status == 503
        # How far the cold start is (daemon_config's counts readings alone: span 0)
        assert body["problems"] == [
            "model: no model yet for stream 'pump': cold start 0%, 0 readings (2,000 needed)"
        ]
        assert body["checks"]["cold_start"] == {
            "pump": {"collected": 0, "covered_s": 0.0, "progress": 0.0}
        }
        assert body["checks"]["learning_devices"] == {"pump": 0}
        assert sample(metrics(port), "sentinel_model_active", stream="pump", version="") == 0
        # the cold start's progress is there, at 0 (sample() reads a missing series as 0)
        scraped = metrics(port)
        assert scraped[("sentinel_cold_start_progress", (("stream", "pump"),))] == 0


def test_readings_the_reservoir_cannot_store_are_counted_in_metrics(
    mqtt_broker: PrivateBroker, tmp_path: Path
) -> None:
    """A full disk under the retraining reservoir: detection goes on, and /metrics counts
    every reading that will never train a model, instead of a log line per pass."""
    state = tmp_path / "state"
    install_untrained_model(state)
    url = f"sqlite:///{state / 'sentinel.db'}"
    config = daemon_config(state, mqtt_broker, database_url=url, client_id="ops-reservoir")
    with capture_logs() as logs, running_app(config) as running:
        assert running.app.retrain is not None
        assert running.app.health_server is not None
        tap = running.app.retrain.tap
        reservoir = tap._reservoirs["pump"]
        # SQLite's own "database or disk is full": the file may not grow by a page.
        conn = reservoir._db()
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
        sent = publish_fleet(mqtt_broker.url, mqtt_broker.protocol, devices=2, steps=300)
        wait_for(lambda: readings_committed(url) == sent, 60, "readings committed")
        lost = sample(
            metrics(running.app.health_server.port),
            "sentinel_reservoir_lost_readings_total",
            stream="pump",
        )
        assert lost == tap.lost["pump"]
        assert lost > 0
        assert lost + reservoir.count == sent  # each reading stored or counted, never both
    events = [e["event"] for e in logs]
    assert "reservoir_write_failed" in events
    assert "pipeline_tap_failed" not in events


def test_health_endpoints_off_loopback_are_warned_of_at_start(
    mqtt_broker: PrivateBroker, tmp_path: Path
) -> None:
    """They serve without authentication: the daemon runs, and says so in its log."""
    config = daemon_config(
        tmp_path / "state", mqtt_broker, client_id="ops-exposed", health={"bind": "0.0.0.0"}
    )
    with capture_logs() as logs, running_app(config) as running:
        assert running.app.health_server is not None
        assert healthz(running.app.health_server.port)[0] == 503  # served: no model yet
    warnings = [e for e in logs if e["event"] == "config_warning"]
    assert len(warnings) == 1, warnings
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["detail"].startswith("health.bind: '0.0.0.0' is not a loopback address")


@pytest.mark.allow_log_exceptions  # the writer logs each failed commit with its traceback
def test_healthz_and_metrics_follow_a_locked_sqlite_database(
    mqtt_broker: PrivateBroker, tmp_path: Path
) -> None:
    """Another process holds SQLite's write lock (a backup, a careless sqlite3 shell)."""
    state = tmp_path / "state"
    install_untrained_model(state)
    db = state / "sentinel.db"
    url = f"sqlite:///{db}"
    config = daemon_config(
        state,
        mqtt_broker,
        database_url=url,
        client_id="ops-sqlite",
        health={"port": 0},
        database={"busy_timeout_ms": 100},
    )
    with running_app(config) as running:
        assert running.app.health_server is not None
        port = running.app.health_server.port
        wait_for(lambda: healthz(port)[0] == 200, 60, "healthy start")
        locker = sqlite3.connect(db, timeout=1)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            sent = publish_fleet(mqtt_broker.url, mqtt_broker.protocol, devices=2, steps=50)
            wait_for(lambda: healthz(port)[0] == 503, 60, "/healthz to report the lock")
            body = healthz(port)[1]
            assert any("database is locked" in p for p in body["problems"]), body
            scraped = metrics(port)
            assert sample(scraped, "sentinel_database_write_errors_total") > 0
            assert sample(scraped, "sentinel_database_up") == 0
        finally:
            locker.rollback()
            locker.close()
        wait_for(lambda: healthz(port)[0] == 200, 60, "/healthz to recover")
        wait_for(lambda: readings_committed(url) == sent, 60, "nothing lost in the outage")


@pytest.mark.allow_log_exceptions  # the writer logs each failed commit with its traceback
def test_a_stop_that_leaves_writes_uncommitted_exits_non_zero(
    mqtt_broker: PrivateBroker, tmp_path: Path
) -> None:
    """Issue #19: writer_gave_up still exited 0. The database stays locked through the
    stop: the daemon exits EXIT_WRITER_GAVE_UP, and the next start commits every reading
    (the broker kept them: nothing uncommitted was acknowledged)."""
    state = tmp_path / "state"
    install_untrained_model(state)
    db = state / "sentinel.db"
    url = f"sqlite:///{db}"
    config = daemon_config(
        state,
        mqtt_broker,
        database_url=url,
        client_id="ops-gave-up",
        database={"busy_timeout_ms": 100},
    )
    locker = sqlite3.connect(db, timeout=1)
    try:
        with capture_logs() as logs, running_app(config) as running:
            locker.execute("BEGIN EXCLUSIVE")
            sent = publish_fleet(mqtt_broker.url, mqtt_broker.protocol, devices=2, steps=50)
            health = running.app.health
            wait_for(lambda: not health.report().checks["database"]["ok"], 60, "a failed commit")
        assert running.result == [EXIT_WRITER_GAVE_UP]
        events = [e for e in logs if e["event"] == "sentinel_writes_uncommitted"]
        assert len(events) == 1
        assert events[0]["batches"] > 0
    finally:
        locker.rollback()
        locker.close()
    with running_app(config):
        wait_for(lambda: readings_committed(url) == sent, 60, "the broker's redelivery")


@pytest.mark.postgres
@pytest.mark.allow_log_exceptions
def test_healthz_and_metrics_follow_a_dropped_postgres_database(
    mqtt_broker: PrivateBroker, tmp_path: Path, postgres_url: str
) -> None:
    state = tmp_path / "state"
    install_untrained_model(state)
    config = daemon_config(
        state,
        mqtt_broker,
        database_url=postgres_url,
        client_id="ops-postgres",
        health={"port": 0, "database_probe_interval": 1},
    )
    url = make_url(postgres_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with running_app(config) as running:
            assert running.app.health_server is not None
            port = running.app.health_server.port
            wait_for(lambda: healthz(port)[0] == 200, 60, "healthy start")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{url.database}" WITH (FORCE)'))
            # The probe notices with nothing being written.
            wait_for(lambda: healthz(port)[0] == 503, 60, "/healthz to report the outage")
            body = healthz(port)[1]
            assert any(p.startswith("database:") for p in body["problems"]), body
            sent = publish_fleet(mqtt_broker.url, mqtt_broker.protocol, devices=2, steps=50)
            # Counted where it fails first: the writer's commit, or the worker's read of a
            # device's stored progress (devices it does not hold yet, issue #19).
            wait_for(
                lambda: (
                    sum(
                        sample(metrics(port), f"sentinel_database_{kind}_errors_total")
                        for kind in ("write", "read")
                    )
                    > 0
                ),
                60,
                "a failed database access counted",
            )
            assert sample(metrics(port), "sentinel_database_up") == 0
            # The database comes back (restored from a backup: here, re-created).
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{url.database}"'))
            store = AlertStore(postgres_url)
            store.open()
            store.migrate()
            store.close()
            wait_for(lambda: healthz(port)[0] == 200, 60, "/healthz to recover")
            wait_for(lambda: readings_committed(postgres_url) == sent, 60, "readings committed")
    finally:
        admin.dispose()


def test_stats_are_published_on_mqtt_every_interval(
    private_broker: PrivateBroker, tmp_path: Path
) -> None:
    from tests.simulators.helpers import collecting

    state = tmp_path / "state"
    install_untrained_model(state)
    url = f"sqlite:///{state / 'sentinel.db'}"
    config = daemon_config(state, private_broker, database_url=url, client_id="ops-stats")
    with collecting(private_broker, "sentinel/stats") as received, running_app(config):
        sent = publish_fleet(private_broker.url, private_broker.protocol, devices=2, steps=50)
        wait_for(lambda: readings_committed(url) == sent, 60, "readings committed")
        # running_app logs and publishes stats every 5 s: wait for one that counts them all.
        wait_for(
            lambda: any(json.loads(m.payload)["readings"] == sent for m in received),
            60,
            "a stats message counting every reading",
        )
    stats = json.loads(received[-1].payload)
    assert not received[-1].retain
    assert stats["models"] == {"pump": VERSION}
    assert stats["mqtt_connected"] is True
    assert stats["dropped"] == {}
