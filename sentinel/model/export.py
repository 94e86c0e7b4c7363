"""Export a saved LSTM model (``lstm_ae``, ``lstm_forecast``) for edge runtimes:
TorchScript (libtorch) or ONNX (TensorRT, ORT).

The exported graph is the whole scoring rule, not just the network: raw windows ``(batch,
window, features)`` float32 in, ``(scores (batch,), feature_errors (batch, features))``
out -- scaling, the network's reconstruction or prediction, per-feature error and the
normalisation by each feature's normal error are all inside, so a runtime needs nothing
from Python. Each detector brings that graph (``scoring_module``, a
``sentinel.model.lstm_graph.LstmScoringGraph``); this module traces, writes and checks it.
A JSON file beside it (``<file>.json``) carries the detector, the feature order, window
length and the calibration quantiles.

Every export is checked before it is reported done: the file is loaded back (TorchScript
by torch, ONNX by onnx's checker and reference evaluator) and must reproduce the
detector's own scores on sample windows.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog
import torch
from torch import nn
from torch.jit._trace import TracerWarning

from sentinel.errors import ModelError
from sentinel.model.base import ExportFormat
from sentinel.model.calibration import Float64Array
from sentinel.model.lstm_detector import LstmMeta
from sentinel.model.lstm_graph import LstmScoringGraph

__all__ = ["ExportableDetector", "export_detector"]

log = structlog.get_logger(__name__)

SUFFIX: dict[str, str] = {"torchscript": ".pt", "onnx": ".onnx"}
ONNX_OPSET = 17
_SAMPLE_WINDOWS = 4
_TOLERANCE = 1e-3  # relative, on scores: float32 graphs vs the eager model


class ExportableDetector(Protocol):
    """What export needs of a detector: an LSTM detector's meta (scaler, features, window),
    its own scores to check the export against, and its scoring rule as one torch module."""

    @property
    def meta(self) -> LstmMeta: ...

    def score(self, windows: np.ndarray) -> tuple[Float64Array, Float64Array]: ...

    def scoring_module(self) -> LstmScoringGraph: ...


def export_detector(
    detector: ExportableDetector, fmt: ExportFormat, out: Path | None = None
) -> Path:
    """Write ``detector`` as ``fmt`` to ``out`` (default ``<stream>-<version><suffix>`` in
    the working directory) plus ``<out>.json``; returns the model file's path."""
    if fmt not in SUFFIX:
        raise ModelError(f"unknown export format {fmt!r}: use torchscript or onnx")
    meta = detector.meta
    out = Path(out) if out is not None else Path(f"{meta.stream}-{meta.version}{SUFFIX[fmt]}")
    module = detector.scoring_module().eval()
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
                "detector": meta.detector,
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


def _sample_windows(detector: ExportableDetector) -> np.ndarray:
    meta = detector.meta
    rng = np.random.default_rng(0)
    shape = (_SAMPLE_WINDOWS, meta.window, len(meta.features))
    noise = rng.standard_normal(shape).astype(np.float32)
    return (noise * meta.scaler.scale + meta.scaler.mean).astype(np.float32)


def _export_torchscript(module: nn.Module, sample: np.ndarray, out: Path) -> None:
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


def _export_onnx(module: nn.Module, sample: np.ndarray, out: Path) -> None:
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
