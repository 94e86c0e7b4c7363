"""The daemon on hourly meters with the default time settings (issue #21, cause 1).

One device reading once an hour, published to a real Mosquitto: the reservoir keeps enough
readings for the cold start (its age of 14 days cut it back to 337 readings at every prune,
fewer than the 2,300 the cold start waits for: the daemon never trained), the model learns
the hourly interval, and a level fault days later becomes an alert that starts inside it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sentinel.model.registry import ModelRegistry
from simulators.broker import PrivateBroker, Publisher
from tests.e2e_helpers import (
    TRAINING_WAIT,
    TRAINS_IN_BODY,
    all_alerts,
    daemon_config,
    readings_committed,
    running_app,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOUR = 3600.0
WARMUP, TEST = 2_400, 200
FAULT = (WARMUP + 80, WARMUP + 120)  # readings offset by 8 noise scales


def _series() -> tuple[np.ndarray, np.ndarray]:
    """Two channels with a daily cycle (24 readings) and noise, the fault on the first."""
    rng = np.random.default_rng(5)
    i = np.arange(WARMUP + TEST)
    day = 2 * np.pi * i / 24
    flow = 10 + 2 * np.sin(day) + 0.2 * rng.standard_normal(i.size)
    temp = 40 + 3 * np.cos(day) + 0.2 * rng.standard_normal(i.size)
    flow[FAULT[0] : FAULT[1]] += 8 * 0.2 * 5
    # The newest reading an hour ago: no timestamp is ahead of the daemon's clock.
    ts = time.time() - (i.size - i) * HOUR
    return ts, np.stack([flow, temp], axis=1)


@TRAINS_IN_BODY
def test_hourly_meter_trains_and_alerts_on_defaults(
    mqtt_broker: PrivateBroker, tmp_path: Path, database_url: str
) -> None:
    ts, values = _series()
    config = daemon_config(
        tmp_path / "state",
        mqtt_broker,
        database_url=database_url,
        client_id=f"hourly-{tmp_path.name}",
        windows={"max_gap": None},  # auto, as shipped
        cold_start={"readings": 2_300},
    )
    config["streams"] = [
        {"name": "meter", "topic": "site/{device}/meter", "features": ["flow", "temp"]}
    ]
    publisher = Publisher(mqtt_broker.url, protocol=mqtt_broker.protocol)
    publisher.start()

    def publish(rows: range) -> None:
        for k in rows:
            payload = {"ts": float(ts[k]), "flow": float(values[k, 0]), "temp": float(values[k, 1])}
            publisher.publish("site/m1/meter", json.dumps(payload).encode())

    with running_app(config) as running:
        pipeline = running.app.pipeline
        assert pipeline is not None
        publish(range(WARMUP))
        wait_for(
            lambda: pipeline.has_model("meter"), TRAINING_WAIT, "cold-start training on hourly data"
        )
        publish(range(WARMUP, WARMUP + TEST))
        assert publisher.finish(60) == 0
        wait_for(lambda: readings_committed(database_url) == WARMUP + TEST, 120, "all committed")
    assert running.result == [0]

    registry = ModelRegistry(tmp_path / "state" / "models")
    detector = registry.load_active("meter", torch.device("cpu"))
    assert detector is not None
    meta = detector.meta
    assert meta.interval == pytest.approx(HOUR)
    alerts = all_alerts(database_url)
    fault_start, fault_end = ts[FAULT[0]], ts[FAULT[1] - 1]
    window_span = config["windows"]["length"] * HOUR
    # An alert starts at its first evidence, here the fault's first reading itself; the
    # database keeps timestamps to the microsecond, the series has finer ones.
    slack = 1e-3
    hits = [
        a
        for a in alerts
        if fault_start - slack <= a.started_at.timestamp() <= fault_end + window_span
    ]
    assert hits, [a.to_dict() for a in alerts]
    # Before the fault the meter is normal: at most one false alert in the 100 days.
    assert sum(a.started_at.timestamp() < fault_start - slack for a in alerts) <= 1
