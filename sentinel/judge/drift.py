"""Lasting level changes of a device's score, and when to re-baseline its threshold.

A threshold that never learns from anomalous windows (``sentinel.judge.threshold``) cannot follow a
real, lasting change of regime: after a level shift every window stays above it and the
device alerts forever (river issue #948; DSPOT's moving mean is locked out the same way).
:class:`LevelShiftWatch` is the way out, and deliberately a slow one:

1. river's Page-Hinkley test watches the log score of *every* window (anomalous ones
   included) for an upward change of its mean. Isolated spikes barely move its cumulative
   sum; a step of ``d`` (in log score) is found after about ``threshold / d`` windows.
2. A detection opens an *episode*, back-dated to the change point Page-Hinkley implies:
   the first anomalous window after its cumulative sum's last minimum (the minimum is the
   classic CUSUM estimate of the change; its noise can put it a few windows early).
   The test's own detection delay therefore does not add to the time a change may alert.
   A detection while an episode is open but mostly normal (a burst that has passed)
   replaces that episode, so a real change soon after a burst is not hidden by it.
   When the episode is ``rebaseline_after`` seconds old
   (event time) and at least half of its windows were anomalous, both over the whole episode
   and over its second half (so a fault that ended midway is not taken for a new normal),
   the change has persisted:
   the caller re-baselines the device's threshold from the windows since the change, and a
   new episode starts (so a change that still is not absorbed re-levels again, never alerts
   forever). If fewer than half were anomalous, the episode is dropped.

State survives restarts as plain JSON: the test's few numbers are stored and put back into
a fresh ``PageHinkley`` (no pickle).

The test is river's ``drift.PageHinkley`` in its upward mode, restated here line for line
(``tests/judge/test_drift.py`` holds the two equal, float for float): importing
``river.drift`` imports every detector in it, and with them scipy's statistics, about 65 MB
of RSS in every daemon for one 20-line test (issue #23, memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sentinel.judge.history import FloatHistory, pack, unpack

__all__ = ["LevelShiftWatch"]

_MIN_INSTANCES = 30  # windows Page-Hinkley learns the mean from before it may fire
_ALPHA = 1 - 1e-4  # river's default forgetting factor
# (snapshot name, attribute) of the Page-Hinkley state besides its running mean
_PH_FIELDS = (
    ("sum_increase", "_sum_increase"),
    ("sum_decrease", "_sum_decrease"),
    ("min_increase", "_min_increase"),
    ("max_decrease", "_max_decrease"),
)


class _Mean:
    """river's ``stats.Mean`` as Page-Hinkley uses it (unit weights): the same arithmetic,
    without importing river into the daemon (issue #23, memory)."""

    __slots__ = ("_mean", "n")

    def __init__(self, n: float = 0.0, mean: float = 0.0) -> None:
        self.n = n
        self._mean = mean

    def update(self, x: float) -> None:
        self.n += 1.0
        self._mean += (1.0 / self.n) * (x - self._mean)

    def get(self) -> float:
        return self._mean


class PageHinkley:
    """river's ``drift.PageHinkley(mode="up")``: the same state, names and arithmetic."""

    def __init__(self, min_instances: int, delta: float, threshold: float, alpha: float) -> None:
        self.min_instances = min_instances
        self.delta = delta
        self.threshold = threshold
        self.alpha = alpha
        self._reset()

    def _reset(self) -> None:
        self._drift_detected = False
        self._x_mean = _Mean()
        self._sum_increase = 0.0
        self._sum_decrease = 0.0
        self._min_increase = math.inf
        self._max_decrease = -1.0

    @property
    def drift_detected(self) -> bool:
        return self._drift_detected

    def update(self, x: float) -> None:
        if self._drift_detected:
            self._reset()
        self._x_mean.update(x)
        dev = x - self._x_mean.get()
        self._sum_increase = self.alpha * self._sum_increase + dev - self.delta
        self._sum_decrease = self.alpha * self._sum_decrease + dev + self.delta
        if self._sum_increase < self._min_increase:
            self._min_increase = self._sum_increase
        if self._sum_decrease > self._max_decrease:
            self._max_decrease = self._sum_decrease
        if self._x_mean.n >= self.min_instances:
            self._drift_detected = self._sum_increase - self._min_increase > self.threshold


def _number(value: Any) -> float:
    if value is None:  # JSON has no infinity; the test's initial minimum is +inf
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"not a number: {value!r}")
    return float(value)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass
class LevelShiftWatch:
    """One device's Page-Hinkley test plus the episode bookkeeping described above."""

    delta: float
    threshold: float
    rebaseline_after: float
    keep: int  # log scores remembered for re-baselining
    # log scores, and beside them each window's time and whether it was anomalous: float64
    # arrays, not deques of Python objects (a deque of (time, flag) tuples was ~90 bytes a
    # window, 23 KB a device at keep = 256; issue #23, memory)
    recent: FloatHistory = field(init=False)
    _times: FloatHistory = field(init=False)
    _flags: FloatHistory = field(init=False)  # 1.0 anomalous, 0.0 normal
    since: float | None = None  # event time the current episode began
    windows: int = 0  # windows in the episode
    anomalous: int = 0  # anomalous windows in the episode
    late_windows: int = 0  # windows in the episode's second half
    late_anomalous: int = 0
    # (since, windows, anomalous) of the episode that last ended in a re-baseline
    ended: tuple[float, int, int] | None = None
    # From the first anomalous window after the cumulative sum's last minimum: where an
    # episode starts if the test fires now (that window's time, windows, anomalous ones).
    low_since: float | None = None
    low_windows: int = 0
    low_anomalous: int = 0
    _ph: PageHinkley = field(init=False)

    def __post_init__(self) -> None:
        self.recent = FloatHistory(self.keep)
        self._times = FloatHistory(self.keep)
        self._flags = FloatHistory(self.keep)
        self._ph = self._new_test()

    def _new_test(self) -> PageHinkley:
        return PageHinkley(
            min_instances=_MIN_INSTANCES, delta=self.delta, threshold=self.threshold, alpha=_ALPHA
        )

    def observe(self, ts: float, log_score: float, is_anomaly: bool) -> bool:
        """Feed one window; True when the threshold should re-baseline now."""
        self.recent.append(log_score)
        self._times.append(ts)
        self._flags.append(1.0 if is_anomaly else 0.0)
        ph = self._ph
        ph.update(log_score)
        if ph._sum_increase <= ph._min_increase:  # a new minimum: no change (yet) after it
            self.low_since, self.low_windows, self.low_anomalous = None, 0, 0
        else:
            if self.low_since is None and is_anomaly:
                self.low_since = ts  # the change shows from its first anomalous window on
            if self.low_since is not None:
                self.low_windows += 1
                self.low_anomalous += int(is_anomaly)
        # A detection opens an episode, or replaces one that is mostly normal so far (a
        # burst whose episode would otherwise hide a real change arriving within it).
        if ph.drift_detected and (self.since is None or 2 * self.anomalous < self.windows):
            # Back-date the episode to the change point; this window is already counted.
            since = ts if self.low_since is None else self.low_since
            self._start(since)
            if self.low_since is None:
                self.windows, self.anomalous = 1, int(is_anomaly)
            else:
                self.windows, self.anomalous = self.low_windows, self.low_anomalous
            # The second half may have begun before the test fired (a slow detection).
            late = [a for t, a in self.marks if t >= since + self.rebaseline_after / 2]
            self.late_windows, self.late_anomalous = len(late), sum(late)
        elif self.since is None:
            return False
        else:
            since = self.since
            self.windows += 1
            self.anomalous += int(is_anomaly)
            if ts - since >= self.rebaseline_after / 2:
                self.late_windows += 1
                self.late_anomalous += int(is_anomaly)
        if ts - since < self.rebaseline_after:
            return False
        if 2 * self.anomalous >= self.windows and 2 * self.late_anomalous >= self.late_windows:
            self.ended = (since, self.windows, self.anomalous)
            self._start(ts)  # watch the new level
            return True
        self.since = None  # a passing burst, not a new regime
        return False

    def _start(self, since: float) -> None:
        self.since = since
        self.windows = self.anomalous = self.late_windows = self.late_anomalous = 0

    def since_change(self, count: int) -> list[float]:
        """The last ``count`` log scores of the episode that just ended (newest last)."""
        return self.recent.tolist()[-count:] if count > 0 else []

    @property
    def marks(self) -> list[tuple[float, bool]]:
        """(time, anomalous) of the windows beside ``recent``, oldest first."""
        return list(zip(self._times.tolist(), (f > 0.0 for f in self._flags.tolist()), strict=True))

    # -- persistence ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        ph = self._ph
        data: dict[str, Any] = {
            "recent": self.recent.pack(),
            # (time, anomalous) row by row; times are epoch seconds, so float64
            "marks": pack(np.column_stack((self._times.values(), self._flags.values()))),
            "since": self.since,
            "windows": self.windows,
            "anomalous": self.anomalous,
            "late_windows": self.late_windows,
            "late_anomalous": self.late_anomalous,
            "ph_n": ph._x_mean.n,
            "ph_mean": ph._x_mean.get(),
            "ph_detected": bool(ph.drift_detected),
            "low_since": self.low_since,
            "low_windows": self.low_windows,
            "low_anomalous": self.low_anomalous,
        }
        for name, attr in _PH_FIELDS:
            data[f"ph_{name}"] = _finite_or_none(float(getattr(ph, attr)))
        return data

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        *,
        delta: float,
        threshold: float,
        rebaseline_after: float,
        keep: int,
    ) -> LevelShiftWatch:
        """Rebuild from :meth:`to_dict`; ``ValueError`` if anything is missing or odd."""
        try:
            watch = cls(delta, threshold, rebaseline_after, keep)
            watch.recent.fill(unpack(data["recent"]))
            marks = unpack(data.get("marks", []), width=2)[-keep:]  # absent in older snapshots
            watch._times.fill(marks[:, 0])
            watch._flags.fill(marks[:, 1] != 0.0)
            since = data["since"]
            watch.since = None if since is None else _number(since)
            watch.windows = int(data["windows"])
            watch.anomalous = int(data["anomalous"])
            ph = watch._ph
            ph._x_mean = _Mean(_number(data["ph_n"]), _number(data["ph_mean"]))
            for name, attr in _PH_FIELDS:
                setattr(ph, attr, _number(data[f"ph_{name}"]))
            ph._drift_detected = bool(data["ph_detected"])
            # Snapshots from before the change point was tracked lack these: start afresh.
            low_since = data.get("low_since")
            watch.low_since = None if low_since is None else _number(low_since)
            watch.low_windows = int(data.get("low_windows", 0))
            watch.low_anomalous = int(data.get("low_anomalous", 0))
            watch.late_windows = int(data.get("late_windows", 0))
            watch.late_anomalous = int(data.get("late_anomalous", 0))
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"level-shift state: {err}") from err
        return watch
