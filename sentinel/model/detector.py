"""A trained autoencoder with its scaler and metadata: scoring, and saving without pickle.

On disk a model is a directory holding ``weights.safetensors`` (tensors only) and
``meta.json`` (features, window, sizes, scaler, calibration, training summary). Loading
never unpickles anything, so a model directory from an untrusted disk cannot run code.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import structlog
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from sentinel.atomic import fsync_dir
from sentinel.errors import ModelError
from sentinel.model.levels import LevelStats
from sentinel.model.lstm_ae import LstmAutoencoder
from sentinel.model.scaler import Scaler

__all__ = [
    "CALIBRATION_QUANTILES",
    "META_FILE",
    "SCHEMA_VERSION",
    "WEIGHTS_FILE",
    "Calibration",
    "Detector",
    "ModelMeta",
    "reconstruction_errors",
    "resolve_device",
    "window_scores",
]

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
META_FILE = "meta.json"
CALIBRATION_QUANTILES = ("0.5", "0.9", "0.99", "0.995", "0.999")

Float64Array = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]


def resolve_device(name: Literal["auto", "cpu", "cuda"]) -> torch.device:
    """The torch device for a config value; ``cuda`` without CUDA is an error, not a fallback."""
    cuda = torch.cuda.is_available()
    if name == "auto":
        device = torch.device("cuda" if cuda and _cuda_works() else "cpu")
        if device.type == "cpu":
            log.info(
                "model_device_fallback",
                device="cpu",
                reason="CUDA unusable (see cuda_unusable)"
                if cuda
                else f"torch {torch.__version__} sees no CUDA device "
                f"(built for CUDA {torch.version.cuda})",
            )
    elif name == "cuda":
        if not cuda:
            raise ModelError(
                "model.device is 'cuda' but torch sees no CUDA device "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                "use 'auto' or 'cpu', or install a CUDA build of torch"
            )
        device = torch.device("cuda")
    elif name == "cpu":
        device = torch.device("cpu")
    else:
        raise ModelError(f"unknown model device {name!r}")
    log.info(
        "model_device",
        requested=name,
        device=str(device),
        gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    )
    return device


def _cuda_works() -> bool:
    """A tensor on the GPU really works: a Jetson whose CUDA libraries do not match its torch
    build reports a device, then fails at the first allocation."""
    try:
        torch.zeros(1, device="cuda").add_(1).cpu()
    except (RuntimeError, AssertionError) as err:
        log.warning("cuda_unusable", error=str(err).splitlines()[0], using="cpu")
        return False
    return True


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
    def from_errors(cls, feature_errors: Float64Array) -> Calibration:
        """Calibrate on held-back windows' per-feature errors (B, F)."""
        if feature_errors.shape[0] == 0:
            raise ModelError("calibration needs at least one scored window")
        baseline = feature_errors.mean(axis=0)
        scores = window_scores(feature_errors, baseline)
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
        obj = _as_object(data, "calibration")
        quantiles = _as_object(obj.get("quantiles"), "calibration.quantiles")
        if set(quantiles) != set(CALIBRATION_QUANTILES):
            raise ModelError(
                f"calibration.quantiles must have keys {list(CALIBRATION_QUANTILES)}, "
                f"got {sorted(quantiles)}"
            )
        errors = obj.get("feature_mean_errors")
        if not isinstance(errors, list):
            raise ModelError("calibration.feature_mean_errors must be a list")
        return cls(
            quantiles={q: _number(quantiles[q], f"calibration.quantiles.{q}") for q in quantiles},
            max=_number(obj.get("max"), "calibration.max"),
            feature_mean_errors=tuple(
                _number(v, "calibration.feature_mean_errors") for v in errors
            ),
            # Optional: models saved before it existed simply have no sample.
            scores=tuple(_number(v, "calibration.scores") for v in _list(obj, "scores")),
        )


@dataclass(frozen=True)
class ModelMeta:
    """Everything besides the weights that is needed to rebuild and use a model."""

    version: str
    stream: str
    features: tuple[str, ...]
    window: int
    hidden_size: int
    latent_size: int
    num_layers: int
    scaler: Scaler
    calibration: Calibration
    created: str  # ISO 8601, UTC
    training: dict[str, float | int | str] = field(default_factory=dict)
    # Features judged by their changes within a window, not their level (centred per
    # window before the model sees them; see ``center_relative``).
    relative_features: tuple[str, ...] = ()
    # How many of a window's newest readings its score judges (0: all of them). The older
    # readings are context the encoder sees but the error is not taken over, so a verdict
    # is about the newest readings: it starts and ends with a fault instead of trailing it
    # by a window.
    score_steps: int = 0
    # Training's window means per feature (sentinel.model.levels); None for models saved
    # before it existed, whose windows the level check then leaves alone.
    levels: LevelStats | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        n = len(self.features)
        if n == 0:
            raise ModelError("a model needs at least one feature")
        if self.scaler.n_features != n:
            raise ModelError(f"scaler has {self.scaler.n_features} features, meta lists {n}")
        if len(self.calibration.feature_mean_errors) != n:
            raise ModelError(
                f"calibration has {len(self.calibration.feature_mean_errors)} feature errors, "
                f"meta lists {n} features"
            )
        for name in ("window", "hidden_size", "latent_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ModelError(f"{name} must be positive")
        if not 0 <= self.score_steps <= self.window:
            raise ModelError(
                f"score_steps must be between 0 and the window ({self.window}), "
                f"got {self.score_steps}"
            )
        if self.levels is not None and len(self.levels.mean) != n:
            raise ModelError(f"levels has {len(self.levels.mean)} features, meta lists {n}")
        unknown = set(self.relative_features) - set(self.features)
        if unknown:
            raise ModelError(f"relative_features {sorted(unknown)} are not among the features")

    @property
    def relative_indices(self) -> tuple[int, ...]:
        return tuple(self.features.index(name) for name in self.relative_features)

    def to_json(self) -> str:
        data = {
            "schema_version": self.schema_version,
            "version": self.version,
            "stream": self.stream,
            "features": list(self.features),
            "window": self.window,
            "hidden_size": self.hidden_size,
            "latent_size": self.latent_size,
            "num_layers": self.num_layers,
            "scaler": self.scaler.to_dict(),
            "calibration": self.calibration.to_dict(),
            "created": self.created,
            "training": dict(self.training),
            "relative_features": list(self.relative_features),
            "score_steps": self.score_steps,
        }
        if self.levels is not None:
            data["levels"] = self.levels.to_dict()
        return json.dumps(data, indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        """Parse and check meta.json; any problem is a ModelError saying which key."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise ModelError(f"not valid JSON: {err}") from err
        obj = _as_object(raw, "meta")
        schema = obj.get("schema_version")
        if schema != SCHEMA_VERSION:
            raise ModelError(
                f"schema_version is {schema!r}; this Sentinel reads schema {SCHEMA_VERSION}"
            )
        features = obj.get("features")
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise ModelError("features must be a list of strings")
        training = _as_object(obj.get("training", {}), "training")
        for key, value in training.items():
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ModelError(f"training.{key} must be a number or a string")
        return cls(
            schema_version=SCHEMA_VERSION,
            version=_string(obj.get("version"), "version"),
            stream=_string(obj.get("stream"), "stream"),
            features=tuple(features),
            window=_integer(obj.get("window"), "window"),
            hidden_size=_integer(obj.get("hidden_size"), "hidden_size"),
            latent_size=_integer(obj.get("latent_size"), "latent_size"),
            num_layers=_integer(obj.get("num_layers"), "num_layers"),
            scaler=Scaler.from_dict(obj.get("scaler")),
            calibration=Calibration.from_dict(obj.get("calibration")),
            created=_string(obj.get("created"), "created"),
            training=dict(training),
            # Optional: models saved before it existed judge every feature by its level.
            relative_features=tuple(
                _string(v, "relative_features") for v in _list(obj, "relative_features")
            ),
            # Optional: models saved before it existed score the whole window.
            score_steps=_integer(obj.get("score_steps", 0), "score_steps"),
            # Optional: models saved before it existed have no level check.
            levels=LevelStats.from_dict(obj["levels"]) if "levels" in obj else None,
        )


CALIBRATION_SAMPLE = 20_000  # held-back scores kept with a model (about 200 KB of JSON)

# Floor for a feature's normal error (scaled units, where a feature's variance is ~1): a
# feature the model reconstructs perfectly must not turn rounding noise into huge ratios.
_BASELINE_FLOOR = 1e-4


def window_scores(
    feature_errors: Float64Array, baseline: Sequence[float] | Float64Array
) -> Float64Array:
    """A window's score: its worst feature's error, as a multiple of that feature's normal
    error on held-back data.

    Averaging over features (plain window MSE) dilutes the faults plants mostly have -- one
    sensor stuck, spiking or offset -- behind the reconstruction noise of all the others;
    normalising per feature stops a naturally hard-to-predict sensor from dominating.
    """
    floor = np.maximum(np.asarray(baseline, dtype=np.float64), _BASELINE_FLOOR)
    ratios: Float64Array = feature_errors / floor
    worst: Float64Array = ratios.max(axis=1)
    return worst


def center_relative(scaled: Float32Array, indices: Sequence[int]) -> Float32Array:
    """Subtract each window's own mean from the ``indices`` features of (B, T, F) windows.

    What the model then sees of such a feature is its shape within the window -- steps,
    spikes, oscillation -- and not its level, which for slow channels (temperatures) wanders
    with ambient conditions far outside any training range without anything being wrong.
    """
    if not indices:
        return scaled
    out = scaled.copy()
    idx = list(indices)
    out[:, :, idx] -= out[:, :, idx].mean(axis=1, keepdims=True)
    return out


def reconstruction_errors(
    module: LstmAutoencoder, scaled: torch.Tensor, score_steps: int = 0
) -> tuple[Float64Array, Float64Array]:
    """Per-window MSE and per-feature MSE (averaged over time) of already-scaled windows.

    ``score_steps`` > 0 averages over the newest that many time steps only (see
    ``ModelMeta.score_steps``). The caller is responsible for ``eval()``/``inference_mode()``
    and for chunking.
    """
    recon = module(scaled)
    squared = (recon - scaled) ** 2
    if score_steps:
        squared = squared[:, -score_steps:, :]
    feature_errors = squared.mean(dim=1).double().cpu().numpy()
    return feature_errors.mean(axis=1), feature_errors


class Detector:
    """Scores raw windows with a trained autoencoder; higher means more anomalous."""

    def __init__(
        self,
        meta: ModelMeta,
        module: LstmAutoencoder,
        device: torch.device,
        max_batch: int = 512,
    ) -> None:
        if max_batch < 1:
            raise ModelError("max_batch must be positive")
        shapes = (module.n_features, module.hidden_size, module.latent_size, module.num_layers)
        expected = (len(meta.features), meta.hidden_size, meta.latent_size, meta.num_layers)
        if shapes != expected:
            raise ModelError(f"module shape {shapes} does not match meta {expected}")
        self._meta = meta
        self._device = device
        self._module = module.to(device).eval()
        self._max_batch = max_batch

    @property
    def meta(self) -> ModelMeta:
        return self._meta

    @property
    def version(self) -> str:
        return self._meta.version

    @property
    def features(self) -> tuple[str, ...]:
        return self._meta.features

    @property
    def window(self) -> int:
        return self._meta.window

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def module(self) -> LstmAutoencoder:
        return self._module

    def score(self, windows: np.ndarray) -> tuple[Float64Array, Float64Array]:
        """Scores (B,) and per-feature errors (B, F) of raw windows shaped (B, window, F).

        See ``window_scores`` for what a score is; per-feature errors are MSEs in scaled
        units, averaged over time (over the newest ``meta.score_steps`` steps where set).
        """
        n_features = len(self._meta.features)
        if (
            windows.ndim != 3
            or windows.shape[1] != self._meta.window
            or windows.shape[2] != n_features
        ):
            raise ModelError(
                f"model {self.version} expects windows shaped (B, {self._meta.window}, "
                f"{n_features}), got {windows.shape}"
            )
        count = windows.shape[0]
        if count == 0:
            return np.zeros(0, dtype=np.float64), np.zeros((0, n_features), dtype=np.float64)
        scaled = center_relative(self._meta.scaler.transform(windows), self._meta.relative_indices)
        feature_errors: list[Float64Array] = []
        self._module.eval()
        with torch.inference_mode():
            for start in range(0, count, self._max_batch):
                chunk = torch.from_numpy(scaled[start : start + self._max_batch])
                _, f = reconstruction_errors(
                    self._module, chunk.to(self._device), self._meta.score_steps
                )
                feature_errors.append(f)
        errors = np.concatenate(feature_errors)
        return window_scores(errors, self._meta.calibration.feature_mean_errors), errors

    def levels(self, windows: np.ndarray) -> Float64Array | None:
        """(B, F) levels of raw windows shaped (B, window, F): each feature's window mean,
        in standard deviations of training's window means (``LevelStats.z``); None for a
        model saved without level statistics."""
        stats = self._meta.levels
        if stats is None:
            return None
        # Scaling is linear: scale the (B, F) means, not every reading of every window.
        return stats.z(self._meta.scaler.transform(windows.mean(axis=1, dtype=np.float64)))

    def save(self, directory: Path) -> None:
        """Write weights and meta into ``directory``, which must not exist or be empty.

        Files go into a hidden sibling directory first and are fsynced; one rename then
        publishes the whole model, so a crash never leaves a half-written model behind.
        """
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            tensors = {
                k: v.detach().to("cpu").contiguous() for k, v in self._module.state_dict().items()
            }
            save_file(tensors, tmp / WEIGHTS_FILE, metadata={"version": self.version})
            _fsync_file(tmp / WEIGHTS_FILE)
            (tmp / META_FILE).write_text(self._meta.to_json(), encoding="utf-8")
            _fsync_file(tmp / META_FILE)
            fsync_dir(tmp)
            os.replace(tmp, directory)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelError(f"{directory}: cannot save model: {err}") from err
        fsync_dir(directory.parent)
        log.info("model_saved", version=self.version, stream=self._meta.stream, path=str(directory))

    @classmethod
    def load(cls, directory: Path, device: torch.device, max_batch: int = 512) -> Detector:
        """Rebuild a detector from a directory written by :meth:`save`; never unpickles."""
        directory = Path(directory)
        meta_path = directory / META_FILE
        weights_path = directory / WEIGHTS_FILE
        try:
            text = meta_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ModelError(f"{meta_path}: cannot read: {err}") from err
        try:
            meta = ModelMeta.from_json(text)
        except ModelError as err:
            raise ModelError(f"{meta_path}: {err}") from err

        tensors, file_meta = _read_weights(weights_path)
        if file_meta.get("version", meta.version) != meta.version:
            raise ModelError(
                f"{weights_path}: weights belong to version {file_meta['version']!r}, "
                f"meta.json to {meta.version!r}"
            )
        module = LstmAutoencoder(
            len(meta.features), meta.hidden_size, meta.latent_size, meta.num_layers
        )
        try:
            module.load_state_dict(tensors, strict=True)
        except RuntimeError as err:
            raise ModelError(
                f"{weights_path}: weights do not fit the shapes in {META_FILE}: {err}"
            ) from err
        if not all(bool(torch.isfinite(t).all()) for t in tensors.values()):
            raise ModelError(f"{weights_path}: weights contain NaN or infinite values")
        log.info("model_loaded", version=meta.version, stream=meta.stream, path=str(directory))
        return cls(meta, module, device, max_batch=max_batch)


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


def _fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _list(obj: Mapping[str, Any], key: str) -> list[Any]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise ModelError(f"calibration.{key} must be a list")
    return value


def _as_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ModelError(f"{where} must be a JSON object")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ModelError(f"{where} must be a non-empty string")
    return value


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(f"{where} must be an integer")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelError(f"{where} must be a number")
    return float(value)
