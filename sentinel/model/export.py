"""Export a saved LSTM-AE model for edge runtimes: TorchScript (libtorch) or ONNX (TensorRT, ORT).

The exported graph is the whole scoring rule, not just the autoencoder: raw windows
``(batch, window, features)`` float32 in, ``(scores (batch,), feature_errors (batch,
features))`` out -- scaling, reconstruction, per-feature error and the normalisation by
each feature's normal error are all inside, so a runtime needs nothing from Python. A
JSON file beside it (``<file>.json``) carries the feature order, window length and the
calibration threshold.

Every export is checked before it is reported done: the file is loaded back (TorchScript
by torch, ONNX by onnx's checker and reference evaluator) and must reproduce the
detector's own scores on sample windows.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch
from torch import nn
from torch.jit._trace import TracerWarning

from sentinel.errors import ModelError
from sentinel.model.base import ExportFormat
from sentinel.model.calibration import score_floor
from sentinel.model.lstm_ae import LstmAutoencoder
from sentinel.model.lstm_detector import LstmAeDetector

__all__ = ["ScoringModule", "export_detector"]

log = structlog.get_logger(__name__)

SUFFIX: dict[str, str] = {"torchscript": ".pt", "onnx": ".onnx"}
ONNX_OPSET = 17
_SAMPLE_WINDOWS = 4
_TOLERANCE = 1e-3  # relative, on scores: float32 graphs vs the eager model


class ScoringModule(nn.Module):
    """Raw windows -> (score, per-feature error), exactly as ``LstmAeDetector.score`` computes."""

    mean: torch.Tensor
    scale: torch.Tensor
    baseline: torch.Tensor
    judged: torch.Tensor
    held: torch.Tensor
    held_value: torch.Tensor
    relative: torch.Tensor

    def __init__(self, detector: LstmAeDetector) -> None:
        super().__init__()
        meta = detector.meta
        source = detector.module
        self.autoencoder = LstmAutoencoder(
            source.n_features, source.hidden_size, source.latent_size, source.num_layers
        )
        self.autoencoder.load_state_dict(
            {k: v.detach().cpu() for k, v in source.state_dict().items()}
        )
        self.autoencoder.eval()
        self.register_buffer("mean", torch.from_numpy(np.array(meta.scaler.mean)))
        self.register_buffer("scale", torch.from_numpy(np.array(meta.scaler.scale)))
        baseline, judged = score_floor(meta.calibration.feature_mean_errors, meta.constant_indices)
        self.register_buffer("baseline", torch.from_numpy(baseline.astype(np.float32)))
        self.register_buffer("judged", torch.from_numpy(judged.astype(np.float32)))
        # 1 for features constant in training, held at their scaled training value
        # (``hold_constants``); they take no part in the score (``judged`` 0).
        held = np.zeros(len(meta.features), dtype=np.float32)
        held_value = np.zeros(len(meta.features), dtype=np.float32)
        for index, value in detector.constant_values().items():
            held[index] = 1.0
            held_value[index] = (value - meta.scaler.mean[index]) / meta.scaler.scale[index]
        self.register_buffer("held", torch.from_numpy(held))
        self.register_buffer("held_value", torch.from_numpy(held_value))
        # 1 for features judged relative to their window's mean (``center_relative``).
        relative = np.zeros(len(meta.features), dtype=np.float32)
        relative[list(meta.relative_indices)] = 1.0
        self.register_buffer("relative", torch.from_numpy(relative))
        self.score_steps = meta.score_steps or meta.window

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scaled = (windows - self.mean) / self.scale
        scaled = torch.where(self.held > 0, self.held_value, scaled)
        scaled = scaled - self.relative * scaled.mean(dim=1, keepdim=True)
        recon = self.autoencoder(scaled)
        feature_errors = ((recon - scaled) ** 2)[:, -self.score_steps :, :].mean(dim=1)
        scores = (feature_errors / self.baseline * self.judged).amax(dim=1)
        return scores, feature_errors


def export_detector(detector: LstmAeDetector, fmt: ExportFormat, out: Path | None = None) -> Path:
    """Write ``detector`` as ``fmt`` to ``out`` (default ``<stream>-<version><suffix>`` in
    the working directory) plus ``<out>.json``; returns the model file's path."""
    if fmt not in SUFFIX:
        raise ModelError(f"unknown export format {fmt!r}: use torchscript or onnx")
    meta = detector.meta
    out = Path(out) if out is not None else Path(f"{meta.stream}-{meta.version}{SUFFIX[fmt]}")
    module = ScoringModule(detector).eval()
    sample = _sample_windows(detector)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Checked on a different batch size than the one traced: the batch axis is dynamic.
    check = sample[:-1]
    if fmt == "torchscript":
        _export_torchscript(module, sample, out)
        got = _run_torchscript(out, check)
    else:
        _export_onnx(module, sample, out)
        got = _run_onnx(out, check)
    expected, _ = detector.score(check)
    if not np.allclose(got, expected, rtol=_TOLERANCE, atol=1e-5):
        out.unlink(missing_ok=True)
        raise ModelError(
            f"the {fmt} export does not reproduce the model's scores "
            f"(max difference {float(np.max(np.abs(got - expected))):.3g}); nothing written"
        )
    sidecar = out.with_name(out.name + ".json")
    sidecar.write_text(
        json.dumps(
            {
                "format": fmt,
                "version": meta.version,
                "stream": meta.stream,
                "features": list(meta.features),
                "window": meta.window,
                "relative_features": list(meta.relative_features),
                "score_steps": meta.score_steps,
                "input": {"name": "windows", "shape": ["batch", meta.window, len(meta.features)]},
                "outputs": [
                    {"name": "scores", "shape": ["batch"]},
                    {"name": "feature_errors", "shape": ["batch", len(meta.features)]},
                ],
                "calibration_quantiles": meta.calibration.quantiles,
                "created": meta.created,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    log.info("model_exported", format=fmt, version=meta.version, path=str(out))
    return out


def _sample_windows(detector: LstmAeDetector) -> np.ndarray:
    meta = detector.meta
    rng = np.random.default_rng(0)
    shape = (_SAMPLE_WINDOWS, meta.window, len(meta.features))
    noise = rng.standard_normal(shape).astype(np.float32)
    return (noise * meta.scaler.scale + meta.scaler.mean).astype(np.float32)


def _export_torchscript(module: ScoringModule, sample: np.ndarray, out: Path) -> None:
    with torch.inference_mode(False), warnings.catch_warnings():
        # torch.jit's deprecation notice, and TracerWarnings about the LSTM's shape checks:
        # features and window are fixed per model; the batch size is checked to vary.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", TracerWarning)
        scripted = torch.jit.trace(module, torch.from_numpy(sample), check_trace=False)
        torch.jit.save(scripted, str(out))


def _run_torchscript(out: Path, sample: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(out), map_location="cpu")
    with torch.inference_mode():
        scores, _ = loaded(torch.from_numpy(sample))
    result: np.ndarray = scores.double().numpy()
    return result


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError as err:
        raise ModelError(
            "ONNX export needs the onnx package, which is not installed: "
            "pip install 'sentinel-iot[onnx]' (or pip install onnx), or use --format torchscript"
        ) from err


def _export_onnx(module: ScoringModule, sample: np.ndarray, out: Path) -> None:
    _require_onnx()
    with warnings.catch_warnings():
        # The TorchScript-based exporter needs only the onnx package (the newer dynamo
        # exporter also needs onnxscript); its deprecation and LSTM batch-size notices do
        # not apply: initial states are zeros, so any batch size works (checked below).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.from_numpy(sample),),
            str(out),
            dynamo=False,
            input_names=["windows"],
            output_names=["scores", "feature_errors"],
            dynamic_axes={
                "windows": {0: "batch"},
                "scores": {0: "batch"},
                "feature_errors": {0: "batch"},
            },
            opset_version=ONNX_OPSET,
        )


def _run_onnx(out: Path, sample: np.ndarray) -> np.ndarray:
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(out))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ModelError(f"{out}: the exported ONNX graph is invalid: {err}") from err
    outputs: Any = ReferenceEvaluator(model).run(["scores"], {"windows": sample})
    return np.asarray(outputs[0], dtype=np.float64)
