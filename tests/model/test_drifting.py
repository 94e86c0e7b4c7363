from __future__ import annotations

import numpy as np

from sentinel.model.drifting import drift, drifting_features, slowness


def ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    x = np.zeros(n)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + rng.normal()
    return x


def test_stationary_channels_do_not_drift_however_smooth_or_periodic() -> None:
    """A window-mean criterion would call every one of these drifting: their windows vary
    little inside and much between. Their halves' means agree."""
    rng = np.random.default_rng(0)
    t = np.arange(2000.0)
    channels = np.column_stack(
        [
            rng.normal(size=2000),  # white noise
            ar1(rng, 2000, 0.9),  # slowly wandering, but stationary
            np.sin(2 * np.pi * t / 300) + 0.05 * rng.normal(size=2000),  # 6.7 periods
            np.round(31.6 + 0.45 * rng.normal(size=2000)),  # quantised flow
        ]
    )
    assert np.all(drift([channels]) < 0.5)


def test_a_warming_channel_drifts_in_one_segment_or_split_in_two() -> None:
    rng = np.random.default_rng(1)
    temp = 40 + np.linspace(0, 3, 600) + rng.normal(0, 0.2, 600)
    noise = rng.normal(size=600)
    rows = np.column_stack([noise, temp])
    whole, split = drift([rows]), drift([rows[:300], rows[300:]])  # one run, or a gap in it
    assert whole[0] < 0.5
    assert split[0] < 0.5
    assert whole[1] > 2
    assert split[1] > 2


def test_devices_at_different_levels_do_not_drift() -> None:
    """A fleet's training data: each device's run is a segment, each stationary at its own
    level; taken as one run, the halves would differ by the devices' spread."""
    rng = np.random.default_rng(3)
    segments = [level + rng.normal(size=(300, 1)) for level in (10.0, 20.0, 30.0, 40.0)]
    assert drift(segments)[0] < 0.5
    assert drift([np.concatenate(segments)])[0] > 2


def test_a_step_between_two_flat_halves_drifts_a_constant_does_not() -> None:
    rows = np.column_stack([np.r_[np.zeros(50), np.ones(50)], np.full(100, 7.0)])
    got = drift([rows])
    assert got[0] == np.inf
    assert got[1] == 0.0


def test_drifting_features_names_them_above_the_ratio_and_zero_turns_it_off() -> None:
    rng = np.random.default_rng(2)
    rows = np.column_stack([rng.normal(size=400), np.linspace(0, 1, 400)])
    got = drifting_features([rows], ("noise", "ramp"), 1.0)
    assert list(got) == ["ramp"]
    assert got["ramp"][0] > 1.0
    assert drifting_features([rows], ("noise", "ramp"), 0.0) == {}


def test_slowness_is_small_for_noise_and_large_for_a_channel_that_wanders_between_windows() -> None:
    rng = np.random.default_rng(4)
    t = np.arange(3000.0)
    rows = np.column_stack(
        [
            rng.normal(size=3000),
            np.sin(2 * np.pi * t / 600) + 0.05 * rng.normal(size=3000),  # slow to a window
            np.repeat(rng.normal(size=30), 100),  # flat runs at different values
        ]
    )
    got = slowness([rows[:1500], rows[1500:]], 32)
    assert got[0] < 0.3  # white noise: about 1/sqrt(32)
    assert got[1] > 2
    assert got[2] > 2  # windows straddling a step are all that vary inside
    assert slowness([rows[:10]], 32).tolist() == [0.0, 0.0, 0.0]  # no whole window
    # Stationary for the halves test, slow for this one: either makes a feature relative.
    assert drift([rows])[1] < 0.5
    chosen = drifting_features([rows], ("noise", "cycle", "steps"), 1.0, 32, 2.0)
    assert sorted(chosen) == ["cycle", "steps"]
    assert drifting_features([rows], ("noise", "cycle", "steps"), 1.0, 32, 0.0) == {}
