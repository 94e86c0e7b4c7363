"""Replay end to end: a device's normal pulses stop alerting once recurring (issue #21)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sentinel.config import SentinelConfig
from sentinel.offline.csvdata import RecordedData
from tests.offline.helpers import replay_rows

pytestmark = pytest.mark.slow

STEP = 900.0  # one reading every 15 minutes
PERIOD = 96  # a pulse a day
TRAIN, ROWS = 600, 4000
FEATURES = ("load", "count")
BIG = 3300  # a one-off spike ten times the daily pulse, between two pulses


def series() -> np.ndarray:
    """A daily load cycle, and a count that pulses once a day, both with noise; one
    spike ten times the pulse on the count at ``BIG``."""
    rng = np.random.default_rng(21)
    t = np.arange(ROWS)
    load = 10 + 3 * np.sin(2 * np.pi * t / PERIOD)
    count = np.full(ROWS, 5.0)
    count[50::PERIOD] += 4.0  # 40 noise sd
    count[BIG] += 40.0
    values = np.column_stack([load, count]) + 0.1 * rng.standard_normal((ROWS, 2))
    return values.astype(np.float32)


def config(recurring: bool) -> SentinelConfig:
    return SentinelConfig.model_validate(
        {
            "streams": [{"name": "meter", "topic": "m/{device}", "features": list(FEATURES)}],
            "windows": {"length": 16, "hop": 4, "max_gap": 3 * STEP},
            "model": {
                "hidden_size": 16,
                "latent_size": 4,
                "epochs": 5,
                "train_stride": 4,
                "device": "cpu",
                "seed": 1,
            },
            "spikes": {"recurring": recurring},
            # Each pulse its own alert: the auto cooldown (a day at this sampling) would
            # merge daily pulses into one reopened alert and hide what the memory changes.
            "alerts": {"cooldown": 0},
        }
    )


def spike_rows(tmp_path: Path, recurring: bool) -> tuple[list[int], int]:
    """The scored rows whose verdict is a spike on ``count``, and the number of alerts."""
    cfg = config(recurring)
    ts = 1_750_000_000.0 + STEP * np.arange(ROWS)
    data = RecordedData(series(), ts, FEATURES, 3 * STEP)
    summary, rows = replay_rows(cfg, data, tmp_path / f"scores-{recurring}.csv", train_rows=TRAIN)
    return [i for i, row in enumerate(rows) if "spike:count" in row["check"]], summary.alerts


def pulse_of(row: int) -> int:
    """Which pulse (counting from the first) a row belongs to; a window shows a spike
    for at most one window span after it."""
    return (row - 50) // PERIOD


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, tuple[list[int], int]]:
    tmp = tmp_path_factory.mktemp("replay")
    return {recurring: spike_rows(tmp, recurring) for recurring in (False, True)}


@pytest.fixture
def flagged(replayed: dict[bool, tuple[list[int], int]]) -> dict[bool, list[int]]:
    return {recurring: rows for recurring, (rows, _) in replayed.items()}


def test_without_memory_every_daily_pulse_is_a_spike(flagged: dict[bool, list[int]]) -> None:
    pulses = {pulse_of(r) for r in flagged[False]}
    assert len(pulses) >= 30  # every pulse after the spike check's warm-up


def test_a_daily_pulse_is_a_spike_only_until_it_has_recurred(
    flagged: dict[bool, list[int]],
) -> None:
    rows = [r for r in flagged[True] if not BIG <= r < BIG + 16]
    first = min(pulse_of(r) for r in flagged[False])  # the first pulse judged at all
    assert {pulse_of(r) for r in rows} <= set(range(first, first + 3))


def test_a_spike_ten_times_the_pulse_is_still_caught(flagged: dict[bool, list[int]]) -> None:
    assert any(BIG <= r < BIG + 16 for r in flagged[True])


def test_alerts_only_for_the_first_pulses_and_the_big_spike(
    replayed: dict[bool, tuple[list[int], int]],
) -> None:
    # without memory: one alert a day; with it: the first three pulses and the big spike
    assert replayed[False][1] >= 30
    assert replayed[True][1] <= 4
