"""The level check: a window whose mean of one feature lies far outside training's window
means is anomalous, whatever its reconstruction error.

The statistic and why it exists are in ``sentinel.model.levels``: the limits belong to the
model (fitted on its training windows, kept in meta.json), so this stage holds no state of
its own and a model swap changes the limits with the model. ``[levels]`` turns it on and
sets ``k``; ``max_slowness`` leaves out the features whose window means wandered through
training far more than noise moves them (a model saved before slowness was kept judges
every feature). A model saved before level statistics existed, or a baseline detector, is
left alone.
"""

from __future__ import annotations

import numpy as np

from sentinel.config import LevelsConfig
from sentinel.model.base import Detector
from sentinel.records import LevelHit

__all__ = ["LevelCheck"]


class LevelCheck:
    """Per window, the feature whose level is furthest beyond ``k``, or None."""

    def __init__(self, config: LevelsConfig) -> None:
        self.config = config

    def reconfigure(self, config: LevelsConfig) -> None:
        self.config = config

    def check(self, detector: Detector, windows: np.ndarray) -> list[LevelHit | None]:
        """``windows``: the raw (B, T, F) windows ``detector`` scored."""
        count = windows.shape[0]
        z = detector.levels(windows) if self.config.enabled and count else None
        if z is None:
            return [None] * count
        # Readings beyond float32 overflow the scaler: as far off as it gets.
        z = np.nan_to_num(z, nan=1e30, posinf=1e30)
        cut = self.config.max_slowness
        slow = detector.level_slowness() if cut > 0 else None
        if slow is not None:
            z[:, slow > cut] = 0.0
        worst = z.argmax(axis=1)
        peak = z[np.arange(count), worst]
        k = self.config.k
        return [
            LevelHit(int(f), float(v)) if v > k else None for f, v in zip(worst, peak, strict=True)
        ]
