"""What a model's scores look like on normal data, and what a score is.

Every detector is calibrated the same way -- its per-feature errors on held-back normal
windows -- so thresholds, promotion and alerts judge any detector's scores alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sentinel.errors import ModelError
from sentinel.model.fields import as_list, as_object, number

__all__ = [
    "CALIBRATION_QUANTILES",
    "CALIBRATION_SAMPLE",
    "TAIL_QUANTILE",
    "TAIL_SPREAD",
    "Calibration",
    "Float64Array",
    "ResidualCoupling",
    "balance_tails",
    "couple",
    "fit_residual_coupling",
    "held_level_floor",
    "score_floor",
    "segment_changes",
    "window_scores",
]

CALIBRATION_QUANTILES = ("0.5", "0.9", "0.99", "0.995", "0.999")
CALIBRATION_SAMPLE = 20_000  # held-back scores kept with a model (about 200 KB of JSON)

# Floor for a feature's normal error (scaled units, where a feature's variance is ~1): a
# feature the model reconstructs perfectly must not turn rounding noise into huge ratios.
_BASELINE_FLOOR = 1e-4
# Robust scaling (issue #21): a feature's normal error counts as at least this share of the
# median normal error of the judged features. A feature the model happens to reconstruct
# almost perfectly (a slow or nearly flat channel) otherwise turns any small disturbance
# into ratios of 10^3 and more, which outweigh every real fault on the other channels.
RELATIVE_FLOOR = 0.05

# The quantile of a feature's held-back window errors that stands for its tail in
# ``balance_tails``: rare enough to hold a normal event every few hundred readings, common
# enough that a few hundred held-back windows estimate it.
TAIL_QUANTILE = 0.99
# How much heavier than the typical feature's a feature's tail may be before it is brought
# back to this: features differ in how well they are predicted, and on SKAB's pump rig and
# the simulated fleet their tails lay within 0.7-2.8 times the typical (one of 272 at 4.8);
# a server's memory, dropping at each garbage collection, lay at 20.
TAIL_SPREAD = 3.0

# A channel that holds its value between changes (most of its readings equal the one
# before: a noise-free telemetry level, a quantised slow sensor) is forecast exactly by a
# perfect model; a real one misses a level the training held less often by a few hundredths
# of a step. Its normal error is floored at this share of its typical change, squared, in
# scaled units (``held_level_floor``): smaller errors are the model's bias, not the data's.
HELD_SHARE = 0.5  # of a channel's readings in training equal to the one before: it holds
HELD_STEP_SHARE = 0.05  # of its median non-zero change: the smallest error that says anything

# Ridge on the coupling's regressions, as a share of the regressors' mean variance: keeps
# nearly collinear residuals (two sensors of one quantity) from trading huge coefficients.
_COUPLING_RIDGE = 1e-2

Float64Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Calibration:
    """Distribution of window scores on held-back normal windows, with the final weights."""

    quantiles: dict[str, float]  # keys CALIBRATION_QUANTILES
    max: float
    feature_mean_errors: tuple[float, ...]
    # The held-back windows' scores in time order (at most CALIBRATION_SAMPLE): what an
    # extreme-value threshold is first fitted on before each device adapts it.
    scores: tuple[float, ...] = ()

    @classmethod
    def from_errors(
        cls,
        feature_errors: Float64Array,
        skip: Sequence[int] = (),
        *,
        robust: bool = False,
        balance: bool = False,
        in_sample: Float64Array | None = None,
        floor: Float64Array | None = None,
    ) -> Calibration:
        """Calibrate on held-back windows' per-feature errors (B, F); features in ``skip``
        (constant in training) take no part in a score (see ``window_scores``).

        A feature's normal error is its mean over the windows, or with ``robust`` its
        median, which a few held-back windows of a transient cannot inflate. With
        ``balance`` it is then raised where the feature's tail is heavier than the typical
        feature's (``balance_tails``), on these windows or on ``in_sample``, the model's
        errors on its training windows.
        """
        if feature_errors.shape[0] == 0:
            raise ModelError("calibration needs at least one scored window")
        baseline = np.median(feature_errors, axis=0) if robust else feature_errors.mean(axis=0)
        if floor is not None:
            baseline = np.maximum(baseline, floor)
        if balance:
            baseline = balance_tails(feature_errors, baseline, skip, in_sample)
        scores = window_scores(feature_errors, baseline, skip)
        values = np.quantile(scores, [float(q) for q in CALIBRATION_QUANTILES])
        return cls(
            quantiles={q: float(v) for q, v in zip(CALIBRATION_QUANTILES, values, strict=True)},
            max=float(scores.max()),
            feature_mean_errors=tuple(float(v) for v in baseline),
            scores=tuple(float(f"{v:.6g}") for v in scores[-CALIBRATION_SAMPLE:]),
        )

    def pooled(self, more: Sequence[float]) -> Calibration:
        """This calibration with ``more`` held-back scores of the same model pooled into its
        sample (kept after it, the newest last): quantiles and maximum over both, the
        normal errors -- what a score is -- unchanged. A model saved without its sample
        (before ``scores`` existed) is returned as it is: its quantiles cannot be pooled."""
        finite = [float(v) for v in more if math.isfinite(v)]
        if not self.scores or not finite:
            return self
        pooled = np.asarray([*self.scores, *finite], dtype=np.float64)
        values = np.quantile(pooled, [float(q) for q in CALIBRATION_QUANTILES])
        return Calibration(
            quantiles={q: float(v) for q, v in zip(CALIBRATION_QUANTILES, values, strict=True)},
            max=max(self.max, float(pooled.max())),
            feature_mean_errors=self.feature_mean_errors,
            scores=tuple(float(f"{v:.6g}") for v in pooled[-CALIBRATION_SAMPLE:]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "quantiles": dict(self.quantiles),
            "max": self.max,
            "feature_mean_errors": list(self.feature_mean_errors),
            "scores": list(self.scores),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Calibration:
        obj = as_object(data, "calibration")
        quantiles = as_object(obj.get("quantiles"), "calibration.quantiles")
        if set(quantiles) != set(CALIBRATION_QUANTILES):
            raise ModelError(
                f"calibration.quantiles must have keys {list(CALIBRATION_QUANTILES)}, "
                f"got {sorted(quantiles)}"
            )
        errors = obj.get("feature_mean_errors")
        if not isinstance(errors, list):
            raise ModelError("calibration.feature_mean_errors must be a list")
        return cls(
            quantiles={q: number(quantiles[q], f"calibration.quantiles.{q}") for q in quantiles},
            max=number(obj.get("max"), "calibration.max"),
            feature_mean_errors=tuple(number(v, "calibration.feature_mean_errors") for v in errors),
            # Optional: models saved before it existed simply have no sample.
            scores=tuple(
                number(v, "calibration.scores")
                for v in as_list(obj, "scores", "calibration.scores")
            ),
        )


def score_floor(
    baseline: Sequence[float] | Float64Array, skip: Sequence[int] = ()
) -> tuple[Float64Array, npt.NDArray[np.bool_]]:
    """The normal error each feature's error is divided by, and which features are judged.

    The normal error is floored at ``_BASELINE_FLOOR`` and at ``RELATIVE_FLOOR`` times the
    median normal error of the judged features (robust scaling, issue #21). Features in
    ``skip`` are not judged: constant in training, their error says nothing (the constant
    check, ``sentinel.judge.constants``, judges them by any departure instead).
    """
    base = np.asarray(baseline, dtype=np.float64)
    judged = np.ones(base.shape, dtype=bool)
    judged[list(skip)] = False
    floor = np.maximum(base, _BASELINE_FLOOR)
    if judged.any():
        floor = np.maximum(floor, RELATIVE_FLOOR * float(np.median(base[judged])))
    return floor, judged


def segment_changes(segments: Sequence[npt.NDArray[Any]]) -> list[Float64Array]:
    """Each segment's changes from one reading to the next, (N_i - 1, F) as float64; a
    segment of fewer than two readings has none (a gap between segments is no change)."""
    return [
        np.diff(np.asarray(segment, dtype=np.float64), axis=0)
        for segment in segments
        if len(segment) >= 2
    ]


def held_level_floor(
    segments: Sequence[npt.NDArray[Any]], scale: npt.NDArray[Any], skip: Sequence[int] = ()
) -> Float64Array:
    """Per feature, the least normal error (squared, scaled units) of a channel that holds
    its value between changes in the raw training ``segments``: ``HELD_STEP_SHARE`` of its
    median non-zero change, over the scaler's ``scale``, squared; 0 for other features and
    those in ``skip`` (constant).

    A noise-free channel -- spacecraft telemetry held at the levels its commands set, a
    quantised counter -- is forecast exactly where a model has learnt its levels, so its
    held-back error can be ~0 (the held-back part may hold one level only), and the model's
    small bias at a level the training held less often then scored 1-6 times the threshold
    for as long as the level held: hundreds of readings in one alert (issue #21, the
    synthetic ``stepped_telemetry`` trained on 30 %). A twentieth of the channel's typical
    change is below what its faults move it by (a level missed, chatter, new noise), and
    the model's bias is below it. On a noisy channel, whose readings almost never repeat,
    it is 0: the held-back error already is the noise's. Changes are counted within each
    segment (a gap is no change)."""
    floor = np.zeros(len(scale), dtype=np.float64)
    changes = segment_changes(segments)
    if not changes:
        return floor
    moved = np.abs(np.concatenate(changes))
    same = (moved == 0).sum(axis=0)
    for feature in range(len(scale)):
        if feature in skip or same[feature] < HELD_SHARE * len(moved):
            continue
        nonzero = moved[:, feature][moved[:, feature] > 0]
        if len(nonzero):
            step = float(np.median(nonzero)) / float(scale[feature])
            floor[feature] = (HELD_STEP_SHARE * step) ** 2
    return floor


def balance_tails(
    feature_errors: Float64Array,
    baseline: Sequence[float] | Float64Array,
    skip: Sequence[int] = (),
    in_sample: Float64Array | None = None,
) -> Float64Array:
    """``baseline`` with each judged feature's normal error raised where its tail is more
    than ``TAIL_SPREAD`` times heavier than the typical judged feature's, until it is that:
    a tail is the feature's ``TAIL_QUANTILE`` held-back error as a multiple of its (floored)
    normal error, the typical one the median of those over the judged features. Never
    lowered; with one judged feature, unchanged.

    A window's score is its worst feature's ratio, and one threshold judges them all, so
    the feature with the heaviest normal tail sets it: a server's memory drops at each
    garbage collection, no forecast can time them, and their errors 100-200 times memory's
    median put the threshold there, where the CPU of a runaway process (10 times CPU's)
    was never seen by the score (issue #21: on server metrics the model's check caught a
    tenth of the faults). Balanced, no feature's normal tail lies beyond ``TAIL_SPREAD``
    times the typical one, nor the threshold. (Balancing every feature to the typical tail
    lowered SKAB's threshold by its spread of tails too, and its false alarms rose from
    9 % to 15 %: docs/BENCHMARKS.md.)

    ``in_sample``, the model's per-feature errors on its training windows, measures each
    feature's tail against the typical feature's there too, and the heavier of the two
    counts: a short training's held-back windows -- the tail of its rows -- may hold none
    of a feature's rare normal events that its earlier rows held (``wide_server`` trained
    on 30 %, seed 0: 11 false alerts, 8 with them). Relative to the typical
    feature's, because a network fits its training windows closer than held-back ones.
    """
    floor, judged = score_floor(baseline, skip)
    base = np.asarray(baseline, dtype=np.float64)
    if judged.sum() < 2:
        return base
    with np.errstate(invalid="ignore"):  # inf errors: their quantile is NaN or inf
        tails = np.quantile(feature_errors[:, judged], TAIL_QUANTILE, axis=0) / floor[judged]
    tails = np.where(np.isfinite(tails), tails, 0.0)  # an overflowed error raises nothing
    typical = float(np.median(tails))
    if not np.isfinite(typical) or typical <= 0:
        return base
    if in_sample is not None and len(in_sample):
        own = _relative_tails(in_sample[:, judged])
        if own is not None:
            tails = np.maximum(tails, typical * own)
    raised = base.copy()
    raised[judged] = np.maximum(base[judged], floor[judged] * tails / (TAIL_SPREAD * typical))
    return raised


def _relative_tails(feature_errors: Float64Array) -> Float64Array | None:
    """Each feature's tail (its ``TAIL_QUANTILE`` error over its median) as a multiple of
    the typical feature's, on ``feature_errors`` alone; None where that says nothing."""
    with np.errstate(invalid="ignore", divide="ignore"):
        middle = np.maximum(np.median(feature_errors, axis=0), _BASELINE_FLOOR)
        middle = np.maximum(middle, RELATIVE_FLOOR * float(np.median(middle)))
        tails = np.quantile(feature_errors, TAIL_QUANTILE, axis=0) / middle
    tails = np.where(np.isfinite(tails), tails, 0.0)
    typical = float(np.median(tails))
    if not np.isfinite(typical) or typical <= 0:
        return None
    relative: Float64Array = tails / typical
    return relative


def window_scores(
    feature_errors: Float64Array,
    baseline: Sequence[float] | Float64Array,
    skip: Sequence[int] = (),
) -> Float64Array:
    """A window's score: its worst feature's error, as a multiple of that feature's normal
    error on held-back data (floored, see ``score_floor``), over the features not in
    ``skip``.

    Averaging over features (plain window MSE) dilutes the faults plants mostly have -- one
    sensor stuck, spiking or offset -- behind the reconstruction noise of all the others;
    normalising per feature stops a naturally hard-to-predict sensor from dominating.
    """
    floor, judged = score_floor(baseline, skip)
    ratios: Float64Array = np.where(judged, feature_errors / floor, 0.0)
    worst: Float64Array = ratios.max(axis=1)
    return worst


@dataclass(frozen=True)
class ResidualCoupling:
    """How each scored feature's prediction error is explained by the others' at the same
    reading (``fit_residual_coupling``): ``weights[j][k]`` is feature j's share in feature
    k's explained part (zero on the diagonal and for features not scored), ``bounds[k]``
    the largest explained part of feature k on the errors it was fitted on."""

    weights: tuple[tuple[float, ...], ...]
    bounds: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.bounds)
        if len(self.weights) != n or any(len(row) != n for row in self.weights):
            raise ModelError(f"residual_coupling.weights must be {n} rows of {n} numbers")
        values = np.asarray([*np.ravel(self.weights), *self.bounds], dtype=np.float64)
        if not np.isfinite(values).all() or min(self.bounds, default=0.0) < 0:
            raise ModelError("residual_coupling must hold finite numbers, bounds at least 0")

    def arrays(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """(F, F) weights and (F,) bounds as float32, as the networks' errors are."""
        return (
            np.asarray(self.weights, dtype=np.float32).reshape(len(self.bounds), -1),
            np.asarray(self.bounds, dtype=np.float32),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"weights": [list(row) for row in self.weights], "bounds": list(self.bounds)}

    @classmethod
    def from_dict(cls, data: Any) -> ResidualCoupling:
        obj = as_object(data, "residual_coupling")
        rows = obj.get("weights")
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise ModelError("residual_coupling.weights must be a list of lists of numbers")
        return cls(
            weights=tuple(
                tuple(number(v, "residual_coupling.weights") for v in row) for row in rows
            ),
            bounds=tuple(
                number(v, "residual_coupling.bounds")
                for v in as_list(obj, "bounds", "residual_coupling.bounds")
            ),
        )


def couple(
    errors: npt.NDArray[np.float32],
    weights: npt.NDArray[np.float32],
    bounds: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    """(..., F) signed errors less what the other features' errors explain of each, that
    explained part clipped to what training held (``ResidualCoupling``)."""
    explained = np.clip(errors @ weights, -bounds, bounds)
    coupled: npt.NDArray[np.float32] = errors - explained
    return coupled


def fit_residual_coupling(residuals: Float64Array, skip: Sequence[int] = ()) -> ResidualCoupling:
    """How far each scored feature's signed prediction error (``residuals``, (N, F)) is
    explained by the other scored features' errors at the same reading: a ridge regression
    (no intercept) per feature, and the largest part it explains on these errors.

    A move the features make together as in these residuals (a load change moves flow and
    current at once, and both forecasts miss it alike) leaves little of either feature's
    error once the explained part is taken off; one feature leaving the others keeps all of
    its own, since the others' errors stay near zero and explain nothing of it. The bound
    keeps a joint move larger than any the residuals held from being explained away: past
    it, the excess counts (a whole process changing its shape, every sensor with it).
    Features in ``skip`` (constant or stepped: not scored) neither explain nor are
    explained. With fewer than two scored features nothing is explained.
    """
    n, f = residuals.shape
    weights = np.zeros((f, f))
    skipped = set(skip)
    scored = [k for k in range(f) if k not in skipped]
    if n > 0 and len(scored) >= 2:
        for k in scored:
            others = [j for j in scored if j != k]
            x, y = residuals[:, others], residuals[:, k]
            gram = x.T @ x / n
            scale = max(float(np.trace(gram)) / len(others), 1e-12)
            gram += _COUPLING_RIDGE * scale * np.eye(len(others))
            weights[others, k] = np.linalg.solve(gram, x.T @ y / n)
    if not np.isfinite(weights).all():
        weights = np.zeros((f, f))
    bounds = np.abs(residuals @ weights).max(axis=0) if n else np.zeros(f)
    return ResidualCoupling(
        weights=tuple(tuple(float(v) for v in row) for row in weights),
        bounds=tuple(float(v) for v in bounds),
    )
