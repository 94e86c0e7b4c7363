"""Baseline detectors: same scoring interface, same calibration, real detections."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from sentinel.config import ModelConfig, SentinelConfig
from sentinel.daemon.app import SentinelApp
from sentinel.errors import ConfigError
from sentinel.model import TrainOptions, detector_type
from sentinel.model.train import make_windows


def signal(rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    a = np.sin(t / 10) + 0.05 * rng.standard_normal(rows)
    return np.stack([a, 2 * a + 0.05 * rng.standard_normal(rows)], axis=1).astype(np.float32)


@pytest.mark.parametrize("kind", ["zscore", "hst"])
def test_baseline_scores_a_spike_above_its_calibration(kind: str) -> None:
    detector = detector_type(kind).train(
        [signal(600)],
        TrainOptions("s", ("a", "b"), 16, ModelConfig(seed=1)),
        device=torch.device("cpu"),
    )
    test = signal(200, seed=5)
    test[150, 1] += 3.0  # one sensor jumps for one reading
    windows = make_windows(test, 16, 1)
    scores, errors = detector.score(windows)
    assert scores.shape == (len(windows),)
    assert errors.shape == (len(windows), 2)
    spike_window = 150 - 15  # the window whose newest reading is the spike
    q999 = detector.meta.calibration.quantiles["0.999"]
    assert scores[spike_window] > q999
    assert np.mean(scores < q999) > 0.9


def test_the_daemon_refuses_a_baseline_detector() -> None:
    config = SentinelConfig.model_validate(
        {
            "model": {"detector": "hst"},
            "streams": [{"name": "s", "topic": "t/{device}", "features": ["a"]}],
        }
    )
    with pytest.raises(ConfigError, match="baseline"):
        SentinelApp(config).run(threading.Event())
