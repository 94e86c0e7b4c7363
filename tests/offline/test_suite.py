"""The detection suite's scoring (issue #21) on hand-made predictions."""

from __future__ import annotations

import numpy as np
import pytest

from sentinel.offline.suite import (
    SeriesScore,
    UcrOutcome,
    UcrSpec,
    id_events,
    label_events,
    pool_scores,
    score_series,
    ucr_outcome,
    ucr_spec,
)


def labels(n: int, *spans: tuple[int, int]) -> list[int]:
    out = [0] * n
    for a, b in spans:  # inclusive
        out[a : b + 1] = [1] * (b - a + 1)
    return out


def test_alert_ids_become_events_and_back_to_back_alerts_stay_two() -> None:
    ids = ["", "a", "a", "", "b", "b", "c", "", "", "d"]
    assert id_events(ids) == ([(1, 2), (4, 5), (6, 6), (9, 9)], ["a", "b", "c", "d"])
    assert id_events(["", "a", "", "a", "a"]) == ([(1, 1), (3, 4)], ["a", "a"])  # reopened
    assert id_events([]) == ([], [])
    assert id_events(["", ""]) == ([], [])


def test_label_events_are_inclusive_row_spans() -> None:
    assert label_events([0, 1, 1, 0, 0, 1]) == [(1, 2), (5, 5)]
    assert label_events([0, 0]) == []


def test_event_hit_onset_delay_false_alerts_and_row_ratio() -> None:
    # two labelled events, rows 10-19 and 40-49; alerts: 14-25 (hits the first 4 readings
    # late), 30-31 (false), 60-61 (false); the second event is missed
    truth = labels(80, (10, 19), (40, 49))
    score = score_series(truth, [(14, 25), (30, 31), (60, 61)])
    assert score == SeriesScore(
        events=2,
        detected=1,
        predicted=3,
        false_alerts=2,
        delays=(4,),
        rows_flagged=12 + 2 + 2,
        rows_labelled=20,
    )
    assert score.recall == 0.5
    assert score.precision == pytest.approx(1 / 3)
    assert score.mean_delay == 4.0
    assert score.flagged_ratio == pytest.approx(16 / 20)


def test_an_alert_open_before_the_event_has_no_delay_and_one_alert_hits_two() -> None:
    truth = labels(50, (10, 14), (20, 24))
    score = score_series(truth, [(5, 30)])
    assert (score.detected, score.false_alerts, score.delays) == (2, 0, (0, 0))
    assert score.precision == 1.0
    assert score.flagged_ratio == pytest.approx(26 / 10)


def test_nothing_predicted_or_nothing_labelled() -> None:
    silent = score_series(labels(20, (5, 6)), [])
    assert (silent.recall, silent.precision, silent.mean_delay) == (0.0, None, None)
    clean = score_series([0] * 20, [(3, 4)])
    assert (clean.recall, clean.precision, clean.false_alerts) == (None, 0.0, 1)
    assert clean.flagged_ratio is None


def test_grace_lets_a_late_onset_hit_a_short_event_and_keeps_the_delay() -> None:
    # a 3-reading spike at rows 20-22; the alert opens at row 26, after the spike
    truth = labels(60, (20, 22))
    strict = score_series(truth, [(26, 30)])
    assert (strict.detected, strict.false_alerts) == (0, 1)
    late = score_series(truth, [(26, 30)], grace=4)
    assert (late.detected, late.false_alerts, late.delays) == (1, 0, (6,))
    assert score_series(truth, [(27, 30)], grace=4).detected == 0  # 5 after: too late
    with pytest.raises(ValueError, match="grace"):
        score_series(truth, [], grace=-1)


def test_a_reopened_alert_is_one_alert_hit_or_false() -> None:
    truth = labels(100, (10, 19))
    # alert "a" hits the event, closes, and is reopened twice later: one alert, not false;
    # alert "b" never touches the event: one false alert, however many runs it has
    spans = [(12, 20), (40, 45), (60, 61), (80, 81), (85, 86)]
    score = score_series(truth, spans, keys=["a", "a", "a", "b", "b"])
    assert (score.predicted, score.false_alerts, score.detected) == (2, 1, 1)
    assert score.rows_flagged == 9 + 6 + 2 + 2 + 2  # rows between runs are not counted
    with pytest.raises(ValueError, match="keys"):
        score_series(truth, spans, keys=["a"])


def test_pooling_sums_counts_and_keeps_every_delay() -> None:
    a = score_series(labels(30, (10, 12)), [(11, 20)])
    b = score_series(labels(30, (5, 9)), [(7, 7), (20, 22)])
    pooled = pool_scores([a, b])
    assert (pooled.events, pooled.detected, pooled.predicted, pooled.false_alerts) == (2, 2, 3, 1)
    assert sorted(pooled.delays) == [1, 2]
    assert pooled.rows_flagged == 10 + 1 + 3
    assert pooled.rows_labelled == 8


def test_ucr_name_gives_the_protocol_in_zero_based_rows() -> None:
    spec = ucr_spec("135_UCR_Anomaly_InternalBleeding16_1200_4187_4199")
    assert spec == UcrSpec("135_InternalBleeding16", 1200, 4186, 4198)
    with pytest.raises(ValueError, match="UCR_Anomaly"):
        ucr_spec("InternalBleeding16_1200_4187_4199")
    with pytest.raises(ValueError, match="train end"):
        ucr_spec("1_UCR_Anomaly_x_5000_4187_4199")


def test_ucr_hit_within_100_readings_of_the_anomaly_after_training() -> None:
    spec = UcrSpec("x", train_end=100, first=500, last=510)
    scores = np.full(1000, 1.0)
    scores[:100] = np.nan
    scores[610] = 9.0  # 100 readings after the last anomalous row: still a hit
    assert ucr_outcome(spec, scores).hit
    assert ucr_outcome(spec, scores).peak == 610
    scores[611] = 10.0  # 101 after: a miss
    assert not ucr_outcome(spec, scores).hit
    scores[400] = 11.0  # 100 before the first: a hit
    assert ucr_outcome(spec, scores).hit
    # a higher score inside training does not count
    scores[10] = 99.0
    assert ucr_outcome(spec, scores).peak == 400
    assert ucr_outcome(spec, np.full(1000, np.nan)) == UcrOutcome(spec, None, False)
