"""The daemon's cold start ends with warm per-device state (issue #21, causes 2, 6 and 7):
against a real Mosquitto and a real SQLite database, a device's readings from before its
stream's first model -- collected in memory, or in the retraining reservoir -- are judged
once the model is installed, with alerts suppressed, so its threshold has learnt from them
and its normal pulses are known before its first scored window."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from simulators.broker import PrivateBroker, Publisher
from simulators.fleet import FEATURES
from tests.e2e_helpers import (
    TRAINING_WAIT,
    TRAINS_IN_BODY,
    all_alerts,
    daemon_config,
    running_app,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

READINGS = 700
PERIOD = 50  # readings between the device's normal one-reading pulses on "pressure"


def messages(start: float) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(READINGS):
        values = {f: 10.0 + 0.05 * float(rng.standard_normal()) for f in FEATURES}
        if i % PERIOD == 25:
            values["pressure"] += 1.0  # 20 noise sd
        out.append(("plant/p1/pump", json.dumps({"ts": start + i, **values}).encode()))
    return out


@TRAINS_IN_BODY
@pytest.mark.parametrize("retrain", [False, True], ids=["memory", "reservoir"])
def test_the_first_model_starts_every_device_warm(
    mqtt_broker: PrivateBroker, tmp_path: Path, retrain: bool
) -> None:
    url = f"sqlite:///{tmp_path / 'sentinel.db'}"
    config = daemon_config(
        tmp_path / "state",
        mqtt_broker,
        database_url=url,
        client_id=f"warm-{tmp_path.name}"[:60],
        cold_start={"readings": 600, "span": 0},
        model={"epochs": 3, "hidden_size": 16, "latent_size": 4, "train_stride": 4},
        retrain={"enabled": retrain},
    )
    with running_app(config) as running:
        pipeline = running.app.pipeline
        assert pipeline is not None
        publisher = Publisher(mqtt_broker.url, protocol=mqtt_broker.protocol)
        publisher.start()
        for topic, body in messages(time.time() - READINGS - 10):
            publisher.publish(topic, body)
        assert publisher.finish(30) == 0
        wait_for(
            lambda: pipeline.stats.warm_windows > 0, TRAINING_WAIT, "the first model and warm-up"
        )
        # every reading sent before the model was judged (none after: all were sent first)
        assert pipeline.stats.warm_windows >= (READINGS - 16) // 4
        thresholds = pipeline._thresholds.snapshot("pump")
        assert thresholds["p1"]["normal_seen"] >= 100
        pressure = pipeline._spikes.normal_spikes("pump", "p1")[FEATURES.index("pressure")]
        assert len(pressure) >= 10  # the pulses of the training rows are remembered
    assert all_alerts(url) == []  # the warm-up raises no alert


@TRAINS_IN_BODY
def test_a_restart_during_the_cold_start_keeps_the_readings_before_it(
    mqtt_broker: PrivateBroker, tmp_path: Path
) -> None:
    """The reservoir holds what a restarted daemon trains its first model on; the devices
    warm up on those readings too, not only on the ones since the restart."""
    url = f"sqlite:///{tmp_path / 'sentinel.db'}"
    config = daemon_config(
        tmp_path / "state",
        mqtt_broker,
        database_url=url,
        client_id=f"warm-restart-{tmp_path.name}"[:60],
        cold_start={"readings": 600, "span": 0},
        model={"epochs": 3, "hidden_size": 16, "latent_size": 4, "train_stride": 4},
        retrain={"enabled": True},
    )
    sent = messages(time.time() - READINGS - 10)
    before = 400  # fewer than the cold start needs: no model before the restart

    def publish(part: list[tuple[str, bytes]]) -> None:
        publisher = Publisher(mqtt_broker.url, protocol=mqtt_broker.protocol)
        publisher.start()
        for topic, body in part:
            publisher.publish(topic, body)
        assert publisher.finish(30) == 0

    with running_app(config) as running:
        first = running.app.pipeline
        assert first is not None
        publish(sent[:before])
        wait_for(lambda: first.stats.readings == before, 60, "readings taken")
        assert not first.has_model("pump")
    with running_app(config) as running:  # the restart
        second = running.app.pipeline
        assert second is not None
        publish(sent[before:])
        wait_for(lambda: second.stats.warm_windows > 0, TRAINING_WAIT, "the first model")
        # judged: the readings from before the restart too, not only the 300 after it
        assert second.stats.warm_windows >= (READINGS - 16) // 4
    assert all_alerts(url) == []
