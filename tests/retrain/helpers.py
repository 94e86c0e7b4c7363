"""Small, fast set-ups shared by the retraining tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentinel.config import SentinelConfig
from sentinel.model import Detector, train_detector, training_options

FEATURES = ["a", "b", "c"]


def make_config(state_dir: Path, **retrain: Any) -> SentinelConfig:
    return SentinelConfig.model_validate(
        {
            "state_dir": str(state_dir),
            "streams": [{"name": "pump", "topic": "p/{device}", "features": FEATURES}],
            "windows": {"length": 16, "hop": 4, "max_gap": 10},
            "model": {
                "hidden_size": 16,
                "latent_size": 4,
                "epochs": 6,
                "train_stride": 4,
                "device": "cpu",
            },
            "cold_start": {"readings": 600},
            "retrain": {"min_rows": 400, "control_socket": False, **retrain},
        }
    )


def normal(n: int, seed: int = 0, start: int = 0, shift: float = 0.0) -> np.ndarray:
    """(n, 3) readings of a periodic, correlated process; ``shift`` moves its level."""
    rng = np.random.default_rng(seed)
    t = np.arange(start, start + n, dtype=np.float64)
    a = np.sin(2 * np.pi * t / 50)
    b = 0.5 * np.cos(2 * np.pi * t / 50) + 0.3 * np.sin(2 * np.pi * t / 13)
    c = 0.6 * a - 0.4 * b
    data = np.stack([a, b, c], axis=1) + rng.normal(0, 0.05, (n, 3)) + shift
    return data.astype(np.float32)


def contaminate(data: np.ndarray, fraction: float, seed: int = 1) -> np.ndarray:
    """Offsets and bursts of noise on one feature in ``fraction`` of 30-row stretches."""
    rng = np.random.default_rng(seed)
    out = data.copy()
    std = data.std(axis=0)
    for start in range(0, len(data) - 30, 30):
        if rng.random() < fraction:
            f = int(rng.integers(data.shape[1]))
            if rng.random() < 0.5:
                out[start : start + 30, f] += 4 * std[f]
            else:
                out[start : start + 30, f] += rng.normal(0, 2 * std[f], 30)
    return out


def train(config: SentinelConfig, segments: list[np.ndarray]) -> Detector:
    return train_detector(segments, training_options(config, "pump"), device=torch.device("cpu"))
