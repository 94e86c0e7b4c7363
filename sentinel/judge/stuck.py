"""The stuck check: a window whose newest readings of one feature repeat one value for longer
than the model's training ever held one is anomalous, whatever the model's error.

The statistic and why it exists are in ``sentinel.model.stuck``: each feature's longest run of
identical readings in training belongs to the model (kept in meta.json), and its limit is
``max(min_run, factor x longest)`` (``[stuck]``). The run judged is the one that ends at the
window's newest reading, so a verdict starts once a frozen channel has held its value for its
limit and ends with the first reading that moves.

The check holds no state: a feature whose limit exceeds the window is not judged, rather than
followed from window to window. Why: such a feature's normal runs already fill a good part of
a window (its limit is ``factor`` times its longest), so it is a channel quantised coarsely
relative to its noise, whose repetitions say little; and a verdict that depends only on the
window and the model needs no per-device state to warm up, save across a restart or reset at
a gap, exactly as the level check. A site that needs such a channel judged lengthens
``windows.length``. Which features are left out is logged once per model.

A model saved before run statistics existed, or a baseline detector, is not judged.
"""

from __future__ import annotations

import numpy as np
import structlog

from sentinel.config import StuckConfig
from sentinel.model.base import Detector
from sentinel.model.stuck import trailing_runs
from sentinel.records import StuckHit

__all__ = ["StuckCheck"]

log = structlog.get_logger(__name__)


class StuckCheck:
    """Per window, the feature whose newest readings froze longest past its limit, or None."""

    def __init__(self, config: StuckConfig) -> None:
        self.config = config
        self._logged: set[tuple[str, int, float]] = set()  # (model version, min_run, factor)

    def reconfigure(self, config: StuckConfig) -> None:
        self.config = config

    def limits(self, detector: Detector) -> np.ndarray | None:
        """Per feature, the shortest anomalous run for ``detector`` under this config; 0 where
        a feature is not judged (constant in training, or a limit longer than the window).
        None when the check is off or the detector keeps no run statistics."""
        stats = detector.run_stats() if self.config.enabled else None
        if stats is None:
            return None
        limits = stats.limits(self.config.min_run, self.config.factor)
        window = detector.meta.window
        too_long = limits > window
        key = (detector.version, self.config.min_run, self.config.factor)
        if key not in self._logged:
            self._logged.add(key)
            log.info(
                "stuck_check_limits",
                model_version=detector.version,
                limits={
                    name: int(v)
                    for name, v in zip(detector.features, limits, strict=True)
                    if 0 < v <= window
                },
                not_judged=[
                    name for name, long in zip(detector.features, too_long, strict=True) if long
                ],
                window=window,
            )
        limits[too_long] = 0
        return limits

    def check(self, detector: Detector, windows: np.ndarray) -> list[StuckHit | None]:
        """``windows``: the raw (B, T, F) windows ``detector`` scored."""
        count = windows.shape[0]
        limits = self.limits(detector) if count else None
        if limits is None or not limits.any():
            return [None] * count
        runs = trailing_runs(windows)
        judged = limits > 0
        # How far past its limit each judged feature's run is; the worst one names the window.
        over = np.where(judged & (runs >= limits), runs / np.maximum(limits, 1), 0.0)
        worst = over.argmax(axis=1)
        n = detector.meta.training.get("n_readings", 0)
        exceedance = 1.0 / (float(n) + 1.0) if isinstance(n, int | float) and n > 0 else 1.0
        return [
            StuckHit(int(f), int(runs[i, f]), int(limits[f]), exceedance)
            if over[i, f] > 0
            else None
            for i, f in enumerate(worst)
        ]
