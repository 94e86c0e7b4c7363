"""Device state against a real Mosquitto (issue #19): a far-future timestamp blinds no
device, a flood of device names is capped and forgotten, and an operator can see and reset
a device's state while the daemon runs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from sentinel.cli.main import main
from sentinel.config import config_to_toml
from sentinel.records import DeviceProgress, WriteBatch
from sentinel.store import AlertStore
from simulators.broker import PrivateBroker, Publisher
from simulators.fleet import FEATURES
from tests.e2e_helpers import (
    BrokerAddress,
    NoBroker,
    daemon_config,
    readings_committed,
    running_app,
    wait_for,
)

pytestmark = pytest.mark.integration


def payload(ts: Any, value: float = 1.0) -> bytes:
    return json.dumps({"ts": ts, **{f: value for f in FEATURES}}).encode()


def config_for(
    tmp_path: Path, broker: BrokerAddress, database_url: str, **sections: Any
) -> dict[str, Any]:
    return daemon_config(
        tmp_path / "state",
        broker,
        database_url=database_url,
        client_id=f"devices-{tmp_path.name}"[:60],
        retrain={"enabled": False},
        **sections,
    )


def stored(url: str) -> dict[tuple[str, str], Any]:
    store = AlertStore(url)
    store.open()
    try:
        return store.device_progress()
    finally:
        store.close()


def publish_all(broker: PrivateBroker, messages: list[tuple[str, bytes]]) -> None:
    publisher = Publisher(broker.url, protocol=broker.protocol)
    publisher.start()
    for topic, body in messages:
        publisher.publish(topic, body)
    assert publisher.finish(30) == 0, "the broker did not take every message"


def test_a_far_future_timestamp_is_refused_and_blinds_no_device(
    mqtt_broker: PrivateBroker, tmp_path: Path, database_url: str
) -> None:
    config = config_for(tmp_path, mqtt_broker, database_url)
    url = config["database"]["url"]
    now = time.time()
    with running_app(config) as running:
        pipeline = running.app.pipeline
        assert pipeline is not None
        publish_all(
            mqtt_broker,
            [
                ("plant/p1/pump", payload(now - 10)),
                ("plant/p1/pump", payload("9999-12-31T00:00:00Z")),
                ("plant/p1/pump", payload(99_999_999_999)),  # epoch seconds: year 5138
                ("plant/p1/pump", payload(now - 5)),
            ],
        )
        wait_for(lambda: readings_committed(url) == 2, 30, "both genuine readings committed")
        assert pipeline.rejections.as_dict() == {"future_timestamp": 2}
        metrics = generate_latest(running.app.metrics.registry).decode()
        assert 'sentinel_readings_dropped_total{reason="future_timestamp"} 2.0' in metrics
    assert running.result == [0]
    progress = stored(url)[("pump", "p1")]
    assert (progress.last_ts, progress.readings) == (pytest.approx(now - 5), 2)


def test_a_flood_of_device_names_is_capped_acknowledged_and_forgotten_when_idle(
    mqtt_broker: PrivateBroker, tmp_path: Path, database_url: str
) -> None:
    cap, flood = 50, 200
    config = config_for(tmp_path, mqtt_broker, database_url)
    config["streams"] = [{**config["streams"][0], "max_devices": cap}]
    url = config["database"]["url"]
    now = time.time()
    names = [f"flood-{i:04d}" for i in range(flood)]
    with running_app(config) as running:
        pipeline = running.app.pipeline
        assert pipeline is not None
        publish_all(mqtt_broker, [(f"plant/{n}/pump", payload(now - 60)) for n in names])
        wait_for(
            lambda: pipeline.rejections.as_dict().get("device_limit") == flood - cap,
            30,
            "the devices beyond the cap refused",
        )
        wait_for(lambda: readings_committed(url) == cap, 30, "the first devices committed")
        assert pipeline.devices_held() == {"pump": cap}
        # The devices held keep working; a new one is still refused.
        held = sorted(d for _, d in stored(url))
        publish_all(
            mqtt_broker,
            [(f"plant/{held[0]}/pump", payload(now - 30)), ("plant/another/pump", payload(now))],
        )
        wait_for(lambda: readings_committed(url) == cap + 1, 30, "a held device's reading")
        wait_for(lambda: pipeline.stats.messages == flood + 2, 30, "every message taken")
        assert pipeline.rejections.as_dict() == {"device_limit": flood - cap + 1}
        metrics = generate_latest(running.app.metrics.registry).decode()
        assert f'sentinel_devices{{stream="pump"}} {cap}.0' in metrics
        assert f'sentinel_readings_dropped_total{{reason="device_limit"}} {flood - cap + 1}.0' in (
            metrics
        )
    assert running.result == [0]

    # Restarted on the same session: the refused messages were acknowledged, so the broker
    # redelivers none of them; only the marker published now arrives. Devices silent for a
    # second now leave memory, and come back from the database.
    config["ingest"] = {"device_idle": 1}
    config["windows"] = {**config["windows"], "max_gap": 1}
    with running_app(config) as running:
        again = running.app.pipeline
        assert again is not None
        publish_all(mqtt_broker, [(f"plant/{held[0]}/pump", payload(now - 30))])
        # Recalled from device_state: the same timestamp again is a duplicate.
        wait_for(lambda: again.rejections.as_dict() == {"duplicate": 1}, 30, "the marker judged")
        assert again.stats.messages == 1, "refused messages were redelivered"
        wait_for(lambda: again.devices_held() == {"pump": 0}, 30, "the idle device evicted")
        assert again.stats.evicted == 1
        # Room again: a device refused before is taken now.
        publish_all(mqtt_broker, [(f"plant/{names[-1]}/pump", payload(now))])
        wait_for(lambda: readings_committed(url) == cap + 2, 30, "a refused device, taken now")
    assert running.result == [0]
    assert ("pump", names[-1]) in stored(url)


def test_an_operator_sees_and_resets_a_blinded_device_while_the_daemon_runs(
    mqtt_broker: PrivateBroker,
    tmp_path: Path,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A database from before the skew check: p1's stored last_ts is in year 9999. The daemon
    warns at start; its genuine readings are out of order until `sentinel devices reset`,
    which reaches the running daemon (retraining off: the control socket is there anyway),
    and which no later commit of the daemon undoes."""
    config = config_for(tmp_path, mqtt_broker, database_url)
    url = config["database"]["url"]
    cfg = tmp_path / "sentinel.toml"
    cfg.write_text(config_to_toml(config))
    future, now = 253_402_214_400.0, time.time()
    # A publisher blinded many more: more names than one control request carries.
    many = [f"{'x' * 100}-{i:03d}" for i in range(800)]
    store = AlertStore(url)
    store.open()
    store.migrate()
    store.write(
        [
            WriteBatch(
                progress=(
                    DeviceProgress("pump", "p1", future, 40),
                    DeviceProgress("pump", "p2", now - 100, 40),
                    *(DeviceProgress("pump", name, future, 1) for name in many),
                )
            )
        ]
    )
    store.close()
    with capture_logs() as logs, running_app(config) as running:
        pipeline = running.app.pipeline
        assert pipeline is not None
        [warning] = [e for e in logs if e["event"] == "device_state_in_future"]
        assert warning["devices"] == 1 + len(many)
        assert warning["examples"][0] == "pump/p1"
        assert "sentinel devices reset" in warning["fix"]
        publish_all(mqtt_broker, [("plant/p1/pump", payload(now - 20))])
        wait_for(lambda: pipeline.rejections.as_dict() == {"out_of_order": 1}, 30, "p1 blinded")

        capsys.readouterr()
        assert main(["devices", "list", "--config", str(cfg)]) == 0
        listed = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()[1:]}
        assert "ahead of the clock" in listed["p1"]
        assert "ahead of the clock" not in listed["p2"]

        assert main(["devices", "reset", "pump", "--future", "--config", str(cfg)]) == 0
        assert "reset 801 device(s) in the running daemon and its database" in (
            capsys.readouterr().out
        )
        publish_all(mqtt_broker, [("plant/p1/pump", payload(now - 10))])
        wait_for(lambda: pipeline.stats.readings == 1, 30, "p1's next reading taken")
        wait_for(lambda: ("pump", "p1") in stored(url), 30, "p1's progress committed")
    assert running.result == [0]
    assert set(stored(url)) == {("pump", "p1"), ("pump", "p2")}
    progress = stored(url)[("pump", "p1")]
    assert (progress.last_ts, progress.readings) == (pytest.approx(now - 10), 1)
    store = AlertStore(url)
    store.open()
    try:
        [event] = store.audit_events(device="p1")
    finally:
        store.close()
    assert event["kind"] == "device_reset"
    assert (event["detail"]["last_ts"], event["detail"]["readings"]) == (future, 40)


def test_without_a_daemon_the_reset_is_done_in_the_database(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, NoBroker(), database_url)
    url = config["database"]["url"]
    cfg = tmp_path / "sentinel.toml"
    cfg.write_text(config_to_toml(config))
    store = AlertStore(url)
    store.open()
    store.migrate()
    store.write([WriteBatch(progress=(DeviceProgress("pump", "p1", 253_402_214_400.0, 3),))])
    store.close()
    assert main(["devices", "reset", "pump", "p1", "ghost", "--config", str(cfg)]) == 0
    captured = capsys.readouterr()
    assert "reset 1 device(s) in the database (no running daemon answered)" in captured.out
    assert "no state stored or held for: ghost" in captured.err
    assert stored(url) == {}
    assert main(["devices", "reset", "pump", "ghost", "--config", str(cfg)]) == 1
    capsys.readouterr()
    assert main(["devices", "list", "--database", url, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
