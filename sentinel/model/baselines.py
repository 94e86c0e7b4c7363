"""Baseline detectors, scored through the same pipeline as the LSTM autoencoder.

They exist to measure the autoencoder against (issue #3): a rolling per-feature z-score
(``zscore``), and river's ``HalfSpaceTrees`` (``hst``). Both are fitted on the same training
rows, calibrated on the same time-ordered holdout and judged by the same thresholds and
alert rules, so a benchmark compares detectors and nothing else. They are also what adding
a detector takes: a ``Detector`` subclass and its line in ``detector_types``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt
import torch

from sentinel.errors import DataError, ModelError
from sentinel.model.base import (
    Detector,
    DetectorMeta,
    ProgressFn,
    TrainOptions,
    load_meta,
    new_version,
)
from sentinel.model.calibration import Calibration, Float64Array, window_scores
from sentinel.model.fields import as_list, number
from sentinel.model.train import _split_starts

__all__ = ["HstDetector", "ZScoreDetector", "ZScoreMeta"]

Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True, kw_only=True)
class ZScoreMeta(DetectorMeta):
    """A z-score model: the common keys and the per-feature floor of the spread."""

    detector: str = "zscore"
    # Per feature: the smallest spread a window's earlier readings count as, so a feature
    # flat within a window does not turn the next reading's rounding into a huge z.
    floor: tuple[float, ...]

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.floor) != len(self.features):
            raise ModelError(
                f"floor has {len(self.floor)} values, meta lists {len(self.features)} features"
            )
        if not all(np.isfinite(v) and v > 0 for v in self.floor):
            raise ModelError("floor values must be finite and positive")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "floor": list(self.floor)}

    @classmethod
    def from_json(cls, text: str) -> ZScoreMeta:
        obj, common = DetectorMeta.parse(text, "zscore")
        return cls(
            **common, floor=tuple(number(v, "floor") for v in as_list(obj, "floor", "floor"))
        )


class ZScoreDetector(Detector):
    """Each feature's newest reading against the window's own earlier readings: rolling z."""

    type_key: ClassVar[str] = "zscore"

    def __init__(self, meta: ZScoreMeta) -> None:
        self._meta = meta
        # float32 as fitted, so a loaded model scores exactly like the one that was saved.
        self._floor = np.asarray(meta.floor, dtype=np.float32)

    @property
    def meta(self) -> ZScoreMeta:
        return self._meta

    def score(self, windows: np.ndarray) -> tuple[Float64Array, Float64Array]:
        self._check_shape(windows)
        errors = _zscore_errors(windows, self._floor)
        return window_scores(errors, self._meta.calibration.feature_mean_errors), errors

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
    ) -> ZScoreDetector:
        started = time.monotonic()
        fit = _Fit.split(segments, options)
        floor = np.maximum(fit.rows.std(axis=0) * 0.01, 1e-6)
        calibration = Calibration.from_errors(_zscore_errors(fit.held_back, floor))
        common = _common("zscore", options, calibration, fit, started, first_ts, last_ts)
        return cls(ZScoreMeta(**common, floor=tuple(float(v) for v in floor)))

    @classmethod
    def load(cls, directory: Path, device: torch.device, max_batch: int = 512) -> ZScoreDetector:
        """Rebuild from meta.json, which holds all of a z-score model."""
        return cls(load_meta(directory, ZScoreMeta.from_json))


def _zscore_errors(windows: np.ndarray, floor: Float32Array) -> Float64Array:
    """Per-feature evidence (B, F) for raw windows (B, window, F): squared z."""
    history = windows[:, :-1, :].astype(np.float64)
    mean = history.mean(axis=1)
    std = np.maximum(history.std(axis=1), floor)
    z = (windows[:, -1, :] - mean) / std
    errors: Float64Array = z * z
    return errors


class _OnlineDetector(Protocol):
    """river's anomaly detector, as far as the baseline uses it (river is untyped)."""

    def learn_one(self, x: dict[int, float]) -> None: ...

    def score_one(self, x: dict[int, float]) -> float: ...


class HstDetector(Detector):
    """river's HalfSpaceTrees on each window's newest reading, min-max scaled."""

    type_key: ClassVar[str] = "hst"
    cannot_save: ClassVar[str] = (
        "a baseline for `sentinel replay` and benchmarks: river keeps HalfSpaceTrees' trees "
        "in private attributes that differ between the river versions Sentinel accepts, so "
        "they cannot be written and read back soundly"
    )

    def __init__(
        self, meta: DetectorMeta, model: _OnlineDetector, lo: Float32Array, span: Float32Array
    ) -> None:
        self._meta = meta
        self._model = model
        self._lo = lo
        self._span = span

    @property
    def meta(self) -> DetectorMeta:
        return self._meta

    def score(self, windows: np.ndarray) -> tuple[Float64Array, Float64Array]:
        self._check_shape(windows)
        errors = _hst_errors(self._model, self._lo, self._span, windows)
        return window_scores(errors, self._meta.calibration.feature_mean_errors), errors

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
    ) -> HstDetector:
        from river import anomaly  # river.anomaly takes a while to import: only when used

        started = time.monotonic()
        fit = _Fit.split(segments, options)
        rows = fit.rows
        # Pad the training range by half its span on each side: HalfSpaceTrees splits
        # [0, 1], and with plain min-max scaling a value beyond the training maximum
        # clips into the same cell as the maximum itself and looks normal.
        width = np.maximum(rows.max(axis=0) - rows.min(axis=0), 1e-9)
        lo = rows.min(axis=0) - width / 2
        span = 2 * width
        model: _OnlineDetector = anomaly.HalfSpaceTrees(
            n_trees=25, height=8, window_size=250, seed=options.model.seed
        )
        last_train_rows = sorted({int(s) + options.window - 1 for s in fit.train_starts})
        for row in rows[last_train_rows]:
            model.learn_one(_unit(row, lo, span))
        calibration = Calibration.from_errors(_hst_errors(model, lo, span, fit.held_back))
        common = _common("hst", options, calibration, fit, started, first_ts, last_ts)
        return cls(DetectorMeta(**common), model, lo, span)


def _unit(row: np.ndarray, lo: Float32Array, span: Float32Array) -> dict[int, float]:
    """One reading scaled into HalfSpaceTrees' [0, 1], as river's feature dict."""
    return dict(enumerate(np.clip((row - lo) / span, 0.0, 1.0).tolist()))


def _hst_errors(
    model: _OnlineDetector, lo: Float32Array, span: Float32Array, windows: np.ndarray
) -> Float64Array:
    """Per-feature evidence (B, F) for raw windows (B, window, F); higher is worse."""
    scores = np.empty(len(windows))
    for i, row in enumerate(windows[:, -1, :]):
        scores[i] = model.score_one(_unit(row, lo, span))
    # HalfSpaceTrees scores the reading as a whole: every feature carries it equally.
    return np.repeat(scores[:, None], windows.shape[2], axis=1) + 1e-3


@dataclass(frozen=True)
class _Fit:
    """The rows of every segment that holds a window, where training windows start in
    them, and the held-back windows calibration scores."""

    rows: Float32Array
    train_starts: npt.NDArray[np.int64]
    held_back: Float32Array

    @classmethod
    def split(cls, segments: Sequence[np.ndarray], options: TrainOptions) -> _Fit:
        window, config = options.window, options.model
        kept = [np.asarray(s, dtype=np.float32) for s in segments if len(s) >= window]
        if not kept:
            raise DataError(f"too little data: no segment holds a window of {window} readings")
        rows = np.concatenate(kept)
        lengths = [len(s) for s in kept]
        train_starts, val_starts = _split_starts(
            lengths, window, config.train_stride, config.validation_fraction
        )
        if len(val_starts) == 0:
            val_starts = train_starts[-max(1, len(train_starts) // 5) :]
        return cls(rows, train_starts, rows[val_starts[:, None] + np.arange(window)])


def _common(
    detector: str,
    options: TrainOptions,
    calibration: Calibration,
    fit: _Fit,
    started: float,
    first_ts: float | None,
    last_ts: float | None,
) -> dict[str, Any]:
    """DetectorMeta's fields for a baseline just fitted."""
    now = datetime.now(UTC)
    training: dict[str, float | int | str] = {
        "n_readings": len(fit.rows),
        "seconds": round(time.monotonic() - started, 3),
    }
    if first_ts is not None:
        training["first_ts"] = first_ts
    if last_ts is not None:
        training["last_ts"] = last_ts
    return {
        "detector": detector,
        "version": new_version(now),
        "stream": options.stream,
        "features": options.features,
        "window": options.window,
        "calibration": calibration,
        "created": now.isoformat(timespec="seconds"),
        "training": training,
        "interval": options.interval,
    }
