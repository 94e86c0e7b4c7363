"""Lasting level changes of a device's score, and when to re-baseline its threshold.

A threshold that never learns from anomalous windows (``sentinel.threshold``) cannot follow a
real, lasting change of regime: after a level shift every window stays above it and the
device alerts forever (river issue #948; DSPOT's moving mean is locked out the same way).
:class:`LevelShiftWatch` is the way out, and deliberately a slow one:

1. river's Page-Hinkley test watches the log score of *every* window (anomalous ones
   included) for an upward change of its mean. Isolated spikes barely move its cumulative
   sum; a step of ``d`` (in log score) is found after about ``threshold / d`` windows.
2. A detection opens an *episode*. When the episode is ``rebaseline_after`` seconds old
   (event time) and at least half of its windows were anomalous, the change has persisted:
   the caller re-baselines the device's threshold from the windows since the change, and a
   new episode starts (so a change that still is not absorbed re-levels again, never alerts
   forever). If fewer than half were anomalous, the episode is dropped.

State survives restarts as plain JSON: the test's few numbers are stored and put back into
a fresh ``PageHinkley`` (no pickle). If a future river renames those attributes the restore
fails cleanly and the watch re-warms (30 windows), which only delays a re-baseline.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from river import drift, stats

__all__ = ["LevelShiftWatch"]

_MIN_INSTANCES = 30  # windows Page-Hinkley learns the mean from before it may fire
_ALPHA = 1 - 1e-4  # river's default forgetting factor
# (our name, river's attribute) of the Page-Hinkley state besides its running mean
_PH_FIELDS = (
    ("sum_increase", "_sum_increase"),
    ("sum_decrease", "_sum_decrease"),
    ("min_increase", "_min_increase"),
    ("max_decrease", "_max_decrease"),
)


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
    recent: deque[float] = field(init=False)
    since: float | None = None  # event time the current episode began
    windows: int = 0  # windows in the episode
    anomalous: int = 0  # anomalous windows in the episode
    # (since, windows, anomalous) of the episode that last ended in a re-baseline
    ended: tuple[float, int, int] | None = None
    _ph: drift.PageHinkley = field(init=False)

    def __post_init__(self) -> None:
        self.recent = deque(maxlen=self.keep)
        self._ph = self._new_test()

    def _new_test(self) -> drift.PageHinkley:
        return drift.PageHinkley(
            min_instances=_MIN_INSTANCES,
            delta=self.delta,
            threshold=self.threshold,
            alpha=_ALPHA,
            mode="up",
        )

    def observe(self, ts: float, log_score: float, is_anomaly: bool) -> bool:
        """Feed one window; True when the threshold should re-baseline now."""
        self.recent.append(log_score)
        self._ph.update(log_score)  # type: ignore[no-untyped-call]
        if self._ph.drift_detected and self.since is None:
            self.since, self.windows, self.anomalous = ts, 0, 0
        if self.since is None:
            return False
        self.windows += 1
        self.anomalous += int(is_anomaly)
        if ts - self.since < self.rebaseline_after:
            return False
        if 2 * self.anomalous >= self.windows:
            self.ended = (self.since, self.windows, self.anomalous)
            self.since, self.windows, self.anomalous = ts, 0, 0  # watch the new level
            return True
        self.since = None  # a passing burst, not a new regime
        return False

    def since_change(self, count: int) -> list[float]:
        """The last ``count`` log scores of the episode that just ended (newest last)."""
        return list(self.recent)[-count:] if count > 0 else []

    # -- persistence ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        ph = self._ph
        data: dict[str, Any] = {
            "recent": list(self.recent),
            "since": self.since,
            "windows": self.windows,
            "anomalous": self.anomalous,
            "ph_n": ph._x_mean.n,
            "ph_mean": ph._x_mean.get(),
            "ph_detected": bool(ph.drift_detected),
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
            for value in data["recent"][-keep:]:
                value = _number(value)
                if not math.isfinite(value):
                    raise ValueError("non-finite log score")
                watch.recent.append(value)
            since = data["since"]
            watch.since = None if since is None else _number(since)
            watch.windows = int(data["windows"])
            watch.anomalous = int(data["anomalous"])
            ph = watch._ph
            if not all(hasattr(ph, attr) for _, attr in _PH_FIELDS):
                raise ValueError("this river's PageHinkley keeps other state")
            ph._x_mean = stats.Mean._from_state(_number(data["ph_n"]), _number(data["ph_mean"]))
            for name, attr in _PH_FIELDS:
                setattr(ph, attr, _number(data[f"ph_{name}"]))
            ph._drift_detected = bool(data["ph_detected"])
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"level-shift state: {err}") from err
        return watch
