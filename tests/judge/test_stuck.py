"""The stuck check: windows whose newest readings of a feature repeat one value too long."""

from __future__ import annotations

import numpy as np
import structlog

from sentinel.config import StuckConfig
from sentinel.judge.stuck import StuckCheck
from sentinel.model.stuck import RunStats
from tests.fakes import FakeDetector


class RunsDetector(FakeDetector):
    """The fake model (window 4, features x and y), with training's longest runs."""

    def __init__(self, longest: tuple[int, ...] | None, n_readings: int = 999) -> None:
        super().__init__()
        self._stats = None if longest is None else RunStats(longest=longest)
        self._meta.training["n_readings"] = n_readings

    def run_stats(self) -> RunStats | None:
        return self._stats


def windows(*columns: tuple[list[float], list[float]]) -> np.ndarray:
    return np.array([np.column_stack(c) for c in columns], dtype=np.float64)


def test_a_run_at_the_limit_is_anomalous_and_names_the_feature() -> None:
    check = StuckCheck(StuckConfig(min_run=2, factor=1.5))  # limits: x 3, y 2
    detector = RunsDetector((2, 1))
    hits = check.check(
        detector,
        windows(
            ([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]),  # nothing repeats
            ([1.0, 2.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0]),  # x: 3 of its limit 3
            ([1.0, 1.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0]),  # x: 2, under its limit
            ([1.0, 2.0, 2.0, 2.0], [1.0, 5.0, 5.0, 5.0]),  # x 3/3, y 3/2: y is further past
        ),
    )
    assert hits[0] is None
    assert hits[2] is None
    assert hits[1] is not None
    assert (hits[1].feature, hits[1].run, hits[1].limit) == (0, 3, 3)
    assert hits[1].exceedance == 1 / 1000  # none of 999 training readings held such a run
    assert hits[3] is not None
    assert (hits[3].feature, hits[3].run, hits[3].limit) == (1, 3, 2)


def test_nothing_is_judged_off_without_statistics_or_past_the_window() -> None:
    frozen = windows(([7.0] * 4, [7.0] * 4))
    assert StuckCheck(StuckConfig(min_run=2)).check(RunsDetector((1, 1)), frozen)[0] is not None
    assert StuckCheck(StuckConfig(enabled=False, min_run=2)).check(
        RunsDetector((1, 1)), frozen
    ) == [None]
    # A model saved before run statistics existed (or a baseline detector) is not judged.
    assert StuckCheck(StuckConfig(min_run=2)).check(RunsDetector(None), frozen) == [None]
    # Constant in training (0): the constant check's.
    assert StuckCheck(StuckConfig(min_run=2)).check(RunsDetector((0, 0)), frozen) == [None]
    # A limit longer than the window (4) cannot be shown by one window: not judged, and said.
    check = StuckCheck(StuckConfig(min_run=2, factor=3.0))  # limits: x 3, y 6
    with structlog.testing.capture_logs() as logs:
        hits = check.check(RunsDetector((1, 2)), frozen)
        check.check(RunsDetector((1, 2)), frozen)
    assert hits[0] is not None
    assert hits[0].feature == 0
    said = [e for e in logs if e["event"] == "stuck_check_limits"]
    assert len(said) == 1, "logged once per model and setting"
    assert said[0]["limits"] == {"x": 3}
    assert said[0]["not_judged"] == ["y"]
    assert check.check(RunsDetector((2, 2)), frozen) == [None]  # both limits 6 > 4


def test_an_empty_batch_is_an_empty_answer() -> None:
    assert StuckCheck(StuckConfig()).check(RunsDetector((1, 1)), np.zeros((0, 4, 2))) == []
