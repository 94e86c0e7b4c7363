"""Scenario: a simulated pump fleet with a lasting level shift, through the real pipeline.

The LSTM autoencoder is trained on clean simulated readings; the level shift must raise an
alert, and re-baselining must end it within ``threshold.rebaseline_after`` plus the alert's
closing time instead of alerting on. (DSPOT's lock-out without re-baselining is shown
on synthetic scores in tests/judge/test_rebaseline.py: on this model's heavy-tailed scores
its moving mean sometimes creeps up to a shifted level by itself, sometimes not.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from sentinel.config import SentinelConfig
from sentinel.model import train_detector, training_options
from sentinel.worker.pipeline import Pipeline
from simulators.fleet import FEATURES, FleetSimulator
from simulators.regimes import Recorder, RegimeChange, RegimeScenario, evaluate

pytestmark = pytest.mark.slow

STEP, WINDOW, HOP, TRAIN = 5.0, 16, 4, 800
START = 1_709_251_200.0
REBASELINE = 1800.0
SHIFT_AT = START + TRAIN * STEP + 3600.0
TEST_STEPS = 3 * 720  # three simulated hours


def config(threshold: dict[str, Any]) -> SentinelConfig:
    return SentinelConfig.model_validate(
        {
            "windows": {"length": WINDOW, "hop": HOP, "max_gap": 3 * STEP},
            "model": {"hidden_size": 16, "latent_size": 4, "epochs": 12, "seed": 3},
            "cold_start": {"readings": 2000},
            "threshold": threshold,
            "alerts": {"cooldown": 300},
            "streams": [{"name": "pump", "topic": "p/{device}", "features": FEATURES}],
        }
    )


def scenario(spike_rate: float = 0.0) -> RegimeScenario:
    sim = FleetSimulator(
        3, seed=21, step=STEP, start_ts=START, anomaly_rate=0.0, warmup=0.0, day_length=3600.0
    )
    shift = RegimeChange("pump-001", "level_shift", "pressure", SHIFT_AT, 25.0)
    return RegimeScenario(
        sim, [shift], seed=21, spike_rate=spike_rate, spikes_after=START + TRAIN * STEP + 1200
    )


@pytest.fixture(scope="module")
def detector() -> Any:
    rows: dict[str, list[list[float]]] = {}
    for _, step in zip(range(TRAIN), scenario().steps(), strict=False):
        for r in step:
            rows.setdefault(r.device, []).append([r.values[f] for f in FEATURES])
    return train_detector(
        [np.asarray(r, dtype=np.float32) for r in rows.values()],
        training_options(config({}), "pump"),
        device=torch.device("cpu"),
    )


def run(
    detector: Any, threshold: dict[str, Any], spike_rate: float = 0.0
) -> tuple[Any, Any, list[Any]]:
    data = scenario(spike_rate)
    steps = data.steps()
    for _ in range(TRAIN):
        next(steps)
    recorder = Recorder()
    spiked: list[Any] = []  # verdicts with a spike hit

    def observe(verdict: Any, alert: Any) -> None:
        recorder.observe(verdict, alert)
        if verdict.spike is not None:
            spiked.append(verdict)

    pipeline = Pipeline(
        config(threshold),
        sink=lambda batch: None,
        request_training=lambda job: None,
        models={"pump": detector},
        observer=observe,
    )
    record = recorder.drive(pipeline, steps, TEST_STEPS, "pump")
    result = evaluate(
        record, data, span=WINDOW * STEP, scored_from=START + TRAIN * STEP, onset_slack=900.0
    )
    return record, result, spiked


@pytest.mark.parametrize("method", ["spot", "quantile"])
def test_a_level_shift_is_alerted_then_rebaselined_within_the_configured_time(
    detector: Any, method: str
) -> None:
    # The step moves the score x28: one re-baseline here, where it is timed; at the default
    # bound (rebaseline_max_factor 10, tests/judge/test_rebaseline.py) it takes two.
    threshold = {"method": method, "rebaseline_after": REBASELINE, "rebaseline_max_factor": 100}
    record, result, spiked = run(detector, threshold)
    assert spiked == [], "a level shift is no spike"
    (recovery,) = result.recovery.values()
    assert result.changes_detected == 1, "the shift must raise an alert"
    assert recovery is not None, "the shift's alert must not stay open forever"
    # The change's episode is back-dated to its first anomalous window, so the threshold
    # re-baselines rebaseline_after after the shift (not after Page-Hinkley's delay too),
    # and the alert closes close_after normal windows later.
    close = config({}).alerts.close_after * HOP * STEP
    assert recovery <= REBASELINE + close + 3 * HOP * STEP, recovery
    rebaselines = [e for e in record.audit if e.kind == "threshold_rebaselined"]
    assert [e.device for e in rebaselines][:1] == ["pump-001"]
    assert rebaselines[0].at - SHIFT_AT <= REBASELINE + 3 * HOP * STEP
    # After the recovery the shifted pump is quiet like the others: no endless alert.
    late = [n for n in record.notifications if n[1] > SHIFT_AT + recovery + 600.0]
    assert [n for n in late if n[0] == "pump-001"] == []


def test_every_short_spike_is_flagged_on_its_pump_and_feature(detector: Any) -> None:
    """1-3 reading spikes of 8-12 x a channel's scale, which the window's reconstruction
    error mostly averages away, are each flagged by the per-reading spike check (issue #4's
    recall target), and nothing else is: not the level shift, not the normal readings.
    (Whether a flagged spike becomes a new alert also depends on the alerts already open;
    benchmarks/threshold_scenarios.py measures that over 12 device-days.)"""
    _, _, spiked = run(detector, {"method": "spot", "rebaseline_after": REBASELINE}, 3.0)
    data = scenario(3.0)
    steps = data.steps()
    for _ in range(TRAIN + TEST_STEPS):
        next(steps)
    spikes = [s for s in data.spikes if s.start < START + (TRAIN + TEST_STEPS) * STEP - 60]
    assert len(spikes) >= 15
    flagged = {(v.score.window.device, FEATURES[v.spike.feature]) for v in spiked}
    caught = [
        s
        for s in spikes
        if any(
            v.score.window.device == s.device
            and FEATURES[v.spike.feature] == s.feature
            and s.start <= v.score.window.end_ts - v.spike.age * STEP <= s.end
            for v in spiked
        )
    ]
    assert len(caught) >= 0.9 * len(spikes), f"flagged {len(caught)} of {len(spikes)} spikes"
    # Every spike verdict points at an injected spike's reading: no false spike.
    stray = [
        v
        for v in spiked
        if not any(
            v.score.window.device == s.device
            and s.start <= v.score.window.end_ts - v.spike.age * STEP <= s.end
            for s in spikes
        )
    ]
    assert stray == [], f"{len(stray)} spike verdicts away from any spike: {flagged}"
