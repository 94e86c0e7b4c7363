"""Runs: how many identical consecutive raw readings of each feature training held at most.

Why a check beside the model: the default forecaster predicts each reading from the ones
before it, so a sensor that freezes -- a stale register, a dead transmitter repeating its
last value -- is predicted *better* than a live one and its error falls instead of rising
(the simulated fleet's ``stuck`` faults: 1 of 10 caught by the score). What a frozen sensor
does that a live one does not is repeat one value exactly, for longer than the channel's
noise and quantisation ever let it in training.

At training, each feature's longest run of identical consecutive raw readings inside one
training segment (never across two: a gap is not a repetition) is kept with the model
(``RunStats``, in meta.json). How long a normal run gets is the channel's own property: a
channel quantised coarsely relative to its noise (SKAB's flow in whole litres per minute)
holds one value for dozens of readings, a noisy analogue one for two or three; so the limit
follows from the data, not from a setting in seconds. ``sentinel.judge.stuck`` turns the
longest run into a limit (``[stuck]``: ``max(min_run, factor x longest)``) and judges the run
that ends at each window's newest reading.

A feature constant in training (the constant check's) is not judged: its whole training was
one run, and any departure from it is already judged by ``sentinel.judge.constants``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sentinel.errors import ModelError

__all__ = ["RunStats", "longest_run", "trailing_runs"]

IntArray = npt.NDArray[np.int64]


def longest_run(column: np.ndarray) -> int:
    """The longest run of identical consecutive values of a 1-D array (0 when empty).

    NaN equals nothing, so it ends a run and is a run of its own."""
    values = np.asarray(column)
    if values.size == 0:
        return 0
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return int(np.diff(np.r_[starts, values.size]).max())


def trailing_runs(windows: np.ndarray) -> IntArray:
    """(B, T, F) raw windows -> (B, F): how many of each window's newest readings repeat its
    newest reading exactly, counting that reading (0 where it is NaN)."""
    values = np.asarray(windows)
    same = values == values[:, -1:, :]  # NaN is equal to nothing, itself included
    # Reading backwards from the newest, the run lasts while every reading so far matched.
    runs: IntArray = np.cumprod(same[:, ::-1, :], axis=1, dtype=np.int64).sum(axis=1)
    return runs


@dataclass(frozen=True)
class RunStats:
    """Per feature: the longest run of identical consecutive raw readings in one training
    segment; 0 marks a feature that is not judged (constant in training)."""

    longest: tuple[int, ...]

    def __post_init__(self) -> None:
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in self.longest):
            raise ModelError("stuck.longest_run must hold non-negative integers")

    @classmethod
    def fit(cls, segments: Sequence[np.ndarray], skip: Sequence[int] = ()) -> RunStats:
        """From raw (N_i, F) segments: the longest run within any one segment, per feature;
        features in ``skip`` get 0 (not judged)."""
        arrays = [np.asarray(s) for s in segments if len(s)]
        if not arrays:
            raise ModelError("stuck: no training readings")
        n = arrays[0].shape[1]
        longest = [max(longest_run(a[:, f]) for a in arrays) for f in range(n)]
        for index in skip:
            longest[index] = 0
        return cls(longest=tuple(longest))

    def limits(self, min_run: int, factor: float) -> IntArray:
        """Per feature, the shortest run of one value that is anomalous:
        ``max(min_run, ceil(factor x longest))``; 0 where the feature is not judged."""
        longest = np.asarray(self.longest, dtype=np.float64)
        limits = np.maximum(min_run, np.ceil(factor * longest - 1e-9)).astype(np.int64)
        limits[longest == 0] = 0
        return limits

    def to_dict(self) -> dict[str, Any]:
        return {"longest_run": list(self.longest)}

    @classmethod
    def from_dict(cls, data: Any) -> RunStats:
        if not isinstance(data, dict):
            raise ModelError("stuck must be a JSON object")
        longest = data.get("longest_run")
        if not isinstance(longest, list):
            raise ModelError("stuck.longest_run must be a list")
        return cls(longest=tuple(longest))
