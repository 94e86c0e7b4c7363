"""What a score is (sentinel.model.calibration): robust scaling of the per-feature errors."""

from __future__ import annotations

import numpy as np
import pytest

from sentinel.errors import ModelError
from sentinel.model.calibration import (
    RELATIVE_FLOOR,
    Calibration,
    ResidualCoupling,
    couple,
    fit_residual_coupling,
    score_floor,
    window_scores,
)


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


def _coupled_residuals(rows: int = 20_000, seed: int = 0) -> np.ndarray:
    """Three features' prediction errors: b moves with a (b = 2a, as a load change moves
    flow and current together), c on its own."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(rows)
    b = 2.0 * a + 0.1 * rng.standard_normal(rows)
    c = rng.standard_normal(rows)
    return np.stack([a, b, c], axis=1)


def test_a_joint_move_is_explained_and_a_lone_one_keeps_its_error() -> None:
    coupling = fit_residual_coupling(_coupled_residuals())
    weights, bounds = coupling.arrays()
    assert np.allclose(np.diag(weights), 0.0)
    assert abs(weights[0, 1] - 2.0) < 0.1  # a explains b
    assert abs(weights[2, 0]) < 0.05
    assert abs(weights[2, 1]) < 0.05
    joint = np.array([[1.5, 3.0, 0.0]], dtype=np.float32)  # a and b as always, 1.5 sd
    lone = np.array([[0.0, 3.0, 0.0]], dtype=np.float32)  # b alone, as far
    coupled_joint = couple(joint, weights, bounds)
    coupled_lone = couple(lone, weights, bounds)
    assert np.abs(coupled_joint[0, :2]).max() < 0.3  # little left of the joint move
    assert abs(coupled_lone[0, 1] - 3.0) < 0.1  # all of b's own error


def test_a_joint_move_past_anything_training_held_keeps_the_excess() -> None:
    residuals = _coupled_residuals()
    coupling = fit_residual_coupling(residuals)
    weights, bounds = coupling.arrays()
    assert np.allclose(bounds[:2], np.abs(residuals @ weights).max(axis=0)[:2], rtol=1e-5)
    huge = np.array([[20.0, 40.0, 0.0]], dtype=np.float32)  # ~5x the largest joint move
    coupled = couple(huge, weights, bounds)
    assert coupled[0, 1] > 40.0 - bounds[1] - 1e-3
    assert coupled[0, 1] > 20.0


def test_skipped_or_single_features_are_never_explained() -> None:
    residuals = _coupled_residuals()
    skipped = fit_residual_coupling(residuals, skip=(1,))
    weights, bounds = skipped.arrays()
    assert np.all(weights[1, :] == 0.0)
    assert np.all(weights[:, 1] == 0.0)
    assert bounds[1] == 0.0
    alone = fit_residual_coupling(residuals[:, :1])
    assert alone.arrays()[0].tolist() == [[0.0]]
    assert alone.bounds == (0.0,)
    errors = np.array([[3.0]], dtype=np.float32)
    assert couple(errors, *alone.arrays()).tolist() == [[3.0]]


def test_a_coupling_survives_json_and_a_broken_one_is_refused() -> None:
    coupling = fit_residual_coupling(_coupled_residuals(rows=500))
    assert ResidualCoupling.from_dict(coupling.to_dict()) == coupling
    with pytest.raises(ModelError, match="3 rows of 3"):
        ResidualCoupling(weights=((0.0, 1.0),), bounds=(1.0, 1.0, 1.0))
    with pytest.raises(ModelError, match="finite"):
        ResidualCoupling(weights=((0.0, float("nan")), (1.0, 0.0)), bounds=(1.0, 1.0))
    with pytest.raises(ModelError, match="bounds at least 0"):
        ResidualCoupling(weights=((0.0, 1.0), (1.0, 0.0)), bounds=(-1.0, 1.0))
    with pytest.raises(ModelError, match="weights"):
        ResidualCoupling.from_dict({"weights": [1.0, 2.0], "bounds": [1.0, 1.0]})
