"""Small detectors the model tests share: any registered one trained for a moment on a
two-feature signal (the contract), and untrained LSTM-AEs under a version (the registry)."""

from __future__ import annotations

import numpy as np
import torch

from sentinel.config import ModelConfig
from sentinel.model import (
    DETECTORS,
    Calibration,
    Detector,
    LstmAeDetector,
    LstmAeMeta,
    LstmAutoencoder,
    Scaler,
    TrainOptions,
)

FEATURES = ("a", "b")
WINDOW = 8
CPU = torch.device("cpu")


def options(seed: int = 0) -> TrainOptions:
    """A tiny LSTM and few epochs: the contract is about shapes and round trips, not skill."""
    model = ModelConfig(seed=seed, epochs=2, hidden_size=8, latent_size=4, batch_size=64)
    return TrainOptions("pump", FEATURES, WINDOW, model)


def signal(rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.sin(np.arange(rows) / 6) + 0.05 * rng.standard_normal(rows)
    return np.stack([a, 3 + 2 * a + 0.05 * rng.standard_normal(rows)], axis=1).astype(np.float32)


def train(key: str, seed: int = 0) -> Detector:
    return DETECTORS[key].train(
        [signal(400), signal(300, seed=1)], options(seed), device=CPU, first_ts=10.0, last_ts=20.0
    )


def make_detector(version: str, stream: str = "pump", seed: int = 0) -> Detector:
    torch.manual_seed(seed)
    meta = LstmAeMeta(
        version=version,
        stream=stream,
        features=("a", "b"),
        window=8,
        hidden_size=4,
        latent_size=2,
        num_layers=1,
        scaler=Scaler(mean=np.zeros(2, np.float32), scale=np.ones(2, np.float32)),
        calibration=Calibration(
            quantiles={"0.5": 0.1, "0.9": 0.2, "0.99": 0.3, "0.995": 0.35, "0.999": 0.4},
            max=0.5,
            feature_mean_errors=(0.1, 0.1),
        ),
        created="2025-01-01T00:00:00+00:00",
    )
    return LstmAeDetector(meta, LstmAutoencoder(2, 4, 2, 1), CPU)


V1 = "20250101T000000Z-aaaaaa"
V2 = "20250102T000000Z-000000"
