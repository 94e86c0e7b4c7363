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
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

import numpy as np
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
from sentinel.model.calibration import Float64Array
from sentinel.model.lstm_ae import LstmAutoencoder
from sentinel.model.lstm_graph import LstmScoringGraph, cpu_copy
from sentinel.model.lstm_meta import (
    RELATIVE_CENTRES,
    WEIGHTS_FILE,
    LstmAeMeta,
    LstmMeta,
    LstmMetaChecks,
    center_relative,
    hold_constants,
    model_inputs,
    ratios_of,
    scores_of,
    window_centre,
)

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


class LstmDetector(LstmMetaChecks, Detector, Generic[MetaT, ModuleT]):
    """What both LSTM detectors share: a meta with the scaler and the features' treatment, a
    torch module on a device, batched scoring of the module's per-feature errors, the level
    and constant checks' inputs, the weights file and export. A subclass says how a window's
    per-feature errors come out of its module (``_feature_errors``), checks the module's
    shape, trains, loads, and gives its scoring graph for export."""

    export_formats: ClassVar[tuple[ExportFormat, ...]] = ("torchscript", "onnx")
    _meta: MetaT

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
        if self._module.training:  # eval() walks every submodule: ~0.2 ms a pass
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
        parts = self._batched(windows, self._step_errors)
        return None if parts is None else ratios_of(parts, self._meta)

    def score(self, windows: np.ndarray) -> tuple[Float64Array, Float64Array]:
        """Scores (B,) and per-feature errors (B, F) of raw windows shaped (B, window, F).

        See ``window_scores`` for what a score is; per-feature errors are the module's, in
        scaled units (``_feature_errors``)."""
        parts = self._batched(windows, self._feature_errors)
        return scores_of(parts or [], self._meta)

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
