"""Replay end to end: the training rows warm the device's spike memory and threshold, so a
pulse that recurs all through training raises no alert on its first test occurrence
(issue #21, cause 7: before, the state started learning at the first scored row)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sentinel.config import SentinelConfig
from sentinel.offline.csvdata import RecordedData
from tests.offline.helpers import replay_rows

pytestmark = pytest.mark.slow

PERIOD = 50  # readings between normal one-reading pulses
TRAIN, ROWS = 600, 1000
FEATURES = ("pressure", "flow")


def series() -> np.ndarray:
    rng = np.random.default_rng(7)
    t = np.arange(ROWS)
    pressure = 5.0 + 0.05 * rng.standard_normal(ROWS)
    pressure[25::PERIOD] += 1.0  # 20 noise sd, in training and after
    flow = 2.0 + 0.3 * np.sin(2 * np.pi * t / 100) + 0.05 * rng.standard_normal(ROWS)
    return np.column_stack([pressure, flow]).astype(np.float32)


def config(warm_readings: int) -> SentinelConfig:
    return SentinelConfig.model_validate(
        {
            "streams": [{"name": "pump", "topic": "p/{device}", "features": list(FEATURES)}],
            "windows": {"length": 16, "hop": 4, "max_gap": 3},
            "model": {
                "hidden_size": 16,
                "latent_size": 4,
                "epochs": 4,
                "train_stride": 4,
                "device": "cpu",
                "seed": 1,
            },
            "cold_start": {"warm_readings": warm_readings},
            "alerts": {"cooldown": 0},
        }
    )


def replayed(tmp_path: Path, warm_readings: int) -> tuple[list[int], int]:
    """The scored rows flagged as a spike on pressure, and how many alerts opened."""
    ts = 1_750_000_000.0 + np.arange(ROWS, dtype=np.float64)
    data = RecordedData(series(), ts, FEATURES, 3.0)
    summary, rows = replay_rows(
        config(warm_readings), data, tmp_path / f"out-{warm_readings}.csv", train_rows=TRAIN
    )
    return [i for i, row in enumerate(rows) if "spike:pressure" in row["check"]], summary.alerts


def test_pulses_known_from_training_raise_no_alert(tmp_path: Path) -> None:
    cold_spikes, cold_alerts = replayed(tmp_path, 0)
    # Cold: the spike check judges from its 200th scored reading on, and the first pulses
    # it sees are spikes until they have recurred.
    assert cold_spikes
    assert min(cold_spikes) < TRAIN + 400
    assert cold_alerts >= 1
    warm_spikes, warm_alerts = replayed(tmp_path, 1000)
    assert warm_spikes == []
    assert warm_alerts == 0
