"""What a score is (sentinel.model.calibration): robust scaling of the per-feature errors."""

from __future__ import annotations

import numpy as np
import pytest

from sentinel.config import ThresholdConfig
from sentinel.errors import ModelError
from sentinel.judge.threshold import NORMAL_SCORE, calibration_threshold
from sentinel.model.calibration import (
    HELD_STEP_SHARE,
    RELATIVE_FLOOR,
    TAIL_QUANTILE,
    TAIL_SPREAD,
    Calibration,
    ResidualCoupling,
    balance_tails,
    couple,
    fit_residual_coupling,
    held_level_floor,
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


def _heavy_tailed(rows: int = 2000, seed: int = 1) -> np.ndarray:
    """Held-back errors of four features: three of light tails, and a server's memory whose
    errors are ordinary except in 8 % of windows, those holding a garbage collection's drop,
    where they are 150 times its median (issue #21, server_metrics)."""
    rng = np.random.default_rng(seed)
    errors = np.abs(rng.normal(1.0, 0.3, (rows, 4)))
    drops = rng.random(rows) < 0.08
    errors[drops, 3] *= 150.0
    return errors


def tail(errors: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    floor, _ = score_floor(baseline)
    out: np.ndarray = np.quantile(errors, TAIL_QUANTILE, axis=0) / floor
    return out


def test_a_feature_of_heavy_normal_tails_is_brought_to_the_spread_and_no_other_moves() -> None:
    errors = _heavy_tailed()
    baseline = np.median(errors, axis=0)
    balanced = balance_tails(errors, baseline)
    assert balanced[:3].tolist() == baseline[:3].tolist()
    before, after = tail(errors, baseline), tail(errors, balanced)
    typical = float(np.median(before))
    assert before[3] > 50 * typical
    assert after[3] == pytest.approx(TAIL_SPREAD * typical)


def test_the_threshold_is_no_longer_the_heavy_features_and_a_fault_elsewhere_passes_it() -> None:
    errors = _heavy_tailed()
    plain = Calibration.from_errors(errors, robust=True)
    balanced = Calibration.from_errors(errors, robust=True, balance=True)
    assert balanced.quantiles["0.99"] < plain.quantiles["0.99"] / 10
    # a runaway process: CPU's error 10 times its normal, memory's ordinary
    fault = np.array([[10.0, 1.0, 1.0, 1.0]])
    assert float(window_scores(fault, plain.feature_mean_errors)[0]) < plain.quantiles["0.99"]
    assert float(window_scores(fault, balanced.feature_mean_errors)[0]) > balanced.quantiles["0.99"]


def test_tails_within_the_spread_single_and_skipped_features_are_left_alone() -> None:
    rng = np.random.default_rng(2)
    errors = np.abs(rng.normal(1.0, 0.3, (2000, 3)))
    errors[:, 1] *= rng.lognormal(0.0, 0.5, 2000)  # heavier, well within the spread
    baseline = np.median(errors, axis=0)
    assert balance_tails(errors, baseline).tolist() == baseline.tolist()
    heavy = _heavy_tailed()
    assert balance_tails(heavy[:, 3:], np.median(heavy[:, 3:], axis=0)).tolist() == (
        np.median(heavy[:, 3:], axis=0).tolist()
    )
    # an overflowed error (inf, NaN) in the held-back windows raises nothing
    broken = errors.copy()
    broken[:, 0] = np.inf
    broken[5, 1] = np.nan
    assert np.isfinite(balance_tails(broken, baseline)).all()
    # the heavy feature skipped: nothing judged is heavy, nothing moves
    skipped = balance_tails(heavy, np.median(heavy, axis=0), skip=[3])
    assert skipped.tolist() == np.median(heavy, axis=0).tolist()


def test_a_tail_only_the_training_windows_hold_is_balanced_too() -> None:
    # A short training's held-back windows -- the tail of its rows -- held none of the
    # memory's drops; its training windows did.
    heavy = _heavy_tailed()
    held_back = heavy.copy()
    held_back[:, 3] = np.abs(np.random.default_rng(3).normal(1.0, 0.3, len(heavy)))
    baseline = np.median(held_back, axis=0)
    assert balance_tails(held_back, baseline).tolist() == baseline.tolist()
    raised = balance_tails(held_back, baseline, in_sample=heavy * 0.5)  # fitted closer
    assert raised[:3].tolist() == baseline[:3].tolist()
    # raised by how much heavier than the typical feature's its tail is in the training
    # windows (whatever their scale: a network fits its training closer), over the spread
    own = tail(heavy, np.median(heavy, axis=0))
    assert own[3] / float(np.median(own)) > 50
    assert raised[3] == pytest.approx(baseline[3] * own[3] / float(np.median(own)) / TAIL_SPREAD)
    # never lowered; training windows of light tails, or none, change nothing
    light = np.abs(np.random.default_rng(4).normal(1.0, 0.3, (500, 4)))
    assert balance_tails(heavy, np.median(heavy, axis=0), in_sample=light).tolist() == (
        balance_tails(heavy, np.median(heavy, axis=0)).tolist()
    )
    assert balance_tails(held_back, baseline, in_sample=np.zeros((0, 4))).tolist() == (
        baseline.tolist()
    )


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


def test_pooled_scores_set_the_quantiles_and_leave_what_a_score_is() -> None:
    rng = np.random.default_rng(3)
    own = Calibration.from_errors(np.abs(rng.normal(1.0, 0.1, (300, 2))))
    # Held-back windows of a normal pattern the validation part never held: a drop every
    # few hundred readings that scores 5-6 times the usual.
    more = [*rng.uniform(0.8, 1.3, 380).tolist(), *[5.0, 5.5, 6.0] * 4, float("nan")]

    pooled = own.pooled(more)

    sample = np.asarray([*own.scores, *[v for v in more if np.isfinite(v)]])
    assert pooled.scores == tuple(float(f"{v:.6g}") for v in sample)
    for q, value in pooled.quantiles.items():
        assert value == pytest.approx(float(np.quantile(sample, float(q))))
    assert pooled.quantiles["0.995"] > 4.0 > own.quantiles["0.995"]
    assert pooled.max == 6.0
    assert pooled.feature_mean_errors == own.feature_mean_errors


def test_a_calibration_without_its_sample_is_not_pooled() -> None:
    own = Calibration.from_errors(np.ones((50, 2)))
    old = Calibration(own.quantiles, own.max, own.feature_mean_errors)  # saved before scores
    assert old.pooled([9.0] * 100) is old
    assert own.pooled([float("inf")]) is own


def test_a_detector_takes_a_pooled_calibration_and_one_that_cannot_says_so() -> None:
    from dataclasses import replace

    from sentinel.errors import ModelError
    from tests.retrain.helpers import make_detector

    detector = make_detector("20250101T000000Z-000001")
    unsampled = detector.meta.calibration  # as saved before models kept their sample
    detector.pool_calibration([0.4, 5.0])
    assert detector.meta.calibration is unsampled
    own = replace(unsampled, scores=(0.1, 0.2, 0.3))
    detector._meta = replace(detector.meta, calibration=own)  # type: ignore[attr-defined]
    detector.pool_calibration([0.4, 5.0])
    assert detector.meta.calibration.scores == (0.1, 0.2, 0.3, 0.4, 5.0)
    assert detector.meta.calibration.max == 5.0
    assert detector.meta.version == "20250101T000000Z-000001"

    class Elsewhere(type(detector)):  # type: ignore[misc]
        @property
        def meta(self):  # type: ignore[no-untyped-def]
            return self.__dict__["_kept"]

    other = Elsewhere.__new__(Elsewhere)
    other.__dict__["_kept"] = detector.meta
    with pytest.raises(ModelError, match="does not keep its meta in _meta"):
        other.pool_calibration([1.0])


def _held_levels(rows: int, rng: np.random.Generator) -> np.ndarray:
    """A noise-free channel held at one of four levels for 40-250 readings at a time."""
    levels, out, at = (-1.0, -0.4, 0.3, 0.9), np.empty(rows), 0
    while at < rows:
        length = int(rng.integers(40, 250))
        out[at : at + length] = levels[int(rng.integers(0, 4))]
        at += length
    return out


def test_a_channel_that_holds_its_levels_gets_a_floor_from_its_typical_change() -> None:
    rng = np.random.default_rng(0)
    held = _held_levels(2_000, rng)
    noisy = rng.normal(0.0, 1.0, 2_000)
    rows = np.column_stack([held, noisy, np.full(2_000, 3.0)])
    scale = np.array([0.7, 1.0, 1.0])
    floor = held_level_floor([rows[:1_000], rows[1_000:]], scale, skip=[2])
    changes = np.abs(np.diff(held))
    step = float(np.median(changes[changes > 0])) / 0.7
    assert floor[0] == pytest.approx((HELD_STEP_SHARE * step) ** 2)
    assert floor[1] == 0.0  # a noisy channel never repeats a reading: its error is noise
    assert floor[2] == 0.0  # constant, skipped: the constant check judges it


def test_a_model_bias_on_a_held_level_is_normal_and_a_missed_level_is_not() -> None:
    # Held back: one level, forecast almost exactly; live: another level the training held
    # less often, missed by 3 % of a step for as long as it is held (issue #21,
    # stepped_telemetry trained on 30 %: alerts of 80-390 readings).
    rng = np.random.default_rng(1)
    held = _held_levels(2_000, rng)
    floor = held_level_floor([held[:, None]], np.array([0.7]))
    held_back = np.full((80, 1), 3e-5)
    bias = (0.03 * 1.0 / 0.7) ** 2
    missed = (0.5 / 0.7) ** 2  # half a step off: a level the channel did not reach
    config = ThresholdConfig()
    for with_floor, normal in ((False, False), (True, True)):
        calibration = Calibration.from_errors(
            held_back, robust=True, floor=floor if with_floor else None
        )
        # the held-back windows all scored under 1: the threshold stays at multiplier x 1
        assert calibration.quantiles["0.995"] < 1.0
        threshold = calibration_threshold(calibration.quantiles, config)
        assert threshold == pytest.approx(NORMAL_SCORE * config.multiplier)
        scores = window_scores(np.array([[bias], [missed]]), calibration.feature_mean_errors)
        assert bool(scores[0] <= threshold) is normal
        assert scores[1] > threshold
