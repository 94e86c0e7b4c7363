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
noise-free telemetry channel that holds a level between changes, a channel quantised so
coarsely that most readings repeat -- is *still*: no ratio to its roughest window means
anything, so it is judged against ``STILL`` x max(1, |its median training value|)
instead (``NoiseStats.still``), a floor above float noise. Such a channel moves in fewer
than half of its steps in every window; one that moves in most of them, by more than that,
has become noisy or begun to drift, which its history never did (issue #21: a spacecraft
channel held at its commanded level gained noise the score could not see, the steps of its
commands setting the score's tail). Only movement *finer than its own steps* counts: a
window's roughness of a still channel is judged while it is below ``STILL_STEP`` of the
median of the channel's non-zero training steps (``NoiseStats.still_steps``). A quantised
sensor (a temperature in whole degrees) that changes more often than training showed still
moves by its own steps and is not judged; noise or a drift on a channel that only ever
moved in steps moves by less. Constant features are the constant check's.
``sentinel.judge.noise`` judges each window against ``[noise] factor`` times the largest
(or the still reference); ``benchmarks/noise_probe.py`` measured the statistic on the
fleet, the synthetic suite and SKAB before it was built (docs/BENCHMARKS.md, "A noise
check, probed").
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
# A still feature's reference roughness, as a share of max(1, |its median training value|):
# far above float noise (the constant check's tolerance is 1e-4), far below any noise or
# chatter an operator would call one.
STILL = 1e-3
# A still feature's roughness is judged only below this share of its median non-zero training
# step: movement finer than its own steps (noise, a drift), not steps that come more often.
STILL_STEP = 0.5


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
    units; 0 marks a feature that is not judged by it. ``still``: per feature, the
    reference roughness of a still one (0 in every training window; module docstring),
    0 for the others; empty in a model saved before still features were judged.
    ``still_steps``: per still feature, the median of its non-zero training steps (0 for
    the others); a still feature is judged only while a window's roughness is below
    ``STILL_STEP`` of it."""

    largest: tuple[float, ...]
    still: tuple[float, ...] = ()
    still_steps: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name, values in (
            ("largest_roughness", self.largest),
            ("still_roughness", self.still),
            ("still_steps", self.still_steps),
        ):
            for value in values:
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not math.isfinite(value)
                    or value < 0
                ):
                    raise ModelError(f"noise.{name} must hold finite numbers >= 0")
        if self.still and len(self.still) != len(self.largest):
            raise ModelError("noise.still_roughness must have one value per feature")
        if len(self.still_steps) != len(self.still):
            raise ModelError("noise.still_steps must have one value per still_roughness")

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
        windows = 0
        for values in arrays:
            if len(values) < window:
                continue
            windows += 1
            steps = np.abs(np.diff(values, axis=0))  # (N - 1, F)
            # windows of ``window`` readings hold ``window - 1`` consecutive differences
            view = sliding_window_view(steps, window - 1, axis=0)  # (N - W + 1, F, W - 1)
            for start in range(0, len(view), _CHUNK):
                # a window holding a NaN reading has a NaN median: it counts as 0
                medians = np.nan_to_num(np.median(view[start : start + _CHUNK], axis=2))
                largest = np.maximum(largest, medians.max(axis=0))
        largest[list(skip)] = 0.0
        still = np.zeros_like(largest)
        steps = np.zeros_like(largest)
        if windows:
            moves = np.abs(np.concatenate([np.diff(v, axis=0) for v in arrays if len(v) > 1]))
            moved = np.where(moves > 0, moves, np.nan)  # NaN: no step (or a NaN reading)
            moving = np.isfinite(moved).any(axis=0)  # any change at all in training
            level = np.nanmedian(np.concatenate(arrays), axis=0)
            flat = (largest == 0) & moving & np.isfinite(level)
            flat[list(skip)] = False
            still = np.where(flat, STILL * np.maximum(1.0, np.abs(np.nan_to_num(level))), 0.0)
            typical = np.nanmedian(moved[:, flat], axis=0) if flat.any() else np.zeros(0)
            steps[flat] = typical
        return cls(
            largest=tuple(float(v) for v in largest),
            still=tuple(float(v) for v in still),
            still_steps=tuple(float(v) for v in steps),
        )

    def limits(self, factor: float) -> FloatArray:
        """Per feature, the roughness above which a window is anomalous: ``factor`` x the
        largest; inf where the feature is not judged."""
        return factor * self.references()

    def references(self) -> FloatArray:
        """Per feature, the roughness its windows' roughness is a ratio to: the largest of
        training, a still feature's reference, or inf where the feature is not judged."""
        largest = np.asarray(self.largest, dtype=np.float64)
        still = np.asarray(self.still or (0.0,) * len(largest), dtype=np.float64)
        return np.where(largest > 0, largest, np.where(still > 0, still, np.inf))

    def ceilings(self) -> FloatArray:
        """Per feature, the roughness from which a window is no longer judged: a still
        feature's ``STILL_STEP`` x its median step (it moves by its own steps), inf for
        the others."""
        if not self.still:
            return np.full(len(self.largest), np.inf)
        still, steps = np.asarray(self.still), np.asarray(self.still_steps, dtype=np.float64)
        return np.where(still > 0, STILL_STEP * steps, np.inf)  # still > 0: largest is 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "largest_roughness": list(self.largest),
            "still_roughness": list(self.still),
            "still_steps": list(self.still_steps),
        }

    @classmethod
    def from_dict(cls, data: Any) -> NoiseStats:
        if not isinstance(data, dict):
            raise ModelError("noise must be a JSON object")
        largest = data.get("largest_roughness")
        if not isinstance(largest, list):
            raise ModelError("noise.largest_roughness must be a list")
        still = data.get("still_roughness", [])  # absent before still features were judged
        if not isinstance(still, list):
            raise ModelError("noise.still_roughness must be a list")
        steps = data.get("still_steps", [])
        if not isinstance(steps, list):
            raise ModelError("noise.still_steps must be a list")
        return cls(largest=tuple(largest), still=tuple(still), still_steps=tuple(steps))
