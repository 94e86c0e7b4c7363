"""The LSTM detectors scored with NumPy on the CPU: the daemon without torch (issue #23).

Importing torch costs a process ~190 MB of resident memory (its operator tables and
libraries, before any model), more than a fleet of 1,000 devices' judge state; on an edge
box that is most of what the daemon uses. Scoring a trained ``lstm_ae`` or ``lstm_forecast``
needs none of it: the networks are one or two ``nn.LSTM`` stacks and a few linear maps, whose
forward pass is a loop over the window's steps of two matrix products and the gates. This
module runs that pass with NumPy on the weights file torch wrote, and wraps it in a
``Detector`` that scores exactly as the torch detector does (``model_inputs``, the same
per-feature errors, ``window_scores``); ``tests/model/test_numpy_lstm.py`` holds the two
equal to float32 rounding on trained models of every shape the config allows.

Training stays torch's (``sentinel.model.train``, in the retraining process); so does the
GPU. ``model.runtime`` picks (``sentinel.model.device.scoring_device``): by default NumPy
wherever the scoring device is the CPU. Measured in docs/BENCHMARKS.md ("Scoring without
torch"): ~200 MB less RSS, scoring 1.5-2x slower per window than torch's oneDNN kernels, which
at the daemon's default hop is a small share of a reading's cost.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt
import structlog
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

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
    saved_detector,
)
from sentinel.model.calibration import Float64Array, couple
from sentinel.model.lstm_meta import (
    WEIGHTS_FILE,
    Float32Array,
    LstmAeMeta,
    LstmForecastMeta,
    LstmMeta,
    LstmMetaChecks,
    model_inputs,
    ratios_of,
    scores_of,
)

if TYPE_CHECKING:
    import torch

    from sentinel.model.lstm_detector import LstmDetector

__all__ = ["NUMPY_DETECTORS", "NumpyLstmDetector", "for_scoring", "read_numpy_weights"]

log = structlog.get_logger(__name__)

Weights = dict[str, npt.NDArray[np.float32]]

# The detectors this module scores (``model.detector`` keys); others need torch.
NUMPY_DETECTORS = ("lstm_ae", "lstm_forecast")


class _Lstm:
    """A stacked, batch-first ``nn.LSTM`` (no dropout at inference, no projections) over
    its ``prefix``'s weights: per layer ``weight_ih_l{k}`` (4H, in), ``weight_hh_l{k}`` (4H,
    H), ``bias_ih_l{k}`` and ``bias_hh_l{k}`` (4H), gates in torch's order i, f, g, o."""

    def __init__(self, weights: Weights, prefix: str, num_layers: int) -> None:
        self.layers: list[tuple[Float32Array, Float32Array, Float32Array, int]] = []
        for k in range(num_layers):
            w_hh = weights[f"{prefix}.weight_hh_l{k}"]
            h = w_hh.shape[1]
            # Reordered to i, f, o, g: the three sigmoid gates side by side, one pass each.
            order = np.r_[0 : 2 * h, 3 * h : 4 * h, 2 * h : 3 * h]
            w_ih = np.ascontiguousarray(weights[f"{prefix}.weight_ih_l{k}"][order].T)
            bias = (weights[f"{prefix}.bias_ih_l{k}"] + weights[f"{prefix}.bias_hh_l{k}"])[order]
            self.layers.append((w_ih, np.ascontiguousarray(w_hh[order].T), bias, h))

    def __call__(self, x: Float32Array) -> tuple[Float32Array, Float32Array]:
        """(B, T, in) -> every step's top-layer hidden state (B, T, H) and the top layer's
        last one (B, H)."""
        out = x
        h = np.zeros((len(x), 0), dtype=np.float32)
        for w_ih, w_hh, bias, size in self.layers:
            out, h = _layer(out, w_ih, w_hh, bias, size)
        return out, h


def _layer(
    x: Float32Array, w_ih: Float32Array, w_hh: Float32Array, bias: Float32Array, size: int
) -> tuple[Float32Array, Float32Array]:
    batch, steps, _ = x.shape
    pre = x @ w_ih  # every step's input term at once
    pre += bias
    h = np.zeros((batch, size), dtype=np.float32)
    c = np.zeros((batch, size), dtype=np.float32)
    out = np.empty((batch, steps, size), dtype=np.float32)
    gates = np.empty((batch, 4 * size), dtype=np.float32)
    scratch = np.empty((batch, size), dtype=np.float32)
    sig, i, f, o, g = (
        gates[:, : 3 * size],
        gates[:, :size],
        gates[:, size : 2 * size],
        gates[:, 2 * size : 3 * size],
        gates[:, 3 * size :],
    )
    with np.errstate(over="ignore"):  # exp(-x) overflows to inf for x << 0: sigmoid 0
        for t in range(steps):
            np.matmul(h, w_hh, out=gates)
            gates += pre[:, t]
            np.negative(sig, out=sig)  # the sigmoid, in place: 1 / (1 + exp(-x))
            np.exp(sig, out=sig)
            sig += 1.0
            np.reciprocal(sig, out=sig)
            np.tanh(g, out=g)
            c *= f
            np.multiply(i, g, out=scratch)
            c += scratch
            np.tanh(c, out=h)
            h *= o
            out[:, t] = h
    return out, h


def _linear(weights: Weights, prefix: str) -> tuple[Float32Array, Float32Array]:
    return np.ascontiguousarray(weights[f"{prefix}.weight"].T), weights[f"{prefix}.bias"]


class _Forecaster:
    """``LstmForecaster.forward``: each reading from the readings up to h steps before it,
    as the last seen reading plus a learnt correction."""

    def __init__(self, weights: Weights, meta: LstmForecastMeta) -> None:
        self.lstm = _Lstm(weights, "lstm", meta.num_layers)
        self.head = _linear(weights, "head")
        self.horizon = meta.horizon
        coupling = meta.residual_coupling
        self.coupling = None if coupling is None else coupling.arrays()

    def squared(self, scaled: Float32Array, steps: int) -> Float32Array:
        """(B, steps, F) squared errors of the newest ``steps`` predictions, coupled as
        ``sentinel.model.lstm_forecast.forecast_squared`` couples them."""
        past = scaled[:, : -self.horizon, :]
        hidden, _ = self.lstm(past)
        w, b = self.head
        error = (past + (hidden @ w + b) - scaled[:, self.horizon :, :])[:, -steps:, :]
        if self.coupling is not None:
            error = couple(error, *self.coupling)
        squared: Float32Array = error * error
        return squared


class _Autoencoder:
    """``LstmAutoencoder.forward``: the encoder's last hidden state through the latent
    vector, repeated at every step for the decoder."""

    def __init__(self, weights: Weights, meta: LstmAeMeta) -> None:
        self.encoder = _Lstm(weights, "encoder", meta.num_layers)
        self.decoder = _Lstm(weights, "decoder", meta.num_layers)
        self.to_latent = _linear(weights, "to_latent")
        self.from_latent = _linear(weights, "from_latent")
        self.head = _linear(weights, "head")

    def squared(self, scaled: Float32Array, steps: int) -> Float32Array:
        _, last = self.encoder(scaled)
        (w1, b1), (w2, b2), (w3, b3) = self.to_latent, self.from_latent, self.head
        seed = (last @ w1 + b1) @ w2 + b2
        repeated: Float32Array = np.repeat(seed[:, None, :], scaled.shape[1], axis=1)
        decoded, _ = self.decoder(repeated)
        error = decoded @ w3 + b3 - scaled
        squared: Float32Array = error * error
        return squared[:, -steps:, :] if steps else squared


class NumpyLstmDetector(LstmMetaChecks, Detector):
    """An ``lstm_ae`` or ``lstm_forecast`` model scored by NumPy; the same scores, step
    ratios, levels and files as the torch detector of its meta."""

    type_key: ClassVar[str] = "numpy_lstm"  # never a config key: see NUMPY_DETECTORS

    def __init__(self, meta: LstmMeta, weights: Weights, max_batch: int = 512) -> None:
        if max_batch < 1:
            raise ModelError("max_batch must be positive")
        self._meta = meta
        self._weights = weights
        self._max_batch = max_batch
        _check_shapes(weights, meta)
        self._net: _Forecaster | _Autoencoder
        if isinstance(meta, LstmForecastMeta):
            self._net = _Forecaster(weights, meta)
        elif isinstance(meta, LstmAeMeta):
            self._net = _Autoencoder(weights, meta)
        else:  # pragma: no cover - _check_shapes refused it
            raise ModelError(f"no NumPy scoring for detector {meta.detector!r}")
        # The autoencoder's per-reading errors are not each reading's own (it rebuilds a
        # window as a whole): as the torch detector, it gives no step ratios.
        self._own_steps = isinstance(meta, LstmForecastMeta)

    @property
    def meta(self) -> LstmMeta:
        return self._meta

    @classmethod
    def load(cls, directory: Path, device: Any = None, max_batch: int = 512) -> NumpyLstmDetector:
        """The model saved in ``directory`` (meta.json and the weights torch wrote); never
        unpickles. ``device`` is ignored: NumPy scores on the CPU."""
        directory = Path(directory)
        key = saved_detector(directory)
        meta: LstmMeta
        if key == "lstm_forecast":
            meta = load_meta(directory, LstmForecastMeta.from_json)
        elif key == "lstm_ae":
            meta = load_meta(directory, LstmAeMeta.from_json)
        else:
            raise ModelError(f"{directory}: no NumPy scoring for detector {key!r}")
        weights = read_numpy_weights(directory, meta)
        log.info(
            "model_loaded",
            version=meta.version,
            stream=meta.stream,
            path=str(directory),
            runtime="numpy",
        )
        return cls(meta, weights, max_batch=max_batch)

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
    ) -> NumpyLstmDetector:
        """Never: torch trains (the class ``model.detector`` names); ``from_detector`` then
        gives its NumPy twin."""
        raise ModelError(f"NumPy only scores: train {options.model.detector} with torch")

    @classmethod
    def from_detector(cls, detector: LstmDetector[Any, Any]) -> NumpyLstmDetector:
        """The same model as a torch LSTM detector, its weights copied to the CPU."""
        weights = {
            k: v.detach().cpu().numpy().astype(np.float32, copy=True)
            for k, v in detector.module.state_dict().items()
        }
        return cls(detector.meta, weights, max_batch=detector._max_batch)

    def _errors(self, windows: np.ndarray, steps_out: bool) -> list[Float64Array]:
        self._check_shape(windows)
        scaled = model_inputs(windows, self._meta)
        steps = self._meta.score_steps
        parts: list[Float64Array] = []
        for start in range(0, len(scaled), self._max_batch):
            squared = self._net.squared(scaled[start : start + self._max_batch], steps)
            if steps_out:
                parts.append(squared.astype(np.float64))
            else:
                parts.append(squared.mean(axis=1).astype(np.float64))
        return parts

    def score(self, windows: np.ndarray) -> tuple[Float64Array, Float64Array]:
        """See ``LstmDetector.score``."""
        return scores_of(self._errors(windows, steps_out=False), self._meta)

    def step_ratios(self, windows: np.ndarray) -> Float64Array | None:
        """See ``LstmDetector.step_ratios``."""
        if not self._own_steps:
            return None
        return ratios_of(self._errors(windows, steps_out=True), self._meta)

    def _write_files(self, directory: Path) -> None:
        save_file(
            {k: np.ascontiguousarray(v) for k, v in self._weights.items()},
            str(directory / WEIGHTS_FILE),
            metadata={"version": self.version},
        )
        fsync_file(directory / WEIGHTS_FILE)

    def export(self, fmt: ExportFormat, out: Path | None = None) -> Path:
        """Export needs torch: load the model with ``model.runtime = "torch"``."""
        raise ModelError(
            f"exporting to {fmt} needs torch: load the model with model.runtime = 'torch' "
            "(`sentinel models export` does)"
        )


def for_scoring(detector: Detector) -> Detector:
    """``detector`` as NumPy scores it, where it has a NumPy twin (a torch ``lstm_ae`` or
    ``lstm_forecast``); any other detector as it is. For a model trained in this process
    when ``scoring_device`` says NumPy, so that it scores as it will after a restart."""
    if detector.type_key not in NUMPY_DETECTORS:
        return detector
    from sentinel.model.lstm_detector import LstmDetector

    assert isinstance(detector, LstmDetector)
    return NumpyLstmDetector.from_detector(detector)


def read_numpy_weights(directory: Path, meta: DetectorMeta) -> Weights:
    """``directory``'s weights file as float32 arrays, checked as ``load_weights`` checks it
    for torch: the file belongs to ``meta``'s version and holds only finite values (the
    shapes are checked against the network where it is built)."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise ModelError(f"{path}: missing")
    try:
        with safe_open(str(path), framework="np") as f:
            file_meta: Mapping[str, str] = f.metadata() or {}
            weights = {k: np.asarray(f.get_tensor(k), dtype=np.float32) for k in f.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(f"{path}: not a readable safetensors file: {err}") from err
    if file_meta.get("version", meta.version) != meta.version:
        raise ModelError(
            f"{path}: weights belong to version {file_meta['version']!r}, "
            f"meta.json to {meta.version!r}"
        )
    if not all(bool(np.isfinite(v).all()) for v in weights.values()):
        raise ModelError(f"{path}: weights contain NaN or infinite values")
    return weights


def _check_shapes(weights: Weights, meta: LstmMeta) -> None:
    """The weights are exactly the network ``meta`` describes, as torch's strict
    ``load_state_dict`` has them: the same names, each of its shape."""
    f, h, layers = len(meta.features), meta.hidden_size, meta.num_layers
    expected: dict[str, tuple[int, ...]] = {}

    def lstm(prefix: str, first_in: int) -> None:
        for k in range(layers):
            expected[f"{prefix}.weight_ih_l{k}"] = (4 * h, first_in if k == 0 else h)
            expected[f"{prefix}.weight_hh_l{k}"] = (4 * h, h)
            expected[f"{prefix}.bias_ih_l{k}"] = (4 * h,)
            expected[f"{prefix}.bias_hh_l{k}"] = (4 * h,)

    def linear(prefix: str, n_in: int, n_out: int) -> None:
        expected[f"{prefix}.weight"] = (n_out, n_in)
        expected[f"{prefix}.bias"] = (n_out,)

    if isinstance(meta, LstmForecastMeta):
        lstm("lstm", f)
        linear("head", h, f)
    elif isinstance(meta, LstmAeMeta):
        lstm("encoder", f)
        linear("to_latent", h, meta.latent_size)
        linear("from_latent", meta.latent_size, h)
        lstm("decoder", h)
        linear("head", h, f)
    else:
        raise ModelError(f"no NumPy scoring for detector {meta.detector!r}")
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if got != expected:
        wrong = sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))
        raise ModelError(
            f"weights do not fit the shapes in {META_FILE}: "
            + ", ".join(f"{k} {got.get(k)} (expected {expected.get(k)})" for k in wrong[:4])
        )
