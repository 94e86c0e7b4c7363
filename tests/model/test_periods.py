"""Periods kept with a model (sentinel.model.periods): the cycle, its blocks, the reference
distance and the library, as training finds them and as meta.json keeps them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sentinel.errors import ModelError
from sentinel.model.periods import (
    _QUERIES,
    TYPICAL,
    PeriodStats,
    _stride,
    blocks,
    find_period,
    nearest,
)


def daily(days: int, per: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hours = np.arange(days * per) % per
    on = (hours >= per // 4) & (hours < 3 * per // 4)
    return np.where(on, 18.0, 0.4) + rng.normal(0.0, 0.2, days * per)


def test_the_period_is_the_autocorrelation_peak_and_a_wandering_channel_has_none() -> None:
    assert find_period([daily(7)]) == 96
    walk = np.cumsum(np.random.default_rng(1).normal(size=2000))
    assert find_period([walk]) is None
    assert find_period([np.zeros(500)]) is None


def test_a_period_is_never_read_across_two_segments() -> None:
    """Twelve devices' trainings of one length, end to end, are periodic in that length;
    no segment holds three of their day (the simulated fleet: 750 readings, a day of 720),
    so there is no period to judge, and none is read from the boundaries."""
    days = [daily(1, per=720, seed=s)[:700] for s in range(12)]
    assert find_period(days) is None
    assert find_period([np.concatenate([daily(4, seed=1)]), daily(2, seed=2)]) == 96


def test_blocks_average_their_readings_and_a_block_mostly_missing_is_nan() -> None:
    values = np.array([1.0, 3.0, np.nan, 5.0, np.nan, np.nan, 7.0])
    out = blocks(values, 2)  # the seventh reading is a block's remainder: dropped
    assert out[0] == 2.0
    assert out[1] == 5.0
    assert math.isnan(out[2])


def test_the_nearest_neighbour_skips_candidates_with_a_gap() -> None:
    history = np.array([0.0, 1.0, np.nan, 5.0, 6.0, 9.0])
    distance, start = nearest(history, np.array([5.0, 6.0]))
    assert (distance, start) == (0.0, 3)
    assert nearest(np.array([np.nan, np.nan, 1.0]), np.array([1.0, 2.0])) == (math.inf, -1)


def test_fit_keeps_a_cycle_longer_than_the_window_with_a_reference_and_a_library() -> None:
    segments = [np.column_stack([daily(8), np.full(8 * 96, 3.0)])]
    stats = PeriodStats.fit(segments, 32, skip=[1])
    (fan,) = stats.features
    assert (fan.feature, fan.period, fan.block, fan.length) == (0, 96, 2, 48)
    assert fan.reference > 0
    assert len(fan.library) == 8 * 48  # all of training: fewer than HISTORY + 1 periods
    # the reference is at least TYPICAL x the median distance of training's periods
    assert fan.reference >= TYPICAL * 0.2 / 2


def test_two_segments_are_kept_apart_by_a_gap_in_the_library() -> None:
    series = daily(8)
    stats = PeriodStats.fit([series[:400, None], series[400:, None]], 32)
    (fan,) = stats.features
    assert sum(math.isnan(v) for v in fan.library) == 1


def test_meta_json_keeps_the_periods_with_gaps_as_null() -> None:
    series = daily(8)
    stats = PeriodStats.fit([series[:400, None], series[400:, None]], 32)
    text = json.dumps(stats.to_dict(), allow_nan=False)  # JSON has no NaN
    back = PeriodStats.from_dict(json.loads(text))
    (a,), (b,) = stats.features, back.features
    assert (a.feature, a.period, a.block, a.length, a.reference) == (
        b.feature,
        b.period,
        b.block,
        b.length,
        b.reference,
    )
    assert np.array_equal(np.array(a.library), np.array(b.library), equal_nan=True)


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"features": [{"feature": 0}]},
        {"features": [dict(feature=0, period=96, block=2, length=48, reference=0.0, library=[])]},
        {"features": ["x"]},
    ],
)
def test_a_malformed_periods_entry_is_a_model_error(data: object) -> None:
    with pytest.raises(ModelError, match="periods"):
        PeriodStats.from_dict(data)


def test_a_library_with_gaps_equals_itself_read_back() -> None:
    """A model's meta compares equal after a save and a load (test_contract): the gaps'
    NaNs must not make two equal libraries unequal."""
    series = daily(8)
    stats = PeriodStats.fit([series[:400, None], series[400:, None]], 32)
    assert PeriodStats.from_dict(stats.to_dict()) == stats


def test_a_long_training_is_read_at_a_bounded_number_of_queries() -> None:
    """A week read every second holds 100,000 periods of a 100-second cycle: the reference
    and the drift are read at most ``_QUERIES`` of them, spread over all of training."""
    assert _stride(400, 57) == 4  # a short training: every sixteenth of a period
    blocks, length = 300_000, 50
    stride = _stride(blocks, length)
    assert len(range(3 * length, blocks + 1, stride)) <= _QUERIES
