"""Champion/challenger: is a freshly trained model at least as good as the active one?

Both models are judged on the same evidence: windows of recent clean readings that neither
trained on (the reservoir's held-back blocks), and copies of them with one synthetic anomaly
injected into one feature (a spike, an offset, a ramp or extra noise of ``inject_magnitude``
standard deviations). From that:

* false-alarm rate: clean windows above the model's calibration threshold, the one a device
  starts with right after a swap;
* detection rate: injected windows above the threshold the model *settles* at on these
  windows (``settled_threshold``: its calibration threshold, or the configured quantile of
  its clean scores times the multiplier where that is higher, learnt only from the scores
  below it, as a device's threshold is);
* merit: detection rate minus false-alarm rate (Youden's J), so flagging everything gains
  nothing; AUC: how well the model separates injected from clean windows at any threshold.

The challenger is promoted when its AUC and merit are at least the champion's and its
false-alarm rate at most, each allowing ``tolerance`` plus twice the sampling error of the
difference (a coin-flip difference must not block retraining). A model trained on
contaminated data reconstructs the anomalies and misses the injected ones (AUC and merit
reject it); a champion overtaken by drift shows it as clean scores creeping up to its
threshold (lower AUC, higher settled threshold).

Why the settled threshold for detection: the held-back windows are ones the champion judged
normal, so a stale champion shows few false alarms there by selection, while its calibration
threshold now sits low among the recent scores and "detects" windows that are merely
drifted. Readings the champion flagged stay out of the judging: without labels they would
reward a challenger that misses faults. What these choices measured is in docs/BENCHMARKS.md,
"Retraining under slow concept drift".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sentinel.config import SentinelConfig
from sentinel.judge.threshold import calibration_threshold, settled_threshold
from sentinel.model.base import Detector
from sentinel.model.windowing import make_windows

__all__ = [
    "Decision",
    "EvalSet",
    "Metrics",
    "build_eval_set",
    "decide",
    "evaluate",
    "settled_threshold",
]

KINDS = ("spike", "offset", "ramp", "noise")
_MAX_WINDOWS = 4_000  # clean windows evaluated (and as many injected): about a second of CPU


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
    settled: float = 0.0  # the threshold detection is judged at (see the module docstring)

    def to_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Decision:
    accepted: bool
    reason: str


def build_eval_set(
    runs: Sequence[np.ndarray], window: int, magnitude: float, seed: int = 0
) -> EvalSet:
    """Clean windows (3/4 overlapping) from held-back runs, and an injected copy of each."""
    stride = max(1, window // 4)
    parts = [make_windows(np.asarray(r, dtype=np.float32), window, stride) for r in runs]
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
    """How ``detector`` does on ``data``: false alarms at the threshold a device starts
    with, detection at the one it settles at (the module docstring)."""
    threshold = calibration_threshold(detector.meta.calibration.quantiles, config.threshold)
    clean, _ = detector.score(data.clean)
    injected, _ = detector.score(data.injected)
    clean = np.nan_to_num(clean, nan=np.inf)
    injected = np.nan_to_num(injected, nan=np.inf)
    false_rate = float(np.mean(clean > threshold)) if len(clean) else 0.0
    settled = settled_threshold(clean, threshold, config.threshold)
    detection = float(np.mean(injected > settled)) if len(injected) else 0.0
    return Metrics(
        threshold=float(threshold),
        false_rate=false_rate,
        detection=detection,
        merit=detection - false_rate,
        auc=_auc(clean, injected),
        windows=len(clean),
        settled=settled,
    )


def decide(challenger: Metrics, champion: Metrics | None, tolerance: float) -> Decision:
    """The promotion rule described in the module docstring."""
    if champion is None:
        return Decision(True, "no usable active model to compare with")
    n = challenger.windows
    if n == 0:
        return Decision(False, "no held-back windows to compare on")

    def slack(p: float, q: float) -> float:  # tolerance + 2 standard errors of p - q
        return tolerance + 2 * math.sqrt((p * (1 - p) + q * (1 - q)) / n)

    c, a = challenger, champion
    auc_slack = slack(min(max(c.auc, 0.0), 1.0), min(max(a.auc, 0.0), 1.0))
    if c.auc < a.auc - auc_slack:
        return Decision(
            False, f"AUC {c.auc:.3f} is below the active model's {a.auc:.3f} - {auc_slack:.3f}"
        )
    merit_slack = slack(c.detection, a.detection) + slack(c.false_rate, a.false_rate)
    merit_slack -= tolerance
    if c.merit < a.merit - merit_slack:
        return Decision(
            False,
            f"detection - false rate {c.merit:.3f} is below the active model's "
            f"{a.merit:.3f} - {merit_slack:.3f}",
        )
    false_slack = slack(c.false_rate, a.false_rate)
    if c.false_rate > a.false_rate + false_slack:
        return Decision(
            False,
            f"false-alarm rate {c.false_rate:.3f} exceeds the active model's "
            f"{a.false_rate:.3f} + {false_slack:.3f}",
        )
    return Decision(
        True,
        f"AUC {c.auc:.3f} vs {a.auc:.3f}, detection - false rate {c.merit:.3f} vs "
        f"{a.merit:.3f}, false rate {c.false_rate:.3f} vs {a.false_rate:.3f}",
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
