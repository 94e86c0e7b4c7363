from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest

from sentinel.offline.evaluation import (
    EventMetrics,
    NabScores,
    PointMetrics,
    changepoints_from_predictions,
    detection_delays,
    event_metrics,
    events_from_labels,
    mean_detection_delay,
    nab_file,
    nab_scores,
    point_metrics,
    pooled_point_metrics,
)

T0 = np.datetime64("2020-03-09T12:00:00", "s")


def seconds(*offsets: float) -> np.ndarray:
    return T0 + np.array(offsets, dtype="timedelta64[s]")


def scores_approx(scores: NabScores, standard: float, low_fp: float, low_fn: float) -> None:
    assert scores.standard == pytest.approx(standard, abs=1e-9)
    assert scores.low_fp == pytest.approx(low_fp, abs=1e-9)
    assert scores.low_fn == pytest.approx(low_fn, abs=1e-9)


# -- point metrics ----------------------------------------------------------------------------


def test_point_metrics_on_a_tiny_array() -> None:
    y_true = [0, 0, 1, 1, 1, 0, 0, 0, 1, 1]
    y_pred = [1, 0, 1, 1, 0, 0, 1, 1, 1, 0]
    # TP rows 2,3,8; FP rows 0,6,7; FN rows 4,9; TN rows 1,5.
    assert point_metrics(y_true, y_pred) == PointMetrics(
        precision=0.5, recall=0.6, f1=6 / 11, far=0.6, mar=0.4, tp=3, fp=3, fn=2, tn=2
    )


def test_point_metrics_accept_skab_float_labels() -> None:
    metrics = point_metrics(np.array([0.0, 1.0, 1.0]), np.array([1.0, 1.0, 0.0]))
    assert (metrics.tp, metrics.fp, metrics.fn, metrics.tn) == (1, 1, 1, 0)


def test_pooling_across_files_differs_from_averaging() -> None:
    file_a = ([1, 1], [1, 1])  # F1 = 1
    file_b = ([1, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1])  # F1 = 0
    pooled = pooled_point_metrics([file_a, file_b])
    # Pooled: TP 2, FP 5, FN 1, TN 0 -> F1 = 4 / (4 + 6) = 0.4, not the mean 0.5.
    assert (pooled.tp, pooled.fp, pooled.fn, pooled.tn) == (2, 5, 1, 0)
    assert pooled.f1 == pytest.approx(0.4)
    assert (point_metrics(*file_a).f1 + point_metrics(*file_b).f1) / 2 == pytest.approx(0.5)
    assert pooled.precision == pytest.approx(2 / 7)
    assert pooled.recall == pytest.approx(2 / 3)
    assert pooled.far == 1.0
    assert pooled.mar == pytest.approx(1 / 3)


def test_zero_denominators_give_zero() -> None:
    assert point_metrics([0, 0, 0], [0, 0, 0]) == PointMetrics(0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, 3)
    # No negatives at all: FAR has FP + TN = 0; precision has TP + FP = 0.
    assert point_metrics([1, 1], [0, 0]) == PointMetrics(0.0, 0.0, 0.0, 0.0, 1.0, 0, 0, 2, 0)
    assert pooled_point_metrics([]) == PointMetrics(0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, 0)


def test_point_metrics_reject_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="rows"):
        point_metrics([0, 1], [0, 1, 1])


# -- events -----------------------------------------------------------------------------------


def test_events_from_labels_with_float_seconds() -> None:
    times = np.arange(10, dtype=float) + 100.0
    labels = [1, 1, 0, 0, 1, 0, 1, 1, 1, 1]
    assert events_from_labels(times, labels) == [(100.0, 101.0), (104.0, 104.0), (106.0, 109.0)]
    assert events_from_labels(times, np.zeros(10)) == []


def test_events_from_labels_keeps_datetime64() -> None:
    times = seconds(0, 1, 2, 3)
    events = events_from_labels(times, [0, 1, 1, 0])
    assert events == [(times[1], times[2])]
    assert isinstance(events[0][0], np.datetime64)


def test_event_precision_and_recall_count_each_event_once() -> None:
    true = [(0.0, 10.0), (20.0, 30.0), (50.0, 60.0), (100.0, 110.0)]
    predicted = [
        (5.0, 25.0),  # one prediction overlapping two true events
        (52.0, 53.0),  # two predictions overlapping one true event ...
        (58.0, 70.0),
        (80.0, 90.0),  # ... and one overlapping nothing
    ]
    assert event_metrics(true, predicted) == EventMetrics(
        precision=0.75,  # 3 of 4 predictions touch a true event
        recall=0.75,  # 3 of 4 true events are touched; (100, 110) is missed
        true_events=4,
        detected_events=3,
        predicted_events=4,
        matched_predictions=3,
    )


def test_event_overlap_is_inclusive_and_empty_inputs_score_zero() -> None:
    assert event_metrics([(0.0, 10.0)], [(10.0, 15.0)]).recall == 1.0
    assert event_metrics([(0.0, 10.0)], [(10.5, 15.0)]).recall == 0.0
    assert event_metrics([], []) == EventMetrics(0.0, 0.0, 0, 0, 0, 0)


def test_event_metrics_with_datetime64() -> None:
    true = [(T0, T0 + np.timedelta64(10, "s"))]
    predicted = [(T0 + np.timedelta64(5, "s"), T0 + np.timedelta64(6, "s"))]
    assert event_metrics(true, predicted).precision == 1.0


def test_detection_delay() -> None:
    true = [(10.0, 20.0), (30.0, 40.0), (60.0, 70.0)]
    predicted = [(14.0, 50.0), (13.0, 15.0)]
    # Event 1: first overlapping prediction starts at 13 -> 3 s. Event 2: (14, 50) is already
    # firing at 30 -> 0 s. Event 3 is missed and left out.
    assert detection_delays(true, predicted) == [3.0, 0.0]
    assert mean_detection_delay(true, predicted) == 1.5
    assert mean_detection_delay(true, [(80.0, 90.0)]) is None


def test_detection_delay_with_datetime64() -> None:
    true = [(T0, T0 + np.timedelta64(60, "s"))]
    predicted = [(T0 + np.timedelta64(7, "s"), T0 + np.timedelta64(8, "s"))]
    assert detection_delays(true, predicted) == [7.0]


# -- changepoints -----------------------------------------------------------------------------


def test_changepoints_are_every_change_at_the_later_row_and_a_leading_one() -> None:
    times = np.arange(8, dtype=float)
    # SKAB: abs(prediction.diff()) with row 0 set to prediction[0].
    assert changepoints_from_predictions(times, [1, 1, 0, 0, 1, 1, 1, 0]) == [0.0, 2.0, 4.0, 7.0]
    assert changepoints_from_predictions(times[:4], [0, 0, 1, 1]) == [2.0]
    assert changepoints_from_predictions(times[:3], [0, 0, 0]) == []


def test_changepoints_keep_datetime64() -> None:
    times = seconds(0, 1, 2)
    assert changepoints_from_predictions(times, [0, 1, 1]) == [times[1]]


# -- NAB --------------------------------------------------------------------------------------

TIMES = np.arange(0.0, 600.0)


def test_null_detector_scores_zero_in_every_profile() -> None:
    no_detections: list[float] = []
    files = [(TIMES, [100.0, 400.0], no_detections), (TIMES, [250.0], no_detections)]
    scores_approx(nab_scores(files), 0.0, 0.0, 0.0)
    scores_approx(nab_scores(files, window=60, placement="right"), 0.0, 0.0, 0.0)


def test_perfect_detector_scores_100() -> None:
    files = [(TIMES, [100.0, 400.0], [100.0, 400.0]), (TIMES, [250.0], [250.0])]
    scores_approx(nab_scores(files, window=60, placement="right"), 100.0, 100.0, 100.0)
    # SKAB's centred window starts w/2 before the changepoint: the full reward is there.
    early = [(TIMES, [100.0, 400.0], [85.0, 385.0]), (TIMES, [250.0], [235.0])]
    scores_approx(nab_scores(early, window=30, placement="center"), 100.0, 100.0, 100.0)


def test_detection_at_the_changepoint_in_a_centred_window() -> None:
    # Window [85, 115]; the detection at 100 is at relative position 15/30 = 0.5, so the curve
    # index is int(0.5 * 1000) = 500 and x = -pi/2 + 500 * pi/999 = 0.0015724. Standard profile:
    # y = (1 + 0.11)/2 * -tanh(x)/tanh(pi/2) + (1 - 0.11)/2 = 0.4440485, and the score is
    # 100 * (y - (-1)) / (1 - (-1)) = 72.2024.
    x = -math.pi / 2 + 500 * math.pi / 999
    y = 0.555 * -math.tanh(x) / math.tanh(math.pi / 2) + 0.445
    scores = nab_scores([(TIMES, [100.0], [100.0])])  # SKAB's 30 s, centred
    assert scores.standard == pytest.approx(100 * (y + 1) / 2, abs=1e-9)
    assert scores.standard == pytest.approx(72.2024, abs=1e-4)


def test_early_detection_beats_late_detection() -> None:
    early = nab_scores([(TIMES, [100.0], [105.0])], window=60, placement="right")
    late = nab_scores([(TIMES, [100.0], [150.0])], window=60, placement="right")
    assert early.standard > late.standard
    assert early.low_fp > late.low_fp
    assert early.low_fn > late.low_fn


def test_detection_at_the_window_end_earns_a_fp_by_hand() -> None:
    # Right window [100, 160]; a detection at 160 is at relative position 1.0, index 1000,
    # clipped to 999 where x = pi/2 and y = A_fp. One file, one changepoint:
    #   standard: raw -0.11, null -1, perfect 1 -> 100 * 0.89 / 2 = 44.5
    #   low FP:   raw -0.22, null -1, perfect 1 -> 100 * 0.78 / 2 = 39.0
    #   low FN:   raw -0.11, null -2, perfect 1 -> 100 * 1.89 / 3 = 63.0
    scores = nab_scores([(TIMES, [100.0], [160.0])], window=60, placement="right")
    scores_approx(scores, 44.5, 39.0, 63.0)


def test_false_positive_costs_more_under_low_fp_than_low_fn() -> None:
    clean = nab_scores([(TIMES, [100.0], [100.0])], window=60, placement="right")
    noisy = nab_scores([(TIMES, [100.0], [100.0, 300.0])], window=60, placement="right")
    # Raw 1 - A_fp: standard 0.89 -> 94.5; low FP 0.78 -> 89.0; low FN 0.89 -> 2.89/3.
    scores_approx(noisy, 94.5, 89.0, 100 * 2.89 / 3)
    assert clean.low_fp - noisy.low_fp == pytest.approx(11.0)
    assert clean.low_fn - noisy.low_fn == pytest.approx(11 / 3)


def test_only_the_first_detection_in_a_window_counts() -> None:
    scores = nab_scores([(TIMES, [100.0], [100.0, 110.0, 159.0])], window=60, placement="right")
    scores_approx(scores, 100.0, 100.0, 100.0)


def test_overlapping_windows_cut_the_later_one() -> None:
    # Windows [100, 160] and [110, 170] become [100, 160] and [160, 170]: a detection at 160
    # sits on both; it is the first in the second window, so both changepoints score A_tp.
    scores = nab_scores([(TIMES, [100.0, 110.0], [100.0, 160.0])], window=60, placement="right")
    scores_approx(scores, 100.0, 100.0, 100.0)


def test_files_are_pooled_before_normalising() -> None:
    files = [(TIMES, [100.0], [100.0]), (TIMES, [100.0, 400.0], [])]
    # Raw 1 - 2 = -1, null -3, perfect 3 -> 100 * 2 / 6 = 33.33, not the mean of 100 and 0.
    assert nab_scores(files, window=60, placement="right").standard == pytest.approx(100 / 3)


def test_file_without_changepoints_contributes_its_false_positives() -> None:
    files = [(TIMES, [100.0], [100.0]), (TIMES, [], [50.0])]
    scores_approx(nab_scores(files, window=60, placement="right"), 94.5, 89.0, 100 * 2.89 / 3)


def test_datetime64_seconds_and_timedelta_agree() -> None:
    times = seconds(*range(300))
    as_datetime = nab_scores([(times, [times[100]], [times[110]])], window=timedelta(seconds=30))
    as_seconds = nab_scores([(TIMES, [100.0], [110.0])], window=30.0)
    assert as_datetime == as_seconds
    # Index int(25/30 * 1000) = 833 on the centred window [85, 115].
    x = -math.pi / 2 + 833 * math.pi / 999
    y = 0.555 * -math.tanh(x) / math.tanh(math.pi / 2) + 0.445
    assert as_seconds.standard == pytest.approx(100 * (y + 1) / 2, abs=1e-9)


def test_reproduces_the_tsad_documentation_example() -> None:
    # waico/tsad docs/Evaluating.md: daily series 2020-01-01..20, true changepoints on Jan 7 and
    # Jan 15, predictions on Jan 5 and Jan 11, defaults: window = 19 days / (2 + 1) * 0.1 to the
    # left of each changepoint. Published output: Standart -5.5, LowFP -11.0, LowFN -3.67.
    days = np.arange("2020-01-01", "2020-01-21", dtype="datetime64[D]").astype("datetime64[s]")
    window = timedelta(days=19) / 3 * 0.1
    scores = nab_scores([(days, [days[6], days[14]], [days[4], days[10]])], window, "left")
    scores_approx(scores, -5.5, -11.0, -22 / 6)
    assert round(scores.low_fn, 2) == -3.67


def test_nab_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one true changepoint"):
        nab_scores([(TIMES, [], [10.0])])
    with pytest.raises(ValueError, match="window"):
        nab_scores([(TIMES, [100.0], [])], window=0)
    with pytest.raises(ValueError, match="duplicate"):
        nab_scores([(TIMES, [100.0, 100.0], [])])
    with pytest.raises(TypeError, match="mix"):
        nab_scores([(TIMES, [T0], [])])


def test_nab_file_says_which_window_each_detection_fell_in() -> None:
    # Windows of 30 s centred on 100 and 200: [85, 115] and [185, 215]. The first prediction
    # inside the first window is at 95, a third of the way in; 101 is ignored; nothing falls
    # in the second; 300 lies outside both.
    out = nab_file(seconds(100, 200), seconds(95, 101, 300))
    first, second = out.windows
    assert first.start - first.changepoint == -15.0
    assert first.end - first.changepoint == 15.0
    assert first.detected is not None
    assert first.detected - first.changepoint == -5.0
    assert first.position == 333
    assert second.detected is None
    assert second.position is None
    # SKAB's curve a third of the way in: 0.555 * -tanh(-0.5236) / tanh(pi / 2) + 0.445.
    assert first.credit() == pytest.approx(0.736, abs=1e-3)
    assert second.credit() == -1.0  # a missed window costs A_fn
    assert out.false_positives == 1
    # Right-opening 60 s windows: [100, 160], [200, 260]; 95 and 300 are outside, 101 early.
    right = nab_file(seconds(100, 200), seconds(95, 101, 300), window=60, placement="right")
    assert right.windows[0].position == 16  # 1 s of 60
    assert right.false_positives == 2
