"""The LSTM autoencoder detector (``lstm_ae``): a trained network with its scaler, scoring a
window by how badly it reconstructs it.

On disk a model is ``weights.safetensors`` (tensors only) beside ``meta.json``, which holds
the common keys (``DetectorMeta``) and the network's own: sizes, scaler, relative features,
scored steps, level statistics. Training is ``sentinel.model.train``; export to TorchScript
or ONNX is ``sentinel.model.export``, of the scoring graph ``AutoencoderGraph``.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import numpy.typing as npt
import structlog
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from sentinel.errors import ModelError
from sentinel.model.base import (
    META_FILE,
    Detector,
    DetectorMeta,
    ExportFormat,
    ProgressFn,
    TrainOptions,
    fsync_file,
    load_meta,
)
from sentinel.model.calibration import Float64Array, score_floor, window_scores
from sentinel.model.fields import as_list, as_object, integer, number, string
from sentinel.model.levels import LevelStats
from sentinel.model.lstm_ae import LstmAutoencoder
from sentinel.model.lstm_graph import LstmScoringGraph, cpu_copy
from sentinel.model.scaler import Scaler
from sentinel.model.stuck import RunStats

__all__ = [
    "RELATIVE_CENTRES",
    "WEIGHTS_FILE",
    "AutoencoderGraph",
    "LstmAeDetector",
    "LstmAeMeta",
    "LstmDetector",
    "LstmMeta",
    "center_relative",
    "hold_constants",
    "load_weights",
    "model_inputs",
    "reconstruction_errors",
    "window_centre",
    "write_weights",
]

log = structlog.get_logger(__name__)

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
    # Features constant in training, with their value (issue #21). Their reconstruction
    # error says nothing (about zero in training, so any change would score 10^3-10^8 times
    # that), so the model sees them at their training value and they take no part in the
    # score; the constant check (sentinel.judge.constants) judges them by any departure.
    constant_features: dict[str, float] = field(default_factory=dict)
    # Features that held their value for longer than a window between steps in training
    # (set points, commands; ``sentinel.model.train.stepped_features``): an input like any
    # other, but no part of the score -- their one-step error is zero or an unannounced step.
    stepped_features: tuple[str, ...] = ()

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
        }
        if self.levels is not None:
            data["levels"] = self.levels.to_dict()
        if self.stuck is not None:
            data["stuck"] = self.stuck.to_dict()
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


def reconstruction_errors(
    module: LstmAutoencoder, scaled: torch.Tensor, score_steps: int = 0
) -> tuple[Float64Array, Float64Array]:
    """Per-window MSE and per-feature MSE (averaged over time) of already-scaled windows.

    ``score_steps`` > 0 averages over the newest that many time steps only (see
    ``LstmAeMeta.score_steps``). The caller is responsible for ``eval()``/``inference_mode()``
    and for chunking.
    """
    recon = module(scaled)
    squared = (recon - scaled) ** 2
    if score_steps:
        squared = squared[:, -score_steps:, :]
    feature_errors = squared.mean(dim=1).double().cpu().numpy()
    return feature_errors.mean(axis=1), feature_errors


MetaT = TypeVar("MetaT", bound=LstmMeta)
ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


class LstmDetector(Detector, Generic[MetaT, ModuleT]):
    """What both LSTM detectors share: a meta with the scaler and the features' treatment, a
    torch module on a device, batched scoring of the module's per-feature errors, the level
    and constant checks' inputs, the weights file and export. A subclass says how a window's
    per-feature errors come out of its module (``_feature_errors``), checks the module's
    shape, trains, loads, and gives its scoring graph for export."""

    export_formats: ClassVar[tuple[ExportFormat, ...]] = ("torchscript", "onnx")

    def __init__(self, meta: MetaT, module: ModuleT, device: torch.device, max_batch: int) -> None:
        if max_batch < 1:
            raise ModelError("max_batch must be positive")
        self._meta = meta
        self._device = device
        self._module = module.to(device).eval()
        self._max_batch = max_batch

    @property
    def meta(self) -> MetaT:
        return self._meta

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def module(self) -> ModuleT:
        return self._module

    @abstractmethod
    def _feature_errors(self, scaled: torch.Tensor) -> Float64Array:
        """(B, F) per-feature errors of a batch of model inputs on the device; called under
        ``inference_mode`` with the module in eval mode."""

    def _step_errors(self, scaled: torch.Tensor) -> Float64Array | None:
        """(B, S, F) per-reading errors of a batch of model inputs, the ones whose mean
        over S is ``_feature_errors``, called as ``_feature_errors`` is; None where a
        reading's error is not its own (the autoencoder reconstructs a window as a whole,
        so one faulty reading raises the error of every reading around it)."""
        return None

    def _batched(
        self, windows: np.ndarray, errors: Callable[[torch.Tensor], Float64Array | None]
    ) -> list[Float64Array] | None:
        """``errors`` of raw (B, window, F) windows as model inputs on the device, in chunks
        of ``max_batch`` under ``inference_mode``; None where ``errors`` gave None.

        A chunk is padded with zero windows to the next power of two (at most
        ``max_batch``) and the padding's errors dropped: oneDNN (and cuDNN) keep a compiled
        LSTM primitive, with its buffers, for every batch shape they meet, ~0.2-0.4 MB each
        on the CPU, and the daemon's passes hold any number of windows, so the process grew
        by one primitive per batch size until it had met them all (100 MB and more at the
        default ``score_batch_max``; issue #23, memory). Windows are scored independently:
        the padding changes no other window's error."""
        self._check_shape(windows)
        scaled = model_inputs(windows, self._meta)
        parts: list[Float64Array] = []
        self._module.eval()
        with torch.inference_mode():
            for start in range(0, len(scaled), self._max_batch):
                chunk = scaled[start : start + self._max_batch]
                n = len(chunk)
                size = min(self._max_batch, 1 << (n - 1).bit_length())
                if size > n:
                    pad = np.zeros((size - n, *chunk.shape[1:]), dtype=chunk.dtype)
                    chunk = np.concatenate((chunk, pad))
                part = errors(torch.from_numpy(chunk).to(self._device))
                if part is None:
                    return None
                parts.append(part[:n])
        return parts

    def step_ratios(self, windows: np.ndarray) -> Float64Array | None:
        """See ``Detector.step_ratios``: each reading's error per feature as a multiple of
        that feature's normal error, as ``window_scores`` divides (0 where not judged)."""
        meta = self._meta
        parts = self._batched(windows, self._step_errors)
        if parts is None:
            return None
        if not parts:
            return np.zeros((0, 0, len(meta.features)), dtype=np.float64)
        floor, judged = score_floor(meta.calibration.feature_mean_errors, meta.unscored_indices)
        ratios: Float64Array = np.where(judged, np.concatenate(parts) / floor, 0.0)
        return ratios

    def score(self, windows: np.ndarray) -> tuple[Float64Array, Float64Array]:
        """Scores (B,) and per-feature errors (B, F) of raw windows shaped (B, window, F).

        See ``window_scores`` for what a score is; per-feature errors are the module's, in
        scaled units (``_feature_errors``)."""
        meta = self._meta
        parts = self._batched(windows, self._feature_errors)
        if not parts:
            empty = np.zeros((0, len(meta.features)), dtype=np.float64)
            return np.zeros(0, dtype=np.float64), empty
        errors = np.concatenate(parts)
        scores = window_scores(errors, meta.calibration.feature_mean_errors, meta.unscored_indices)
        return scores, errors

    def constant_values(self) -> dict[int, float]:
        """Feature index -> value, for the features constant in the training data."""
        return self._meta.constant_values()

    def levels(self, windows: np.ndarray) -> Float64Array | None:
        """See ``LstmMeta.level_z``."""
        return self._meta.level_z(windows)

    def run_stats(self) -> RunStats | None:
        """Training's longest runs of identical readings (``LstmMeta.stuck``)."""
        return self._meta.stuck

    def level_slowness(self) -> Float64Array | None:
        """See ``LevelStats.slowness``; None for a model saved without it."""
        levels = self._meta.levels
        if levels is None or not levels.slowness:
            return None
        return np.asarray(levels.slowness, dtype=np.float64)

    def _write_files(self, directory: Path) -> None:
        write_weights(directory, self._module, self.version)

    @abstractmethod
    def scoring_module(self) -> LstmScoringGraph:
        """The whole scoring rule as one CPU torch module, for export."""

    def export(self, fmt: ExportFormat, out: Path | None = None) -> Path:
        """See ``sentinel.model.export.export_detector``."""
        from sentinel.model.export import export_detector  # torch.jit/onnx only when asked

        return export_detector(self, fmt, out)


class LstmAeDetector(LstmDetector[LstmAeMeta, LstmAutoencoder]):
    """Scores raw windows with a trained autoencoder; higher means more anomalous. Per-feature
    errors are MSEs in scaled units, averaged over time (over the newest
    ``meta.score_steps`` steps where set)."""

    type_key: ClassVar[str] = "lstm_ae"

    def __init__(
        self,
        meta: LstmAeMeta,
        module: LstmAutoencoder,
        device: torch.device,
        max_batch: int = 512,
    ) -> None:
        shapes = (module.n_features, module.hidden_size, module.latent_size, module.num_layers)
        expected = (len(meta.features), meta.hidden_size, meta.latent_size, meta.num_layers)
        if shapes != expected:
            raise ModelError(f"module shape {shapes} does not match meta {expected}")
        super().__init__(meta, module, device, max_batch)

    def _feature_errors(self, scaled: torch.Tensor) -> Float64Array:
        return reconstruction_errors(self._module, scaled, self._meta.score_steps)[1]

    @classmethod
    def train(
        cls,
        segments: Sequence[np.ndarray],
        options: TrainOptions,
        *,
        device: torch.device,
        first_ts: float | None = None,
        last_ts: float | None = None,
        progress: ProgressFn | None = None,
        stop: threading.Event | None = None,
    ) -> LstmAeDetector:
        """See ``sentinel.model.train.train_detector``."""
        from sentinel.model.train import train_detector  # which builds this class

        return train_detector(
            segments,
            options,
            device=device,
            first_ts=first_ts,
            last_ts=last_ts,
            progress=progress,
            stop=stop,
        )

    @classmethod
    def load(cls, directory: Path, device: torch.device, max_batch: int = 512) -> LstmAeDetector:
        """Rebuild a detector from a directory written by :meth:`save`; never unpickles."""
        directory = Path(directory)
        meta = load_meta(directory, LstmAeMeta.from_json)
        module = LstmAutoencoder(
            len(meta.features), meta.hidden_size, meta.latent_size, meta.num_layers
        )
        load_weights(directory, meta, module)
        log.info("model_loaded", version=meta.version, stream=meta.stream, path=str(directory))
        return cls(meta, module, device, max_batch=max_batch)

    def scoring_module(self) -> AutoencoderGraph:
        """The whole scoring rule as one CPU torch module, for export."""
        return AutoencoderGraph(self._meta, self._module)


class AutoencoderGraph(LstmScoringGraph):
    """The LSTM-AE's scoring rule for export: the reconstruction error of the newest
    ``score_steps`` steps (all of them when 0), as ``reconstruction_errors``."""

    def __init__(self, meta: LstmMeta, module: LstmAutoencoder) -> None:
        super().__init__(meta)
        self.autoencoder = LstmAutoencoder(
            module.n_features, module.hidden_size, module.latent_size, module.num_layers
        )
        cpu_copy(self.autoencoder, module)

    def feature_errors(self, scaled: torch.Tensor) -> torch.Tensor:
        recon = self.autoencoder(scaled)
        errors: torch.Tensor = ((recon - scaled) ** 2)[:, -self.score_steps :, :].mean(dim=1)
        return errors


def write_weights(directory: Path, module: torch.nn.Module, version: str) -> None:
    """``module``'s tensors into ``directory``'s weights file, fsynced, marked ``version``."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    save_file(tensors, directory / WEIGHTS_FILE, metadata={"version": version})
    fsync_file(directory / WEIGHTS_FILE)


def load_weights(directory: Path, meta: DetectorMeta, module: torch.nn.Module) -> None:
    """Fill ``module`` from ``directory``'s weights file, checking that the file belongs to
    ``meta``'s version, fits the module's shapes and holds only finite values."""
    weights_path = directory / WEIGHTS_FILE
    tensors, file_meta = _read_weights(weights_path)
    if file_meta.get("version", meta.version) != meta.version:
        raise ModelError(
            f"{weights_path}: weights belong to version {file_meta['version']!r}, "
            f"meta.json to {meta.version!r}"
        )
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise ModelError(
            f"{weights_path}: weights do not fit the shapes in {META_FILE}: {err}"
        ) from err
    if not all(bool(torch.isfinite(t).all()) for t in tensors.values()):
        raise ModelError(f"{weights_path}: weights contain NaN or infinite values")


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], Mapping[str, str]]:
    if not path.is_file():
        raise ModelError(f"{path}: missing")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            file_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError) as err:
        # Truncated or garbled files fail in the header parse or when a tensor's bytes run
        # past the end of the file.
        raise ModelError(f"{path}: not a readable safetensors file: {err}") from err
    return tensors, file_meta
