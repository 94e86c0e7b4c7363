"""Run statistics: training's longest run of identical readings, and the run ending a window."""

from __future__ import annotations

import numpy as np
import pytest

from sentinel.errors import ModelError
from sentinel.model.stuck import RunStats, longest_run, trailing_runs


def test_longest_run_counts_identical_consecutive_values() -> None:
    assert longest_run(np.array([1.0, 1.0, 2.0, 2.0, 2.0, 1.0])) == 3
    assert longest_run(np.array([5.0])) == 1
    assert longest_run(np.array([])) == 0
    # Equal values apart are not a run; NaN equals nothing, not even another NaN.
    assert longest_run(np.array([1.0, 2.0, 1.0, 2.0])) == 1
    assert longest_run(np.array([np.nan, np.nan, np.nan, 3.0, 3.0])) == 2


def test_fit_takes_the_longest_run_within_one_segment_never_across_two() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    b = np.array([[2.0, 3.0], [2.0, 4.0], [3.0, 5.0], [4.0, 6.0]])
    # Feature 0 runs 2.0, 2.0, 2.0 across the seam of a and b: only 2 inside b.
    assert RunStats.fit([a, b]).longest == (2, 1)
    assert RunStats.fit([np.vstack([a, b])]).longest == (3, 1)


def test_skipped_features_are_not_judged() -> None:
    data = np.column_stack([np.arange(10.0), np.full(10, 7.0)])
    stats = RunStats.fit([data], skip=[1])
    assert stats.longest == (1, 0)
    assert stats.limits(min_run=8, factor=3.0).tolist() == [8, 0]
    with pytest.raises(ModelError, match="no training readings"):
        RunStats.fit([np.zeros((0, 2))])


def test_limits_are_the_larger_of_the_floor_and_the_multiple() -> None:
    stats = RunStats(longest=(1, 3, 10, 0))
    assert stats.limits(min_run=8, factor=3.0).tolist() == [8, 9, 30, 0]
    # A fractional product rounds up: a run is anomalous from the next whole reading.
    assert stats.limits(min_run=2, factor=1.5).tolist() == [2, 5, 15, 0]


def test_trailing_runs_count_the_newest_readings_that_repeat_the_newest() -> None:
    windows = np.array(
        [
            [[1.0, 5.0], [2.0, 5.0], [2.0, 5.0], [2.0, 5.0]],  # 3 and 4
            [[2.0, 1.0], [2.0, 1.0], [3.0, 2.0], [2.0, 1.0]],  # 1 and 1: an old value again
            [[0.0, 4.0], [0.0, 4.0], [0.0, 4.0], [np.nan, 4.0]],  # NaN newest: 0
        ]
    )
    assert trailing_runs(windows).tolist() == [[3, 4], [1, 1], [0, 4]]
    assert trailing_runs(windows.astype(np.float32)).tolist() == [[3, 4], [1, 1], [0, 4]]


def test_round_trip_and_bad_input() -> None:
    stats = RunStats(longest=(3, 0, 12))
    assert RunStats.from_dict(stats.to_dict()) == stats
    assert stats.to_dict() == {"longest_run": [3, 0, 12]}
    for bad, reason in [
        ([], "must be a JSON object"),
        ({}, "must be a list"),
        ({"longest_run": [1.5]}, "non-negative integers"),
        ({"longest_run": [True]}, "non-negative integers"),
        ({"longest_run": [-1]}, "non-negative integers"),
    ]:
        with pytest.raises(ModelError, match=reason):
            RunStats.from_dict(bad)
