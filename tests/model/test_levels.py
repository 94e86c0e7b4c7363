"""Level statistics: training's window means, and how far a window's mean lies from them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sentinel.errors import ModelError
from sentinel.model.levels import LevelStats


def column(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)[:, None]


def test_fit_is_the_mean_and_spread_of_the_window_means() -> None:
    # Windows of 2 over 0, 0, 2, 2: means 0, 1, 2 -> mean 1, sd sqrt(2/3).
    stats = LevelStats.fit([column(0, 0, 2, 2)], window=2)
    assert stats.mean == pytest.approx((1.0,))
    assert stats.sd == pytest.approx((math.sqrt(2 / 3),))


def test_windows_never_straddle_two_segments() -> None:
    # Only (0, 0) and (4, 4) are windows: no window mixes the two devices' levels.
    stats = LevelStats.fit([column(0, 0), column(4, 4), column(9)], window=2)
    assert stats.mean == pytest.approx((2.0,))
    assert stats.sd == pytest.approx((2.0,))
    with pytest.raises(ModelError, match="no segment holds a window of 3"):
        LevelStats.fit([column(0, 0)], window=3)


def test_skipped_and_constant_features_are_not_judged() -> None:
    data = np.column_stack([np.arange(10.0), np.full(10, 5.0), np.arange(10.0) ** 2])
    stats = LevelStats.fit([data], window=3, skip=[2])
    assert stats.sd[0] > 0
    assert stats.sd[1:] == (0.0, 0.0)
    far = np.full((1, 3), 1e6)  # every feature's window mean far beyond anything seen
    z = stats.z(far)
    assert z[0, 0] > 1e4
    assert z[0, 1:].tolist() == [0.0, 0.0]


def test_z_is_the_distance_of_the_window_mean_in_training_sds() -> None:
    stats = LevelStats(mean=(1.0, -2.0), sd=(0.5, 2.0))
    windows = np.array(
        [
            [[1.0, -2.0], [1.0, -2.0]],  # on the means
            [[2.0, 4.0], [3.0, 4.0]],  # means 2.5 and 4: 3 and 3 sds off
            [[0.0, -2.0], [-1.0, -2.0]],  # mean -0.5: 3 sds below
        ]
    )
    np.testing.assert_allclose(stats.z(windows.mean(axis=1)), [[0, 0], [3, 3], [3, 0]])


def test_round_trip_and_bad_input() -> None:
    stats = LevelStats(mean=(1.0, 2.0), sd=(0.5, 0.0))
    assert LevelStats.from_dict(stats.to_dict()) == stats
    for bad, reason in [
        ([], "must be a JSON object"),
        ({"mean": [1.0]}, "must be lists"),
        ({"mean": [1.0], "sd": ["x"]}, "must hold numbers"),
        ({"mean": [1.0], "sd": [True]}, "must hold numbers"),
        ({"mean": [1.0, 2.0], "sd": [1.0]}, "2 means but 1 sds"),
        ({"mean": [1.0], "sd": [-1.0]}, "non-negative"),
    ]:
        with pytest.raises(ModelError, match=reason):
            LevelStats.from_dict(bad)


def test_fit_keeps_each_features_slowness_and_old_statistics_load_without() -> None:
    """Slowness (``sentinel.model.drifting.slowness``) is kept with the statistics: a level
    that creeps between windows but barely moves inside one scores far above white noise,
    whose window means spread about 1/sqrt(window) of its spread."""
    rng = np.random.default_rng(0)
    rows = 2000
    noise = rng.standard_normal(rows)
    creep = np.cumsum(rng.standard_normal(rows)) * 0.2 + 0.05 * rng.standard_normal(rows)
    stats = LevelStats.fit([np.column_stack([noise, creep])], window=16)
    assert stats.slowness[0] == pytest.approx(1 / math.sqrt(16), rel=0.25)
    assert stats.slowness[1] > 5
    assert LevelStats.from_dict(stats.to_dict()) == stats
    old = LevelStats.from_dict({"mean": [1.0], "sd": [0.5]})
    assert old.slowness == ()
    assert "slowness" not in old.to_dict()
    for bad, reason in [
        ({"mean": [1.0], "sd": [1.0], "slowness": [1.0, 2.0]}, "1 means but 2 slownesses"),
        ({"mean": [1.0], "sd": [1.0], "slowness": [-1.0]}, "non-negative"),
        ({"mean": [1.0], "sd": [1.0], "slowness": "x"}, "must be lists"),
    ]:
        with pytest.raises(ModelError, match=reason):
            LevelStats.from_dict(bad)
