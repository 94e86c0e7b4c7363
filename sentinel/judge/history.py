"""A bounded history of floats in one float64 array: a device's remembered scores.

A ``deque(maxlen=n)`` of Python floats costs about 40 bytes a value (the float object, its
slot, the deque's blocks); at the threshold's default history of 2,000 scores that was
80 KB of every device's 110 KB once warm. Here a value costs 8 bytes. The array grows by
doubling up to ``maxlen`` (a device that is heard from briefly keeps a small one), then
wraps (issue #23, memory).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import numpy.typing as npt

__all__ = ["FloatHistory"]

_FIRST = 64  # values before the first growth


class FloatHistory:
    """The last ``maxlen`` floats appended, oldest first in ``values()``."""

    __slots__ = ("_data", "_head", "_size", "appended", "maxlen")

    def __init__(self, maxlen: int, values: Iterable[float] = ()) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self.maxlen = maxlen
        self._data: npt.NDArray[np.float64] = np.empty(min(_FIRST, maxlen), dtype=np.float64)
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
                grown = np.empty(min(2 * size, self.maxlen), dtype=np.float64)
                grown[:size] = self._data
                self._data = grown
            self._data[size] = value
            self._size = size + 1
            return
        self._data[self._head] = value
        self._head = (self._head + 1) % self.maxlen

    def values(self) -> npt.NDArray[np.float64]:
        """A copy of the values, oldest first."""
        if self._size < self.maxlen:
            return self._data[: self._size].copy()
        return np.concatenate((self._data[self._head :], self._data[: self._head]))

    def tolist(self) -> list[float]:
        values: list[float] = self.values().tolist()
        return values
