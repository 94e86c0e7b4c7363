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


def test_the_compressor_cycles_at_random_times_and_short_cycles_in_its_fault() -> None:
    unit = generate("hvac_thermostat", seed=0)
    on = unit.values[:, 0] > 1.0
    starts = np.flatnonzero(on[1:] & ~on[:-1]) + 1
    normal = np.diff(starts[starts < unit.train_rows])
    assert normal.min() >= 23
    assert normal.max() <= 50
    assert np.std(normal) > 3.0
    assert np.all(unit.values[starts, 0] > 4.0)  # the inrush at each start
    fault = starts[(starts >= 3800) & (starts < 3860)]
    assert len(fault) >= 14
    assert np.all(np.diff(fault) == 4)
    leak, healthy = unit.values[5100:5200, 1], unit.values[1000:3000, 1]
    assert leak[on[5100:5200]].min() > healthy[on[1000:3000]].min() + 2.0


def test_the_tank_holds_full_where_its_drain_sticks() -> None:
    tank = generate("tank_fill", seed=1)
    events = label_events(tank.labels)
    assert events[0] == (3500, 3699)
    start, end = events[1]
    assert end - start + 1 == 60
    held = tank.values[start : end + 1, 0]
    assert held.min() > 78.0  # full throughout, where a sound drain empties it in five
    assert tank.values[end + 5, 0] < 50.0
    cycle = np.diff(np.flatnonzero(np.diff(tank.values[: tank.train_rows, 0]) < -8.0))
    assert np.median(cycle) < 140  # ~125 readings from empty to full and back


def test_the_machine_runs_through_both_faults() -> None:
    machine = generate("machine_starts", seed=2)
    rpm = machine.values[:, 0]
    assert (rpm[5500:5800] > 1400).all()
    assert (rpm[7000:7100] > 1400).all()
    running = rpm[: machine.train_rows] > 700
    switches = np.flatnonzero(running[1:] != running[:-1])
    assert len(switches) >= 10  # random starts and stops, seen in training
    assert np.median(machine.values[5500:5800, 1]) > 1.3
    assert np.median(machine.values[7000:7100, 1]) < 0.2


def test_the_weather_offset_is_a_level_the_weather_reaches_on_its_own() -> None:
    weather = generate("weather_1h", seed=0)
    assert label_events(weather.labels) == [(1500, 1547)]
    train = weather.values[: weather.train_rows, 0]
    assert np.ptp(train) > 15.0  # the wander spans far more than the 2.5 C offset
