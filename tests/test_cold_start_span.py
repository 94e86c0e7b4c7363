"""The daemon's first model waits for ``cold_start.span`` of the stream's own time (issue
#21): against a real Mosquitto and a real SQLite database, readings that are many times
``cold_start.readings`` but cover less than the span train nothing; the model that follows
learnt from the whole span. In memory (retraining off) and from the reservoir (on)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sentinel.config import SentinelConfig
from sentinel.model import ModelRegistry
from simulators.broker import PrivateBroker, Publisher
from simulators.fleet import FEATURES
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

SPAN = 600.0  # seconds of the stream's time the first model must cover
READINGS = 200  # the count asked beside it: met long before the span
BEFORE, AFTER = 500, 150  # readings sent, one a second: 499 s, then 649 s


def messages(start: float) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(5)
    return [
        (
            "plant/p1/pump",
            json.dumps(
                {"ts": start + i, **{f: 10.0 + float(rng.standard_normal()) for f in FEATURES}}
            ).encode(),
        )
        for i in range(BEFORE + AFTER)
    ]


def span_config(broker: PrivateBroker, tmp_path: Path, retrain: bool = True) -> dict[str, Any]:
    """The daemon on SQLite with a small, fast model and a cold start of READINGS over SPAN."""
    return daemon_config(
        tmp_path / "state",
        broker,
        database_url=f"sqlite:///{tmp_path / 'sentinel.db'}",
        client_id=f"span-{tmp_path.name}"[:60],
        cold_start={"readings": READINGS, "span": SPAN},
        model={"epochs": 2, "hidden_size": 16, "latent_size": 4, "train_stride": 4},
        retrain={"enabled": retrain},
    )


def publish(broker: PrivateBroker, part: list[tuple[str, bytes]]) -> None:
    publisher = Publisher(broker.url, protocol=broker.protocol)
    publisher.start()
    for topic, body in part:
        publisher.publish(topic, body)
    assert publisher.finish(30) == 0


@TRAINS_IN_BODY
@pytest.mark.parametrize("retrain", [False, True], ids=["memory", "reservoir"])
def test_the_first_model_waits_for_the_span_and_learns_all_of_it(
    mqtt_broker: PrivateBroker, tmp_path: Path, retrain: bool
) -> None:
    config = span_config(mqtt_broker, tmp_path, retrain=retrain)
    sent = messages(time.time() - BEFORE - AFTER - 10)
    with running_app(config) as running:
        app, pipeline = running.app, running.app.pipeline
        assert pipeline is not None
        publish(mqtt_broker, sent[:BEFORE])
        wait_for(lambda: pipeline.stats.readings == BEFORE, 60, "the first readings taken")
        if app.retrain is not None:
            # The retrainer has looked at all of them, and logged progress short of the end:
            # 499 s of 600 is its 16th twentieth (a count-only rule would have trained).
            tap, retrainer = app.retrain.tap, app.retrain.retrainer
            wait_for(lambda: tap.count("pump") == BEFORE, 60, "the readings in the reservoir")
            wait_for(lambda: retrainer._cold_logged.get("pump") == 16, 60, "a look at them")
        assert not pipeline.has_model("pump")
        # /healthz says why there is no model yet, and how long is left.
        assert app.health.report().problems == (
            "model: no model yet for stream 'pump': cold start 83%, 500 readings (200 needed) "
            "covering 499 s of its time (600 needed)",
        )
        progress = app.metrics.registry.get_sample_value(
            "sentinel_cold_start_progress", {"stream": "pump"}
        )
        assert progress == pytest.approx(499 / SPAN)
        publish(mqtt_broker, sent[BEFORE:])
        wait_for(lambda: pipeline.has_model("pump"), TRAINING_WAIT, "the first model")
        version = pipeline.model_versions()["pump"]
    assert version is not None
    models = SentinelConfig.model_validate(config).models_dir
    training = ModelRegistry(models).load_version("pump", version, None).meta.training
    # It learnt from the span's readings, not the first READINGS of them.
    assert float(training["last_ts"]) - float(training["first_ts"]) >= SPAN


def device_messages(device: str, start: float, n: int, spike_at: int) -> list[tuple[str, bytes]]:
    """``n`` readings a second of normal noise, one reading far off every channel."""
    rng = np.random.default_rng(6)
    out = []
    for i in range(n):
        values = {f: 10.0 + float(rng.standard_normal()) for f in FEATURES}
        if i == spike_at:
            values = {f: v + 40.0 for f, v in values.items()}
        out.append((f"plant/{device}/pump", json.dumps({"ts": start + i, **values}).encode()))
    return out


@TRAINS_IN_BODY
def test_a_device_that_joins_after_the_model_learns_for_the_span_then_alerts(
    mqtt_broker: PrivateBroker, tmp_path: Path
) -> None:
    config = span_config(mqtt_broker, tmp_path)
    url = config["database"]["url"]
    start = time.time() - 2 * (BEFORE + AFTER) - 1000
    with running_app(config) as running:
        pipeline = running.app.pipeline
        assert pipeline is not None
        publish(mqtt_broker, messages(start))  # p1: the cold start, and the model
        wait_for(lambda: pipeline.has_model("pump"), TRAINING_WAIT, "the first model")
        joined = start + BEFORE + AFTER
        # p2 joins: a spike 100 s in, inside its first SPAN seconds, alerts nothing ...
        publish(mqtt_broker, device_messages("p2", joined, 300, spike_at=100))
        sent = BEFORE + AFTER + 300
        wait_for(lambda: readings_committed(url) == sent, 60, "p2's readings committed")
        assert pipeline.stats.learning_windows > 0
        assert [a for a in all_alerts(url) if a.device == "p2"] == []
        # ... one after them does.
        later = device_messages("p2", joined + 300, 500, spike_at=400)
        publish(mqtt_broker, later)
        wait_for(
            lambda: any(a.device == "p2" for a in all_alerts(url)), 60, "p2's alert after its span"
        )
    [alert] = [a for a in all_alerts(url) if a.device == "p2"]
    assert alert.started_at.timestamp() >= joined + SPAN
