"""The noise check: windows whose readings of a feature are rougher than training's roughest."""

from __future__ import annotations

import numpy as np
import pytest

from sentinel.config import NoiseConfig
from sentinel.judge.evidence import evidence
from sentinel.judge.noise import NoiseCheck
from sentinel.model.noise import NoiseStats
from sentinel.records import AlertReason, Score, ThresholdState, Verdict, Window
from tests.fakes import FakeDetector


class RoughDetector(FakeDetector):
    """The fake model (window 4, features x and y), with training's roughest windows."""

    def __init__(
        self,
        largest: tuple[float, ...] | None,
        n_readings: int = 999,
        still: tuple[float, ...] = (),
        still_steps: tuple[float, ...] = (),
    ) -> None:
        super().__init__()
        self._stats = (
            None
            if largest is None
            else NoiseStats(largest=largest, still=still, still_steps=still_steps)
        )
        self._meta.training["n_readings"] = n_readings

    def noise_stats(self) -> NoiseStats | None:
        return self._stats


def window_of(length: int) -> Window:
    # a reading a second from 0: evenly spaced from start to end
    return Window("s", "d", 0.0, length - 1.0, np.zeros((length, 2), np.float32))


def windows(*columns: tuple[list[float], list[float]]) -> np.ndarray:
    return np.array([np.column_stack(c) for c in columns], dtype=np.float64)


def test_a_rough_window_is_anomalous_and_names_the_roughest_feature() -> None:
    check = NoiseCheck(NoiseConfig(factor=2.0))
    detector = RoughDetector((0.1, 1.0))  # limits: x 0.2, y 2.0
    hits = check.check(
        detector,
        windows(
            ([0.0, 0.1, 0.0, 0.1], [0.0, 1.0, 0.0, 1.0]),  # as rough as training: normal
            ([0.0, 0.5, 0.0, 0.5], [0.0, 1.0, 0.0, 1.0]),  # x: median step 0.5, 5 x
            ([0.0, 0.5, 0.0, 0.5], [0.0, 9.0, 0.0, 9.0]),  # x 5 x, y 9 x: y is rougher
            ([0.0, 0.0, 5.0, 5.0], [0.0, 1.0, 2.0, 3.0]),  # x steps once: median step 0
        ),
    )
    assert hits[0] is None
    assert hits[1] is not None
    assert hits[1].feature == 0
    assert hits[1].ratio == pytest.approx(5.0)
    assert hits[1].exceedance == 1 / 1000  # no training window of 999 readings was as rough
    assert hits[2] is not None
    assert hits[2].feature == 1
    assert hits[2].ratio == pytest.approx(9.0)
    assert hits[3] is None, "a step is one large difference among three: the median is 0"


def test_a_rough_window_is_evidence_up_to_its_last_rough_step() -> None:
    # issue #21, an alert closes when its evidence does: a burst that ended keeps its
    # windows rough while most of their steps are; its own readings are the evidence
    check = NoiseCheck(NoiseConfig(factor=2.0))
    detector = RoughDetector((0.1, 1.0))  # limits: x 0.2, y 2.0
    burst = [0.0, 0.5, 0.0, 0.5, 0.0, 0.5, 0.5, 0.5]  # rough steps into readings 1-5
    (hit,) = check.check(detector, windows((burst, [0.0] * 8)))
    assert hit is not None
    assert hit.age == 2  # reading 5, two before the newest
    v = Verdict(Score(window_of(8), 0.0, (0.0, 0.0), "v1"), 1.0, True, noise=hit)
    assert evidence(v, None) == (5.0, 5.0)  # a reading a second: reading 5's time


def test_nothing_is_judged_off_without_statistics_or_where_training_never_moved() -> None:
    rough = windows(([0.0, 9.0, 0.0, 9.0], [0.0, 9.0, 0.0, 9.0]))
    assert NoiseCheck(NoiseConfig()).check(RoughDetector((1.0, 1.0)), rough)[0] is not None
    assert NoiseCheck(NoiseConfig(enabled=False)).check(RoughDetector((1.0, 1.0)), rough) == [None]
    # A model saved before roughness statistics existed (or a baseline detector).
    assert NoiseCheck(NoiseConfig()).check(RoughDetector(None), rough) == [None]
    # 0: every training window's median step was 0 (a command, a set point, a constant).
    assert NoiseCheck(NoiseConfig()).check(RoughDetector((0.0, 0.0)), rough) == [None]
    hit = NoiseCheck(NoiseConfig()).check(RoughDetector((0.0, 1.0)), rough)[0]
    assert hit is not None
    assert hit.feature == 1


def test_a_window_holding_a_nan_reading_is_not_judged_on_that_feature() -> None:
    rough = windows(([0.0, np.nan, 0.0, 9.0], [0.0, 1.0, 0.0, 1.0]))
    assert NoiseCheck(NoiseConfig()).check(RoughDetector((1.0, 1.0)), rough) == [None]


def test_the_factor_must_leave_room_above_training() -> None:
    with pytest.raises(ValueError, match="factor"):
        NoiseConfig(factor=1.0)


def test_the_alert_reason_keeps_the_noisy_feature() -> None:
    state = ThresholdState("quantile", 2.0, 300, None, True)
    reason = AlertReason(state, 1e-3, "abc", noise=("vibration", 4.25))
    data = reason.to_dict()
    assert (data["noise_feature"], data["noise_ratio"]) == ("vibration", 4.25)
    assert AlertReason.from_dict(data).noise == ("vibration", 4.25)
    assert AlertReason.from_dict(AlertReason(state, 1e-3, "abc").to_dict()).noise is None


def test_a_still_channel_is_judged_against_its_floor() -> None:
    """x never moved in most of its steps in training (roughness 0 in every window; its
    steps were 1.3 at the median), y is noisy: movement of x finer than its own steps is
    anomalous above its floor -- noise, a drift -- while a step of its own is not, nor are
    its steps coming more often than training showed (issue #21)."""
    detector = RoughDetector((0.0, 1.0), still=(1e-3, 0.0), still_steps=(1.3, 0.0))
    check = NoiseCheck(NoiseConfig(factor=2.0))
    quiet = [0.0, 0.0, 0.0, 0.0]
    hits = check.check(
        detector,
        windows(
            ([0.3, 0.3, 0.9, 0.9], quiet),  # one step: median step 0
            ([0.3, 0.3001, 0.3, 0.3001], quiet),  # 1e-4 jitter: under the floor's 2 x
            ([0.3, 0.35, 0.3, 0.38], quiet),  # noise of 0.05: 50 x the floor
            ([0.3, 0.32, 0.34, 0.36], quiet),  # a drift of 0.02 a reading
            ([0.3, 1.6, 0.3, 1.6], quiet),  # its own steps, every reading
        ),
    )
    assert hits[0] is None
    assert hits[1] is None
    assert hits[2] is not None
    assert hits[2].feature == 0
    assert hits[2].ratio == pytest.approx(50.0)
    assert hits[3] is not None
    assert hits[3].feature == 0
    assert hits[4] is None, "a quantised channel changing more often than in training"
