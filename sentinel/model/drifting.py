"""Features whose level drifts through the training data: judged by their changes, not level.

Issue #21: a slow channel -- a winding or fluid temperature following the ambient and the
load -- wanders, in normal operation, far outside the range a few hundred or thousand
training readings cover. Judged by its level, every window past that range reconstructs
badly and is flagged: on SKAB (400 training rows per rig) the two temperature channels made
~60% of normal rows anomalous on the defaults. ``level = "relative"`` in the config fixes it
for the user who knows which channels those are; this module decides it from the training
rows alone, for the user who does not.

Two questions, either of which makes a feature relative:

* Does its level drift through training (``drift``)? A stationary channel, however
  autocorrelated or periodic, has the same mean in the first half of its training data as
  in the second, up to a small fraction of its spread; a drifting one does not. Each
  segment -- one device's contiguous run -- on its own, pooled over them: a fleet's devices
  differ in level without any of them drifting. Cut: ``model.drift_ratio`` (1.0) of the
  halves' standard deviation.
* Is it slow to a window (``slowness``)? A channel whose window means spread several times
  more than its readings spread inside a window varies on time scales the window cannot
  see: its level in any one window is set by where it has wandered, and a few hundred or
  thousand training readings hold only a handful of such excursions. Its shape inside a
  window is what the model can judge. White noise gives 1/sqrt(window), an AR(1) sensor
  noise about 1; cut: ``model.slow_ratio``, off by default. At 2.0 it helped SKAB, UCR
  and the synthetic suite's precision, but it also makes nearly every channel of the
  simulated pump fleet relative, so a lasting level shift there alerts at its step and is
  never re-baselined (tests/test_threshold_scenarios.py); at 1.0 it half missed the
  synthetic level shift on an AR-noise channel (slowness 1.07).

The price of both: a level shift on such a channel is seen at its step, not for as long as
it lasts (the spike and constant checks still judge it). Measured on the whole development
suite in docs/BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["DRIFTING_FEATURE_HINT", "drift", "drifting_features", "slowness"]

_MIN_ROWS = 4  # a shorter segment's halves say nothing about its level

DRIFTING_FEATURE_HINT = (
    "its level drifts through the training data (drift: its halves' means apart, in their "
    "standard deviations) or wanders between windows far more than within one (slowness), "
    "so training does not say where its level belongs: the model judges it by its changes "
    "within a window (steps, spikes, oscillation), not its level. Set level = "
    '"absolute" on the feature to judge its level anyway, or level = "relative" to say so '
    "explicitly; model.drift_ratio and model.slow_ratio set the cuts (0: off)"
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


def slowness(segments: Sequence[np.ndarray], window: int) -> np.ndarray:
    """Per feature: the spread of its window means (every window of ``window`` rows inside a
    segment, around its segment's mean) over its mean spread within a window; 0 for a
    constant.

    White noise gives 1/sqrt(window); a channel that barely moves inside a window but
    wanders between windows gives several.
    """
    between = np.zeros(0)
    within = np.zeros(0)
    count = 0
    for segment in segments:
        rows = np.asarray(segment, dtype=np.float64)
        if len(rows) <= window:
            continue
        rows = rows - rows.mean(axis=0)  # cumulative sums of squares stay exact enough
        zero = np.zeros((1, rows.shape[1]))
        c1 = np.concatenate([zero, np.cumsum(rows, axis=0)])
        c2 = np.concatenate([zero, np.cumsum(rows**2, axis=0)])
        means = (c1[window:] - c1[:-window]) / window
        var = np.maximum((c2[window:] - c2[:-window]) / window - means**2, 0.0)
        if not count:
            between, within = np.zeros(rows.shape[1]), np.zeros(rows.shape[1])
        between = between + ((means - means.mean(axis=0)) ** 2).sum(axis=0)
        within = within + np.sqrt(var).sum(axis=0)
        count += len(means)
    if not count:
        n_features = np.asarray(segments[0]).shape[-1] if len(segments) else 0
        return np.zeros(n_features)
    spread, inside = np.sqrt(between / count), within / count
    out = np.zeros(len(spread))
    np.divide(spread, inside, out=out, where=inside > 0)
    return out


def drifting_features(
    segments: Sequence[np.ndarray],
    features: Sequence[str],
    threshold: float,
    window: int = 0,
    slow_threshold: float = 0.0,
) -> dict[str, tuple[float, float]]:
    """The features whose ``drift`` exceeds ``threshold`` or whose ``slowness`` over
    ``window`` rows exceeds ``slow_threshold``, each with both (a threshold of 0 turns its
    test off)."""
    n = len(features)
    drifts = drift(segments) if threshold > 0 else np.zeros(n)
    slows = slowness(segments, window) if slow_threshold > 0 and window > 0 else np.zeros(n)
    chosen = ((drifts > threshold) & (threshold > 0)) | (
        (slows > slow_threshold) & (slow_threshold > 0)
    )
    return {
        name: (float(drifts[i]), float(slows[i])) for i, name in enumerate(features) if chosen[i]
    }
