"""What an LSTM detector is besides its network: its meta (sizes, scaler, the features'
treatment, level and run statistics) and how raw windows become the network's inputs.

Kept apart from the torch modules so that a daemon scoring on the CPU with NumPy
(``sentinel.model.numpy_lstm``) reads a model without importing torch (issue #23, memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from sentinel.errors import ModelError
from sentinel.model.base import DetectorMeta
from sentinel.model.calibration import (
    Float64Array,
    ResidualCoupling,
    score_floor,
    window_scores,
)
from sentinel.model.fields import as_list, as_object, integer, number, string
from sentinel.model.levels import LevelStats
from sentinel.model.noise import NoiseStats
from sentinel.model.periods import PeriodStats
from sentinel.model.scaler import Scaler
from sentinel.model.stuck import RunStats

__all__ = [
    "RELATIVE_CENTRES",
    "WEIGHTS_FILE",
    "Float32Array",
    "LstmAeMeta",
    "LstmForecastMeta",
    "LstmMeta",
    "LstmMetaChecks",
    "center_relative",
    "default_score_steps",
    "hold_constants",
    "model_inputs",
    "pulse_pairs",
    "ratios_of",
    "scores_of",
    "window_centre",
]

WEIGHTS_FILE = "weights.safetensors"
# What a relative feature is centred on per window (``center_relative``); "median" is trained.
RELATIVE_CENTRES = ("mean", "median")

Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True, kw_only=True)
class LstmMeta(DetectorMeta):
    """What the LSTM detectors (``lstm_ae``, ``lstm_forecast``) keep besides their weights:
    network sizes and how raw windows become the network's inputs -- scaler, relative and
    constant features -- with the level statistics and the scored steps."""

    hidden_size: int
    num_layers: int
    scaler: Scaler
    # Features judged by their changes within a window, not their level (centred per
    # window before the model sees them; see ``center_relative``).
    relative_features: tuple[str, ...] = ()
    # What they are centred on: "median" for models trained since issue #21's onset fix,
    # "mean" for models saved before (they were trained on mean-centred windows).
    relative_centre: str = "mean"
    # How many of a window's newest readings its score judges (0: all of them). The older
    # readings are context the encoder sees but the error is not taken over, so a verdict
    # is about the newest readings: it starts and ends with a fault instead of trailing it
    # by a window.
    score_steps: int = 0
    # Training's window means per feature (sentinel.model.levels); None for models saved
    # before it existed, whose windows the level check then leaves alone.
    levels: LevelStats | None = None
    # Training's longest run of identical readings per feature (sentinel.model.stuck); None
    # for models saved before it existed, whose windows the stuck check then leaves alone.
    stuck: RunStats | None = None
    # Training's roughest window per feature (sentinel.model.noise); None for models saved
    # before it existed, whose windows the noise check then leaves alone.
    noise: NoiseStats | None = None
    # Training's cycles longer than a window (sentinel.model.periods); None for models saved
    # before it existed, whose features the period check then leaves alone.
    periods: PeriodStats | None = None
    # Features constant in training, with their value (issue #21). Their reconstruction
    # error says nothing (about zero in training, so any change would score 10^3-10^8 times
    # that), so the model sees them at their training value and they take no part in the
    # score; the constant check (sentinel.judge.constants) judges them by any departure.
    constant_features: dict[str, float] = field(default_factory=dict)
    # Features that held their value for longer than a window between steps in training
    # (set points, commands; ``sentinel.model.train.stepped_features``): an input like any
    # other, but no part of the score -- their one-step error is zero or an unannounced step.
    stepped_features: tuple[str, ...] = ()
    # Of them, those whose changes came with a scored channel's step in training (commands
    # whose channel moves at their reading; ``sentinel.model.train.commanding_features``)
    commanding_features: tuple[str, ...] = ()
    # Of them, those that only ever moved one way in training: counters, which nothing
    # follows (``sentinel.model.train.counter_features``)
    counter_features: tuple[str, ...] = ()
    # Features that were pulse trains in training, each with (rest, *pulse values): the
    # constant check reads a first pulse of a channel constant in training, from their
    # rest to one of their values, as one of theirs (``sentinel.model.train.pulse_features``)
    pulse_features: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.features)
        if n and self.scaler.n_features != n:
            raise ModelError(f"scaler has {self.scaler.n_features} features, meta lists {n}")
        super().__post_init__()
        for name in ("hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ModelError(f"{name} must be positive")
        if not 0 <= self.score_steps <= self.window:
            raise ModelError(
                f"score_steps must be between 0 and the window ({self.window}), "
                f"got {self.score_steps}"
            )
        if self.levels is not None and len(self.levels.mean) != n:
            raise ModelError(f"levels has {len(self.levels.mean)} features, meta lists {n}")
        if self.stuck is not None and len(self.stuck.longest) != n:
            raise ModelError(f"stuck has {len(self.stuck.longest)} features, meta lists {n}")
        if self.noise is not None and len(self.noise.largest) != n:
            raise ModelError(f"noise has {len(self.noise.largest)} features, meta lists {n}")
        if self.periods is not None and any(p.feature >= n for p in self.periods.features):
            raise ModelError(f"periods name a feature beyond the {n} meta lists")
        if self.relative_centre not in RELATIVE_CENTRES:
            raise ModelError(
                f"relative_centre must be one of {list(RELATIVE_CENTRES)}, "
                f"got {self.relative_centre!r}"
            )
        unknown = set(self.relative_features) - set(self.features)
        if unknown:
            raise ModelError(f"relative_features {sorted(unknown)} are not among the features")
        unknown = set(self.constant_features) - set(self.features)
        if unknown:
            raise ModelError(f"constant_features {sorted(unknown)} are not among the features")
        if not all(np.isfinite(v) for v in self.constant_features.values()):
            raise ModelError("constant_features must hold finite values")
        unknown = set(self.stepped_features) - set(self.features)
        if unknown:
            raise ModelError(f"stepped_features {sorted(unknown)} are not among the features")
        unknown = set(self.commanding_features) - set(self.stepped_features)
        if unknown:
            raise ModelError(f"commanding_features {sorted(unknown)} are not stepped features")
        unknown = set(self.counter_features) - set(self.stepped_features)
        if unknown:
            raise ModelError(f"counter_features {sorted(unknown)} are not stepped features")
        unknown = set(self.pulse_features) - set(self.features)
        if unknown:
            raise ModelError(f"pulse_features {sorted(unknown)} are not among the features")
        for name, shape in self.pulse_features.items():
            if len(shape) < 2 or not all(np.isfinite(v) for v in shape):
                raise ModelError(
                    f"pulse_features[{name!r}] must hold a rest and pulse values, all finite"
                )

    @property
    def relative_indices(self) -> tuple[int, ...]:
        return tuple(self.features.index(name) for name in self.relative_features)

    @property
    def constant_indices(self) -> tuple[int, ...]:
        return tuple(self.features.index(name) for name in self.constant_features)

    @property
    def unscored_indices(self) -> tuple[int, ...]:
        """The features the score leaves out: constant in training, or stepped."""
        return (*self.constant_indices, *(self.features.index(n) for n in self.stepped_features))

    def constant_values(self) -> dict[int, float]:
        """Feature index -> value, for the features constant in the training data."""
        return {self.features.index(name): v for name, v in self.constant_features.items()}

    def level_z(self, windows: np.ndarray) -> Float64Array | None:
        """(B, F) levels of raw windows shaped (B, window, F): each feature's window mean,
        in standard deviations of training's window means (``LevelStats.z``); None for a
        model saved without level statistics."""
        if self.levels is None:
            return None
        # Scaling is linear: scale the (B, F) means, not every reading of every window.
        return self.levels.z(self.scaler.transform(windows.mean(axis=1, dtype=np.float64)))

    def to_dict(self) -> dict[str, Any]:
        data = {
            **super().to_dict(),
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "scaler": self.scaler.to_dict(),
            "relative_features": list(self.relative_features),
            "relative_centre": self.relative_centre,
            "score_steps": self.score_steps,
            "constant_features": dict(self.constant_features),
            "stepped_features": list(self.stepped_features),
            "commanding_features": list(self.commanding_features),
            "counter_features": list(self.counter_features),
            "pulse_features": {k: list(v) for k, v in self.pulse_features.items()},
        }
        if self.levels is not None:
            data["levels"] = self.levels.to_dict()
        if self.stuck is not None:
            data["stuck"] = self.stuck.to_dict()
        if self.noise is not None:
            data["noise"] = self.noise.to_dict()
        if self.periods is not None:
            data["periods"] = self.periods.to_dict()
        return data

    @staticmethod
    def parse_lstm(text: str, detector: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """meta.json of a ``detector`` model: the JSON object, and the fields every LSTM
        detector has, read from it as keyword arguments (``DetectorMeta.parse``)."""
        obj, common = DetectorMeta.parse(text, detector)
        return obj, {
            **common,
            "hidden_size": integer(obj.get("hidden_size"), "hidden_size"),
            "num_layers": integer(obj.get("num_layers"), "num_layers"),
            "scaler": Scaler.from_dict(obj.get("scaler")),
            # Optional: models saved before it existed judge every feature by its level.
            "relative_features": tuple(
                string(v, "relative_features")
                for v in as_list(obj, "relative_features", "relative_features")
            ),
            # Optional: models saved before it existed centred on the window's mean.
            "relative_centre": string(obj.get("relative_centre", "mean"), "relative_centre"),
            # Optional: models saved before it existed score the whole window.
            "score_steps": integer(obj.get("score_steps", 0), "score_steps"),
            # Optional: models saved before it existed have no level check.
            "levels": LevelStats.from_dict(obj["levels"]) if "levels" in obj else None,
            # Optional: models saved before it existed have no stuck check.
            "stuck": RunStats.from_dict(obj["stuck"]) if "stuck" in obj else None,
            # Optional: models saved before it existed have no noise check.
            "noise": NoiseStats.from_dict(obj["noise"]) if "noise" in obj else None,
            # Optional: models saved before it existed have no period check.
            "periods": PeriodStats.from_dict(obj["periods"]) if "periods" in obj else None,
            # Optional: models saved before it existed judge every feature by its error.
            "constant_features": {
                str(name): number(value, "constant_features")
                for name, value in as_object(
                    obj.get("constant_features", {}), "constant_features"
                ).items()
            },
            # Optional: models saved before it existed score every non-constant feature.
            "stepped_features": tuple(
                string(v, "stepped_features")
                for v in as_list(obj, "stepped_features", "stepped_features")
            ),
            # Optional: models saved before it existed let every step of theirs alert.
            "commanding_features": tuple(
                string(v, "commanding_features")
                for v in as_list(obj, "commanding_features", "commanding_features")
            ),
            # Optional: models saved before it existed read a counter's tick as an input's.
            "counter_features": tuple(
                string(v, "counter_features")
                for v in as_list(obj, "counter_features", "counter_features")
            ),
            # Optional: models saved before it existed read every first pulse as a departure.
            "pulse_features": _pulse_shapes(obj.get("pulse_features", {})),
        }


@dataclass(frozen=True, kw_only=True)
class LstmAeMeta(LstmMeta):
    """Everything besides the weights that is needed to rebuild and use a model."""

    detector: str = "lstm_ae"
    latent_size: int

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.latent_size < 1:
            raise ModelError("latent_size must be positive")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "latent_size": self.latent_size}

    @classmethod
    def from_json(cls, text: str) -> LstmAeMeta:
        """Parse and check meta.json; any problem is a ModelError saying which key."""
        obj, common = LstmMeta.parse_lstm(text, "lstm_ae")
        return cls(**common, latent_size=integer(obj.get("latent_size"), "latent_size"))


def window_centre(windows: npt.NDArray[Any], centre: str = "median") -> npt.NDArray[Any]:
    """(B, 1, F) centre of (B, T, F) windows along time: the lower median (the
    ``(T - 1) // 2``-th smallest, as ``torch.median`` and the exported graph take it), or
    the mean for models trained before the median (``LstmMeta.relative_centre``)."""
    if centre == "mean":
        mean: npt.NDArray[Any] = windows.mean(axis=1, keepdims=True)
        return mean
    middle = (windows.shape[1] - 1) // 2
    lower: npt.NDArray[Any] = np.partition(windows, middle, axis=1)[:, middle : middle + 1]
    return lower


def center_relative(
    scaled: Float32Array, indices: Sequence[int], centre: str = "median"
) -> Float32Array:
    """Subtract each window's own centre from the ``indices`` features of (B, T, F) windows.

    What the model then sees of such a feature is its shape within the window -- steps,
    spikes, oscillation -- and not its level, which for slow channels (temperatures) wanders
    with ambient conditions far outside any training range without anything being wrong.

    The centre is the window's median (``window_centre``): with the mean, one spiking
    reading moved every other reading of its window by its share of the mean, so the
    forecaster's errors rose on readings before the spike too and an alert's evidence, and
    with it its start, reached back before the fault (issue #21: on the simulated fleet,
    alerts that opened 1-3 readings before a temperature spike were counted false and the
    spike missed). A median moves only when half the window has.
    """
    if not indices:
        return scaled
    out = scaled.copy()
    idx = list(indices)
    out[:, :, idx] -= window_centre(out[:, :, idx], centre)
    return out


def hold_constants(scaled: Float32Array, meta: LstmMeta) -> Float32Array:
    """(B, T, F) scaled windows with every feature constant in training set to its training
    value, as the model saw it in every training window.

    The network never saw such a feature move (its input weights for it never learnt
    anything), so a change in it would only disturb the reconstruction of the others.
    """
    indices = meta.constant_indices
    if not indices:
        return scaled
    idx = list(indices)
    values = np.asarray(list(meta.constant_features.values()), dtype=np.float64)
    held = (values - meta.scaler.mean[idx]) / meta.scaler.scale[idx]
    out = scaled.copy()
    out[:, :, idx] = held.astype(np.float32)
    return out


def model_inputs(windows: np.ndarray, meta: LstmMeta) -> Float32Array:
    """Raw (B, T, F) windows as an LSTM detector's network sees them: scaled, constant
    features held at their training value, relative features centred per window."""
    return center_relative(
        hold_constants(meta.scaler.transform(windows), meta),
        meta.relative_indices,
        meta.relative_centre,
    )


def default_score_steps(window: int) -> int:
    """How many newest predictions a window's score averages when ``model.score_steps`` is
    0: the newest half of the window, the older half being context."""
    return max(1, window // 2)


@dataclass(frozen=True, kw_only=True)
class LstmForecastMeta(LstmMeta):
    """The common LSTM keys; ``horizon`` is how many steps ahead each reading is predicted
    (at least 1, below the window; 1 for models saved before it existed) and ``score_steps``
    how many newest predictions a score averages (at least 1, at most window - horizon)."""

    detector: str = "lstm_forecast"
    horizon: int = 1
    # How each feature's prediction error is explained by the others' (``model.
    # residual_coupling``, ``sentinel.model.calibration.fit_residual_coupling``); None for
    # models trained without it or before it existed, which score each feature's own error.
    residual_coupling: ResidualCoupling | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window < 2:
            raise ModelError("a forecaster needs windows of at least 2 readings")
        coupling = self.residual_coupling
        if coupling is not None and len(coupling.bounds) != len(self.features):
            raise ModelError(
                f"residual_coupling has {len(coupling.bounds)} features, meta lists "
                f"{len(self.features)}"
            )
        if not 1 <= self.horizon < self.window:
            raise ModelError(
                f"horizon must be between 1 and the window - 1 ({self.window - 1}), "
                f"got {self.horizon}"
            )
        last = self.window - self.horizon
        if not 1 <= self.score_steps <= last:
            raise ModelError(
                f"score_steps must be between 1 and the window - horizon ({last}), "
                f"got {self.score_steps}"
            )

    def to_dict(self) -> dict[str, Any]:
        data = {**super().to_dict(), "horizon": self.horizon}
        if self.residual_coupling is not None:
            data["residual_coupling"] = self.residual_coupling.to_dict()
        return data

    @classmethod
    def from_json(cls, text: str) -> LstmForecastMeta:
        """Parse and check meta.json; any problem is a ModelError saying which key."""
        obj, common = LstmMeta.parse_lstm(text, "lstm_forecast")
        return cls(
            **common,
            # Optional: models saved before it existed predict one step ahead.
            horizon=integer(obj.get("horizon", 1), "horizon"),
            # Optional: models saved before it existed score each feature's own error.
            residual_coupling=(
                ResidualCoupling.from_dict(obj["residual_coupling"])
                if "residual_coupling" in obj
                else None
            ),
        )


def _pulse_shapes(value: Any) -> dict[str, tuple[float, ...]]:
    """meta.json's ``pulse_features``: feature -> [rest, *pulse values]."""
    out = {}
    for name, shape in as_object(value, "pulse_features").items():
        if not isinstance(shape, list):
            raise ModelError(f"pulse_features[{name!r}] must be a list")
        out[str(name)] = tuple(number(v, "pulse_features") for v in shape)
    return out


def pulse_pairs(shapes: dict[str, tuple[float, ...]]) -> tuple[tuple[float, float], ...]:
    """Every (rest, pulse value) of ``LstmMeta.pulse_features``, sorted, each once."""
    return tuple(sorted({(s[0], v) for s in shapes.values() for v in s[1:]}))


class LstmMetaChecks:
    """What an LSTM detector answers from its meta alone, whichever runtime scores it
    (torch's ``LstmDetector``, NumPy's ``NumpyLstmDetector``): the level, stuck and constant
    checks' inputs."""

    _meta: LstmMeta

    def constant_values(self) -> dict[int, float]:
        """Feature index -> value, for the features constant in the training data."""
        return self._meta.constant_values()

    def command_indices(self) -> tuple[int, ...]:
        """The commanding features' indices (``LstmMeta.commanding_features``)."""
        meta = self._meta
        return tuple(meta.features.index(name) for name in meta.commanding_features)

    def counter_indices(self) -> tuple[int, ...]:
        """The counters' indices (``LstmMeta.counter_features``)."""
        meta = self._meta
        return tuple(meta.features.index(name) for name in meta.counter_features)

    def stepped_indices(self) -> tuple[int, ...]:
        """The stepped features' indices (``LstmMeta.stepped_features``)."""
        meta = self._meta
        return tuple(meta.features.index(name) for name in meta.stepped_features)

    def pulse_indices(self) -> tuple[int, ...]:
        """The pulse trains of training (``LstmMeta.pulse_features``), by index."""
        names = self._meta.features
        return tuple(sorted(names.index(n) for n in self._meta.pulse_features))

    def pulse_shapes(self) -> tuple[tuple[float, float], ...]:
        """(rest, pulse value) of every pulse train of training (``LstmMeta.pulse_features``)."""
        return pulse_pairs(self._meta.pulse_features)

    def levels(self, windows: np.ndarray) -> Float64Array | None:
        """See ``LstmMeta.level_z``."""
        return self._meta.level_z(windows)

    def run_stats(self) -> RunStats | None:
        """Training's longest runs of identical readings (``LstmMeta.stuck``)."""
        return self._meta.stuck

    def noise_stats(self) -> NoiseStats | None:
        """Training's roughest windows (``LstmMeta.noise``)."""
        return self._meta.noise

    def period_stats(self) -> PeriodStats | None:
        """Training's cycles longer than a window (``LstmMeta.periods``)."""
        return self._meta.periods

    def level_slowness(self) -> Float64Array | None:
        """See ``LevelStats.slowness``; None for a model saved without it."""
        levels = self._meta.levels
        if levels is None or not levels.slowness:
            return None
        return np.asarray(levels.slowness, dtype=np.float64)


def scores_of(parts: list[Float64Array], meta: LstmMeta) -> tuple[Float64Array, Float64Array]:
    """Scores (B,) and per-feature errors (B, F) from chunks of per-feature errors (see
    ``window_scores``)."""
    if not parts:
        empty = np.zeros((0, len(meta.features)), dtype=np.float64)
        return np.zeros(0, dtype=np.float64), empty
    errors = np.concatenate(parts)
    scores = window_scores(errors, meta.calibration.feature_mean_errors, meta.unscored_indices)
    return scores, errors


def ratios_of(parts: list[Float64Array], meta: LstmMeta) -> Float64Array:
    """Each reading's error per feature as a multiple of that feature's normal error, from
    chunks of (B, S, F) per-reading errors, as ``window_scores`` divides (0 where not
    judged)."""
    if not parts:
        return np.zeros((0, 0, len(meta.features)), dtype=np.float64)
    floor, judged = score_floor(meta.calibration.feature_mean_errors, meta.unscored_indices)
    ratios: Float64Array = np.where(judged, np.concatenate(parts) / floor, 0.0)
    return ratios
