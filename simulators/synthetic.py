"""Labelled synthetic series, one generator per class of behaviour that issue #21 names.

The development suite (``benchmarks/detection_suite.py``) replays each of these through the
daemon's code with the default config. Every class pins one way detection goes wrong on data
nobody tuned for (issue #21, "Causes found"): coarse sampling, recurring normal pulses, flat
lines, lasting level shifts, subtle changes inside an oscillation, counts, features constant
in training, decoupled channels and gaps.

Every generator is deterministic for its ``seed`` and returns a :class:`LabelledSeries`:
epoch-second timestamps, a ``(rows, features)`` matrix, per-row 0/1 labels, the sampling
interval and ``train_rows``, the leading rows a detector may train on. No label is ever 1
inside the training rows. Noise is AR(1) plus white noise and, where a real sensor would
have it, quantisation, so no series is a clean sine.

Labelling rules (what counts as an anomaly):

* A change that goes away again is labelled over every reading it touches.
* A level shift that becomes the new normal is labelled over its first
  :data:`NEW_NORMAL_LABELLED` readings only: a detector should say so at the onset, then
  accept the new level. Alerts after that are false alerts.
* Recurring pulses, normal bursts of counts, ordinary steps of a set point and a command
  flag that switches after training (an operator's command, constant in training) are
  labelled 0: a detector should not alert on them. Those series carry one other, real
  anomaly so recall is measured too.
* Gaps are missing rows: the timestamps jump; nothing is labelled for them.

Daily and weekly cycles are sampled every minute, 5 minutes and hour. At one reading per
second a day is 86,400 rows, far beyond a fast suite, so ``cycle_1s`` is a 5-minute machine
duty cycle: the same problem (a periodic pattern several hundred readings long) at 1 s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "CLASSES",
    "EPOCH",
    "NEW_NORMAL_LABELLED",
    "LabelledSeries",
    "amplitude_change",
    "bursty_counts",
    "command_flag",
    "constant_in_training",
    "cycle",
    "daily_pulse",
    "decorrelation",
    "flatline",
    "frequency_change",
    "gaps",
    "generate",
    "level_shift_anomaly",
    "level_shift_new_normal",
    "missed_start",
    "periodic_actuation",
    "sawtooth",
    "server_metrics",
    "setpoint_steps",
    "stuck_sensor",
    "telemetry_modes",
    "wide_server",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int8]

EPOCH = 1_767_571_200.0  # Monday 2026-01-05 00:00 UTC: weekly patterns start on a Monday
DAY = 86_400.0
NEW_NORMAL_LABELLED = 100
"""A level shift that stays is labelled over this many readings from its onset, no more."""


@dataclass(frozen=True)
class LabelledSeries:
    """One labelled series: rows ``[0, train_rows)`` are normal and may train a detector."""

    name: str  # the class, e.g. "cycle_5min"
    timestamps: FloatArray  # (rows,) epoch seconds, strictly increasing
    values: FloatArray  # (rows, features)
    features: tuple[str, ...]
    labels: IntArray  # (rows,) 1 = anomalous reading
    interval: float  # nominal seconds between readings (gaps aside)
    train_rows: int
    description: str

    def __post_init__(self) -> None:
        rows = len(self.timestamps)
        if self.values.shape != (rows, len(self.features)):
            raise ValueError(f"{self.name}: values {self.values.shape}, features {self.features}")
        if self.labels.shape != (rows,):
            raise ValueError(f"{self.name}: {self.labels.shape} labels for {rows} rows")
        if not 0 < self.train_rows < rows:
            raise ValueError(f"{self.name}: train_rows {self.train_rows} of {rows}")
        if self.labels[: self.train_rows].any():
            raise ValueError(f"{self.name}: a label inside the training rows")
        if np.any(np.diff(self.timestamps) <= 0):
            raise ValueError(f"{self.name}: timestamps must increase")

    @property
    def rows(self) -> int:
        return len(self.timestamps)


def _ar1(rng: np.random.Generator, n: int, sigma: float, phi: float = 0.8) -> FloatArray:
    """Stationary AR(1) noise with standard deviation ``sigma`` (slowly wandering sensors)."""
    shocks = rng.normal(0.0, sigma * np.sqrt(1.0 - phi * phi), n)
    out = np.empty(n)
    level = rng.normal(0.0, sigma)
    for i in range(n):
        level = phi * level + shocks[i]
        out[i] = level
    return out


def _noise(rng: np.random.Generator, n: int, sigma: float) -> FloatArray:
    """Realistic sensor noise: half correlated (AR(1)), half white, same total variance."""
    return _ar1(rng, n, sigma / np.sqrt(2)) + rng.normal(0.0, sigma / np.sqrt(2), n)


def _bursts(
    rng: np.random.Generator,
    n: int,
    base: float,
    high: float,
    *,
    first: tuple[int, int],
    length: tuple[int, int],
    apart: tuple[int, int],
) -> FloatArray:
    """A rate of ``base`` with normal bursts of ``high``: the first at a row drawn from
    ``first``, each lasting ``length`` rows and starting ``apart`` rows after the last one's
    start (each range drawn as numpy's ``integers``, end excluded)."""
    rate = np.full(n, base)
    at = int(rng.integers(*first))
    while at < n:
        rate[at : at + int(rng.integers(*length))] = high
        at += int(rng.integers(*apart))
    return rate


def _times(n: int, interval: float) -> FloatArray:
    return EPOCH + interval * np.arange(n, dtype=np.float64)


def sawtooth(rng: np.random.Generator, n: int, slope: float, apart: tuple[int, int]) -> FloatArray:
    """A server's memory under a garbage collector: from 40 it rises by exactly ``slope`` a
    reading and drops back to about 40 (sd 0.3) every ``apart`` readings (drawn as numpy's
    ``integers``, end excluded), the first drop too."""
    memory = np.empty(n)
    level, next_gc = 40.0, int(rng.integers(*apart))
    for i in range(n):
        if i == next_gc:
            level, next_gc = 40.0 + rng.normal(0, 0.3), i + int(rng.integers(*apart))
        level += slope
        memory[i] = level
    return memory


def _labels(n: int, *spans: tuple[int, int]) -> IntArray:
    """0/1 labels with ``[start, end)`` spans set."""
    labels = np.zeros(n, dtype=np.int8)
    for start, end in spans:
        labels[start:end] = 1
    return labels


def _series(
    name: str,
    values: FloatArray,
    features: tuple[str, ...],
    labels: IntArray,
    interval: float,
    train_rows: int,
    description: str,
    timestamps: FloatArray | None = None,
) -> LabelledSeries:
    matrix = values.reshape(len(values), -1) if values.ndim == 1 else values
    ts = _times(len(matrix), interval) if timestamps is None else timestamps
    return LabelledSeries(
        name, ts, matrix.astype(np.float64), features, labels, interval, train_rows, description
    )


# -- daily and weekly cycles ----------------------------------------------------------------

_CYCLES = {
    # interval: (period seconds, rows, kind of anomaly)
    1.0: (300.0, 4_000, "distorted"),
    60.0: (DAY, 5_760, "flattened"),
    300.0: (DAY, 4_032, "distorted"),
    3600.0: (DAY, 1_344, "flattened"),
}


def cycle(interval: float, *, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """A load that follows a daily cycle (weekends lower) sampled every ``interval`` seconds.

    ``interval`` is 1, 60, 300 or 3600 (at 1 s the period is 5 minutes, see the module doc).
    The first half trains. Two anomalies a period apart (one where a quick series is too
    short), each half a period long: the cycle flattened to its mean ("flattened": a plateau
    where the cycle should be) or mirrored about it ("distorted": peak where the trough
    should be).
    """
    period, rows, kind = _CYCLES[interval]
    if quick:
        rows = max(rows // 2, int(3 * period / interval))
    rng = np.random.default_rng(seed)
    t = np.arange(rows) * interval
    phase = 2 * np.pi * t / period
    load = 50 + 20 * np.sin(phase - np.pi / 2) + 5 * np.sin(2 * phase)
    if period == DAY:
        weekend = ((t // DAY) % 7) >= 5
        load = np.where(weekend, 50 + 0.5 * (load - 50) - 10, load)
    per = int(period / interval)
    train = rows // 2
    spans = []
    for start in (train + per // 3, train + per // 3 + per):
        end = start + per // 2
        if end >= rows:
            break
        if kind == "flattened":
            load[start:end] = float(np.mean(load[start:end]))
        else:
            load[start:end] = 100 - load[start:end]
        spans.append((start, end))
    values = load + _noise(rng, rows, 1.5)
    label = {1.0: "1s", 60.0: "1min", 300.0: "5min", 3600.0: "1h"}[interval]
    return _series(
        f"cycle_{label}",
        values,
        ("load",),
        _labels(rows, *spans),
        interval,
        train,
        f"period {period:.0f} s at {interval:.0f} s; {kind} for half a period, twice",
    )


# -- recurring normal spikes ----------------------------------------------------------------


def periodic_actuation(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """A valve actuates every 120 s (a 4-reading pressure pulse of ~10 noise sigmas): normal.

    One abnormal spike: twice as high, off the schedule. 1 s sampling.
    """
    rows = 2_000 if quick else 4_000
    rng = np.random.default_rng(seed)
    values = 5.0 + _noise(rng, rows, 0.05)
    pulse = np.array([0.3, 0.5, 0.5, 0.2])
    for start in range(60, rows - 4, 120):
        values[start : start + 4] += pulse * rng.uniform(0.9, 1.1)
    train = rows // 2
    spike = train + (rows - train) // 2 + 31  # between two actuations
    values[spike : spike + 3] += 1.0
    return _series(
        "periodic_actuation",
        values,
        ("pressure",),
        _labels(rows, (spike, spike + 3)),
        1.0,
        train,
        "normal 4-reading pulse every 120 readings; one off-schedule spike of twice the size",
    )


def daily_pulse(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """A pump runs 20 minutes every day at 06:00 (power jumps): normal. 1 min sampling.

    One abnormal pulse: the pump runs at 15:00 for 10 minutes at 1.5 x the usual power.
    """
    rows = 4_320 if quick else 5_760  # 3 or 4 days
    rng = np.random.default_rng(seed)
    values = 0.4 + np.abs(_noise(rng, rows, 0.05))
    for day in range(rows // 1440 + 1):
        start = day * 1440 + 360
        values[start : start + 20] += 5.0 + rng.normal(0, 0.1, len(values[start : start + 20]))
    train = 2 * 1440 if not quick else 1440 + 720
    start = (rows // 1440 - 1) * 1440 + 900
    values[start : start + 10] += 7.5
    return _series(
        "daily_pulse",
        values,
        ("power",),
        _labels(rows, (start, start + 10)),
        60.0,
        train,
        "normal 20-min pulse at 06:00 every day; one 10-min pulse of 1.5 x at 15:00",
    )


def missed_start(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """An air handler's supply-fan power every 5 minutes on a daily schedule: it starts at
    about 06:00 and stops at about 18:00 (each within a quarter of an hour), drawing
    17-19 kW with the day's load and 0.4 kW when off; 14 days (10 quick), the first half
    trains.

    One anomaly: a day, after training, on which the fan never starts -- labelled over the
    hours it should have run. Every reading of that day is a level the fan holds each
    night, so only the time of day tells it apart: what the plant's schedule is, and
    whether it ran.
    """
    per = 288  # readings a day
    days = 10 if quick else 14
    rows = per * days
    rng = np.random.default_rng(seed)
    power = np.full(rows, 0.4)
    missed = days - 4
    spans = []
    for day in range(days):
        on = day * per + 72 + int(rng.integers(-3, 4))
        off = day * per + 216 + int(rng.integers(-3, 4))
        if day == missed:
            spans.append((on, off))
            continue
        level = 18.0 + rng.normal(0.0, 0.3)
        power[on:off] = level + 1.0 * np.sin(np.linspace(0.0, np.pi, off - on))
    power = np.round(power + _noise(rng, rows, 0.3), 1)
    return _series(
        "missed_start",
        power,
        ("fan_kw",),
        _labels(rows, *spans),
        300.0,
        per * (days // 2),
        "fan on 06:00-18:00 daily at 18 kW, off 0.4 kW; one day it never starts",
    )


# -- flat lines, stuck sensors --------------------------------------------------------------


def _wandering(rng: np.random.Generator, rows: int, period: float) -> FloatArray:
    t = np.arange(rows, dtype=np.float64)
    return np.asarray(20 + 2 * np.sin(2 * np.pi * t / period) + _noise(rng, rows, 0.3))


def stuck_sensor(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """Two temperatures that move together; one sticks at its last value (twice). 1 s."""
    rows = 2_000 if quick else 4_000
    rng = np.random.default_rng(seed)
    a = _wandering(rng, rows, 400)
    b = a + 1.0 + _noise(rng, rows, 0.2)
    a, b = np.round(a, 2), np.round(b, 2)
    train = rows // 2
    spans = []
    for start in (train + 300, train + (rows - train) // 2 + 300):
        end = start + 200
        b[start:end] = b[start - 1]
        spans.append((start, end))
    return _series(
        "stuck_sensor",
        np.column_stack([a, b]),
        ("temp_a", "temp_b"),
        _labels(rows, *spans),
        1.0,
        train,
        "temp_b holds its last value for 200 readings, twice; temp_a goes on",
    )


def flatline(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """A vibration sensor drops to exactly 0 (cable cut) for 150 readings, twice. 1 s."""
    rows = 2_000 if quick else 4_000
    rng = np.random.default_rng(seed)
    values = np.abs(2.0 + 0.3 * np.sin(np.arange(rows) / 50) + _noise(rng, rows, 0.25))
    train = rows // 2
    spans = []
    for start in (train + 250, train + (rows - train) // 2 + 250):
        values[start : start + 150] = 0.0
        spans.append((start, start + 150))
    return _series(
        "flatline",
        np.round(values, 2).astype(np.float64),
        ("vibration",),
        _labels(rows, *spans),
        1.0,
        train,
        "reads exactly 0.0 for 150 readings, twice",
    )


# -- level shifts ---------------------------------------------------------------------------


def level_shift_anomaly(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """A flow drops by 4 noise sigmas for 150 readings and returns, twice. 1 s."""
    rows = 2_000 if quick else 4_000
    rng = np.random.default_rng(seed)
    values = 32 + 0.5 * np.sin(np.arange(rows) / 80) + _noise(rng, rows, 0.4)
    train = rows // 2
    spans = []
    for start in (train + 300, train + (rows - train) // 2 + 300):
        values[start : start + 150] -= 1.6
        spans.append((start, start + 150))
    return _series(
        "level_shift_anomaly",
        values,
        ("flow",),
        _labels(rows, *spans),
        1.0,
        train,
        "level -4 sigma for 150 readings, then back; twice",
    )


def level_shift_new_normal(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """A set point moves up by 4 noise sigmas and stays there (a new operating point). 1 s.

    Labelled over the first :data:`NEW_NORMAL_LABELLED` readings of the new level only.
    """
    rows = 2_400 if quick else 4_000
    rng = np.random.default_rng(seed)
    values = 60 + 0.5 * np.sin(np.arange(rows) / 70) + _noise(rng, rows, 0.5)
    train = rows // 2
    start = train + 300
    values[start:] += 2.0
    return _series(
        "level_shift_new_normal",
        values,
        ("temperature",),
        _labels(rows, (start, start + NEW_NORMAL_LABELLED)),
        1.0,
        train,
        f"+4 sigma for good; labelled over its first {NEW_NORMAL_LABELLED} readings",
    )


# -- changes inside an oscillation ----------------------------------------------------------


def _oscillation(
    rng: np.random.Generator, rows: int, amplitude: FloatArray, frequency: FloatArray
) -> FloatArray:
    phase = 2 * np.pi * np.cumsum(frequency)  # continuous phase when the frequency changes
    return 10 + amplitude * np.sin(phase) + _noise(rng, rows, 0.15)


def amplitude_change(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """A 50-reading oscillation whose amplitude grows by 60 % for 300 readings, twice. 1 s."""
    rows = 2_000 if quick else 4_000
    rng = np.random.default_rng(seed)
    amplitude = np.full(rows, 1.0)
    train = rows // 2
    spans = []
    for start in (train + 200, train + (rows - train) // 2 + 200):
        amplitude[start : start + 300] = 1.6
        spans.append((start, start + 300))
    values = _oscillation(rng, rows, amplitude, np.full(rows, 1 / 50))
    return _series(
        "amplitude_change",
        values,
        ("vibration",),
        _labels(rows, *spans),
        1.0,
        train,
        "amplitude x1.6 for 300 readings, twice",
    )


def frequency_change(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """The same oscillation at 1.5 x its frequency for 300 readings, twice. 1 s."""
    rows = 2_000 if quick else 4_000
    rng = np.random.default_rng(seed)
    frequency = np.full(rows, 1 / 50)
    train = rows // 2
    spans = []
    for start in (train + 200, train + (rows - train) // 2 + 200):
        frequency[start : start + 300] = 1.5 / 50
        spans.append((start, start + 300))
    values = _oscillation(rng, rows, np.ones(rows), frequency)
    return _series(
        "frequency_change",
        values,
        ("vibration",),
        _labels(rows, *spans),
        1.0,
        train,
        "frequency x1.5 for 300 readings, twice",
    )


def setpoint_steps(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """A set point that steps between a few values every 150-400 readings and stays flat in
    between (normal, in training too), and the temperature that follows it with a lag.

    One anomaly: the temperature stops following for 150 readings (it holds 3 degrees under
    the set point: a heater fault). 1 s.
    """
    rows = 2_000 if quick else 4_000
    rng = np.random.default_rng(seed)
    setpoint = np.empty(rows)
    at, level = 0, 50.0
    while at < rows:
        length = int(rng.integers(150, 400))
        setpoint[at : at + length] = level
        at += length
        level = float(rng.choice([v for v in (40.0, 45.0, 50.0, 55.0) if v != level]))
    temperature = np.empty(rows)
    temperature[0] = setpoint[0]
    for i in range(1, rows):  # first-order lag, time constant 20 readings
        temperature[i] = temperature[i - 1] + (setpoint[i] - temperature[i - 1]) / 20
    train = rows // 2
    start = train + (rows - train) // 2
    temperature[start : start + 150] = setpoint[start : start + 150] - 3.0
    temperature = np.round(temperature + _noise(rng, rows, 0.1), 1)
    return _series(
        "setpoint_steps",
        np.column_stack([setpoint, temperature]),
        ("setpoint", "temperature"),
        _labels(rows, (start, start + 150)),
        1.0,
        train,
        "setpoint steps among 4 values, flat between (normal); temperature 3 under it once",
    )


# -- counts ---------------------------------------------------------------------------------


def bursty_counts(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """Requests per minute: Poisson(3) with normal bursts, Poisson(12) for 5-15 minutes every
    2-6 hours; one abnormal burst: Poisson(30) for 40 minutes. 1 min sampling."""
    rows = 2_000 if quick else 4_000
    rng = np.random.default_rng(seed)
    rate = _bursts(rng, rows, 3.0, 12.0, first=(60, 240), length=(5, 16), apart=(120, 360))
    train = rows // 2
    start = train + (rows - train) // 2
    rate[start : start + 40] = 30.0
    values = rng.poisson(rate).astype(np.float64)
    return _series(
        "bursty_counts",
        values,
        ("requests",),
        _labels(rows, (start, start + 40)),
        60.0,
        train,
        "Poisson(3) with normal Poisson(12) bursts; one Poisson(30) burst of 40 readings",
    )


# -- features constant in training ---------------------------------------------------------


def constant_in_training(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """A set point constant at 50.0 through training moves to 51.0 for 200 readings (an
    anomaly: nobody changed it), twice; a pressure beside it runs normally. 1 s."""
    rows = 2_000 if quick else 4_000
    rng = np.random.default_rng(seed)
    pressure = 3.0 + 0.2 * np.sin(np.arange(rows) / 120) + _noise(rng, rows, 0.05)
    setpoint = np.full(rows, 50.0)
    train = rows // 2
    spans = []
    for start in (train + 300, train + (rows - train) // 2 + 300):
        setpoint[start : start + 200] = 51.0
        spans.append((start, start + 200))
    return _series(
        "constant_in_training",
        np.column_stack([pressure, setpoint]),
        ("pressure", "setpoint"),
        _labels(rows, *spans),
        1.0,
        train,
        "setpoint constant in training, then 51.0 for 200 readings, twice",
    )


def command_flag(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """A command flag that is 0 through training switches to 1 for stretches later, as an
    operator commands it: labelled normal. The pressure beside it is independent of it and
    carries one real anomaly (down 5 sigmas for 150 readings). 1 s."""
    rows = 2_000 if quick else 4_000
    rng = np.random.default_rng(seed)
    pressure = 3.0 + 0.2 * np.sin(np.arange(rows) / 120) + _noise(rng, rows, 0.05)
    flag = np.zeros(rows)
    train = rows // 2
    at = train + 100
    while at < rows:
        length = int(rng.integers(100, 300))
        flag[at : at + length] = 1.0
        at += length + int(rng.integers(150, 400))
    start = train + (rows - train) // 2 + 50
    pressure[start : start + 150] -= 0.25
    return _series(
        "command_flag",
        np.column_stack([pressure, flag]),
        ("pressure", "boost_cmd"),
        _labels(rows, (start, start + 150)),
        1.0,
        train,
        "boost_cmd 0 in training, switches normally later (label 0); pressure -5 sigma once",
    )


# -- multivariate decorrelation -------------------------------------------------------------


def decorrelation(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """Two channels driven by one wandering load (r ~ 0.95); for 300 readings, twice, the
    second follows a load of its own with the same spread. Each channel alone looks normal.
    1 s."""
    rows = 2_000 if quick else 4_000
    rng = np.random.default_rng(seed)
    load = _ar1(rng, rows, 1.0, phi=0.98)
    other = _ar1(rng, rows, 1.0, phi=0.98)
    flow = 10 + 2 * load + _noise(rng, rows, 0.3)
    driver = load.copy()
    train = rows // 2
    spans = []
    for start in (train + 200, train + (rows - train) // 2 + 200):
        driver[start : start + 300] = other[start : start + 300]
        spans.append((start, start + 300))
    current = 5 + 1.5 * driver + _noise(rng, rows, 0.2)
    return _series(
        "decorrelation",
        np.column_stack([flow, current]),
        ("flow", "current"),
        _labels(rows, *spans),
        1.0,
        train,
        "current decouples from flow for 300 readings, twice",
    )


# -- gaps -----------------------------------------------------------------------------------


def gaps(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """A 1 s flow with missing stretches: 10 readings, then 5 minutes of nothing, at the
    very start; more gaps of 2-10 minutes later (in training and after). One anomaly: the
    level drops by 4 sigmas for 150 readings."""
    rows = 2_000 if quick else 4_000
    rng = np.random.default_rng(seed)
    steps = np.ones(rows - 1)
    steps[9] = 300.0  # a gap in the first rows
    for at in rng.choice(np.arange(100, rows - 100), size=6, replace=False):
        steps[at] = float(rng.integers(120, 600))
    timestamps = EPOCH + np.concatenate(([0.0], np.cumsum(steps)))
    values = 32 + 0.5 * np.sin(np.arange(rows) / 80) + _noise(rng, rows, 0.4)
    train = rows // 2
    start = train + (rows - train) // 2
    values[start : start + 150] -= 1.6
    return _series(
        "gaps",
        values,
        ("flow",),
        _labels(rows, (start, start + 150)),
        1.0,
        train,
        "gaps of 2-10 min (one after the first 10 readings); level -4 sigma for 150 readings",
        timestamps=timestamps,
    )


# -- server metrics -------------------------------------------------------------------------


def server_metrics(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """A web server's metrics once a minute, the kind of multivariate data no pump resembles:
    requests follow a daily cycle with heavy-tailed noise; CPU follows requests, with an
    hourly cron job (+25 % for 3 minutes: normal); memory climbs and drops at each garbage
    collection (a sawtooth, every 3-5 hours: normal); disk operations are Poisson counts with
    normal bursts; connections are small integers that step. 1 min.

    Three anomalies: a runaway process (CPU +35 for 40 minutes, requests unchanged); a memory
    leak (memory climbs ten times its normal slope for 150 minutes, then the process is
    restarted and memory drops); outgoing traffic at a fifth of what the requests need for 30
    minutes (a network fault).
    """
    rows = 3_000 if quick else 4_000
    rng = np.random.default_rng(seed)
    minutes = np.arange(rows, dtype=np.float64)
    daily = np.sin(2 * np.pi * minutes / 1440 - np.pi / 2)
    requests = (200 + 80 * daily) * np.exp(_ar1(rng, rows, 0.08, phi=0.9))
    requests *= np.exp(rng.normal(0.0, 0.05, rows))
    cpu = 10 + 0.12 * requests + _noise(rng, rows, 1.0)
    for start in range(int(rng.integers(0, 60)), rows, 60):  # the hourly cron job
        cpu[start : start + 3] += 25 * rng.uniform(0.9, 1.1)
    memory = sawtooth(rng, rows, 0.02, (180, 300))
    net_out = 0.9 * requests * np.exp(rng.normal(0.0, 0.1, rows))
    disk_rate = _bursts(rng, rows, 5.0, 40.0, first=(20, 120), length=(1, 3), apart=(40, 160))
    train = rows // 2
    spans = []
    runaway = train + 300
    cpu[runaway : runaway + 40] += 35
    spans.append((runaway, runaway + 40))
    leak = train + (rows - train) // 2
    memory[leak : leak + 150] += np.arange(150) * 0.2
    memory[leak + 150 :] -= memory[leak + 150] - 40.0  # restarted: memory back at its floor
    spans.append((leak, leak + 150))
    fault = rows - 250
    net_out[fault : fault + 30] *= 0.2
    spans.append((fault, fault + 30))
    disk = rng.poisson(disk_rate).astype(np.float64)
    connections = np.round(requests / 25 + rng.poisson(1.0, rows))
    values = np.column_stack(
        [
            np.round(requests),
            np.clip(cpu, 0, 100).round(1),
            memory.round(2),
            net_out.round(1),
            disk,
            connections,
        ]
    )
    return _series(
        "server_metrics",
        values,
        ("requests", "cpu", "memory", "net_out", "disk_ops", "connections"),
        _labels(rows, *spans),
        60.0,
        train,
        "daily requests, hourly cron pulses, GC sawtooth, bursty disk (normal); "
        "runaway CPU, memory leak, network fault",
    )


def wide_server(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """A server's 26 metrics once a minute, as the public server-machine datasets hold them
    (dozens of channels of many kinds, most of them quiet): a daily request load that CPU,
    load averages, network, connections, context switches, queries and the CPU temperature
    follow (each in its own way: lagged, smoothed, integer, heavy-tailed); an hourly cron
    job (+20 % system CPU and a burst of disk writes for 3 minutes); memory in a garbage
    collector's sawtooth; a page cache that grows and is dropped daily; bursty disk reads; a
    disk that fills by one quantised step now and then; process and thread counts that step;
    swap constant at 0 and a status flag constant at 1 (both in training and after);
    database latency with heavy-tailed noise; a cache hit ratio near 0.95; a few
    configuration values that never change. All of that is normal.

    Six anomalies, one of each kind the datasets label: a runaway process (user CPU +30,
    the load averages following, for 60 minutes); a memory leak (10 x the normal slope for
    120 minutes, then a restart drops it); the network at a fifth of what the requests need
    (30 minutes); a disk-write storm (5 x the write rate, disk busy, 40 minutes); a slow
    database (latency x 4 and the cache hit ratio at 0.7, 20 minutes); a crash loop (the
    process count swinging, the thread count halved, 30 minutes).
    """
    rows = 5_000 if quick else 6_000
    rng = np.random.default_rng(seed)
    minutes = np.arange(rows, dtype=np.float64)
    daily = np.sin(2 * np.pi * minutes / DAY * 60 - np.pi / 2)
    load = (300 + 120 * daily) * np.exp(_ar1(rng, rows, 0.06, phi=0.95))
    requests = rng.poisson(load).astype(np.float64)
    cron = np.zeros(rows)
    for start in range(int(rng.integers(0, 60)), rows, 60):
        cron[start : start + 3] = 1.0
    cpu_user = 5 + 0.1 * load + _noise(rng, rows, 1.0)
    cpu_system = 2 + 0.03 * load + 4 * cron + _noise(rng, rows, 0.4)
    cpu_iowait = np.abs(rng.normal(0.5, 0.3, rows))
    memory = sawtooth(rng, rows, 0.015, (150, 400))
    cache = 10 + 8 * ((minutes + int(rng.integers(0, 1440))) % 1440) / 1440
    swap = np.zeros(rows)
    net_in = 0.5 * load * np.exp(rng.normal(0.0, 0.08, rows))
    net_out = 2.0 * load * np.exp(rng.normal(0.0, 0.1, rows))
    connections = np.round(load / 20 + rng.poisson(2.0, rows))
    disk_read = rng.poisson(
        _bursts(rng, rows, 8.0, 60.0, first=(20, 120), length=(1, 4), apart=(30, 200))
    ).astype(np.float64)
    disk_write = rng.poisson(15.0 + 80.0 * cron).astype(np.float64)
    disk_util = np.clip(2 + 0.3 * disk_write + 0.2 * disk_read + _noise(rng, rows, 1.0), 0, 100)
    disk_used = 52.0 + 0.1 * np.cumsum(rng.random(rows) < 0.01)
    processes = 180 + np.cumsum(rng.choice([-1, 0, 0, 0, 0, 0, 0, 0, 1], rows))
    threads = np.round(processes * 6 + 0.05 * load + rng.normal(0, 3, rows))
    switches = 1000 + 8 * load + _noise(rng, rows, 60)
    queries = rng.poisson(1.5 * load).astype(np.float64)
    latency = 12 * np.exp(0.25 * rng.standard_t(4, rows)) + 0.01 * load
    hit_ratio = np.clip(0.95 + rng.normal(0, 0.008, rows), 0, 1)
    status = np.ones(rows)
    workers, max_conn, page_size = np.full(rows, 16.0), np.full(rows, 500.0), np.full(rows, 4.0)
    temperature = np.empty(rows)
    temperature[0] = 45.0
    for i in range(1, rows):  # the CPU's temperature follows its use with a lag
        temperature[i] = temperature[i - 1] + (35 + 0.4 * cpu_user[i] - temperature[i - 1]) / 10
    temperature += _noise(rng, rows, 0.3)
    load1 = np.empty(rows)
    load5 = np.empty(rows)
    load1[0] = load5[0] = cpu_user[0] / 10
    train = rows // 2
    spans = []
    # the anomalies, evenly through the test half (every 450 rows at full length)
    apart = (rows - train - 300) // 6
    runaway = train + 250
    cpu_user[runaway : runaway + 60] += 30
    spans.append((runaway, runaway + 60))
    leak = runaway + apart
    memory[leak : leak + 120] += np.arange(120) * 0.15
    memory[leak + 120 :] -= memory[leak + 120] - 40.0
    spans.append((leak, leak + 120))
    net = leak + apart
    net_in[net : net + 30] *= 0.2
    net_out[net : net + 30] *= 0.2
    spans.append((net, net + 30))
    storm = net + apart
    disk_write[storm : storm + 40] = rng.poisson(75.0, 40)
    disk_util[storm : storm + 40] = np.clip(disk_util[storm : storm + 40] + 25, 0, 100)
    spans.append((storm, storm + 40))
    slow = storm + apart
    latency[slow : slow + 20] *= 4
    hit_ratio[slow : slow + 20] = np.clip(0.7 + rng.normal(0, 0.02, 20), 0, 1)
    spans.append((slow, slow + 20))
    crash = slow + apart
    processes[crash : crash + 30] += rng.choice([-25, 0, 25], 30)
    threads[crash : crash + 30] = np.round(threads[crash : crash + 30] / 2)
    spans.append((crash, crash + 30))
    for i in range(1, rows):  # load averages follow the (faulty too) user CPU
        load1[i] = load1[i - 1] + (cpu_user[i] / 10 - load1[i - 1]) / 1.5
        load5[i] = load5[i - 1] + (cpu_user[i] / 10 - load5[i - 1]) / 5
    values = np.column_stack(
        [
            requests,
            np.clip(cpu_user, 0, 100).round(1),
            np.clip(cpu_system, 0, 100).round(1),
            cpu_iowait.round(2),
            load1.round(2),
            load5.round(2),
            memory.round(2),
            cache.round(2),
            swap,
            net_in.round(1),
            net_out.round(1),
            connections,
            disk_read,
            disk_write,
            disk_util.round(1),
            disk_used.round(1),
            processes,
            threads,
            switches.round(0),
            queries,
            latency.round(2),
            hit_ratio.round(3),
            status,
            workers,
            max_conn,
            page_size,
        ]
    )
    return _series(
        "wide_server",
        values,
        (
            "requests",
            "cpu_user",
            "cpu_system",
            "cpu_iowait",
            "load1",
            "load5",
            "memory",
            "cache",
            "swap",
            "net_in",
            "net_out",
            "connections",
            "disk_read",
            "disk_write",
            "disk_util",
            "disk_used",
            "processes",
            "threads",
            "switches",
            "queries",
            "latency",
            "hit_ratio",
            "status",
            "workers",
            "max_conn",
            "page_size",
        ),
        _labels(rows, *spans),
        60.0,
        train,
        "26 server metrics of many kinds, daily load, cron, GC, daily cache drop (normal); "
        "runaway CPU, memory leak, network, disk storm, slow database, crash loop",
    )


# -- spacecraft-like telemetry --------------------------------------------------------------


def telemetry_modes(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """A telemetry channel beside the commands that drive it, as spacecraft data comes: three
    command channels are 0 except for a one-reading 1 when a command is sent (every 40-200
    readings, in training too); each command moves the channel to its own level, which it
    settles at over ~10 readings (a first-order lag), with small noise. 1 min.

    Two anomalies: after one command the channel settles 0.6 away from that command's level
    and stays there until the next command (it did not do what it was told: each level on its
    own is a normal one); and, later, the sensor's noise grows five-fold for 80 readings.
    """
    rows = 3_000 if quick else 4_000
    rng = np.random.default_rng(seed)
    levels = (-1.0, 0.2, 0.8)
    commands = np.zeros((rows, len(levels)))
    target = np.empty(rows)
    at, current = 0, 1
    sends: list[int] = []
    while at < rows:
        length = int(rng.integers(40, 200))
        target[at : at + length] = levels[current]
        if at > 0:
            commands[at, current] = 1.0
            sends.append(at)
        at += length
        current = int(rng.choice([c for c in range(len(levels)) if c != current]))
    train = rows // 2
    spans = []
    wrong = next(s for s in sends if s > train + 200)
    until = next((s for s in sends if s > wrong), rows)
    target[wrong:until] += 0.6 if target[wrong] < 0.5 else -0.6
    spans.append((wrong, until))
    value = np.empty(rows)
    value[0] = target[0]
    for i in range(1, rows):  # first-order lag, time constant 4 readings
        value[i] = value[i - 1] + (target[i] - value[i - 1]) / 4
    noise = _noise(rng, rows, 0.03)
    noisy = next(s for s in sends if s > until + 100) + 20
    noise[noisy : noisy + 80] *= 5
    spans.append((noisy, noisy + 80))
    return _series(
        "telemetry_modes",
        np.column_stack([value + noise, commands]),
        ("value", "cmd_a", "cmd_b", "cmd_c"),
        _labels(rows, *spans),
        60.0,
        train,
        "one-reading commands move the channel among 3 levels (normal); "
        "once to a wrong level; once 5 x noise",
    )


def rare_commands(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """Spacecraft-like telemetry beside six command channels, each 0 but for a one-reading 1
    when its command is sent (every 150-600 readings). Three are sent in training too; the
    other three are first sent after training -- routine commands the training data happened
    not to hold, labelled normal, as telemetry archives are. The telemetry follows a
    90-reading orbit cycle the commands do not move; one anomaly: for 100 readings it reads
    0.8 (about 11 noise sigmas) high. 1 min."""
    rows = 3_000 if quick else 6_000
    rng = np.random.default_rng(seed)
    train = rows // 3
    t = np.arange(rows)
    telemetry = np.sin(2 * np.pi * t / 90) + _noise(rng, rows, 0.07)
    commands = np.zeros((rows, 6))
    for channel in range(6):
        at = (0 if channel < 3 else train) + int(rng.integers(50, 300))
        while at < rows:
            commands[at, channel] = 1.0
            at += int(rng.integers(150, 600))
    start = train + 3 * (rows - train) // 4
    telemetry[start : start + 100] += 0.8
    return _series(
        "rare_commands",
        np.column_stack([telemetry, commands]),
        ("telemetry", *(f"cmd_{c}" for c in "abcdef")),
        _labels(rows, (start, start + 100)),
        60.0,
        train,
        "one-reading commands, three first sent after training (normal); telemetry +0.8 once",
    )


def stepped_telemetry(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """Spacecraft telemetry as it often comes: a channel that holds one of four levels,
    noise-free (quantised), for 40-250 readings at a time, moved there by one-reading
    command pulses on four command channels (each command its level). Every channel is
    stepped, the commands are pulses. Two anomalies: for 60 readings the channel chatters
    between two levels every 3 readings; later, for 100 readings, it gains noise (0.1,
    against steps of 0.6-1.9) at its commanded level. 1 min."""
    rows = 4_000 if quick else 6_000
    rng = np.random.default_rng(seed)
    levels = (-1.0, -0.4, 0.3, 0.9)
    train = rows * 5 // 16
    telemetry = np.empty(rows)
    commands = np.zeros((rows, len(levels)))
    at, current = 0, 0
    while at < rows:
        length = int(rng.integers(40, 250))
        telemetry[at : at + length] = levels[current]
        if at > 0:
            commands[at, current] = 1.0
        at += length
        current = int(rng.choice([c for c in range(len(levels)) if c != current]))
    chatter = train + (rows - train) // 4
    telemetry[chatter : chatter + 60] = np.where(
        (np.arange(60) // 3) % 2 == 0, levels[0], levels[3]
    )
    noisy = train + 3 * (rows - train) // 4
    telemetry[noisy : noisy + 100] += rng.normal(0.0, 0.1, 100)
    return _series(
        "stepped_telemetry",
        np.column_stack([telemetry, commands]),
        ("telemetry", *(f"cmd_{c}" for c in "abcd")),
        _labels(rows, (chatter, chatter + 60), (noisy, noisy + 100)),
        60.0,
        train,
        "noise-free levels set by command pulses; chatters once, gains noise once",
    )


Generator = Callable[..., LabelledSeries]


def _cycle(interval: float) -> Generator:
    def make(*, seed: int = 0, quick: bool = False) -> LabelledSeries:
        return cycle(interval, seed=seed, quick=quick)

    return make


CLASSES: dict[str, Generator] = {
    "cycle_1s": _cycle(1.0),
    "cycle_1min": _cycle(60.0),
    "cycle_5min": _cycle(300.0),
    "cycle_1h": _cycle(3600.0),
    "periodic_actuation": periodic_actuation,
    "daily_pulse": daily_pulse,
    "missed_start": missed_start,
    "stuck_sensor": stuck_sensor,
    "flatline": flatline,
    "level_shift_anomaly": level_shift_anomaly,
    "level_shift_new_normal": level_shift_new_normal,
    "amplitude_change": amplitude_change,
    "frequency_change": frequency_change,
    "setpoint_steps": setpoint_steps,
    "bursty_counts": bursty_counts,
    "constant_in_training": constant_in_training,
    "command_flag": command_flag,
    "decorrelation": decorrelation,
    "gaps": gaps,
    "server_metrics": server_metrics,
    "wide_server": wide_server,
    "telemetry_modes": telemetry_modes,
    "rare_commands": rare_commands,
    "stepped_telemetry": stepped_telemetry,
}
"""Every class by name, each ``(seed=..., quick=...) -> LabelledSeries``."""


def generate(name: str, *, seed: int = 0, quick: bool = False) -> LabelledSeries:
    """The series of class ``name`` (a key of :data:`CLASSES`)."""
    try:
        make = CLASSES[name]
    except KeyError as err:
        raise ValueError(f"unknown class {name!r}; one of {', '.join(CLASSES)}") from err
    return make(seed=seed, quick=quick)
