"""End to end: the daemon publishes its alerts over MQTT, through a kill -9 and a restart.

Simulated fleet -> Mosquitto -> daemon (a real ``sentinel run`` process) -> alert events
back on the same broker, collected by a consumer with a persistent session.
"""

from __future__ import annotations

import itertools
import signal
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from sentinel.store import AlertStore
from sentinel.store.outbox import pending_events
from sentinel.store.schema import AlertOutboxRow
from simulators.broker import PrivateBroker
from tests.e2e_helpers import (
    all_alerts,
    daemon_config,
    finish,
    install_model,
    read_json,
    readings_committed,
    run_fleet,
    start_daemon,
    train_fleet_model,
    wait_for,
    write_toml,
)
from tests.mqtt_helpers import consuming, retained

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def small_fleet_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on less clean data than tests/test_app.py's: quicker, and what this
    test needs is alerts to publish, not the best detector."""
    models = tmp_path_factory.mktemp("small-fleet-model")
    train_fleet_model(models, steps=600)
    return models


def _pending(url: str) -> int:
    store = AlertStore(url)
    store.open()
    try:
        return len(pending_events(store.engine, 100_000))
    finally:
        store.close()


def _outbox(url: str) -> dict[tuple[str, int], str]:
    store = AlertStore(url)
    store.open()
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(AlertOutboxRow.uid, AlertOutboxRow.seq, AlertOutboxRow.event)
            )
            return {(r.uid, r.seq): r.event for r in rows}
    finally:
        store.close()


@pytest.mark.timeout(900)  # the model's training shares the CPU with the rest
def test_daemon_publishes_alerts_and_availability_through_a_kill(
    private_broker: PrivateBroker, small_fleet_model: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    install_model(small_fleet_model, state)
    url = f"sqlite:///{state / 'sentinel.db'}"
    prefix = f"e2e{uuid.uuid4().hex[:6]}"
    config = daemon_config(
        state, private_broker, database_url=url, publish={"prefix": prefix, "ha_discovery": True}
    )
    config_path = write_toml(tmp_path / "sentinel.toml", config)
    log = tmp_path / "daemon.log"
    status = f"{prefix}/status"

    with consuming(private_broker, f"{prefix}/#", persistent=True) as consumer:
        daemon = start_daemon(config_path, log)
        wait_for(lambda: b"mqtt_subscribed" in log.read_bytes(), 60, "the daemon to subscribe")
        wait_for(lambda: bool(consumer.on(status)), 60, "online")
        fleet = run_fleet(
            private_broker,
            tmp_path,
            *("--devices", "4", "--rate", "150", "--steps", "2400", "--step", "1"),
            *("--seed", "5", "--warmup", "300", "--anomaly-rate", "8"),
        )
        wait_for(lambda: readings_committed(url) > 4000, 60, "the daemon to take in readings")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(120)
        # The broker publishes our Last Will as soon as the connection dies.
        wait_for(lambda: consumer.on(status)[-1].payload == b"offline", 60, "the Last Will")
        killed_with = _pending(url)

        daemon = start_daemon(config_path, log)
        wait_for(lambda: consumer.on(status)[-1].payload == b"online", 60, "online again")
        finish(fleet)
        total = read_json(tmp_path / "summary.json")["total"]
        wait_for(lambda: readings_committed(url) >= total, 120, "every reading committed")
        wait_for(lambda: _pending(url) == 0, 60, "the outbox drained")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(120) == 0
        wait_for(lambda: consumer.on(status)[-1].payload == b"offline", 60, "offline on stop")
        received = consumer.events()

    alerts = all_alerts(url)
    outbox = _outbox(url)
    assert alerts, "the scenario injects anomalies: some alerts are expected"
    unique = {(e["uid"], e["seq"]): e for e in received}
    print(
        f"\n{len(alerts)} alerts over {sum(a.windows for a in alerts)} anomalous windows, "
        f"{len(outbox)} events, {len(received)} messages "
        f"({len(received) - len(unique)} duplicates); {killed_with} unpublished at the kill"
    )
    assert set(unique) == set(outbox), "every event arrived, none missing, none extra"
    assert {e["uid"] for e in received} == {a.uid for a in alerts}
    for alert in alerts:
        events = sorted(
            (e for e in unique.values() if e["uid"] == alert.uid), key=lambda e: e["seq"]
        )
        assert events[0]["event"] == "new"
        assert events[0]["id"] == alert.id
        # Each opening is a ``new`` that an ``end`` closes; an alert that turns anomalous
        # again within alerts.cooldown reopens under its uid (a new/end pair per opening).
        kinds = [e["event"] for e in events]
        for before, after in itertools.pairwise(kinds):
            assert (before == "end") == (after == "new"), kinds
        assert all(e["reason"] == "reopened" for e in events[1:] if e["event"] == "new")
        openings = kinds.count("new")
        assert openings <= alert.windows
        # Few messages per alert: not one per anomalous window.
        assert kinds.count("update") <= alert.windows // 2, kinds
        if alert.ended_at is not None:
            assert events[-1]["event"] == "end"
            assert events[-1]["windows"] == alert.windows
    # Home Assistant: a binary_sensor per pump, and the availability it points at.
    configs = retained(private_broker, "homeassistant/binary_sensor/#", count=4)
    assert {m.json()["state_topic"] for m in configs} == {
        f"{prefix}/state/pump/pump-{n:03d}" for n in range(4)
    }
    # The score sensors' state: the committed score history, through the daemon's wiring.
    scores = retained(private_broker, f"{prefix}/score/pump/#", count=4)
    assert {m.topic for m in scores} == {f"{prefix}/score/pump/pump-{n:03d}" for n in range(4)}
    assert all(m.json()["windows"] > 0 and m.json()["ratio"] >= 0 for m in scores)
