"""A bounded history of floats in one NumPy array: a device's remembered scores.

A ``deque(maxlen=n)`` of Python floats costs about 40 bytes a value (the float object, its
slot, the deque's blocks); at the threshold's default history of 2,000 scores that was
80 KB of every device's 110 KB once warm. Here a value costs 8 bytes (float64, the
default), or 4 in float32 -- what the threshold keeps its scores in: a score is a ratio of
errors whose seventh significant digit no threshold depends on, and at 1,000 devices the
two copies of 2,000 scores are 16 MB less (issue #23, memory). Timestamps stay float64.
The array grows by doubling up to ``maxlen`` (a device that is heard from briefly keeps a
small one), then wraps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FloatHistory", "RankedHistory"]

_FIRST = 64  # values before the first growth


class FloatHistory:
    """The last ``maxlen`` floats appended, oldest first in ``values()``."""

    __slots__ = ("_data", "_head", "_size", "appended", "maxlen")

    def __init__(
        self, maxlen: int, values: Iterable[float] = (), dtype: type[np.floating[Any]] = np.float64
    ) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self.maxlen = maxlen
        self._data: npt.NDArray[np.floating[Any]] = np.empty(min(_FIRST, maxlen), dtype=dtype)
        self._head = 0  # next slot to write once full
        self._size = 0
        self.appended = 0  # values appended in all: what changed since a copy was taken
        for value in values:
            self.append(value)

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[float]:
        return iter(self.tolist())

    def append(self, value: float) -> None:
        self.appended += 1
        size = self._size
        if size < self.maxlen:
            if size == len(self._data):
                grown = np.empty(min(2 * size, self.maxlen), dtype=self._data.dtype)
                grown[:size] = self._data
                self._data = grown
            self._data[size] = value
            self._size = size + 1
            return
        self._data[self._head] = value
        self._head = (self._head + 1) % self.maxlen

    def values(self) -> npt.NDArray[np.float64]:
        """A copy of the values, oldest first, as float64."""
        if self._size < self.maxlen:
            return self._data[: self._size].astype(np.float64)
        return np.concatenate((self._data[self._head :], self._data[: self._head])).astype(
            np.float64, copy=False
        )

    def tolist(self) -> list[float]:
        values: list[float] = self.values().tolist()
        return values


class RankedHistory(FloatHistory):
    """A ``FloatHistory`` that also keeps its values sorted, for a rolling quantile.

    The threshold kept a device's normal scores twice: here, for snapshots and medians, and
    in river's ``RollingQuantile`` (a sorted window in Rust, ~16 bytes a score), which also
    pulled river and its imports into the daemon. The sorted copy is one more float64 array
    beside the ring, updated in place (a removal and an insertion by binary search and one
    shift), and ``quantile`` reads it as river's does, bit for bit
    (``tests/judge/test_history.py``): 16 bytes a score in all, not 24, or 8 in float32
    (issue #23, memory).
    """

    __slots__ = ("_ranked",)

    def __init__(
        self, maxlen: int, values: Iterable[float] = (), dtype: type[np.floating[Any]] = np.float64
    ) -> None:
        self._ranked: npt.NDArray[np.floating[Any]] = np.empty(min(_FIRST, maxlen), dtype=dtype)
        super().__init__(maxlen, values, dtype)

    def append(self, value: float) -> None:
        size, ranked = self._size, self._ranked
        if size < self.maxlen:
            super().append(value)
            if size == len(ranked):
                grown = np.empty(len(self._data), dtype=ranked.dtype)
                grown[:size] = ranked
                self._ranked = ranked = grown
            at = int(np.searchsorted(ranked[:size], value, side="right"))
            ranked[at + 1 : size + 1] = ranked[at:size]
            ranked[at] = value
            return
        old = self._data[self._head]
        super().append(value)
        gone = int(np.searchsorted(ranked, old, side="left"))
        at = int(np.searchsorted(ranked, value, side="right"))
        if at > gone:  # the values between move down one place
            ranked[gone : at - 1] = ranked[gone + 1 : at]
            ranked[at - 1] = value
        else:  # or up one
            ranked[at + 1 : gone + 1] = ranked[at:gone]
            ranked[at] = value

    def ranked(self) -> npt.NDArray[np.floating[Any]]:
        """The values sorted ascending: a read-only view, valid until the next append."""
        view = self._ranked[: self._size]
        view.flags.writeable = False
        return view

    def quantile(self, q: float) -> float | None:
        """river's ``stats.RollingQuantile(q, window_size=maxlen).get()`` over the same
        values: linear interpolation at rank ``q * (n - 1)``, None before the first value."""
        n = self._size
        if n == 0:
            return None
        rank = q * (n - 1)  # n == maxlen once full: river's fixed rank
        lower = math.floor(rank)
        higher = min(lower + 1, n - 1)
        low = float(self._ranked[lower])
        return low + (float(self._ranked[higher]) - low) * (rank - lower)
