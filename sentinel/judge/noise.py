"""The noise check: a window whose readings of one feature are rougher than any window of the
model's training is anomalous, whatever the model's error.

The statistic and why it exists are in ``sentinel.model.noise``: each feature's roughest
training window belongs to the model (kept in meta.json), and a window's roughness above
``[noise] factor`` times it is anomalous; a still feature's (roughness 0 in every training
window) is judged against its reference, a floor above float noise, the same way. The
check holds no state, as the level and stuck checks: a verdict depends only on the window
and the model, so nothing warms up, is saved across a restart or resets at a gap. A model
saved before roughness statistics existed, or a baseline detector, is not judged.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sentinel.config import NoiseConfig
from sentinel.model.base import Detector
from sentinel.model.noise import roughness
from sentinel.records import NoiseHit, Verdict

__all__ = ["NoiseCheck", "directed_roughness"]


class NoiseCheck:
    """Per window, the feature rougher than its limit by the largest ratio, or None."""

    def __init__(self, config: NoiseConfig) -> None:
        self.config = config

    def reconfigure(self, config: NoiseConfig) -> None:
        self.config = config

    def check(self, detector: Detector, windows: np.ndarray) -> list[NoiseHit | None]:
        """``windows``: the raw (B, T, F) windows ``detector`` scored."""
        count = windows.shape[0]
        stats = detector.noise_stats() if self.config.enabled and count else None
        if stats is None or not (any(stats.largest) or any(stats.still)):
            return [None] * count
        reference = stats.references()  # inf: not judged
        judged = np.isfinite(reference)
        rough = roughness(windows)
        # NaN (a window holding a NaN reading) compares false: not judged by this check.
        ratio = np.where(
            judged, np.nan_to_num(rough, nan=0.0) / np.where(judged, reference, 1.0), 0.0
        )
        # a still channel moving by its own steps, only more often, is not noise
        ratio = np.where(rough < stats.ceilings(), ratio, 0.0)
        worst = ratio.argmax(axis=1)
        peak = ratio[np.arange(count), worst]
        n = detector.meta.training.get("n_readings", 0)
        exceedance = 1.0 / (float(n) + 1.0) if isinstance(n, int | float) and n > 0 else 1.0
        factor = self.config.factor
        hits: list[NoiseHit | None] = [None] * count
        for i in np.flatnonzero(peak > factor):
            f = int(worst[i])
            hits[i] = NoiseHit(
                f, float(peak[i]), exceedance, _last_rough(windows[i, :, f], factor * reference[f])
            )
        return hits


def _last_rough(values: np.ndarray, limit: float) -> int | None:
    """The newest reading of a rough window's feature (``values`` (T,)) that a step beyond
    ``limit`` led to, as readings before the newest: the window is rough because most of
    its steps are, and stays so for up to half a window after a burst ends; the burst's own
    steps are the evidence of its end (``sentinel.judge.evidence``). None if no step is."""
    steps = np.abs(np.diff(np.asarray(values, dtype=np.float64)))
    rough = np.flatnonzero(steps > limit)
    if rough.size == 0:
        return None
    return len(steps) - 1 - int(rough[-1])


# Of a window's non-zero moves of the rough channel, the share that must go the way its net
# change went for its roughness to be a move in one direction, not noise: white noise moves
# either way about half the time (for a window of 32 readings 0.7 lies 2.2 standard
# deviations above that half).
DIRECTED_SHARE = 0.7


def directed_roughness(verdict: Verdict) -> bool:
    """Whether the only check beside ``verdict``'s score is the noise check, on a channel
    whose moves in the window went mostly one way (``DIRECTED_SHARE`` of them).

    A channel settling on a new set point with a lag moves by more than its noise at
    every reading for a while -- rougher, by the median step, than any window of a
    training that held few such steps, so the noise check fired beside the score at every
    large step and the window was no response to the set point's change (``Verdict.
    response``): ``simulators.synthetic.setpoint_steps`` trained on 30 %, 8 of its 15
    false alerts. Such roughness goes one way; a noise burst's goes either way, and stays
    the noise check's evidence however an input moved (``stepped_telemetry``'s noise fault
    beside a command: read as a response without this test, it was lost).
    """
    hit = verdict.noise
    if hit is None or not replace(verdict, noise=None).by_score_alone:
        return False
    values = np.asarray(verdict.score.window.values, dtype=np.float64)[:, hit.feature]
    moves = np.diff(values)
    moves = moves[np.isfinite(moves) & (moves != 0)]
    way = np.sign(moves.sum()) if len(moves) else 0.0
    return bool(way != 0 and np.mean(np.sign(moves) == way) >= DIRECTED_SHARE)
