"""Roughness statistics kept with a model (sentinel.model.noise)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sentinel.errors import ModelError
from sentinel.model.noise import NoiseStats, roughness


def test_roughness_is_the_median_step_so_a_single_step_does_not_move_it() -> None:
    calm = np.array([[0.0, 1.0], [0.1, 1.0], [0.0, 1.0], [0.1, 1.0], [0.0, 1.0]])
    stepped = calm.copy()
    stepped[3:, 1] = 9.0  # one step of 8 in the second feature
    noisy = calm * 5
    out = roughness(np.stack([calm, stepped, noisy]))
    assert out.shape == (3, 2)
    assert out[0].tolist() == pytest.approx([0.1, 0.0])
    assert out[1].tolist() == pytest.approx([0.1, 0.0]), "one large step among four"
    assert out[2].tolist() == pytest.approx([0.5, 0.0])


def test_fit_takes_the_roughest_window_inside_one_segment() -> None:
    rng = np.random.default_rng(0)
    quiet = np.column_stack([rng.normal(0, 0.1, 200), np.zeros(200), rng.normal(0, 1, 200)])
    loud = np.column_stack([rng.normal(0, 1.0, 40), np.zeros(40), rng.normal(0, 1, 40)])
    stats = NoiseStats.fit([quiet, loud], window=32, skip=(2,))
    windows = np.lib.stride_tricks.sliding_window_view(loud, 32, axis=0).transpose(0, 2, 1)
    assert stats.largest[0] == pytest.approx(float(roughness(windows)[:, 0].max()))
    assert stats.largest[1] == 0.0, "never moved: not judged"
    assert stats.largest[2] == 0.0, "skipped: constant in training, the constant check's"
    # the two segments are never joined: a jump between them is not a step
    joined = NoiseStats.fit([np.zeros((32, 3)), np.full((32, 3), 100.0)], window=32)
    assert joined.largest == (0.0, 0.0, 0.0)
    short = NoiseStats.fit([quiet[:10]], window=32)
    assert short.largest == (0.0, 0.0, 0.0), "no segment holds a window"


def test_limits_and_json() -> None:
    stats = NoiseStats(largest=(0.5, 0.0))
    assert stats.limits(2.0)[0] == 1.0
    assert np.isinf(stats.limits(2.0)[1])
    data = json.loads(json.dumps(stats.to_dict()))
    assert NoiseStats.from_dict(data) == stats


@pytest.mark.parametrize(
    "data",
    [[], {"largest_roughness": "x"}, {"largest_roughness": [-1.0]}, {"largest_roughness": [None]}],
)
def test_broken_statistics_are_refused(data: object) -> None:
    with pytest.raises(ModelError, match="noise"):
        NoiseStats.from_dict(data)
    with pytest.raises(ModelError):
        NoiseStats.fit([], window=4)


def test_a_channel_that_holds_levels_without_noise_is_still() -> None:
    """Roughness 0 in every training window but not constant: a noise-free channel held at
    levels between changes (spacecraft telemetry, a set point). Judged against a floor
    above float noise, as a share of its level (issue #21)."""
    rng = np.random.default_rng(0)
    levels = np.repeat([-1.0, 0.3, 0.9, 250.0], 60)
    noisy = rng.normal(0, 0.1, 240)
    stats = NoiseStats.fit([np.column_stack([levels, noisy, np.full(240, 5.0)])], 32, skip=(2,))
    assert stats.largest[0] == 0.0
    assert stats.largest[1] > 0.0
    # the median training value is 0.3 or 0.9: the floor is STILL x 1
    assert stats.still == pytest.approx((1e-3, 0.0, 0.0))
    # its steps: 1.3, 0.6 and 249.1; the median of them is judged from
    assert stats.still_steps == pytest.approx((1.3, 0.0, 0.0))
    assert stats.ceilings()[0] == pytest.approx(0.65)
    assert np.isinf(stats.ceilings()[1:]).all()
    assert stats.references()[0] == pytest.approx(1e-3)
    assert stats.references()[1] == stats.largest[1]
    assert np.isinf(stats.references()[2]), "constant: the constant check's"
    big = NoiseStats.fit([np.column_stack([levels + 1000.0])], 32)
    assert big.still[0] == pytest.approx(1e-3 * np.median(levels + 1000.0))
    data = json.loads(json.dumps(stats.to_dict()))
    assert NoiseStats.from_dict(data) == stats
    # a model saved before still channels were judged has none
    old = NoiseStats.from_dict({"largest_roughness": [0.0, 0.5]})
    assert old.still == ()
    assert old.still_steps == ()
    assert np.isinf(old.references()[0])


@pytest.mark.parametrize(
    "data",
    [
        {"largest_roughness": [0.0], "still_roughness": "x"},
        {"largest_roughness": [0.0], "still_roughness": [-1.0]},
        {"largest_roughness": [0.0, 1.0], "still_roughness": [1e-3]},
        {"largest_roughness": [0.0], "still_roughness": [1e-3]},
        {"largest_roughness": [0.0], "still_roughness": [1e-3], "still_steps": "x"},
        {"largest_roughness": [0.0], "still_roughness": [1e-3], "still_steps": [-1.0]},
    ],
)
def test_broken_still_references_are_refused(data: object) -> None:
    with pytest.raises(ModelError, match="still_"):
        NoiseStats.from_dict(data)
