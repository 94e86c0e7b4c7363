"""The shift check: one feature's level steps against its own recent past while every other
feature holds still.

Why a check beside the model and the relations (issue #21; docs/BENCHMARKS.md, "Why the
fleet's level shifts go unseen at 5 s" and "A lone shift"): a sensor offset of a few of its
channel's scales on a pump is an error for the forecaster only at its steps in and out --
its context holds the new level, so it predicts it -- and those two steps score under a
device threshold set by the least predictable channel's tail. The relation check sees the
offset through its whole span, but only while the pump's other channels lie where its
learnt windows did (its ``reach``), and a pump read every few seconds is often at an
operating point its relations never held. What a normal change of load never does is move
one channel alone: it moves flow, pressure, current, vibration and voltage together, and
temperature through a lag that takes minutes. So each device keeps, per feature, the spread
of a *step statistic* over its normal readings, and a window is anomalous when one feature's
step is far beyond its spread while every other feature's is within its own.

**The statistic.** At each reading, per feature, the mean of the newest ``span`` readings
less the mean of the ``span`` before them (raw units): a level step of one reading's age is
half-weighted and reaches its full size ``span`` readings after it, averaging the sensor's
noise over ``span`` readings on each side. A window judges it at every reading it holds
``2 x span`` readings up to, so a step is judged by each window that holds it with ``span``
readings on both sides (at the default window of 32 and hop 4, four or five windows: an
alert's ``open_after`` windows can see it); each reading's statistic is learnt once, from the
window where it is among the newest ``hop``.

**The scale** of a feature is the larger of ``1.4826 x`` the median absolute deviation of
its statistic over the device's normal readings (the last ``history``) and the median of the
non-zero ones: the first is robust to the load changes among them, the second keeps a
channel that moves in steps and stays flat between them (a set point, a counter, a
quantised slow sensor; MAD 0) judged by its ordinary step. A step's ``z`` is its statistic
over that scale.

**A shift** is a reading where one feature's ``|z|`` exceeds its limit while every other
judged feature's is under ``quiet``, and none stepped by ``k`` or more within the ``2 x
span`` readings before it (the device keeps when each feature last did, across windows): a
channel that follows another through a short lag -- a five-minute load average, a
temperature behind a heater -- steps when the others have already moved, alone at its own
reading but a response to theirs (``wide_server``'s ``load5`` after each burst of work). A
feature's limit is ``k``, or ``margin`` times the largest lone ``|z|`` it showed among the
device's normal readings where that is higher: a channel that steps alone as part of its
normal life (a set point, a command, a valve) learns that it does. A stream of one feature
has nothing to hold still and is not judged; nor is a feature whose statistic was 0 at every
learnt reading (constant: the constant check's).

**Commands.** Where the model knows channels that command the others (its commanding
inputs, pulse trains, stepped set points, and features constant in training -- a set point
or command the training never moved: the pipeline's ``drivers``), a step within
``3 x span`` readings after any change of one is read as its response -- a channel moving
to the level a command sets, or a lagging temperature after a set point's step -- and the
commands themselves are not judged. A one-reading command pulse is an eighth of a step in
the statistic, under ``quiet``, so without this every send would leave its channel's move
alone.

**Learning.** A device is judged once it has learnt ``warmup`` readings. The warm start's
windows (its stream's training rows) are all learnt and none is judged: a training row's
step is normal by definition, and a warm window judged anomalous teaches the device's
threshold nothing, so judging them lowered every threshold by the steps training held
(``wide_server``: 5 more false alerts on five seeds); later, a normal window's readings are
learnt once ``2 x span`` further readings passed without a shift on the device, so a step's
own rising statistic (an eighth of it one reading in, a quarter two readings in...) is never
taken for normal before the step is judged whole. Hits are reported as ``LevelHit`` (the
alert names ``level:FEATURE``): the feature's level moved, against its own past rather than
against training's (``sentinel.judge.levels``).

State is per device: a ring of statistics in float32 (48 KB at the default ``history`` and
6 features: 48 MB at 1,000 pumps), the spreads and the limits; ``snapshot``
keeps the scale, the limits and the count of learnt readings across a restart, and the ring
is re-learnt.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from sentinel.config import ShiftsConfig
from sentinel.records import LevelHit, Window

__all__ = ["ShiftCheck", "step_statistics"]

FloatArray = npt.NDArray[np.float64]

_MAD_TO_SIGMA = 1.4826
_FIRST_ROWS = 256  # a device's first ring of statistics; it doubles up to ``history``
_RECOMPUTE_EVERY = 128  # learnt readings between scale updates (one costs ~0.2 ms)


def step_statistics(values: npt.ArrayLike, span: int, count: int) -> FloatArray:
    """Per feature, the step statistic at each of the newest ``count`` readings of a (T, F)
    window, or of each of a (B, T, F) batch of them, that has ``2 x span`` readings up to
    it: the mean of the ``span`` readings ending there less the mean of the ``span`` before.
    (C, F) or (B, C, F), oldest first; C may be under ``count`` (a short window), or 0."""
    x = np.asarray(values, dtype=np.float64)
    length = x.shape[-2]
    first = max(2 * span - 1, length - count)
    if first >= length:
        return np.empty((*x.shape[:-2], 0, x.shape[-1]), dtype=np.float64)
    zero = np.zeros((*x.shape[:-2], 1, x.shape[-1]))
    sums = np.concatenate([zero, np.cumsum(x, axis=-2)], axis=-2)
    ends = np.arange(first, length) + 1  # exclusive ends of the newer halves
    newer = sums[..., ends, :] - sums[..., ends - span, :]
    older = sums[..., ends - span, :] - sums[..., ends - 2 * span, :]
    return np.asarray((newer - older) / span, dtype=np.float64)


@dataclass(slots=True)
class _Device:
    # (capacity, F) ring of learnt statistics, float32: at the default history of 2,048
    # readings and 6 features 48 KB a device (96 in float64: 96 MB at 1,000 pumps)
    rows: npt.NDArray[np.float32]
    filled: int = 0
    at: int = 0  # next ring position
    learnt: int = 0  # readings learnt in all
    since: int = 0  # readings learnt since the scale was last worked out
    scale: FloatArray | None = None  # (F,); 0: not judged
    limit: FloatArray | None = None  # (F,)
    # Statistics of normal windows not yet learnt: (readings still to wait, rows)
    pending: deque[tuple[int, FloatArray]] = field(default_factory=deque)
    # (F,) the latest reading's time at which each feature stepped by k spreads or more
    moved: FloatArray | None = None

    def add(self, rows: FloatArray, history: int) -> None:
        n = len(rows)
        if self.filled + n > len(self.rows) and len(self.rows) < history:
            size = len(self.rows)
            while size < min(history, self.filled + n):
                size *= 2
            grown = np.zeros((min(history, size), self.rows.shape[1]), dtype=np.float32)
            grown[: self.filled] = self.rows[: self.filled]  # not wrapped yet: in order
            self.rows, self.at = grown, self.filled
        capacity = len(self.rows)
        rows = rows[-capacity:]
        place = (self.at + np.arange(len(rows))) % capacity
        self.rows[place] = rows
        self.at = (self.at + len(rows)) % capacity
        self.filled = min(self.filled + len(rows), capacity)
        self.learnt += n
        self.since += n


class ShiftCheck:
    """Per window, the feature that stepped alone furthest beyond its limit, or None."""

    def __init__(self, config: ShiftsConfig, hop: int) -> None:
        self.config = config
        self._hop = hop
        self._devices: dict[tuple[str, str], _Device] = {}

    def reconfigure(self, config: ShiftsConfig, hop: int) -> None:
        self.config = config
        self._hop = hop

    def check(
        self,
        stream: str,
        windows: Sequence[Window],
        stacked: np.ndarray,
        drivers: Sequence[int] = (),
        judge: bool = True,
    ) -> tuple[list[LevelHit | None], list[FloatArray]]:
        """Each window's hit, and its statistics (for ``learn``). ``drivers``: features
        that command the others (commands, set points): not judged, and a step within
        ``3 x span`` readings after any change of one is its response, not alone.
        ``judge`` False (the warm start's windows, the model's training rows): no hits,
        statistics only -- training's steps are normal, whatever they look like."""
        count = len(windows)
        cfg = self.config
        hits: list[LevelHit | None] = [None] * count
        stats: list[FloatArray] = []
        features = stacked.shape[2] if stacked.ndim == 3 else 0
        length = stacked.shape[1] if stacked.ndim == 3 else 0
        if not (cfg.enabled and features >= 2 and count):
            return hits, [np.empty((0, features))] * count
        every = step_statistics(stacked, cfg.span, length)  # (B, C, F)
        if not every.shape[1]:  # windows shorter than 2 x span: nothing to judge
            return hits, [np.empty((0, features))] * count
        driven = _driven(stacked, list(drivers), cfg.span, every.shape[1])  # (B, C)
        states = [self._devices.get((stream, w.device)) for w in windows]
        times, latest = self._big_steps(windows, states, every)
        # Which windows ``_judge`` could find anything in, all at once: most windows hold
        # no statistic past its limit, and the check's per-window arithmetic was most of
        # its cost (issue #23). The same operations as ``_judge``'s first test, so the same
        # windows pass it; with drivers each window's scale and rows differ, so all do.
        worth = self._worth_judging(states, every) if not drivers else None
        for i, state in enumerate(states):
            rows = every[i]
            stats.append(rows[-self._hop :])  # each reading learnt once
            if state is None or state.scale is None or state.limit is None or not len(rows):
                continue
            moved = state.moved if state.moved is not None else np.full(features, -np.inf)
            state.moved = moved = np.maximum(moved, latest[i])
            if not judge or state.learnt < cfg.warmup or (worth is not None and not worth[i]):
                continue
            scale = state.scale
            if drivers:
                scale = scale.copy()
                scale[list(drivers)] = 0.0  # not judged, and not asked to hold still
                rows = np.where(driven[i][:, None], 0.0, rows)
            hits[i] = self._judge(stacked[i], rows, scale, state.limit, moved, times[i])
        return hits, stats

    def _worth_judging(
        self, states: Sequence[_Device | None], every: FloatArray
    ) -> npt.NDArray[np.bool_]:
        """Per window, whether ``_judge``'s first test can pass: two judged features or
        more, and a statistic beyond its limit (False where the device has no scale)."""
        count, _, features = every.shape
        scales = np.zeros((count, features))
        limits = np.full((count, features), np.inf)
        for i, state in enumerate(states):
            if state is not None and state.scale is not None and state.limit is not None:
                scales[i] = state.scale
                limits[i] = state.limit
        judged = scales > 0
        with np.errstate(invalid="ignore"):
            z = np.where(
                judged[:, None, :],
                np.abs(every) / np.where(judged, scales, 1.0)[:, None, :],
                0.0,
            )
            over = (z > limits[:, None, :]).any(axis=(1, 2))
        worth: npt.NDArray[np.bool_] = over & (judged.sum(axis=1) >= 2)
        return worth

    def _big_steps(
        self, windows: Sequence[Window], states: Sequence[_Device | None], every: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """The times of each window's judged readings (B, C), and per window and feature
        the time of its newest step of ``k`` spreads or more (B, F; -inf: none), by the
        spread of the window's device (none yet: no step)."""
        count, positions, features = every.shape
        times = np.stack([_times(w, positions) for w in windows])
        scales = np.zeros((count, features))
        for i, state in enumerate(states):
            if state is not None and state.scale is not None:
                scales[i] = state.scale
        judged = scales > 0
        with np.errstate(invalid="ignore"):
            limit = self.config.k * np.where(judged, scales, np.inf)
            big = np.abs(every) >= limit[:, None, :]
        return times, np.where(big, times[:, :, None], -np.inf).max(axis=1)

    def _judge(
        self,
        values: np.ndarray,
        rows: FloatArray,
        scale: FloatArray,
        limit: FloatArray,
        moved: FloatArray,
        times: FloatArray,
    ) -> LevelHit | None:
        """``values``: the (T, F) window; ``rows``: its statistics at every reading, whose
        ``times`` they are; ``moved``: per feature, the newest time it stepped by ``k``
        spreads or more (``_big_steps``, this window's steps included)."""
        judged = scale > 0
        if judged.sum() < 2:
            return None
        with np.errstate(invalid="ignore"):
            z = np.where(judged, np.abs(rows) / np.where(judged, scale, 1.0), 0.0)
            if not np.any(z > limit):  # NaN compares false: a reading missing is unjudged
                return None
        lone = _lone(np.nan_to_num(z, nan=0.0), self.config.quiet)
        # a step soon after another feature's large one is its response (a lag), not alone
        # (or a large one after it, in this window)
        spacing = (times[-1] - times[0]) / max(1, len(times) - 1)
        since = times - 2 * self.config.span * spacing
        recent = moved[None, :] >= since[:, None]  # (C, F)
        others = recent.sum(axis=1, keepdims=True) - recent > 0
        lone = np.where(others, 0.0, lone)
        over = np.where(lone > limit, lone / limit, 0.0)
        if not over.any():
            return None
        r, f = np.unravel_index(int(over.argmax()), over.shape)
        span = self.config.span
        # row r is the statistic at the window's reading 2 x span - 1 + r (step_statistics)
        first = _step_reading(values[:, f], 2 * span - 1 + int(r), span)
        return LevelHit(int(f), float(lone[r, f]), len(values) - 1 - first)

    def learn(
        self,
        stream: str,
        windows: Sequence[Window],
        stats: Sequence[FloatArray],
        learnt: Sequence[bool],
        hits: Sequence[LevelHit | None],
        warm: bool = False,
    ) -> None:
        """Learn the statistics of the windows ``learnt`` marks: at once where ``warm`` (the
        warm start's), else once ``2 x span`` later readings passed without a shift."""
        cfg = self.config
        if not cfg.enabled:
            return
        wait = 2 * cfg.span
        for window, rows, ok, hit in zip(windows, stats, learnt, hits, strict=True):
            if rows.shape[1] < 2:
                continue
            key = (stream, window.device)
            state = self._devices.get(key)
            if state is None or state.rows.shape[1] != rows.shape[1]:
                state = _Device(_ring(min(_FIRST_ROWS, cfg.history), rows.shape[1]))
                self._devices[key] = state
            if hit is not None:
                state.pending.clear()  # what led up to a shift is not normal
                continue
            if ok:
                rows = rows[np.all(np.isfinite(rows), axis=1)]
                if warm:
                    state.add(rows, cfg.history)
                else:
                    state.pending.append((wait, rows))
            ready = []
            for _ in range(len(state.pending)):
                left, held = state.pending.popleft()
                left -= self._hop
                if left <= 0:
                    ready.append(held)
                else:
                    state.pending.append((left, held))
            for held in ready:
                state.add(held, cfg.history)
            # a device restored from a snapshot keeps its saved scale until its ring
            # holds as many readings as a new device is judged from
            if state.since >= _RECOMPUTE_EVERY and (
                state.scale is None or state.filled >= cfg.warmup
            ):
                self._update(state)

    def _update(self, state: _Device) -> None:
        rows = state.rows[: state.filled].astype(np.float64)
        centre = np.median(rows, axis=0)
        mad = _MAD_TO_SIGMA * np.median(np.abs(rows - centre), axis=0)
        magnitude = np.abs(rows)
        scale = np.maximum(mad, _nonzero_median(magnitude))
        judged = scale > 0
        z = np.where(judged, magnitude / np.where(judged, scale, 1.0), 0.0)
        largest = _lone(z, self.config.quiet).max(axis=0)
        state.scale = scale
        state.limit = np.maximum(self.config.k, self.config.margin * largest)
        state.since = 0

    def scale(self, stream: str, device: str) -> FloatArray | None:
        state = self._devices.get((stream, device))
        return None if state is None else state.scale

    def limit(self, stream: str, device: str) -> FloatArray | None:
        state = self._devices.get((stream, device))
        return None if state is None else state.limit

    def park(self, keep: Container[tuple[str, str]]) -> int:
        """Forget the devices not in ``keep`` (their streams' snapshot kept them)."""
        gone = [key for key in self._devices if key not in keep]
        for key in gone:
            del self._devices[key]
        return len(gone)

    def snapshot(self, stream: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for (name, device), state in self._devices.items():
            if name != stream or state.scale is None or state.limit is None:
                continue
            out[device] = {
                "learnt": state.learnt,
                "scale": state.scale.tolist(),
                "limit": state.limit.tolist(),
            }
        return out

    def restore(self, stream: str, devices: Mapping[str, Any], n_features: int) -> int:
        """Put back ``snapshot``'s devices; a device saved for another feature count is
        skipped (re-learnt). Raises ValueError on malformed data."""
        restored = 0
        for device, data in devices.items():
            scale = np.asarray(data["scale"], dtype=np.float64)
            limit = np.asarray(data["limit"], dtype=np.float64)
            learnt = int(data["learnt"])
            if scale.shape != (n_features,) or limit.shape != (n_features,):
                continue
            if not (np.all(np.isfinite(scale)) and np.all(scale >= 0) and np.all(limit > 0)):
                raise ValueError(f"shift state of {device!r} holds a bad scale or limit")
            state = _Device(_ring(min(_FIRST_ROWS, self.config.history), n_features))
            state.scale, state.limit, state.learnt = scale, limit, max(0, learnt)
            self._devices[(stream, str(device))] = state
            restored += 1
        return restored


def _ring(rows: int, features: int) -> npt.NDArray[np.float32]:
    return np.zeros((rows, features), dtype=np.float32)


def _times(window: Window, count: int) -> FloatArray:
    """The timestamps of a window's newest ``count`` readings."""
    length = len(window.values)
    if window.times is not None:
        return np.asarray(window.times[length - count :], dtype=np.float64)
    if length == 1:
        return np.full(count, window.end_ts)
    step = (window.end_ts - window.start_ts) / (length - 1)
    return window.end_ts - step * np.arange(count - 1, -1, -1, dtype=np.float64)


def _driven(stacked: np.ndarray, drivers: list[int], span: int, count: int) -> np.ndarray:
    """(B, C): whether any of ``drivers`` changed within the ``3 x span`` readings up to
    each of the newest ``count`` readings of each (B, T, F) window: a step there may be a
    response to it (a set point's lagging channel, a command's new level)."""
    batch, length = stacked.shape[0], stacked.shape[1]
    if not drivers or not count:
        return np.zeros((batch, count), dtype=bool)
    moves = np.diff(stacked[:, :, drivers], axis=1)
    changed = np.any(np.abs(np.nan_to_num(moves, nan=0.0)) > 0, axis=2)  # (B, T - 1)
    total = np.concatenate([np.zeros((batch, 1)), np.cumsum(changed, axis=1)], axis=1)
    at = np.arange(length - count, length)  # readings judged
    since = np.maximum(at - 3 * span, 0)  # changes into readings since + 1 .. at
    return np.asarray(total[:, at] - total[:, since] > 0)


def _nonzero_median(magnitude: FloatArray) -> FloatArray:
    """Per column of (N, F) non-negative ``magnitude``, the median of its non-zero values
    (0 where none), read off one sort."""
    ordered = np.sort(magnitude, axis=0)
    zeros = (ordered <= 0).sum(axis=0)
    out = np.zeros(magnitude.shape[1])
    for f, z in enumerate(zeros.tolist()):
        n = len(ordered) - z
        if n:
            out[f] = (ordered[z + (n - 1) // 2, f] + ordered[z + n // 2, f]) / 2
    return out


def _step_reading(values: np.ndarray, at: int, span: int) -> int:
    """The first reading of the step whose statistic at reading ``at`` of ``values`` (T,)
    was judged: of the splits that statistic spans, the one whose ``span`` readings before
    and up to ``span`` after (fewer at the window's newest) differ most in mean. A step
    younger than ``span`` peaks at the newest reading, ``span - 1`` after the split the
    statistic names; this finds the split itself."""
    x = np.asarray(values, dtype=np.float64)
    best, where = -1.0, at - span + 1
    for j in range(max(span, at - 2 * span + 2), min(at, len(x) - 1) + 1):
        after = x[j : min(j + span, len(x))]
        gap = abs(float(after.mean()) - float(x[j - span : j].mean()))
        if gap > best:
            best, where = gap, j
    return where


def _lone(z: FloatArray, quiet: float) -> FloatArray:
    """``z`` (N, F) where every other feature of its row is under ``quiet``, else 0."""
    if z.shape[1] < 2:
        return np.zeros_like(z)
    top = np.sort(z, axis=1)
    second = top[:, -2:-1]  # the largest other feature's z for the row's largest
    largest = top[:, -1:]
    others = np.where(z >= largest, second, largest)
    return np.where(others < quiet, z, 0.0)
