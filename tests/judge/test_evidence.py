"""Evidence: the readings that made a window anomalous, and the alert span they give
(sentinel.judge.evidence, sentinel.judge.alerts; issue #21)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sentinel.config import AlertsConfig
from sentinel.judge.alerts import AlertTracker
from sentinel.judge.evidence import carrying_readings, evidence, onset
from sentinel.records import (
    AlertStatus,
    LevelHit,
    RelationHit,
    Score,
    SpikeHit,
    StuckHit,
    Verdict,
    Window,
)

LENGTH, STEPS = 32, 16


def window(end: float, times: bool = True) -> Window:
    stamps = end - 10.0 * np.arange(LENGTH, dtype=np.float64)[::-1]  # a reading every 10 s
    return Window(
        "pump",
        "a",
        float(stamps[0]),
        end,
        np.zeros((LENGTH, 2), dtype=np.float32),
        stamps if times else None,
    )


def verdict(
    end: float,
    score: float,
    threshold: float = 4.0,
    spike: SpikeHit | None = None,
    level: LevelHit | None = None,
) -> Verdict:
    anomalous = score > threshold or spike is not None or level is not None
    return Verdict(
        Score(window(end), score, (score, 0.0), "v1"),
        threshold,
        anomalous,
        spike=spike,
        level=level,
    )


def test_a_one_reading_error_is_carried_by_that_reading() -> None:
    ratios = np.ones(STEPS)
    ratios[5] = 100.0  # mean 7.2 > 4
    assert carrying_readings(ratios, 4.0) == (5, 5)


def test_two_separate_bad_readings_span_both() -> None:
    ratios = np.ones(STEPS)
    ratios[[3, 9]] = 40.0  # each alone leaves the mean above 3
    assert carrying_readings(ratios, 3.0) == (3, 9)


def test_an_error_spread_over_every_reading_is_carried_by_all() -> None:
    ratios = np.full(STEPS, 6.0)
    ratios[0] = 7.0
    assert carrying_readings(ratios, 4.0) == (0, STEPS - 1)


def test_a_faults_echo_in_the_forecasters_context_is_not_evidence() -> None:
    # the synthetic daily_pulse (seed 0): the scored readings of the window 9 readings after
    # a 10-reading pulse ended. The drop (index 6) was predicted 69,000 times worse than
    # normal; the readings after it 1-80 times, from a state the pulse left -- on their own
    # their median is above the threshold, so before the echo rule every reading was taken
    # and the alert ran to the newest
    pulse = [85.6, 39.6, 84.8, 40.9, 13.4, 12.2, 69662.7, 0.5]
    after = [37.6, 75.4, 16.0, 18.0, 0.9, 0.4, 3.5, 0.2]
    ratios = np.array([*pulse, *after])
    assert carrying_readings(ratios, 4.5) == (6, 6)


def test_errors_of_one_order_are_all_candidates_beside_a_larger_one() -> None:
    ratios = np.full(STEPS, 8.0)  # wrong throughout
    ratios[4] = 50.0  # and worse at one reading, but not by two orders
    assert carrying_readings(ratios, 4.0) == (0, STEPS - 1)


def test_the_score_evidence_points_at_the_scored_readings_times() -> None:
    v = verdict(1000.0, 7.2)
    ratios = np.ones((STEPS, 2))
    ratios[5, 0] = 100.0
    # scored readings are the newest 16 of 32: step 5 is reading 21, 10 readings before
    # the newest
    assert evidence(v, ratios) == (1000.0 - 100.0, 1000.0 - 100.0)


def test_the_feature_that_made_the_score_is_the_one_localised() -> None:
    v = verdict(1000.0, 7.2)
    ratios = np.ones((STEPS, 2))
    ratios[2, 1] = 3.0  # a little noise on the other feature
    ratios[12, 0] = 100.0
    assert evidence(v, ratios) == (1000.0 - 30.0, 1000.0 - 30.0)


def test_without_per_reading_errors_or_times_the_window_end_or_even_spacing_is_used() -> None:
    assert evidence(verdict(1000.0, 9.0), None) == (1000.0, 1000.0)
    plain = Verdict(Score(window(1000.0, times=False), 7.2, (7.2, 0.0), "v1"), 4.0, True)
    ratios = np.ones((STEPS, 2))
    ratios[5, 0] = 100.0
    assert evidence(plain, ratios) == (900.0, 900.0)  # evenly spaced from start to end


def test_a_spike_is_its_reading_and_a_level_hit_the_newest() -> None:
    spiked = verdict(1000.0, 1.0, spike=SpikeHit(0, 30.0, age=7))
    assert evidence(spiked, None) == (930.0, 930.0)
    both = verdict(1000.0, 1.0, spike=SpikeHit(0, 30.0, age=7), level=LevelHit(1, 12.0))
    assert evidence(both, None) == (930.0, 1000.0)


def test_non_finite_errors_are_the_worst_there_are() -> None:
    v = verdict(1000.0, 1e30)
    ratios = np.ones((STEPS, 2))
    ratios[14, 0] = np.inf
    assert evidence(v, ratios) == (990.0, 990.0)  # step 14: the reading before the newest


def test_an_alert_spans_its_evidence_not_the_windows_that_still_held_it() -> None:
    tracker = AlertTracker(AlertsConfig(open_after=2, close_after=2), {"pump": ("x", "y")})
    baseline = (1.0, 1.0)
    changes = []
    # A spike at t=900 stays in the scored half of the next windows: all anomalous, all
    # pointing at the same reading; then normal windows close the alert.
    for end in (940.0, 980.0, 1020.0, 1060.0):
        v = verdict(end, 9.0)
        v = Verdict(v.score, v.threshold, True, evidence=(900.0, 900.0))
        changes.append(tracker.observe(v, baseline))
    for end in (1100.0, 1140.0):
        changes.append(tracker.observe(verdict(end, 1.0), baseline))
    alerts = [c for c in changes if c is not None]
    assert alerts[0].started_at == 900.0
    closed = alerts[-1]
    assert closed.status is AlertStatus.CLOSED
    assert closed.ended_at == 900.0
    assert closed.updated_at == 1060.0  # the last window that was anomalous


def test_an_onset_never_precedes_what_the_last_normal_window_held() -> None:
    # The score's evidence reaches back 4 readings before the fault (an error spread over
    # the window), into readings the device's last normal window held and judged normal.
    run = [Verdict(verdict(1000.0, 9.0).score, 4.0, True, evidence=(950.0, 990.0))]
    assert onset(run, normal_end=970.0) == 980.0  # the first reading after that window
    assert onset(run, normal_end=900.0) == 950.0
    assert onset(run, normal_end=float("-inf")) == 950.0


def test_an_alert_starts_after_the_devices_last_normal_window() -> None:
    tracker = AlertTracker(AlertsConfig(open_after=1), {"pump": ("x", "y")})
    assert tracker.observe(verdict(960.0, 1.0), (1.0, 1.0)) is None  # normal up to 960
    v = verdict(1000.0, 9.0)
    alert = tracker.observe(Verdict(v.score, 4.0, True, evidence=(930.0, 1000.0)), (1.0, 1.0))
    assert alert is not None
    assert alert.started_at == 970.0


def test_a_spikes_reading_is_its_onset_even_inside_the_last_normal_window() -> None:
    # judged only once newer neighbours arrived: the window that held it before was normal
    spiked = verdict(1000.0, 1.0, spike=SpikeHit(0, 30.0, age=3))
    run = [Verdict(spiked.score, 4.0, True, spike=spiked.spike, evidence=(970.0, 970.0))]
    assert onset(run, normal_end=990.0) == 970.0


def test_a_frozen_channel_is_evidence_from_its_first_repeat() -> None:
    base = verdict(1000.0, 1.0)
    frozen = Verdict(base.score, 4.0, True, stuck=StuckHit(1, run=10, limit=8, exceedance=1e-3))
    # the run's first reading is the last genuine value; it repeats from the next one
    assert evidence(frozen, None) == (1000.0 - 80.0, 1000.0)
    run = [replace(frozen, evidence=evidence(frozen, None))]
    assert onset(run, normal_end=990.0) == 920.0  # earlier windows were normal: run too short


def test_a_relation_hit_is_evidence_of_the_newest_reading_that_carries_it() -> None:
    v = verdict(1000.0, 1.0)
    carried = replace(v, is_anomaly=True, relation=RelationHit(0, 9.0, 1e-9, 12))
    # 12 readings before the newest, a reading every 10 s
    assert evidence(carried, None) == (1000.0 - 120.0, 1000.0 - 120.0)
    unplaced = replace(carried, relation=RelationHit(0, 9.0, 1e-9))
    assert evidence(unplaced, None) == (1000.0, 1000.0)  # the window's newest, as before
