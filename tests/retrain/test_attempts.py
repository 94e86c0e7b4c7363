"""A challenger rejected by chance gets another model seed; each attempt is kept and judged.

The decision is faked here (the rule itself is tested on real models in test_promotion.py,
where a challenger trained on poisoned data loses); what is tested is the run around it:
real reservoir, real training, real registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sentinel.config import SentinelConfig
from sentinel.judge.threshold import calibration_threshold
from sentinel.model import Calibration, ModelRegistry, detector_type
from sentinel.retrain import job
from sentinel.retrain.job import RetrainOutcome, run_retrain
from sentinel.retrain.promotion import Decision, Metrics
from tests.retrain.helpers import active_model, fill, make_config, normal

CPU = torch.device("cpu")


def judged_by(
    monkeypatch: pytest.MonkeyPatch, verdicts: list[bool]
) -> list[tuple[Metrics, Metrics | None]]:
    calls: list[tuple[Metrics, Metrics | None]] = []

    def decide(challenger: Metrics, champion: Metrics | None, tolerance: float) -> Decision:
        calls.append((challenger, champion))
        ok = verdicts[len(calls) - 1]
        return Decision(ok, "fine" if ok else "detection - false rate 0.7 is below 0.8 - 0.05")

    monkeypatch.setattr(job, "decide", decide)
    return calls


def test_a_rejected_challenger_is_retrained_with_the_next_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, registry, parent = active_model(tmp_path)
    calls = judged_by(monkeypatch, [False, True])

    outcome = run_retrain(config, "pump", reason="schedule", device=CPU)

    assert outcome.status == "accepted"
    assert outcome.reason.startswith("attempt 2 of 2 (model seed 1): fine; earlier: attempt 1")
    assert outcome.parent == parent
    assert outcome.seeds, "an accepted run seeds the devices' thresholds"
    rejected = [v for v in registry.versions("pump") if v not in (parent, outcome.version)]
    assert len(rejected) == 1, "the losing attempt is kept, as rejected"
    first = registry.status("pump", rejected[0])
    assert first["status"] == "rejected"
    assert first["reason"].startswith("attempt 1 of 2 (model seed 0): detection - false rate")
    assert (first["attempt"], registry.status("pump", outcome.version or "")["attempt"]) == (1, 2)
    seeds = [
        registry.load_version("pump", v, CPU).meta.training["seed"]
        for v in (rejected[0], outcome.version or "")
    ]
    assert seeds == [0, 1]
    # Both attempts were judged against the same measurement of the active model.
    assert len(calls) == 2
    assert calls[0][1] is not None
    assert calls[0][1] == calls[1][1]
    assert calls[0][0] != calls[1][0]


def test_a_challenger_that_loses_every_time_is_rejected_and_nothing_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, registry, parent = active_model(tmp_path, attempts=3)
    judged_by(monkeypatch, [False, False, False])

    outcome = run_retrain(config, "pump", reason="schedule", device=CPU)

    assert outcome.status == "rejected"
    assert outcome.reason.startswith("attempt 3 of 3 (model seed 2)")
    assert outcome.reason.count("attempt") == 3
    assert outcome.seeds == {}
    assert registry.active_version("pump") == parent
    statuses = [registry.status("pump", v)["status"] for v in registry.versions("pump")]
    assert sorted(statuses) == ["accepted", "rejected", "rejected", "rejected"]


def test_one_attempt_trains_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, registry, _ = active_model(tmp_path, attempts=1)
    calls = judged_by(monkeypatch, [False])

    outcome: RetrainOutcome = run_retrain(config, "pump", reason="schedule", device=CPU)

    assert outcome.status == "rejected"
    assert outcome.reason == "detection - false rate 0.7 is below 0.8 - 0.05"
    assert len(calls) == 1
    assert len(registry.versions("pump")) == 2


def test_a_first_model_trains_on_each_devices_readings_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Split at the held-back blocks, each device would hand training several pieces, and
    # training calibrates on every piece's tail: one stretch of the day for all devices.
    # With no champion to judge against, nothing is held back from a first model.
    config = make_config(tmp_path / "state")
    fill(config, normal(1500, seed=4), device="d1")
    fill(config, normal(1500, seed=5), device="d2")
    real = detector_type(config.model.detector)
    handed: list[list[int]] = []

    class Spy:
        @staticmethod
        def train(segments: list[Any], *args: Any, **kwargs: Any) -> Any:
            handed.append([len(s) for s in segments])
            return real.train(segments, *args, **kwargs)

    monkeypatch.setattr(job, "detector_type", lambda key: Spy)

    outcome = run_retrain(config, "pump", reason="cold start", device=CPU, cold_start=True)

    assert outcome.status == "accepted"
    assert handed == [[1500, 1500]]


def own_calibrations(config: SentinelConfig, monkeypatch: pytest.MonkeyPatch) -> list[Calibration]:
    """The calibration each model the retraining job trains comes out of training with
    (before the job pools anything into it), in training order."""
    real = detector_type(config.model.detector)
    own: list[Calibration] = []

    class Spy:
        @staticmethod
        def train(*args: Any, **kwargs: Any) -> Any:
            detector = real.train(*args, **kwargs)
            own.append(detector.meta.calibration)
            return detector

    monkeypatch.setattr(job, "detector_type", lambda key: Spy)
    return own


def test_an_accepted_challenger_is_calibrated_on_the_held_back_blocks_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The held-back blocks are normal readings no challenger trained on: the accepted one
    # pools their scores into its calibration, which its own validation part alone set
    # too low where a rare normal pattern fell outside it; a rejected one keeps its own.
    config, registry, parent = active_model(tmp_path)
    judged_by(monkeypatch, [False, True])
    own = own_calibrations(config, monkeypatch)

    outcome = run_retrain(config, "pump", reason="schedule", device=CPU)

    assert outcome.status == "accepted"
    rejected, accepted = own
    saved = {
        registry.status("pump", v)["attempt"]: registry.load_version("pump", v, CPU)
        for v in registry.versions("pump")
        if v != parent
    }
    assert saved[1].meta.calibration == rejected
    reservoir = job.open_reservoir(config, "pump", readonly=True)
    try:
        data = reservoir.clean_data(
            window=config.windows.length,
            max_gap=config.windows.max_gap,
            holdout_fraction=config.retrain.holdout_fraction,
        )
    finally:
        reservoir.close()
    pooled = saved[2].meta.calibration
    held_back = job.holdout_scores(saved[2], data.holdout, config)["d1"]
    assert len(pooled.scores) == len(accepted.scores) + len(held_back) > len(accepted.scores)
    assert pooled.scores[: len(accepted.scores)] == accepted.scores
    assert pooled.feature_mean_errors == accepted.feature_mean_errors
    assert pooled.quantiles["0.995"] == pytest.approx(
        float(np.quantile(np.asarray(pooled.scores), 0.995)), rel=1e-5
    )
    # The devices' thresholds are seeded below the pooled threshold, every such window.
    limit = calibration_threshold(pooled.quantiles, config.threshold)
    assert outcome.seeds == {"d1": [v for v in held_back if v <= limit]}


def test_a_first_model_keeps_its_own_calibration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With no champion the first model trains on the held-back blocks too: their scores
    # are no held-back evidence, and pooling them would lower its threshold.
    config = make_config(tmp_path / "state")
    fill(config, normal(1500, seed=4))
    own = own_calibrations(config, monkeypatch)

    first = run_retrain(config, "pump", reason="cold start", device=CPU, cold_start=True)

    assert first.status == "accepted"
    assert first.version is not None
    saved = ModelRegistry(config.models_dir).load_version("pump", first.version, CPU)
    assert saved.meta.calibration == own[0]
    assert first.seeds, "its devices are still seeded"
