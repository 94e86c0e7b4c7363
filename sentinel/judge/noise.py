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

import numpy as np

from sentinel.config import NoiseConfig
from sentinel.model.base import Detector
from sentinel.model.noise import roughness
from sentinel.records import NoiseHit

__all__ = ["NoiseCheck"]


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
