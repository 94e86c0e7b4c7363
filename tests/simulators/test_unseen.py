"""The held-out kinds of simulators.unseen (issue #21): valid, deterministic, as described."""

from __future__ import annotations

import numpy as np
import pytest

from sentinel.offline.suite import label_events
from simulators.synthetic import CLASSES, NEW_NORMAL_LABELLED
from simulators.unseen import KINDS, generate


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_deterministic_for_a_seed_and_labelled_after_training(kind: str) -> None:
    first, again, other = generate(kind, seed=0), generate(kind, seed=0), generate(kind, seed=1)
    np.testing.assert_array_equal(first.values, again.values)
    np.testing.assert_array_equal(first.timestamps, again.timestamps)
    assert not np.array_equal(first.values, other.values)
    assert not first.labels[: first.train_rows].any()  # LabelledSeries checks it too
    assert label_events(first.labels)  # every kind has something to find
    assert np.isfinite(first.values).all()


def test_the_kinds_are_not_the_suites() -> None:
    assert not set(KINDS) & set(CLASSES)
    with pytest.raises(ValueError, match="unknown kind"):
        generate("cycle_1h")


def test_the_traffic_sensor_is_read_at_irregular_times() -> None:
    steps = np.diff(generate("jittered_traffic", seed=3).timestamps)
    assert steps.min() >= 60.0
    assert steps.max() <= 600.0
    assert np.std(steps) > 100.0  # uniform on 60-600 s: ~156 s


def test_a_lasting_jump_is_labelled_as_the_suite_labels_a_new_normal() -> None:
    walk = generate("random_walk", seed=0)
    assert label_events(walk.labels) == [(2500, 2500 + NEW_NORMAL_LABELLED - 1)]  # inclusive
    assert walk.values[2500] - walk.values[2499] > 3.0  # the +6 jump on a 0.3 step


def test_the_trend_leaves_trainings_levels() -> None:
    trend = generate("trend_5min", seed=0)
    train, late = trend.values[: trend.train_rows, 0], trend.values[3500:, 0]
    assert np.max(late) > np.max(train)
    assert np.median(late) - np.median(train) > 5.0
