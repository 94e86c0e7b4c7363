"""Features whose level drifts through the training data: judged by their changes, not level.

Issue #21: a slow channel -- a winding or fluid temperature following the ambient and the
load -- wanders, in normal operation, far outside the range a few hundred or thousand
training readings cover. Judged by its level, every window past that range reconstructs
badly and is flagged: on SKAB (400 training rows per rig) the two temperature channels made
~60% of normal rows anomalous on the defaults. ``level = "relative"`` in the config fixes it
for the user who knows which channels those are; this module decides it from the training
rows alone, for the user who does not.

The question is whether training pins the level down. A stationary channel, however
autocorrelated or periodic, has the same mean in the first half of its training data as in
the second, up to a small fraction of its spread; a drifting one does not. So a feature is
*drifting* when the two halves' means differ by more than ``threshold`` times the halves'
pooled standard deviation (``drift``; each segment -- one device's contiguous run -- on its
own, pooled over them). The within-half spread, not the windows', is the
yardstick: a smooth periodic channel varies little inside a window and much between windows
without drifting at all, and a ratio of window means to within-window spread would call
every daily cycle and every UCR heartbeat drifting. Halves, not thirds or a trend fit,
because a periodic signal averages out over each half as long as training spans a few
periods, and a level that steps once or wanders rather than trends is caught as well.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["DRIFTING_FEATURE_HINT", "drift", "drifting_features"]

_MIN_ROWS = 4  # a shorter segment's halves say nothing about its level

DRIFTING_FEATURE_HINT = (
    "its level in the second half of the training data is far from the first half's, so "
    "training does not say where its level belongs: the model judges it by its changes "
    "within a window (steps, spikes, oscillation), not its level. Set level = "
    '"absolute" on the feature to judge its level anyway, or level = "relative" to say so '
    "explicitly; model.drift_ratio sets the cut (0: never decided automatically)"
)


def drift(segments: Sequence[np.ndarray]) -> np.ndarray:
    """Per feature: how far the second half of each segment's rows lies from its first half,
    |mean difference| over the halves' standard deviation, pooled over the segments
    (mean squares weighted by their rows); 0 where every half is constant.

    Each segment on its own: segments are one device's contiguous runs, and a fleet's
    devices differ in level without any of them drifting.
    """
    shifts, spreads, weights = [], [], []
    for segment in segments:
        rows = np.asarray(segment, dtype=np.float64)
        if len(rows) < _MIN_ROWS:
            continue
        first, second = np.array_split(rows, 2)
        shifts.append((second.mean(axis=0) - first.mean(axis=0)) ** 2)
        spreads.append((first.var(axis=0) + second.var(axis=0)) / 2)
        weights.append(len(rows))
    if not weights:
        n_features = np.asarray(segments[0]).shape[-1] if len(segments) else 0
        return np.zeros(n_features)
    shift = np.sqrt(np.average(shifts, axis=0, weights=weights))
    pooled = np.sqrt(np.average(spreads, axis=0, weights=weights))
    out = np.zeros(len(shift))
    np.divide(shift, pooled, out=out, where=pooled > 0)
    # Every half flat, at different values: a step in training; the level is not pinned.
    out[(pooled == 0) & (shift > 0)] = np.inf
    return out


def drifting_features(
    segments: Sequence[np.ndarray], features: Sequence[str], threshold: float
) -> dict[str, float]:
    """The features whose ``drift`` exceeds ``threshold``, each with it (none when
    ``threshold`` is 0)."""
    if threshold <= 0:
        return {}
    values = drift(segments)
    return {name: float(values[i]) for i, name in enumerate(features) if values[i] > threshold}
