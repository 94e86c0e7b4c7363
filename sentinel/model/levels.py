"""Levels: how far a window's mean of each feature lies from the window means training saw.

Why a check beside the autoencoder: the autoencoder's latent vector encodes a window's
level, so a window whose level is unusual but lies inside the span training covered --
a valve half closed, taking a pump's flow from mostly 32 to mostly 31 L/min on a channel
quantised to whole units -- is reconstructed as well as any other, and its error stays
normal. A window's *mean*, though, averages the quantisation noise away: over 16 readings
such a shift is several times the spread of the training windows' means, where a single
reading's shift is less than its noise (docs/BENCHMARKS.md, SKAB).

At training, every window of the training readings (stride 1, scaled units) gives each
feature's window mean; the model keeps their mean and standard deviation (``LevelStats``,
in meta.json). At scoring, a window's level of feature f is
``z_f = |mean_f - mu_f| / sd_f``: the same statistic, in units of training's spread. It is a
Shewhart chart on window means whose limits come from the model's training data, so it
follows the model: retraining on a new normal moves the limits with it.

Features judged by their changes (``relative_features``) have no level to judge, and a
feature constant in training (``sd_f`` 0) is not judged either. ``sentinel.judge.levels`` turns
``z`` into verdicts (``[levels]`` in the config).

Each feature's ``slowness`` (``sentinel.model.drifting.slowness``: the spread of its window
means over its spread within a window) is kept beside, so that ``[levels] max_slowness`` can
leave out the features whose level wanders between windows far more than noise would move
it -- temperatures that creep -- without retraining: training's few hundred readings do
not say where such a level belongs tomorrow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from sentinel.errors import ModelError
from sentinel.model.drifting import slowness

__all__ = ["LevelStats"]

FloatArray = npt.NDArray[np.float64]

_CONSTANT = 1e-9  # a window-mean spread below this (scaled units) is a constant feature


@dataclass(frozen=True)
class LevelStats:
    """Per feature: mean and standard deviation of training's window means, scaled units.

    ``sd`` 0 marks a feature that is not judged (relative, or constant in training).
    ``slowness``: per feature, its window means' spread over its spread within a window
    (empty for statistics saved before it existed)."""

    mean: tuple[float, ...]
    sd: tuple[float, ...]
    slowness: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.sd):
            raise ModelError(f"levels: {len(self.mean)} means but {len(self.sd)} sds")
        if self.slowness and len(self.slowness) != len(self.mean):
            raise ModelError(f"levels: {len(self.mean)} means but {len(self.slowness)} slownesses")
        values = np.asarray([*self.mean, *self.sd, *self.slowness], dtype=np.float64)
        if not np.all(np.isfinite(values)) or min((*self.sd, *self.slowness), default=0.0) < 0:
            raise ModelError(
                "levels: means must be finite, sds and slownesses finite and non-negative"
            )

    @classmethod
    def fit(
        cls, segments: Sequence[np.ndarray], window: int, skip: Sequence[int] = ()
    ) -> LevelStats:
        """From scaled (N_i, F) segments: windows never straddle two segments; features in
        ``skip`` get sd 0 (not judged)."""
        means = [
            sliding_window_view(np.asarray(s, dtype=np.float64), window, axis=0).mean(axis=-1)
            for s in segments
            if len(s) >= window
        ]
        if not means:
            raise ModelError(f"levels: no segment holds a window of {window} readings")
        stacked = np.concatenate(means)  # (M, F)
        mean = stacked.mean(axis=0)
        sd = stacked.std(axis=0)
        sd[sd < _CONSTANT] = 0.0
        sd[list(skip)] = 0.0
        slow = slowness([np.asarray(s, dtype=np.float64) for s in segments], window)
        return cls(
            mean=tuple(float(v) for v in mean),
            sd=tuple(float(v) for v in sd),
            slowness=tuple(float(v) for v in slow),
        )

    def z(self, means: np.ndarray) -> FloatArray:
        """(B, F) window means, scaled -> (B, F) levels in training sds; 0 where not judged."""
        sd = np.asarray(self.sd, dtype=np.float64)
        judged = sd > 0
        means = np.asarray(means, dtype=np.float64)
        out = np.zeros(means.shape, dtype=np.float64)
        out[:, judged] = np.abs(means[:, judged] - np.asarray(self.mean)[judged]) / sd[judged]
        return out

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"mean": list(self.mean), "sd": list(self.sd)}
        if self.slowness:
            data["slowness"] = list(self.slowness)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> LevelStats:
        if not isinstance(data, dict):
            raise ModelError("levels must be a JSON object")
        # slowness is optional: statistics saved before it existed have none.
        mean, sd, slow = data.get("mean"), data.get("sd"), data.get("slowness", [])
        if not isinstance(mean, list) or not isinstance(sd, list) or not isinstance(slow, list):
            raise ModelError("levels.mean, levels.sd and levels.slowness must be lists")
        for value in (*mean, *sd, *slow):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ModelError("levels.mean, levels.sd and levels.slowness must hold numbers")
        return cls(
            mean=tuple(float(v) for v in mean),
            sd=tuple(float(v) for v in sd),
            slowness=tuple(float(v) for v in slow),
        )
