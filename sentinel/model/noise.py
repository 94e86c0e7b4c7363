"""Roughness: how rough each feature's readings ever were within one window of training.

Why a check beside the model: a sensor whose noise grows several-fold -- a loose connector,
a failing transmitter, a bearing starting to rattle -- raises the forecaster's error on
every reading, but where single readings the model cannot anticipate set its normal tail
(a command that moves a channel arrives with the move; a load change starts between two
readings), a window of such noise scores under the threshold those single errors set
(issue #21: the synthetic ``telemetry_modes`` burst scored 32-39 against 38-44). A window's
*roughness* -- per feature, the median absolute difference between consecutive raw
readings -- is untouched by a step or a spike (one or two large differences among the
window's) and rises with noise on every reading.

At training, every window of each training segment (stride 1, never across two segments)
gives each feature's roughness; the model keeps the largest (``NoiseStats``, in
meta.json), so the limit follows the channel's own noise and quantisation. A feature
whose roughness was 0 in every training window -- a set point, a counter, a command, a
channel quantised so coarsely that most readings repeat -- is not judged: any noise would
be infinitely rougher. Constant features are the constant check's. ``sentinel.judge.noise``
judges each window against ``[noise] factor`` times the largest; ``benchmarks/noise_probe.py``
measured the statistic on the fleet, the synthetic suite and SKAB before it was built
(docs/BENCHMARKS.md, "A noise check, probed").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from sentinel.errors import ModelError

__all__ = ["NoiseStats", "roughness"]

FloatArray = npt.NDArray[np.float64]

_CHUNK = 4096  # windows whose roughness is taken at once in ``NoiseStats.fit`` (memory)


def roughness(windows: np.ndarray) -> FloatArray:
    """(B, T, F) raw windows -> (B, F): each feature's median absolute difference between
    consecutive readings (NaN where a window holds a NaN reading of it)."""
    values = np.asarray(windows, dtype=np.float64)
    steps = np.abs(np.diff(values, axis=1))
    out: FloatArray = np.median(steps, axis=1)
    return out


@dataclass(frozen=True)
class NoiseStats:
    """Per feature: the largest roughness (``roughness``) of any training window, raw
    units; 0 marks a feature that is not judged."""

    largest: tuple[float, ...]

    def __post_init__(self) -> None:
        for value in self.largest:
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ModelError("noise.largest_roughness must hold finite numbers >= 0")

    @classmethod
    def fit(
        cls, segments: Sequence[np.ndarray], window: int, skip: Sequence[int] = ()
    ) -> NoiseStats:
        """From raw (N_i, F) segments: the largest roughness of any ``window``-reading
        window inside one segment, per feature (0 where no segment holds a window, where
        a window holds a NaN, and for the features in ``skip``)."""
        arrays = [np.asarray(s, dtype=np.float64) for s in segments if len(s)]
        if not arrays:
            raise ModelError("noise: no training readings")
        largest = np.zeros(arrays[0].shape[1])
        for values in arrays:
            if len(values) < window:
                continue
            steps = np.abs(np.diff(values, axis=0))  # (N - 1, F)
            # windows of ``window`` readings hold ``window - 1`` consecutive differences
            view = sliding_window_view(steps, window - 1, axis=0)  # (N - W + 1, F, W - 1)
            for start in range(0, len(view), _CHUNK):
                # a window holding a NaN reading has a NaN median: it counts as 0
                medians = np.nan_to_num(np.median(view[start : start + _CHUNK], axis=2))
                largest = np.maximum(largest, medians.max(axis=0))
        largest[list(skip)] = 0.0
        return cls(largest=tuple(float(v) for v in largest))

    def limits(self, factor: float) -> FloatArray:
        """Per feature, the roughness above which a window is anomalous: ``factor`` x the
        largest; inf where the feature is not judged."""
        largest = np.asarray(self.largest, dtype=np.float64)
        return np.where(largest > 0, factor * largest, np.inf)

    def to_dict(self) -> dict[str, Any]:
        return {"largest_roughness": list(self.largest)}

    @classmethod
    def from_dict(cls, data: Any) -> NoiseStats:
        if not isinstance(data, dict):
            raise ModelError("noise must be a JSON object")
        largest = data.get("largest_roughness")
        if not isinstance(largest, list):
            raise ModelError("noise.largest_roughness must be a list")
        return cls(largest=tuple(largest))
