"""Time settings in readings: each stream's sampling interval, learnt from its data.

Every time setting of the config (``windows.max_gap``, ``threshold.rebaseline_after``,
``alerts.cooldown``, ``retrain.exclusion_margin``, ``retrain.reservoir_age``) is ``None`` by
default: "auto", a fixed
number of READINGS times the stream's sampling interval, so one default config fits data
sampled every second and every hour alike (issue #21, causes 1 and 5). The counts are
chosen so that at one reading per second the auto value is the old default in seconds
(but for re-baselining and the cooldown, measured since).
An explicit number of seconds in the config still wins.

The interval is learnt at cold start or training -- the median of the positive per-device
timestamp steps, which gaps and bursts barely move -- and stored with the model
(``DetectorMeta.interval``). A model saved before that has none: it keeps the old
behaviour, one reading per second.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from sentinel.errors import DataError

__all__ = [
    "COOLDOWN_MAX_AUTO",
    "COOLDOWN_READINGS",
    "EXCLUSION_MARGIN_READINGS",
    "MAX_GAP_READINGS",
    "REBASELINE_READINGS",
    "RESERVOIR_AGE_MIN",
    "RESERVOIR_AGE_READINGS",
    "SPAN_QUANTILE",
    "TimeScale",
    "devices_to_cover",
    "learn_interval",
    "no_runs_error",
    "stream_span",
]

# Readings per auto setting; at 1 reading/s each is the setting's old default in seconds,
# except the cooldown (below) and re-baselining: 512 readings (16 windows of the default
# 32; 8 min 32 s at 1 Hz, was 3600 s, then 720, then 256 readings), measured in
# docs/BENCHMARKS.md ("The forecaster as the default; re-baselining after 512
# readings"): with the forecaster a new normal stops
# alerting as fast at 512 as at 256 (its one-step error sees a step only as a transient),
# while 256 re-baselined SKAB's long faults (MAR 48 % against 37 %); a transient cannot
# re-baseline (it must keep windows anomalous for three quarters of it, 384 readings); a
# fault that outlasts it is re-baselined and, once it ends, undone (sentinel.judge.threshold).
MAX_GAP_READINGS = 60
REBASELINE_READINGS = 512
COOLDOWN_READINGS = 64
# The cooldown is two windows' span of readings (64 at the default 32): a fault that comes
# back within it is the same one flapping. It was 300 (the old 300 s at 1 Hz), 5 h at one
# reading a minute: on the simulated fleet a second fault of the same channel hours later
# reopened the first alert, its onset lost (4 of 16 misses at 1/min), and on the synthetic
# server metrics one alert stayed "open" for 27 hours through three faults and six false
# blips (docs/BENCHMARKS.md, "A cooldown of 64 readings"). An auto cooldown never exceeds
# a day (issue #21, cause 7): anomalies a quiet day apart are separate incidents to whoever
# is on shift; hourly data reaches the cap.
COOLDOWN_MAX_AUTO = 86_400.0
EXCLUSION_MARGIN_READINGS = 120
# The reservoir keeps readings for at least 14 days (the old default) and at least 10,000
# readings of each device's interval: at one reading an hour 14 days are 336 readings, fewer
# than the cold start (3,000) or a retraining run (2,000 clean) needs, so a small fleet of
# hourly meters would never have trained (issue #21, cause 1). 10,000 covers both with the
# held-back fifth and exclusions; at one a minute or faster the 14 days govern.
RESERVOIR_AGE_READINGS = 10_000
RESERVOIR_AGE_MIN = 14 * 86_400.0


# A stream's cold start waits for ``cold_start.span`` of its time, read off each device's
# own clock: the span that a quarter or more of its devices cover (``stream_span``). The
# union of all timestamps (newest minus oldest, as before 2026-12-07) is stretched by one
# device whose clock is far behind the others (a dead RTC, a gateway in another time
# zone), which ended the wait at once; a device's own span is not, and the quantile leaves
# out a minority whose clock jumped while collecting. Devices that joined late hold it back
# only when they are three quarters of the stream.
SPAN_QUANTILE = 0.75


def stream_span(device_spans: Iterable[float]) -> float:
    """Seconds of a stream's time its devices' readings cover, each on its own clock (its
    newest timestamp minus its oldest): the 75th percentile of their spans
    (``SPAN_QUANTILE``), taken at or below it, so a quarter or more of the devices cover
    it (of two devices, both; of a dozen, four); 0 with no devices."""
    spans = sorted(device_spans)
    if not spans:
        return 0.0
    return float(spans[len(spans) - devices_to_cover(len(spans))])


def devices_to_cover(devices: int) -> int:
    """How many of a stream's ``devices`` must each cover a span for ``stream_span`` to
    reach it."""
    return devices - int(SPAN_QUANTILE * (devices - 1))


def learn_interval(timestamps: Iterable[np.ndarray]) -> float | None:
    """The sampling interval in seconds of one stream: the median of the positive steps
    between consecutive timestamps, each array being one device's readings in time order.
    None where no two readings of a device are apart (too little data to tell)."""
    steps = [np.diff(np.asarray(ts, dtype=np.float64)) for ts in timestamps if len(ts) > 1]
    if not steps:
        return None
    all_steps = np.concatenate(steps)
    positive = all_steps[all_steps > 0]
    if positive.size == 0:
        return None
    return float(np.median(positive))


@dataclass(frozen=True)
class TimeScale:
    """Resolves time settings for one stream whose readings come every ``interval`` seconds
    (None: unknown, taken as one second, the scale the old defaults assumed)."""

    interval: float | None = None

    @property
    def step(self) -> float:
        return self.interval if self.interval is not None and self.interval > 0 else 1.0

    def seconds(self, value: float | None, readings: int) -> float:
        """``value`` seconds where the config sets one, else ``readings`` intervals."""
        return float(value) if value is not None else readings * self.step

    def max_gap(self, value: float | None) -> float:
        return self.seconds(value, MAX_GAP_READINGS)

    def rebaseline_after(self, value: float | None) -> float:
        return self.seconds(value, REBASELINE_READINGS)

    def cooldown(self, value: float | None) -> float:
        if value is not None:
            return float(value)
        return min(self.seconds(None, COOLDOWN_READINGS), COOLDOWN_MAX_AUTO)

    def exclusion_margin(self, value: float | None) -> float:
        return self.seconds(value, EXCLUSION_MARGIN_READINGS)

    def reservoir_age(self, value: float | None) -> float:
        if value is not None:
            return float(value)
        return max(RESERVOIR_AGE_MIN, self.seconds(None, RESERVOIR_AGE_READINGS))


def no_runs_error(max_gap: float, window: int, readings: int) -> DataError:
    """The refusal when gaps leave no run as long as a window: it names the setting."""
    return DataError(
        f"no training data: every run between gaps longer than windows.max_gap "
        f"(={max_gap:g} s) is shorter than a window ({window} readings); {readings} readings "
        "given. Set windows.max_gap (seconds) if the data's gaps are normal for it"
    )
