"""Champion/challenger: is a freshly trained model at least as good as the active one?

Both models are judged on the same evidence: windows of recent clean readings that neither
trained on (the reservoir's held-back tail), and copies of those windows with one synthetic
anomaly injected into one feature (a spike, an offset, a ramp or extra noise, of
``inject_magnitude`` standard deviations). Each model judges with the threshold a device
starts with right after a swap: its own calibration threshold (``threshold.quantile`` of its
held-back training scores, times ``threshold.multiplier``). From that:

* false-alarm rate: clean windows judged anomalous;
* detection rate: injected windows judged anomalous;
* merit: detection rate minus false-alarm rate (Youden's J), so a model that flags
  everything gains nothing.

The challenger is promoted when (1) its merit is at least the champion's minus
``tolerance`` and (2) its false-alarm rate is at most the champion's plus ``tolerance``.
A model trained on contaminated data learns to reconstruct the anomalies, calibrates a
higher threshold and misses the injected ones: rule 1 rejects it. A champion overtaken by
drift raises false alarms on the recent data: rule 2 lets the challenger through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sentinel.config import SentinelConfig
from sentinel.model import Detector
from sentinel.model.train import make_windows
from sentinel.threshold import calibration_threshold

__all__ = ["Decision", "EvalSet", "Metrics", "build_eval_set", "decide", "evaluate"]

KINDS = ("spike", "offset", "ramp", "noise")
_MAX_WINDOWS = 2_000  # clean windows evaluated (and as many injected): a few seconds of CPU


@dataclass(frozen=True)
class EvalSet:
    clean: np.ndarray  # (B, window, F) raw readings
    injected: np.ndarray  # (B, window, F)
    kinds: tuple[str, ...]  # the injected anomaly of each window


@dataclass(frozen=True)
class Metrics:
    threshold: float
    false_rate: float
    detection: float
    merit: float
    auc: float
    windows: int

    def to_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Decision:
    accepted: bool
    reason: str


def build_eval_set(
    runs: Sequence[np.ndarray], window: int, magnitude: float, seed: int = 0
) -> EvalSet:
    """Clean windows (half-overlapping) from held-back runs, and an injected copy of each."""
    parts = [
        make_windows(np.asarray(r, dtype=np.float32), window, max(1, window // 2)) for r in runs
    ]
    parts = [p for p in parts if len(p)]
    if not parts:
        empty = np.zeros((0, window, runs[0].shape[1] if runs else 1), dtype=np.float32)
        return EvalSet(empty, empty, ())
    clean = np.concatenate(parts).astype(np.float32)
    rng = np.random.default_rng(seed)
    if len(clean) > _MAX_WINDOWS:
        clean = clean[np.sort(rng.choice(len(clean), _MAX_WINDOWS, replace=False))]
    rows = np.concatenate([np.asarray(r, dtype=np.float64) for r in runs])
    std = np.maximum(rows.std(axis=0), 1e-6)
    injected = clean.copy()
    n, length, n_features = clean.shape
    kinds = []
    half = length // 2
    ramp = np.linspace(0.0, 1.0, length)
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        f = int(rng.integers(n_features))
        size = magnitude * std[f] * (1 if rng.random() < 0.5 else -1)
        if kind == "spike":
            at = rng.choice(length, size=max(1, length // 16), replace=False)
            injected[i, at, f] += size
        elif kind == "offset":
            injected[i, half:, f] += size
        elif kind == "ramp":
            injected[i, :, f] += (size * ramp).astype(np.float32)
        else:
            injected[i, :, f] += rng.normal(0.0, abs(size) / 2, length).astype(np.float32)
        kinds.append(kind)
    return EvalSet(clean, injected, tuple(kinds))


def evaluate(detector: Detector, data: EvalSet, config: SentinelConfig) -> Metrics:
    """How ``detector`` does on ``data`` with the threshold a device starts with."""
    threshold = calibration_threshold(
        detector.meta.calibration.quantiles,
        config.threshold.quantile,
        config.threshold.multiplier,
    )
    clean, _ = detector.score(data.clean)
    injected, _ = detector.score(data.injected)
    clean = np.nan_to_num(clean, nan=np.inf)
    injected = np.nan_to_num(injected, nan=np.inf)
    false_rate = float(np.mean(clean > threshold)) if len(clean) else 0.0
    detection = float(np.mean(injected > threshold)) if len(injected) else 0.0
    return Metrics(
        threshold=float(threshold),
        false_rate=false_rate,
        detection=detection,
        merit=detection - false_rate,
        auc=_auc(clean, injected),
        windows=len(clean),
    )


def decide(challenger: Metrics, champion: Metrics | None, tolerance: float) -> Decision:
    """The promotion rule described in the module docstring."""
    if champion is None:
        return Decision(True, "no usable active model to compare with")
    if challenger.windows == 0:
        return Decision(False, "no held-back windows to compare on")
    if challenger.merit < champion.merit - tolerance:
        return Decision(
            False,
            f"detection - false rate {challenger.merit:.3f} is below the active model's "
            f"{champion.merit:.3f} - {tolerance}",
        )
    if challenger.false_rate > champion.false_rate + tolerance:
        return Decision(
            False,
            f"false-alarm rate {challenger.false_rate:.3f} exceeds the active model's "
            f"{champion.false_rate:.3f} + {tolerance}",
        )
    return Decision(
        True,
        f"detection - false rate {challenger.merit:.3f} vs {champion.merit:.3f}, "
        f"false rate {challenger.false_rate:.3f} vs {champion.false_rate:.3f}",
    )


def _auc(negative: np.ndarray, positive: np.ndarray) -> float:
    """P(an injected window scores above a clean one), ties counting half."""
    if not len(negative) or not len(positive):
        return 0.5
    both = np.concatenate([negative, positive])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both), dtype=np.float64)
    ranks[order] = np.arange(1, len(both) + 1)
    # Average ranks over ties.
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    pos_ranks = ranks[len(negative) :].sum()
    n_pos, n_neg = len(positive), len(negative)
    return float((pos_ranks - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
