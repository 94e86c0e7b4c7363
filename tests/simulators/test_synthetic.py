"""The labelled synthetic series of the detection suite (issue #21): cheap, no training."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from sentinel.offline.suite import label_events
from simulators.synthetic import (
    CLASSES,
    NEW_NORMAL_LABELLED,
    LabelledSeries,
    generate,
)

NAMES = sorted(CLASSES)


@functools.cache
def series(name: str, seed: int = 0, quick: bool = False) -> LabelledSeries:
    return generate(name, seed=seed, quick=quick)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed(name: str) -> None:
    again = generate(name, seed=0)
    first = series(name)
    np.testing.assert_array_equal(first.values, again.values)
    np.testing.assert_array_equal(first.labels, again.labels)
    np.testing.assert_array_equal(first.timestamps, again.timestamps)
    other = series(name, seed=1)
    assert not np.array_equal(first.values, other.values)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("quick", [False, True])
def test_labels_only_after_the_training_rows(name: str, quick: bool) -> None:
    s = series(name, quick=quick)
    assert s.name == name
    assert s.labels[: s.train_rows].sum() == 0
    assert s.labels[s.train_rows :].sum() > 0  # every class carries a real anomaly
    assert set(np.unique(s.labels)) <= {0, 1}
    assert s.values.shape == (s.rows, len(s.features))
    assert np.all(np.isfinite(s.values))
    # the suite stays fast: a few thousand rows, and quick is never longer
    assert 600 <= s.rows <= 6_000
    assert s.rows <= series(name).rows


@pytest.mark.parametrize(
    ("name", "interval"),
    [("cycle_1s", 1.0), ("cycle_1min", 60.0), ("cycle_5min", 300.0), ("cycle_1h", 3600.0)],
)
def test_cycles_are_sampled_at_the_interval_asked(name: str, interval: float) -> None:
    s = series(name)
    assert s.interval == interval
    np.testing.assert_allclose(np.diff(s.timestamps), interval)
    # at least one full period in training, and the anomaly is a change of the cycle's
    # shape, not of the level range: it stays inside the training range
    period = 300.0 if interval == 1.0 else 86_400.0
    assert s.train_rows * interval >= period
    train = s.values[: s.train_rows, 0]
    assert np.all(s.values[s.labels == 1, 0] <= train.max() + 1.0)
    assert np.all(s.values[s.labels == 1, 0] >= train.min() - 1.0)


def test_gaps_really_are_gaps_also_in_the_first_rows() -> None:
    s = series("gaps")
    steps = np.diff(s.timestamps)
    assert np.all(steps > 0)
    assert steps[9] == 300.0  # after the 10th reading, 5 minutes of nothing
    assert int(np.sum(steps[: s.train_rows] > 60)) >= 2  # gaps in training
    assert int(np.sum(steps[s.train_rows :] > 60)) >= 1  # and after it
    assert np.all((steps == 1.0) | (steps >= 120.0))  # else one reading a second


def test_new_normal_is_labelled_over_its_first_readings_only() -> None:
    s = series("level_shift_new_normal")
    (start, end), *rest = label_events(s.labels)
    assert not rest
    assert end - start + 1 == NEW_NORMAL_LABELLED
    before = s.values[start - 300 : start, 0].mean()
    assert s.values[end + 1 :, 0].mean() - before > 1.5  # the level stays up, unlabelled


def test_constant_in_training_feature_moves_only_when_labelled() -> None:
    s = series("constant_in_training")
    setpoint = s.values[:, s.features.index("setpoint")]
    assert np.ptp(setpoint[: s.train_rows]) == 0.0
    moved = setpoint != setpoint[0]
    np.testing.assert_array_equal(moved, s.labels == 1)


def test_command_flag_switches_unlabelled_after_training() -> None:
    s = series("command_flag")
    flag = s.values[:, s.features.index("boost_cmd")]
    assert np.all(flag[: s.train_rows] == 0.0)
    on = flag == 1.0
    assert len(label_events(on.astype(int))) >= 3  # it switches several times
    assert np.any(on & (s.labels == 0))  # and those switches are normal


def test_recurring_pulses_are_normal_and_the_odd_spike_is_not() -> None:
    s = series("periodic_actuation")
    x = s.values[:, 0]
    high = x > np.median(x) + 0.25
    pulses = label_events(high[: s.train_rows].astype(int))
    assert len(pulses) >= s.train_rows // 120 - 1  # the actuation is in training
    assert np.all(s.labels[high & (x < np.median(x) + 0.7)] == 0)
    assert x[s.labels == 1].min() > x[(s.labels == 0) & high].max()


def test_daily_pulse_is_in_training_every_day() -> None:
    s = series("daily_pulse")
    x = s.values[:, 0]
    days = label_events((x[: s.train_rows] > 3.0).astype(int))
    assert len(days) == s.train_rows // 1440
    assert s.interval == 60.0


def test_bursty_counts_are_integers_with_normal_bursts() -> None:
    s = series("bursty_counts")
    x = s.values[:, 0]
    np.testing.assert_array_equal(x, np.round(x))
    assert np.all(x >= 0)
    assert x[: s.train_rows].max() >= 12  # bursts are part of normal
    assert x[s.labels == 1].mean() > 20  # the abnormal burst: Poisson(30), not (12)


def test_setpoint_steps_are_normal_in_training_and_after() -> None:
    s = series("setpoint_steps")
    setpoint = s.values[:, 0]
    steps = np.flatnonzero(np.diff(setpoint))
    assert int(np.sum(steps < s.train_rows)) >= 3  # steps are part of training
    assert int(np.sum(steps >= s.train_rows)) >= 3
    assert len(np.unique(setpoint)) <= 4  # few distinct values, flat between steps
    assert len(label_events(s.labels)) == 1  # one anomaly; the steps outside it are normal
    assert int(np.sum(s.labels[steps + 1] == 0)) >= len(steps) - 1
    gap = setpoint - s.values[:, 1]
    assert np.all(np.abs(gap[s.labels == 1] - 3.0) < 0.6)  # the heater fault


def test_stuck_sensor_holds_and_flatline_is_zero() -> None:
    stuck = series("stuck_sensor")
    for a, b in label_events(stuck.labels):
        assert np.ptp(stuck.values[a : b + 1, 1]) == 0.0
        assert np.ptp(stuck.values[a : b + 1, 0]) > 0.0  # the other channel goes on
    flat = series("flatline")
    assert np.all(flat.values[flat.labels == 1, 0] == 0.0)
    assert np.all(flat.values[flat.labels == 0, 0] > 0.0)


def test_decorrelation_keeps_each_channel_in_range_but_breaks_the_link() -> None:
    s = series("decorrelation")
    train = slice(0, s.train_rows)
    r_train = float(np.corrcoef(s.values[train, 0], s.values[train, 1])[0, 1])
    (a, b), *_ = label_events(s.labels)
    r_anomaly = float(np.corrcoef(s.values[a : b + 1, 0], s.values[a : b + 1, 1])[0, 1])
    assert r_train > 0.9
    assert r_anomaly < 0.5


@pytest.mark.parametrize("name", ["amplitude_change", "frequency_change"])
def test_oscillation_changes_are_subtle_in_level(name: str) -> None:
    s = series(name)
    x = s.values[:, 0]
    # the mean does not move: only the oscillation's amplitude or frequency does
    assert abs(x[s.labels == 1].mean() - x[: s.train_rows].mean()) < 0.2


def test_unknown_class_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown class"):
        generate("no_such_class")
