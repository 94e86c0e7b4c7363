"""Small, fast set-ups shared by the retraining tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentinel.config import SentinelConfig, config_to_toml
from sentinel.model import (
    Calibration,
    Detector,
    LstmAeDetector,
    LstmAeMeta,
    LstmAutoencoder,
    ModelRegistry,
    Scaler,
    train_detector,
    training_options,
)
from sentinel.records import Reading
from sentinel.retrain.job import open_reservoir, run_retrain

FEATURES = ["a", "b", "c"]
CPU = torch.device("cpu")


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
            # span 0: these cold starts wait for readings alone (the span has its own tests)
            "cold_start": {"readings": 600, "span": 0},
            # min_new_rows 0: these runs retrain the same data on purpose (the cadence rule
            # has its own tests, test_cadence.py).
            "retrain": {"min_rows": 400, "min_new_rows": 0, "control_socket": False, **retrain},
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


def make_detector(version: str, seed: int = 0) -> Detector:
    torch.manual_seed(seed)
    n = len(FEATURES)
    meta = LstmAeMeta(
        version=version,
        stream="pump",
        features=tuple(FEATURES),
        window=16,
        hidden_size=4,
        latent_size=2,
        num_layers=1,
        scaler=Scaler(mean=np.zeros(n, np.float32), scale=np.ones(n, np.float32)),
        calibration=Calibration(
            quantiles={"0.5": 0.1, "0.9": 0.2, "0.99": 0.3, "0.995": 0.35, "0.999": 0.4},
            max=0.5,
            feature_mean_errors=(0.1,) * n,
        ),
        created="2025-01-01T00:00:00+00:00",
    )
    return LstmAeDetector(meta, LstmAutoencoder(n, 4, 2, 1), CPU)


def version(day: int) -> str:
    return f"202501{day:02d}T000000Z-{day:06x}"


def write_config(config: SentinelConfig, path: Path) -> str:
    path.write_text(config_to_toml(config.model_dump(mode="json", exclude_none=True)))
    return str(path)


def fill(config: SentinelConfig, rows: np.ndarray, device: str = "d1", start: float = 0.0) -> None:
    reservoir = open_reservoir(config, "pump")
    reservoir.add(
        [Reading("pump", device, start + i, tuple(map(float, r))) for i, r in enumerate(rows)]
    )
    reservoir.close()


def active_model(tmp_path: Path, **retrain: Any) -> tuple[SentinelConfig, ModelRegistry, str]:
    """A first model of stream "pump" trained by a cold-start run on 1,500 normal readings
    of device d1 (ts 0-1499), activated: (config, registry, its version)."""
    config = make_config(tmp_path / "state", **retrain)
    fill(config, normal(1500, seed=4))
    first = run_retrain(config, "pump", reason="cold start", device=CPU, cold_start=True)
    assert first.status == "accepted"
    assert first.version is not None
    registry = ModelRegistry(config.models_dir)
    registry.activate("pump", first.version)
    return config, registry, first.version
