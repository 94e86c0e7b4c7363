"""The period check: a feature's newest period unlike every earlier one, as a daily schedule
that did not run.

The statistic and why it exists are in ``sentinel.model.periods``: per feature with a
period longer than two of the model's windows, the model keeps the period, a block size, the
*reference* (training's largest distance of a period to its nearest earlier one) and a
library of training's newest periods in blocks. Each device keeps its own recent blocks
(``HISTORY`` periods and the newest), averaged from its readings as they arrive; once a
window in which a block completed, the newest period (the last ``length`` blocks) is
compared with every subsequence of the device's own blocks ending at least a period before
it, and of the library until the device holds ``HISTORY`` earlier periods of its own (a
*left discord*: Lu, Keogh et al., "Matrix Profile XXIV: DAMP", KDD 2022). Against the
device's own days a schedule that changed for good (a new shift pattern) is normal a day
later; against the library a device's first day is judged before it has days of its own.

A window is anomalous when that distance is beyond ``[periods] factor`` times the
reference, *and* one block beyond that limit is recent: the newest block whose difference
from the neighbour's exceeds ``factor x reference`` lies within ``RECENT`` of a period. A
period holds a fault for a whole period after it began, so without the second condition a
two-hour fault kept its windows anomalous for a day (the alert running far past it, and
its echo reopening it); with it, the windows are anomalous from the first block that
differs until an eighth of a period after the last. The hit's age is that newest block's
end, so an alert spans the hours that differed (``sentinel.judge.evidence``).

Readings are counted into blocks as they come, as training counted its segments' readings:
irregular sampling (a reading every 1 to 10 minutes) is as regular live as it was in
training. A gap longer than ``windows.max_gap`` (which split training into segments) is
filled with the readings the model's learnt interval says it missed, so the device's
periods keep their phase: a block with under half of its readings is NaN, a period with
more than ``MAX_MISSING`` of its blocks NaN is not judged, and neighbours with a NaN block
are not candidates. A gap longer than the device's whole memory starts it afresh. (Placing
every reading by its timestamp instead made blocks live that training never made, and
raised 8 false runs on five draws of a traffic sensor read every 1-10 minutes.) The warm start's
windows (the training rows) fill the memory without being judged.

State is per device and judged feature: ``(HISTORY + 1) x length`` blocks (at most 64 a
period), held as float32 as they are saved (4.4 KB; read as float64 to be judged), saved
across a restart with the thresholds (``snapshot``: at most 5.8 KB a feature in base64)
and set aside with a device that leaves
memory (``park``). A model swap, or a restart onto a new model, keeps a feature's blocks
where its block size is unchanged. A gap between the saved newest reading and the next is
a gap like any other: beyond ``windows.max_gap`` it keeps the phase, beyond the whole
memory it starts afresh.
"""

from __future__ import annotations

import math
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from sentinel.config import PeriodsConfig
from sentinel.judge.history import pack, unpack
from sentinel.model.base import Detector
from sentinel.model.periods import HISTORY, PHASE_PERIODS, FeaturePeriod, PeriodStats, nearest
from sentinel.records import PeriodHit, Window

__all__ = ["PeriodCheck"]

RECENT = 1 / 8  # the newest differing block must lie within this share of a period
MAX_MISSING = 1 / 8  # a period with more of its blocks missing is not judged


@dataclass
class _Feature:
    spec: FeaturePeriod
    # the device's blocks, newest last, float32 as they are saved (half the memory; the
    # judgement reads them as float64); the first ``size - filled`` unused
    ring: np.ndarray
    filled: int = 0
    total: float = 0.0  # the current block: sum of its finite readings
    finite: int = 0  # ... how many they are
    readings: int = 0  # ... and how many readings (missing ones too) it has had
    hit: tuple[float, int] | None = None  # the last judgement: (ratio, age in readings)
    since: int = 0  # readings since the last judgement

    @classmethod
    def empty(cls, spec: FeaturePeriod) -> _Feature:
        return cls(spec, np.full((HISTORY + 1) * spec.length, np.nan, dtype=np.float32))

    def keep(self, spec: FeaturePeriod) -> _Feature:
        """This memory under a new model's ``spec`` for the same feature and block size."""
        fresh = _Feature.empty(spec)
        count = min(self.filled, len(fresh.ring))
        if count:
            fresh.ring[-count:] = self.ring[-count:]
        fresh.filled = count
        fresh.total, fresh.finite, fresh.readings = self.total, self.finite, self.readings
        return fresh

    def add(self, value: float) -> bool:
        """One reading (NaN: a missing one); True when it completed a block."""
        self.readings += 1
        self.since += 1
        if math.isfinite(value):
            self.total += value
            self.finite += 1
        if self.readings < self.spec.block:
            return False
        block = self.total / self.finite if 2 * self.finite >= self.spec.block else math.nan
        self.ring[:-1] = self.ring[1:]
        self.ring[-1] = block
        self.filled = min(self.filled + 1, len(self.ring))
        self.total, self.finite, self.readings = 0.0, 0, 0
        return True

    def skip(self, missing: int) -> bool:
        """``missing`` readings that never came; True when they completed a block."""
        if missing >= len(self.ring) * self.spec.block:
            self.ring[:] = np.nan
            self.filled, self.total, self.finite, self.readings = 0, 0.0, 0, 0
            self.hit = None
            return False
        done = False
        for _ in range(missing):
            done = self.add(math.nan) or done
        return done

    def judge(self, factor: float) -> None:
        """Judge the newest period (``module docstring``); the result holds until the next
        block completes."""
        # the readings since the newest block's end: those in the current one
        self.hit, self.since = None, self.readings
        spec, length = self.spec, self.spec.length
        if self.filled < length:
            return
        ring = self.ring.astype(np.float64)
        query = ring[-length:]
        finite = np.isfinite(query)
        if (length - int(finite.sum())) > MAX_MISSING * length:
            return
        earlier = ring[len(ring) - self.filled :]
        limit = factor * spec.reference
        aligned = self._same_phase(earlier, query, finite)
        # One earlier period nearer than the limit settles it: the nearest is no further
        # (the full search below, the check's cost, is for the periods that may be unlike
        # every other).
        if any(e <= len(earlier) - length and d <= limit for e, d, _ in aligned):
            return
        own = earlier[:-length]
        # the library stands in for the device's own earlier periods until it holds them all
        history = own
        if len(own) < HISTORY * length:
            history = np.concatenate([np.asarray(spec.library), [np.nan], own])
        distance, start = nearest(history, query)
        if not distance > limit:
            return
        if aligned:
            apart = np.fmin.reduce(
                np.stack([_outside(query, c, spec.slack) for _, _, c in aligned]), axis=0
            )
        else:
            apart = np.abs(history[start : start + length] - query)
        differs = np.where(finite, apart > limit, False)
        # a block differs as part of a run of two: one block caught halfway through a
        # change that came a few minutes later than the days before is no evidence
        recent = np.flatnonzero(differs[1:] & differs[:-1]) + 1
        if not recent.size:
            return
        blocks_ago = length - 1 - int(recent[-1])
        if blocks_ago > RECENT * length:
            return
        self.hit = (distance / spec.reference, blocks_ago * spec.block)

    def _same_phase(
        self, earlier: np.ndarray, query: np.ndarray, finite: np.ndarray
    ) -> list[tuple[int, float, np.ndarray]]:
        """The device's own last ``PHASE_PERIODS`` periods at the query's hours: for each,
        the subsequence of ``earlier`` (the device's blocks, the query last) a whole number
        of periods before the query, aligned within the feature's ``slack`` of blocks where
        its distance is least, as (where it ends, that distance, its blocks).

        Which blocks of the newest period differ is read against the same hours of the
        earlier days (``_outside``): the nearest neighbour at any phase is the right test of
        whether the period is unlike every other, but where it is (a day the fan never ran
        is about as far from every earlier day at any phase), its differing blocks fall
        wherever its phase puts them, and read as recent they kept a missed day's alert
        open all night. A block differs only where it differs from every earlier day at its
        hour: the morning after a missed day, the fan's start differs from the missed day
        but not from the days before it. And from a day's hour it differs only by how far
        it lies outside that day's blocks within ``slack`` of it: a start a few minutes
        later than the day before falls in another block, or halfway through one, and a day
        read at irregular times holds its hours a few blocks early or late.
        """
        spec, length = self.spec, self.spec.length
        end, slack = len(earlier), spec.slack
        # every candidate's end at once: (periods, 2 x slack + 1)
        centres = end - np.round(np.arange(1, PHASE_PERIODS + 1) * spec.period / spec.block)
        ends = centres.astype(np.int64)[:, None] + np.arange(-slack, slack + 1)[None, :]
        valid = (ends >= length) & (ends < end)
        if not valid.any():
            return []
        safe = np.where(valid, ends, length)
        blocks = earlier[safe[:, :, None] - length + np.arange(length)]  # (P, S, L)
        squared = ((blocks[:, :, finite] - query[finite]) ** 2).mean(axis=2)
        squared = np.where(valid & ~np.isnan(squared), squared, np.inf)
        best = squared.argmin(axis=1)
        out = []
        for m, b in enumerate(best):
            if np.isfinite(squared[m, b]):
                out.append((int(ends[m, b]), math.sqrt(float(squared[m, b])), blocks[m, b]))
        return out


def _outside(query: np.ndarray, neighbour: np.ndarray, width: int) -> np.ndarray:
    """Per block, how far ``query`` lies outside the range of ``neighbour``'s blocks within
    ``width`` of it (the envelope of Keogh's lower bound for dynamic time warping); NaN
    where either holds none."""
    padded = np.concatenate(
        [np.repeat(neighbour[:1], width), neighbour, np.repeat(neighbour[-1:], width)]
    )
    shifted = sliding_window_view(padded, 2 * width + 1)
    lower = np.fmin.reduce(shifted, axis=1)
    upper = np.fmax.reduce(shifted, axis=1)
    out: np.ndarray = np.maximum(np.maximum(lower - query, query - upper), 0.0)
    return out


def _to_data(state: _Device) -> dict[str, Any]:
    features = {}
    for f in state.features:
        kept = f.ring[len(f.ring) - f.filled :]
        features[str(f.spec.feature)] = {
            "block": f.spec.block,
            "blocks": pack(kept, "float32"),
            "current": [f.total, f.finite, f.readings],
        }
    last = state.last if math.isfinite(state.last) else None
    return {"version": state.version, "last": last, "features": features}


def _blocks(data: Mapping[str, Any]) -> np.ndarray:
    """A saved feature's blocks (NaN where missing), checked: ``pack``'s data, or the bare
    base64 of little-endian float32 that snapshots held before it."""
    saved = data["blocks"]
    blocks = unpack({"float32": saved} if isinstance(saved, str) else saved, missing=True)
    if int(data["block"]) < 1:
        raise ValueError("period blocks come in blocks of at least 1 reading")
    total, finite, readings = data["current"]
    if not (0 <= int(finite) <= int(readings) < int(data["block"])) or not math.isfinite(total):
        raise ValueError("a period's block in progress is out of range")
    return blocks


def _from_data(data: Mapping[str, Any], stats: PeriodStats) -> _Device:
    """A device's memory from ``_to_data``'s data, under ``stats`` (a feature whose block
    size changed starts afresh)."""
    features = []
    for spec in stats.features:
        fresh = _Feature.empty(spec)
        saved = data["features"].get(str(spec.feature))
        if saved is not None and int(saved["block"]) == spec.block:
            blocks = _blocks(saved)[-len(fresh.ring) :]
            if len(blocks):
                fresh.ring[-len(blocks) :] = blocks
            fresh.filled = len(blocks)
            total, finite, readings = saved["current"]
            fresh.total, fresh.finite, fresh.readings = float(total), int(finite), int(readings)
        features.append(fresh)
    last = data["last"]
    return _Device(str(data["version"]), features, -math.inf if last is None else float(last))


@dataclass
class _Device:
    version: str
    features: list[_Feature]
    last: float = -math.inf  # newest reading's timestamp taken in
    interval: float = 1.0


class PeriodCheck:
    """Per window, the judged feature whose newest period is furthest from every earlier one
    beyond its limit, or None."""

    def __init__(self, config: PeriodsConfig) -> None:
        self.config = config
        self._devices: dict[tuple[str, str], _Device] = {}
        # Devices' memories as ``snapshot`` data: parked ones, and restored ones not seen
        # since (taken up by ``_state`` when the device's next window comes).
        self._saved: dict[tuple[str, str], dict[str, Any]] = {}

    def reconfigure(self, config: PeriodsConfig) -> None:
        self.config = config

    def park(self, keep: Container[tuple[str, str]]) -> int:
        """Set aside, as snapshot data, the memory of every device not in ``keep``."""
        gone = [key for key in self._devices if key not in keep]
        for key in gone:
            self._saved[key] = _to_data(self._devices.pop(key))
        return len(gone)

    def snapshot(self, stream: str) -> dict[str, Any]:
        """Each device's memory of ``stream``, parked ones included: its blocks (float32)
        and the block in progress per judged feature, and its newest reading's time, so
        that a restart does not leave it unjudged for a period."""
        data = {device: saved for (s, device), saved in self._saved.items() if s == stream}
        for (s, device), state in self._devices.items():
            if s == stream:
                data[device] = _to_data(state)
        return data

    def restore(self, stream: str, devices: Mapping[str, Any], n_features: int) -> int:
        """Take back ``snapshot``'s memories, for each device's next window (a model's
        features whose block size is unchanged carry on from them); raises
        ValueError/TypeError/KeyError on a malformed one."""
        restored = {}
        for device, data in devices.items():
            for feature in data["features"]:
                if not 0 <= int(feature) < n_features:
                    raise ValueError(f"period memory of {device!r} does not fit {n_features}")
                _blocks(data["features"][feature])  # malformed: raises here, not later
            float(data["last"])
            restored[(stream, str(device))] = dict(data)
        self._saved.update(restored)
        return len(restored)

    def check(
        self,
        stream: str,
        detector: Detector,
        windows: Sequence[Window],
        judge: bool = True,
        max_gap: float = math.inf,
    ) -> list[PeriodHit | None]:
        """Take in each window's new readings and judge it; ``judge`` False (the warm
        start's windows, the model's training rows): memory only. ``max_gap``: the
        stream's ``windows.max_gap`` in seconds (a longer silence is a gap)."""
        count = len(windows)
        stats = detector.period_stats() if self.config.enabled and count else None
        if stats is None or not stats.features:
            return [None] * count
        n = detector.meta.training.get("n_readings", 0)
        exceedance = 1.0 / (float(n) + 1.0) if isinstance(n, int | float) and n > 0 else 1.0
        interval = detector.meta.interval or 1.0
        hits: list[PeriodHit | None] = [None] * count
        for i, window in enumerate(windows):
            state = self._state(stream, window.device, detector.version, stats, interval)
            self._take(state, window, judge, max_gap)
            if not judge:
                continue
            best: PeriodHit | None = None
            length = len(window.values)
            for feature in state.features:
                if feature.hit is None:
                    continue
                ratio, age = feature.hit
                if ratio > self.config.factor and (best is None or ratio > best.ratio):
                    age = min(age + feature.since, length - 1)
                    best = PeriodHit(feature.spec.feature, ratio, exceedance, age)
            hits[i] = best
        return hits

    def _state(
        self, stream: str, device: str, version: str, stats: PeriodStats, interval: float
    ) -> _Device:
        key = (stream, device)
        state = self._devices.get(key)
        if state is not None and state.version == version:
            return state
        saved = self._saved.pop(key, None)
        if state is None and saved is not None:
            state = _from_data(saved, stats)
        old = {f.spec.feature: f for f in state.features} if state is not None else {}
        features = []
        for spec in stats.features:
            before = old.get(spec.feature)
            if before is not None and before.spec.block == spec.block:
                features.append(before.keep(spec))
            else:
                features.append(_Feature.empty(spec))
        fresh = _Device(version, features, interval=interval)
        if state is not None:
            fresh.last = state.last
        self._devices[key] = fresh
        return fresh

    def _take(self, state: _Device, window: Window, judge: bool, max_gap: float) -> None:
        """Add the readings of ``window`` newer than the device's newest, and the missing
        ones of a gap longer than ``max_gap``; judge each feature whose block completed."""
        values = window.values
        length = len(values)
        newest = state.last
        first = length
        while first > 0 and window.time_of(first - 1) > newest:
            first -= 1
        if first == length:
            return
        completed = [False] * len(state.features)
        previous = newest
        for r in range(first, length):
            at = window.time_of(r)
            missing = 0
            if math.isfinite(previous) and at - previous > max_gap:
                missing = max(0, round((at - previous) / state.interval) - 1)
            for j, feature in enumerate(state.features):
                if missing and feature.skip(missing):
                    completed[j] = True
                if feature.add(float(values[r, feature.spec.feature])):
                    completed[j] = True
            previous = at
        state.last = previous
        for j, feature in enumerate(state.features):
            if completed[j] and judge:
                feature.judge(self.config.factor)
            elif completed[j]:
                feature.hit = None
