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

from sentinel.store import AlertStore
from simulators.broker import PrivateBroker, Publisher
from simulators.fleet import FEATURES
from tests.e2e_helpers import daemon_config, readings_committed, running_app, wait_for

pytestmark = pytest.mark.integration


def payload(ts: Any, value: float = 1.0) -> bytes:
    return json.dumps({"ts": ts, **{f: value for f in FEATURES}}).encode()


def config_for(tmp_path: Path, broker: PrivateBroker, **sections: Any) -> dict[str, Any]:
    state = tmp_path / "state"
    return daemon_config(
        state,
        broker,
        database_url=f"sqlite:///{state / 'sentinel.db'}",
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
    mqtt_broker: PrivateBroker, tmp_path: Path
) -> None:
    config = config_for(tmp_path, mqtt_broker)
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
