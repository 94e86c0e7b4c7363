"""What a score is (sentinel.model.calibration): robust scaling of the per-feature errors."""

from __future__ import annotations

import numpy as np
import pytest

from sentinel.model.calibration import RELATIVE_FLOOR, Calibration, score_floor, window_scores


def test_a_feature_reconstructed_almost_perfectly_cannot_dominate_the_score() -> None:
    # Training's normal errors: two ordinary channels and one the model recalls almost
    # exactly (issue #21: ratios of 10^3-10^8 once it moves at all).
    baseline = np.array([0.2, 0.3, 1e-6])
    disturbed = np.array([[0.2, 0.3, 0.01]])  # a small error, far below the others' normal
    score = float(window_scores(disturbed, baseline)[0])
    assert score <= 0.01 / (RELATIVE_FLOOR * 0.2) + 1e-9
    assert score < 2.0
    # A real fault on an ordinary channel still scores as before: its own multiple.
    fault = np.array([[2.0, 0.3, 1e-6]])
    assert float(window_scores(fault, baseline)[0]) == 10.0


def test_skipped_features_take_no_part_and_no_part_in_the_floor() -> None:
    baseline = np.array([0.2, 0.4, 0.0])
    floor, judged = score_floor(baseline, skip=[2])
    assert judged.tolist() == [True, True, False]
    assert floor[2] == pytest.approx(RELATIVE_FLOOR * 0.3)  # the median of the judged ones
    errors = np.array([[0.2, 0.4, 1e9]])
    assert float(window_scores(errors, baseline, skip=[2])[0]) == 1.0


def test_calibration_scores_leave_out_skipped_features() -> None:
    rng = np.random.default_rng(0)
    errors = np.abs(rng.normal(0.1, 0.02, (200, 3)))
    errors[:, 2] = 1e-9
    errors[50, 2] = 1.0  # would be a 10^4 ratio, were it judged
    calibration = Calibration.from_errors(errors, skip=[2])
    assert calibration.max < 5


def test_a_robust_calibration_is_not_inflated_by_a_few_transient_windows() -> None:
    errors = np.ones((100, 2))
    errors[:5, 0] = 1000.0  # a transient in five held-back windows
    assert Calibration.from_errors(errors).feature_mean_errors[0] > 40
    robust = Calibration.from_errors(errors, robust=True)
    assert robust.feature_mean_errors == (1.0, 1.0)
