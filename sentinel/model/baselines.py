"""Baseline detectors, scored through the same pipeline as the LSTM autoencoder.

They exist to measure the autoencoder against (issue #3): a rolling per-feature z-score, and
river's ``HalfSpaceTrees``. Both are fitted on the same training rows, calibrated on the
same time-ordered holdout and judged by the same thresholds and alert rules, so a
benchmark compares detectors and nothing else. Neither has a save format: they serve
replay and benchmarks, not the daemon.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from river import anomaly

from sentinel.config import ModelConfig
from sentinel.errors import DataError
from sentinel.model.detector import Calibration, Float64Array, window_scores
from sentinel.model.train import _split_starts

__all__ = ["BaselineDetector", "DetectorKind", "train_baseline"]

DetectorKind = Literal["lstm_ae", "hst", "zscore"]


@dataclass(frozen=True)
class BaselineMeta:
    calibration: Calibration
    training: dict[str, float | int | str] = field(default_factory=dict)


class BaselineDetector:
    """A fitted baseline with the scoring interface the pipeline uses."""

    def __init__(
        self,
        kind: Literal["hst", "zscore"],
        features: Sequence[str],
        window: int,
        state: dict[str, Any],
    ) -> None:
        self.kind = kind
        self.features = tuple(features)
        self.window = window
        self._state = state
        self.version = f"{kind}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
        self.meta = BaselineMeta(Calibration({"0.5": 1.0}, 1.0, (1.0,) * len(features)))

    def feature_errors(self, windows: np.ndarray) -> Float64Array:
        """Per-feature evidence (B, F) for raw windows (B, window, F); higher is worse."""
        if self.kind == "zscore":
            # The newest reading against the window's own earlier readings: rolling z.
            history = windows[:, :-1, :].astype(np.float64)
            mean = history.mean(axis=1)
            std = np.maximum(history.std(axis=1), self._state["floor"])
            z = (windows[:, -1, :] - mean) / std
            errors: Float64Array = z * z
            return errors
        lo, span = self._state["lo"], self._state["span"]
        model = self._state["model"]
        scores = np.empty(len(windows))
        for i, row in enumerate(windows[:, -1, :]):
            x = dict(enumerate(np.clip((row - lo) / span, 0.0, 1.0).tolist()))
            scores[i] = model.score_one(x)
        # HalfSpaceTrees scores the reading as a whole: every feature carries it equally.
        return np.repeat(scores[:, None], len(self.features), axis=1) + 1e-3

    def levels(self, windows: np.ndarray) -> Float64Array | None:
        """Baselines keep no level statistics: the level check leaves them alone."""
        return None

    def score(self, windows: np.ndarray) -> tuple[Float64Array, Float64Array]:
        errors = self.feature_errors(windows)
        return window_scores(errors, self.meta.calibration.feature_mean_errors), errors


def train_baseline(
    kind: Literal["hst", "zscore"],
    segments: Sequence[np.ndarray],
    *,
    features: Sequence[str],
    window: int,
    config: ModelConfig,
) -> BaselineDetector:
    """Fit on the training part of each segment, calibrate on its held-back tail."""
    started = time.monotonic()
    segments = [np.asarray(s, dtype=np.float32) for s in segments if len(s) >= window]
    if not segments:
        raise DataError(f"too little data: no segment holds a window of {window} readings")
    rows = np.concatenate(segments)
    lengths = [len(s) for s in segments]
    train_starts, val_starts = _split_starts(
        lengths, window, config.train_stride, config.validation_fraction
    )
    if len(val_starts) == 0:
        val_starts = train_starts[-max(1, len(train_starts) // 5) :]
    state: dict[str, Any]
    if kind == "zscore":
        state = {"floor": np.maximum(rows.std(axis=0) * 0.01, 1e-6)}
    else:
        # Pad the training range by half its span on each side: HalfSpaceTrees splits
        # [0, 1], and with plain min-max scaling a value beyond the training maximum
        # clips into the same cell as the maximum itself and looks normal.
        width = np.maximum(rows.max(axis=0) - rows.min(axis=0), 1e-9)
        lo = rows.min(axis=0) - width / 2
        span = 2 * width
        model = anomaly.HalfSpaceTrees(n_trees=25, height=8, window_size=250, seed=config.seed)
        last_train_rows = sorted({int(s) + window - 1 for s in train_starts})
        for row in rows[last_train_rows]:
            x = dict(enumerate(np.clip((row - lo) / span, 0.0, 1.0).tolist()))
            model.learn_one(x)  # type: ignore[no-untyped-call]
        state = {"lo": lo, "span": span, "model": model}
    detector = BaselineDetector(kind, features, window, state)
    offsets = np.arange(window)
    val_windows = rows[val_starts[:, None] + offsets]
    calibration = Calibration.from_errors(detector.feature_errors(val_windows))
    detector.meta = BaselineMeta(
        calibration,
        {"n_readings": len(rows), "seconds": round(time.monotonic() - started, 3)},
    )
    return detector
