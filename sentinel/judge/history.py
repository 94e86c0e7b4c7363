"""A bounded history of floats in one NumPy array: a device's remembered scores.

A ``deque(maxlen=n)`` of Python floats costs about 40 bytes a value (the float object, its
slot, the deque's blocks); at the threshold's default history of 2,000 scores that was
80 KB of every device's 110 KB once warm. Here a value costs 8 bytes (float64, the
default), or 4 in float32 -- what the threshold keeps its scores in: a score is a ratio of
errors whose seventh significant digit no threshold depends on, and at 1,000 devices the
two copies of 2,000 scores are 16 MB less (issue #23, memory). Timestamps stay float64.
The array grows by doubling up to ``maxlen`` (a device that is heard from briefly keeps a
small one), then wraps.

``pack`` and ``unpack`` carry such arrays in the worker's JSON snapshot (``thresholds.json``,
or a cluster's judge-state rows) as the base64 of their little-endian bytes. As JSON lists a
device's 2,000 float32 scores took 35 KB of text and, while the snapshot was built, 2,000
Python floats; at 1,000 devices that was a 51 MB file written every minute, a 2 s stall of
the worker and ~200 MB of short-lived objects each time, whose allocator slack the daemon's
RSS kept (issue #23, memory). Packed they are 10.7 KB of text and no objects. ``unpack``
still reads the lists that snapshots held before.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Collection, Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FloatHistory", "RankedHistory", "pack", "unpack"]

_FIRST = 64  # values before the first growth
# pack's encodings by name: the name is the data's one key, so a reader knows what it holds.
_PACKED: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}


def pack(values: npt.ArrayLike, dtype: str = "float64") -> dict[str, str]:
    """Floats as JSON-safe data: ``{dtype: base64 of their little-endian bytes}`` (a 2-D
    array row by row). ``dtype`` is ``float32`` or ``float64``; a value must fit it."""
    array = np.ascontiguousarray(values, dtype=_PACKED[dtype])
    return {dtype: base64.b64encode(array.tobytes()).decode("ascii")}


def unpack(data: object, width: int = 1, missing: bool = False) -> npt.NDArray[np.float64]:
    """``pack``'s data, or a list of numbers as snapshots held before (of ``width``-long
    lists where ``width`` > 1), as float64: ``(n,)``, or ``(n, width)`` where ``width`` > 1.
    Raises ValueError when it is neither, does not fit ``width``, or holds a non-finite
    value (JSON has none, so a snapshot's values are all finite) -- but NaN where
    ``missing``: values that stand for nothing known (a period's block whose readings never
    came), which only packed data holds."""
    if isinstance(data, dict):
        if len(data) != 1:
            raise ValueError(f"packed floats need one key of {sorted(_PACKED)}, got {list(data)}")
        ((name, text),) = data.items()
        dtype = _PACKED.get(name)
        if dtype is None or not isinstance(text, str):
            raise ValueError(f"packed floats need one key of {sorted(_PACKED)} and a string")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as err:
            raise ValueError(f"packed floats: {err}") from err
        if len(raw) % (dtype.itemsize * width):
            raise ValueError(f"packed floats: {len(raw)} bytes is not whole rows of {width}")
        values = np.frombuffer(raw, dtype=dtype).astype(np.float64)
    elif isinstance(data, list | tuple):
        try:
            values = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"not a list of numbers: {err}") from err
        if width == 1:
            fits = values.ndim == 1
        else:
            fits = values.size == 0 or (values.ndim == 2 and values.shape[1] == width)
        if not fits:
            raise ValueError(f"not a list of {'numbers' if width == 1 else f'{width}-lists'}")
    else:
        raise ValueError(f"not floats: {type(data).__name__}")
    if not (np.isfinite(values) | (missing & np.isnan(values))).all():
        raise ValueError("a non-finite value" + (" other than NaN" if missing else ""))
    result: npt.NDArray[np.float64] = values if width == 1 else values.reshape(-1, width)
    return result


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
        self.appended = 0  # values appended in all: each value's number, for ``forget``
        for value in values:
            self.append(value)

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[float]:
        return iter(self.tolist())

    def append(self, value: float | np.floating[Any]) -> None:
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

    def pack(self) -> dict[str, str]:
        """The values, oldest first, as ``pack``'s data in the history's own precision."""
        return pack(self.values(), self._data.dtype.name)

    def fill(self, values: npt.ArrayLike) -> None:
        """Append the last ``maxlen`` of ``values`` (oldest first) to an empty history at
        once, as many ``append`` calls would leave it."""
        if self._size:
            raise ValueError("fill needs an empty history")
        given = np.asarray(values, dtype=self._data.dtype).reshape(-1)
        array = given[-self.maxlen :]
        size = len(array)
        if size > len(self._data):
            # the size repeated doubling from _FIRST would have reached, capped at maxlen
            grown = len(self._data)
            while grown < size:
                grown = min(2 * grown, self.maxlen)
            self._data = np.empty(grown, dtype=self._data.dtype)
        self._data[:size] = array
        self._size = size
        self._head = 0
        self.appended += len(given)


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

    def append(self, value: float | np.floating[Any]) -> None:
        size, ranked = self._size, self._ranked
        # The value as the history holds it: a scalar of the arrays' own type is searched
        # for without the conversion ``np.searchsorted`` makes of a Python float, a third
        # of an append's cost; the sorted array is the same (the position among equal
        # values is all the rounding could move).
        held = ranked.dtype.type(value)
        if size < self.maxlen:
            super().append(held)
            if size == len(ranked):
                grown = np.empty(len(self._data), dtype=ranked.dtype)
                grown[:size] = ranked
                self._ranked = ranked = grown
            at = int(ranked[:size].searchsorted(held, side="right"))
            ranked[at + 1 : size + 1] = ranked[at:size]
            ranked[at] = held
            return
        old = self._data[self._head]
        super().append(held)
        gone = int(ranked.searchsorted(old, side="left"))
        at = int(ranked.searchsorted(held, side="right"))
        if at > gone:  # the values between move down one place
            ranked[gone : at - 1] = ranked[gone + 1 : at]
            ranked[at - 1] = held
        else:  # or up one
            ranked[at + 1 : gone + 1] = ranked[at:gone]
            ranked[at] = held

    def fill(self, values: npt.ArrayLike) -> None:
        super().fill(values)
        self._ranked = np.empty(len(self._data), dtype=self._data.dtype)
        self._ranked[: self._size] = np.sort(self._data[: self._size])

    def forget(self, numbers: Collection[int]) -> int:
        """Remove the values that were the ``numbers``-th appended (``appended`` right after
        each was), those still held; returns how many were. The rest keep their order."""
        values = self.values()
        first = self.appended - len(values) + 1  # the oldest value's number
        keep = np.ones(len(values), dtype=bool)
        for number in numbers:
            if first <= number <= self.appended:
                keep[number - first] = False
        removed = int((~keep).sum())
        if removed:
            appended = self.appended
            self._size, self._head = 0, 0
            self.fill(values[keep])
            self.appended = appended  # numbers of values appended later go on from here
        return removed

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
