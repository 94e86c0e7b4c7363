"""What a model's scores look like on normal data, and what a score is.

Every detector is calibrated the same way -- its per-feature errors on held-back normal
windows -- so thresholds, promotion and alerts judge any detector's scores alike.
"""

from __future__ import annotations

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
    "Calibration",
    "Float64Array",
    "score_floor",
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
        cls, feature_errors: Float64Array, skip: Sequence[int] = (), *, robust: bool = False
    ) -> Calibration:
        """Calibrate on held-back windows' per-feature errors (B, F); features in ``skip``
        (constant in training) take no part in a score (see ``window_scores``).

        A feature's normal error is its mean over the windows, or with ``robust`` its
        median, which a few held-back windows of a transient cannot inflate.
        """
        if feature_errors.shape[0] == 0:
            raise ModelError("calibration needs at least one scored window")
        baseline = np.median(feature_errors, axis=0) if robust else feature_errors.mean(axis=0)
        scores = window_scores(feature_errors, baseline, skip)
        values = np.quantile(scores, [float(q) for q in CALIBRATION_QUANTILES])
        return cls(
            quantiles={q: float(v) for q, v in zip(CALIBRATION_QUANTILES, values, strict=True)},
            max=float(scores.max()),
            feature_mean_errors=tuple(float(v) for v in baseline),
            scores=tuple(float(f"{v:.6g}") for v in scores[-CALIBRATION_SAMPLE:]),
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
