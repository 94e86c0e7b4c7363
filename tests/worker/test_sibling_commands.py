"""A command channel whose command the training data never held, beside channels of commands
it did (issue #21, spacecraft telemetry: one-hot command channels, 0 but for a one-reading 1
when sent), end to end with a real LSTM-AE. Before: every such channel alerted at its first
pulse (``rare_commands``: 2-3 false alerts a series; a file with dozens of such channels,
dozens). Now the first pulse, from the rest its siblings share to the value they pulse to,
is one of theirs; the channel held at that value still alerts once, naming it, and the
telemetry's fault is still found."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sentinel.config import SentinelConfig
from sentinel.errors import ModelError
from sentinel.judge.alerts import alert_checks
from sentinel.model import LstmAeDetector, LstmAeMeta, TrainOptions, train_detector
from tests.fakes import Harness
from tests.worker.helpers import deliveries, opened, small_config

pytestmark = pytest.mark.slow  # trains a real model (once, in the module's fixture)

FEATURES = ["telemetry", "cmd_seen", "cmd_new"]
NEW = (150, 310, 470, 620)  # cmd_new's pulses: never sent in training
HELD = 800  # cmd_new goes to 1 and stays
FAULT = 700  # telemetry offset for 40 readings


def signal(n: int, seed: int) -> np.ndarray:
    """Telemetry on a 25-reading cycle; cmd_seen pulsed every 60-140 readings; cmd_new 0."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    telemetry = np.sin(2 * np.pi * t / 25) + rng.normal(0, 0.05, n)
    seen = np.zeros(n)
    at = int(rng.integers(20, 60))
    while at < n:
        seen[at] = 1.0
        at += int(rng.integers(60, 140))
    return np.column_stack([telemetry, seen, np.zeros(n)]).astype(np.float32)


def config(sibling_pulses: bool = True) -> SentinelConfig:
    return small_config(FEATURES, constants={"sibling_pulses": sibling_pulses})


@pytest.fixture(scope="module")
def detector() -> LstmAeDetector:
    cfg = config()
    options = TrainOptions("pump", tuple(FEATURES), cfg.windows.length, cfg.model)
    return train_detector([signal(800, 0)], options, device=torch.device("cpu"))


def test_the_model_keeps_its_pulse_trains(detector: LstmAeDetector, tmp_path: Path) -> None:
    assert detector.meta.constant_features == {"cmd_new": 0.0}
    assert detector.meta.pulse_features == {"cmd_seen": (0.0, 1.0)}
    assert detector.pulse_shapes() == ((0.0, 1.0),)
    detector.save(tmp_path / "m")
    loaded = LstmAeDetector.load(tmp_path / "m", torch.device("cpu"))
    assert loaded.pulse_shapes() == ((0.0, 1.0),)
    data = detector.meta.to_dict()
    assert data["pulse_features"] == {"cmd_seen": [0.0, 1.0]}
    del data["pulse_features"]  # a model saved before pulse trains were kept
    assert LstmAeMeta.from_json(json.dumps(data)).pulse_features == {}
    for bad, match in (
        ({"nope": [0.0, 1.0]}, "not among the features"),
        ({"cmd_seen": [0.0]}, "a rest and pulse values"),
        ({"cmd_seen": 1.0}, "must be a list"),
    ):
        data["pulse_features"] = bad
        with pytest.raises(ModelError, match=match):
            LstmAeMeta.from_json(json.dumps(data))


def run(detector: LstmAeDetector, sibling_pulses: bool) -> tuple[list[int], list[float]]:
    """cmd_new pulsed at ``NEW`` then held from ``HELD``, the fault on telemetry: the
    pulses and the hold whose alert names cmd_new."""
    values = signal(1000, 7)
    values[list(NEW), 2] = 1.0
    values[HELD:, 2] = 1.0
    values[FAULT : FAULT + 40, 0] += 3.0
    h = Harness({"pump": detector}, config(sibling_pulses))
    h.run(deliveries(values), until=lambda: h.pipeline.stats.readings == len(values))
    assert h.pipeline.stats.readings == len(values)
    alerts = opened(h.alerts)
    fault = [a for a in alerts if FAULT <= a.started_at < FAULT + 40]
    assert len(fault) == 1, [(a.started_at, alert_checks(a)) for a in alerts]
    assert fault[0].top_features[0].feature == "telemetry"
    named = [a for a in alerts if "constant:cmd_new" in alert_checks(a)]
    pulses = sorted(p for p in NEW for a in named if p <= a.started_at < p + 16)
    held = [a.started_at for a in named if HELD <= a.started_at < HELD + 16]
    assert len(named) == len(pulses) + len(held), "no other alert names cmd_new"
    return pulses, held


def test_a_new_commands_pulses_are_its_siblings_and_its_hold_alerts_once(
    detector: LstmAeDetector,
) -> None:
    pulses, held = run(detector, sibling_pulses=True)
    assert pulses == []
    assert len(held) == 1
    # off: its first pulse alerts, as a departure (accept_returns 1 takes the rest)
    pulses, held = run(detector, sibling_pulses=False)
    assert pulses == [NEW[0]]
    assert held == [], "the value is accepted after its first return"
