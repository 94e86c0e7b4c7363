"""Untrained but fully formed LSTM detectors (the autoencoder, the forecaster), for the
scoring, storage and export tests."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from sentinel.model import (
    Calibration,
    LstmAeDetector,
    LstmAeMeta,
    LstmAutoencoder,
    LstmForecastDetector,
    LstmForecaster,
    LstmForecastMeta,
    Scaler,
)

FEATURES = ("a", "b", "c")
WINDOW = 12
CPU = torch.device("cpu")
CUDA_MISSING = not torch.cuda.is_available()


def make_detector(
    device: torch.device = CPU,
    max_batch: int = 512,
    version: str = "20250101T000000Z-abc123",
    **meta_changes: Any,
) -> LstmAeDetector:
    """An untrained but fully formed detector: enough for scoring and storage tests."""
    torch.manual_seed(3)
    module = LstmAutoencoder(len(FEATURES), hidden_size=8, latent_size=4, num_layers=1)
    meta = LstmAeMeta(
        version=version,
        stream="pump",
        features=FEATURES,
        window=WINDOW,
        hidden_size=8,
        latent_size=4,
        num_layers=1,
        scaler=Scaler(mean=np.array([1.0, 2.0, 3.0]), scale=np.array([0.5, 1.0, 2.0])),
        calibration=Calibration(
            quantiles={"0.5": 0.1, "0.9": 0.2, "0.99": 0.3, "0.995": 0.35, "0.999": 0.4},
            max=0.5,
            feature_mean_errors=(0.1, 0.1, 0.1),
        ),
        created="2025-01-01T00:00:00+00:00",
        training={"n_readings": 100, "first_ts": 1.5, "seed": 0, "note": "test"},
    )
    meta = dataclasses.replace(meta, **meta_changes)
    return LstmAeDetector(meta, module, device, max_batch=max_batch)


def make_forecaster(
    version: str = "20250101T000000Z-fc1234", **meta_changes: Any
) -> LstmForecastDetector:
    """The forecaster with the autoencoder's meta (``make_detector``), scoring the newest
    half of the window."""
    torch.manual_seed(4)
    horizon = int(meta_changes.get("horizon", 1))
    module = LstmForecaster(len(FEATURES), hidden_size=8, num_layers=1, horizon=horizon)
    common = make_detector(version=version).meta
    meta = LstmForecastMeta(
        version=common.version,
        stream=common.stream,
        features=common.features,
        window=common.window,
        hidden_size=8,
        num_layers=1,
        scaler=common.scaler,
        calibration=common.calibration,
        created=common.created,
        training=common.training,
        score_steps=WINDOW // 2,
    )
    meta = dataclasses.replace(meta, **meta_changes)
    return LstmForecastDetector(meta, module, CPU)


def windows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal([1.0, 2.0, 3.0], 1.0, size=(n, WINDOW, 3)).astype(np.float32)
