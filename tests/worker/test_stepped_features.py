"""A set point that an operator steps now and then (sentinel.model.train.stepped_features,
issue #21): the model reads it and leaves it out of its score, and an alert about the
channel that follows it is not blamed on a step that happens during it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sentinel.config import SentinelConfig
from sentinel.model import Detector, TrainOptions, train_detector
from tests.fakes import Harness
from tests.worker.helpers import deliveries, opened

pytestmark = pytest.mark.slow  # trains a real model (once, in the module's fixture)

FEATURES = ["a", "set"]
FAULT, STEP = 700, 715  # readings: a offset for 40 from FAULT; the set point steps at STEP


def signal(n: int, seed: int) -> np.ndarray:
    """A sine, and a set point holding 0 or 5 for 150 readings at a time."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    a = np.sin(2 * np.pi * t / 25) + rng.normal(0, 0.05, n)
    setpoint = 5.0 * ((t // 150) % 2)
    return np.column_stack([a, setpoint]).astype(np.float32)


def config() -> SentinelConfig:
    return SentinelConfig.model_validate(
        {
            "streams": [{"name": "pump", "topic": "p/{device}", "features": FEATURES}],
            "windows": {"length": 16, "hop": 4, "max_gap": 100},
            "model": {"hidden_size": 16, "epochs": 12, "learning_rate": 1e-2, "seed": 1},
        }
    )


@pytest.fixture(scope="module")
def detector() -> Detector:
    cfg = config()
    options = TrainOptions("pump", tuple(FEATURES), cfg.windows.length, cfg.model)
    return train_detector([signal(600, 0)], options, device=torch.device("cpu"))


def test_an_alert_during_a_set_point_step_names_the_channel_that_broke(
    detector: Detector,
) -> None:
    assert getattr(detector.meta, "stepped_features", None) == ("set",)
    values = signal(1000, 7)
    values[:, 1] = 0.0
    values[STEP:, 1] = 5.0
    values[FAULT : FAULT + 40, 0] += 3.0
    h = Harness({"pump": detector}, config())
    h.run(deliveries(values), until=lambda: h.pipeline.stats.readings == len(values))
    fault = [a for a in opened(h.alerts) if FAULT <= a.started_at < FAULT + 40]
    assert fault
    assert all(a.top_features[0].feature == "a" for a in fault)
    assert all(c.feature != "set" for a in fault for c in a.top_features)
