from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sentinel.config import AlertsConfig
from sentinel.judge.alerts import AlertTracker, alert_checks
from sentinel.records import (
    Alert,
    AlertReason,
    AlertStatus,
    Score,
    ThresholdState,
    Verdict,
    Window,
)

FEATURES: dict[str, tuple[str, ...]] = {"pump": ("flow", "pressure", "current")}
BASELINE = (0.1, 0.1, 0.1)


def verdict(
    t: float,
    anomalous: bool,
    errors: tuple[float, ...] = (0.1, 0.1, 0.1),
    device: str = "a",
    value: float | None = None,
) -> Verdict:
    window = Window("pump", device, t - 3, t, np.zeros((4, 3), dtype=np.float32))
    value = value if value is not None else (5.0 if anomalous else 0.5)
    return Verdict(Score(window, value, errors, "v1"), threshold=1.0, is_anomaly=anomalous)


def test_alert_opens_after_m_anomalous_windows_and_closes_after_n_normal() -> None:
    tracker = AlertTracker(AlertsConfig(open_after=2, close_after=3, top_features=2), FEATURES)
    assert tracker.observe(verdict(1, True), BASELINE) is None  # pending
    opened = tracker.observe(verdict(2, True, value=7.0), BASELINE)
    assert opened is not None
    assert opened.status is AlertStatus.OPEN
    assert opened.started_at == 1.0
    assert opened.ended_at is None
    assert opened.windows == 2
    assert opened.peak_score == 7.0
    updated = tracker.observe(verdict(3, True, value=9.0), BASELINE)
    assert updated is not None
    assert updated.uid == opened.uid
    assert updated.peak_score == 9.0
    assert updated.windows == 3
    assert tracker.observe(verdict(4, False), BASELINE) is None
    assert tracker.observe(verdict(5, False), BASELINE) is None
    closed = tracker.observe(verdict(6, False), BASELINE)
    assert closed is not None
    assert closed.uid == opened.uid
    assert closed.status is AlertStatus.CLOSED
    assert closed.ended_at == 3.0  # the last anomalous window, not the normal run after it
    assert tracker.open_alerts == 0


def test_a_single_anomalous_window_does_not_open_when_two_are_needed() -> None:
    tracker = AlertTracker(AlertsConfig(open_after=2, close_after=1), FEATURES)
    assert tracker.observe(verdict(1, True), BASELINE) is None
    assert tracker.observe(verdict(2, False), BASELINE) is None
    assert tracker.observe(verdict(3, True), BASELINE) is None
    assert tracker.open_alerts == 0


def test_a_normal_blip_inside_an_alert_keeps_it_open() -> None:
    tracker = AlertTracker(AlertsConfig(open_after=1, close_after=2), FEATURES)
    first = tracker.observe(verdict(1, True), BASELINE)
    assert tracker.observe(verdict(2, False), BASELINE) is None
    again = tracker.observe(verdict(3, True), BASELINE)
    assert first is not None
    assert again is not None
    assert again.uid == first.uid


def test_contributions_are_the_error_above_each_features_normal_level() -> None:
    tracker = AlertTracker(AlertsConfig(open_after=1, close_after=1, top_features=2), FEATURES)
    # pressure far above its normal error, current slightly, flow at its normal level.
    alert = tracker.observe(verdict(1, True, errors=(0.1, 3.1, 1.1)), BASELINE)
    assert alert is not None
    names = [c.feature for c in alert.top_features]
    assert names == ["pressure", "current"]
    assert alert.top_features[0].share == 0.75


def test_devices_get_separate_alerts_and_restore_continues_an_open_one() -> None:
    tracker = AlertTracker(AlertsConfig(open_after=1, close_after=5), FEATURES)
    a = tracker.observe(verdict(1, True, device="a"), BASELINE)
    b = tracker.observe(verdict(1, True, device="b"), BASELINE)
    assert a is not None
    assert b is not None
    assert a.uid != b.uid
    restarted = AlertTracker(AlertsConfig(open_after=1, close_after=5), FEATURES)
    assert restarted.restore([a, b]) == 2
    continued = restarted.observe(verdict(2, True, device="a"), BASELINE)
    assert continued is not None
    assert continued.uid == a.uid
    assert continued.windows == 2


def test_m_of_n_opens_on_scattered_anomalous_windows() -> None:
    tracker = AlertTracker(AlertsConfig(open_after=3, open_within=5, close_after=2), FEATURES)
    pattern = [True, False, True, False]  # 2 anomalous in the last 4: not yet
    assert all(tracker.observe(verdict(t, a), BASELINE) is None for t, a in enumerate(pattern))
    opened = tracker.observe(verdict(4, True), BASELINE)  # 3 of the last 5
    assert opened is not None
    assert opened.started_at == 0.0  # the first anomalous window of the five
    assert opened.windows == 3


def test_m_of_n_forgets_anomalous_windows_that_aged_out() -> None:
    tracker = AlertTracker(AlertsConfig(open_after=2, open_within=3, close_after=2), FEATURES)
    for t, anomalous in enumerate([True, False, False, True]):  # 1 of the last 3 at most
        assert tracker.observe(verdict(t, anomalous), BASELINE) is None
    assert tracker.open_alerts == 0


def test_open_within_must_cover_open_after() -> None:
    with pytest.raises(ValueError, match="open_within"):
        AlertsConfig(open_after=3, open_within=2)


def _alert(peak: float, spike: tuple[str, float] | None, level: tuple[str, float] | None) -> Alert:
    reason = AlertReason(ThresholdState("quantile", 1.0, 2000, None, True), 1e-4, "h", spike, level)
    return Alert(
        uid="u",
        stream="pump",
        device="a",
        status=AlertStatus.OPEN,
        started_at=0.0,
        updated_at=1.0,
        ended_at=None,
        peak_score=peak,
        threshold=1.0,
        top_features=(),
        model_version="v1",
        windows=5,
        reason=reason,
    )


def test_alert_checks_say_which_checks_opened_an_alert() -> None:
    assert alert_checks(_alert(2.0, None, None)) == "score"
    # A spike alone opens an alert whose score stays under the threshold: the spike is why.
    assert alert_checks(_alert(0.3, ("pressure", 14.2), None)) == "spike:pressure"
    assert alert_checks(_alert(2.0, None, ("flow", 9.0))) == "score+level:flow"
    both = alert_checks(_alert(0.5, ("current", 8.0), ("flow", 9.0)))
    assert both == "spike:current+level:flow"
    frozen = replace(_alert(0.5, None, None), reason=replace(REASON, stuck=("flow", 40, 24)))
    assert alert_checks(frozen) == "stuck:flow"


REASON = AlertReason(ThresholdState("quantile", 1.0, 2000, None, True), 1e-4, "h")


def test_a_stuck_reason_round_trips_and_older_reasons_have_none() -> None:
    reason = replace(REASON, stuck=("flow", 40, 24))
    data = reason.to_dict()
    assert (data["stuck_feature"], data["stuck_run"], data["stuck_limit"]) == ("flow", 40, 24)
    assert AlertReason.from_dict(data) == reason
    assert "stuck_feature" not in REASON.to_dict()
    assert AlertReason.from_dict(REASON.to_dict()).stuck is None
