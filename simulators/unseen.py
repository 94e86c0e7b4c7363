"""Labelled series of kinds the development suite does not hold, kept out of all tuning.

``simulators.synthetic`` is what detection is tuned on (issue #21: "tune on the broad
suite"). These kinds are the check that what was tuned there holds on data of other
shapes -- as the held-out benchmarks Sentinel is judged on are: real and artificial
univariate series sampled every 5 minutes to every hour, with trends, irregular sampling,
heavy tails and random walks -- and as plants are: machines switched on and off at random
times (a thermostat's compressor, a motor), tanks that fill and drain, outdoor temperature
on wandering weather. Nothing in the product may be chosen by its figures here;
``benchmarks/unseen_kinds.py`` reports them beside the suite's.

Each generator is deterministic for its ``seed`` and returns a ``LabelledSeries`` labelled
by the suite's rules (``simulators.synthetic``): a change that goes away is labelled over
every reading it touches, a lasting new level over its first ``NEW_NORMAL_LABELLED``
readings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from simulators.synthetic import (
    DAY,
    EPOCH,
    NEW_NORMAL_LABELLED,
    LabelledSeries,
    _ar1,
    _labels,
    _noise,
    _series,
)

__all__ = ["KINDS", "generate"]

BoolArray = npt.NDArray[np.bool_]


def trend_5min(*, seed: int = 0) -> LabelledSeries:
    """A server's CPU every 5 minutes: a daily cycle on a load that grows by a third over
    the two weeks (so scoring sees levels training never did). A +8 (~5 noise sigmas)
    offset for 30 readings (2.5 hours) and, later, a single reading 25 over."""
    rng = np.random.default_rng(seed)
    rows = 4000
    t = np.arange(rows) * 300.0
    values = 30 + 10 * np.arange(rows) / rows + 5 * np.sin(2 * np.pi * t / DAY)
    values += _noise(rng, rows, 1.5)
    values[2500:2530] += 8
    values[3300] += 25
    labels = _labels(rows, (2500, 2530), (3300, 3301))
    return _series(
        "trend_5min",
        values,
        ("cpu",),
        labels,
        300.0,
        1500,
        "growing load, daily cycle, 5 min; an offset, a spike",
    )


def jittered_traffic(*, seed: int = 0) -> LabelledSeries:
    """A road sensor's occupancy, read at irregular times (every 1 to 10 minutes, drawn
    uniformly) over a daily cycle; for 20 readings the sensor reads ~2 (a lane closed)."""
    rng = np.random.default_rng(seed)
    rows = 3000
    timestamps = EPOCH + np.cumsum(rng.uniform(60.0, 600.0, rows))
    values = 40 + 15 * np.sin(2 * np.pi * (timestamps - EPOCH) / DAY) + _noise(rng, rows, 2.0)
    values[2000:2020] = rng.normal(2.0, 0.5, 20)
    return _series(
        "jittered_traffic",
        values,
        ("occupancy",),
        _labels(rows, (2000, 2020)),
        330.0,
        1200,
        "irregular 1-10 min sampling, daily cycle; a drop",
        timestamps=timestamps,
    )


def random_walk(*, seed: int = 0) -> LabelledSeries:
    """A tank level each minute that wanders as a random walk (steps of 0.3), so every
    level is new; at row 2500 it jumps by 6 (20 steps' sigmas) and stays there."""
    rng = np.random.default_rng(seed)
    rows = 4000
    values = 100 + np.cumsum(rng.normal(0.0, 0.3, rows))
    values[2500:] += 6
    labels = _labels(rows, (2500, 2500 + NEW_NORMAL_LABELLED))
    return _series(
        "random_walk",
        values,
        ("level",),
        labels,
        60.0,
        1500,
        "random walk each minute; a jump that stays",
    )


def heavy_tails(*, seed: int = 0) -> LabelledSeries:
    """A reading every 5 minutes with Student-t noise (3 degrees of freedom: an outlier of
    5 scales every few hundred readings is normal); for 60 readings the scale is 4 times."""
    rng = np.random.default_rng(seed)
    rows = 3000
    values = 10 + rng.standard_t(3, rows)
    values[2000:2060] = 10 + 4 * rng.standard_t(3, 60)
    labels = _labels(rows, (2000, 2060))
    return _series(
        "heavy_tails",
        values,
        ("value",),
        labels,
        300.0,
        1200,
        "Student-t noise, 5 min; its scale x4 for 60 readings",
    )


def white_noise_1h(*, seed: int = 0) -> LabelledSeries:
    """An hourly meter reading that is white noise about its level; one reading 7 sigmas
    out. Anything else alerted is false."""
    rng = np.random.default_rng(seed)
    rows = 2000
    values = 5 + rng.normal(0.0, 1.0, rows)
    values[1500] += 7
    labels = _labels(rows, (1500, 1501))
    return _series(
        "white_noise_1h",
        values,
        ("reading",),
        labels,
        3600.0,
        800,
        "white noise hourly; one 7-sigma reading",
    )


def weekly_pair_1h(*, seed: int = 0) -> LabelledSeries:
    """Two hourly channels driven by one load with a weekly and a daily cycle (the second at
    half the first, plus 3); for two days the second reads 6 (~8 noise sigmas) high."""
    rng = np.random.default_rng(seed)
    rows = 3000
    t = np.arange(rows) * 3600.0
    load = 50 + 10 * np.sin(2 * np.pi * t / (7 * DAY)) + 8 * np.sin(2 * np.pi * t / DAY)
    first = load + _noise(rng, rows, 1.0)
    second = 0.5 * load + 3 + _noise(rng, rows, 0.7)
    second[2200:2248] += 6
    return _series(
        "weekly_pair_1h",
        np.column_stack((first, second)),
        ("supply", "return"),
        _labels(rows, (2200, 2248)),
        3600.0,
        1200,
        "two channels of one weekly load, hourly; one offset",
    )


# -- plant kinds: machines that switch, fill and follow the weather ---------------------------


def _switching(
    rng: np.random.Generator, rows: int, on: tuple[int, int], off: tuple[int, int]
) -> BoolArray:
    """A machine's on/off state, switched at random times: each spell on lasts a number of
    readings drawn from ``on``, each spell off from ``off`` (numpy's ``integers``, end
    excluded); it starts off, partway through a spell."""
    state = np.zeros(rows, dtype=np.bool_)
    at, running = -int(rng.integers(0, off[0])), False
    while at < rows:
        spell = int(rng.integers(*(on if running else off)))
        state[max(at, 0) : at + spell] = running
        at, running = at + spell, not running
    return state


def hvac_thermostat(*, seed: int = 0) -> LabelledSeries:
    """A rooftop unit's compressor each minute, cycled by its thermostat at random times:
    on for 8-15 minutes (3 kW, 4.5 at the first reading: the inrush), off for 15-35 (0.05
    kW); the supply air falls toward 12 C while it runs and rises toward 20 C while it
    rests. Two faults: for an hour it short-cycles (2 minutes on, 2 off), and later, for
    200 readings, a refrigerant leak leaves the supply air at 16 C however long it runs."""
    rng = np.random.default_rng(seed)
    rows = 6000
    on = _switching(rng, rows, (8, 16), (15, 36))
    short = (3800, 3860)
    on[short[0] : short[1]] = (np.arange(short[1] - short[0]) // 2) % 2 == 0
    leak = (5000, 5200)
    power = np.where(on, 3.0, 0.05) + rng.normal(0.0, 0.05, rows)
    power[1:][on[1:] & ~on[:-1]] += 1.5
    cold = np.full(rows, 12.0)
    cold[leak[0] : leak[1]] = 16.0
    supply = np.empty(rows)
    level = 18.0
    for i in range(rows):
        level += ((cold[i] - level) / 3.0) if on[i] else ((20.0 - level) / 8.0)
        supply[i] = level
    supply += _noise(rng, rows, 0.1)
    return _series(
        "hvac_thermostat",
        np.column_stack((power, supply)),
        ("compressor_kw", "supply_air_c"),
        _labels(rows, short, leak),
        60.0,
        3000,
        "compressor cycled at random times, 1 min; short cycling, a refrigerant leak",
    )


def tank_fill(*, seed: int = 0) -> LabelledSeries:
    """A tank's level every 10 s: a pump fills it from 20 % to 80 % at ~0.5 % a reading
    (each fill's rate drawn within 5 %, each reading's within 5 % of it), then it drains
    in five readings, again and again. Two faults: for 200 readings the pump fills at half
    its rate (a worn impeller), and later the drain valve sticks: the tank holds full for
    60 readings before it drains."""
    rng = np.random.default_rng(seed)
    rows = 5000
    worn = (3500, 3700)
    level: list[float] = []
    x, rate, stuck = 20.0, 0.5, -1
    while len(level) < rows:
        slow = worn[0] <= len(level) < worn[1]
        x += rate * (0.5 if slow else 1.0) * (1.0 + rng.normal(0.0, 0.05))
        level.append(x)
        if x >= 80.0:
            if stuck < 0 and len(level) >= 4400:
                stuck = len(level)
                level.extend([x] * 60)
            level.extend(max(20.0, x - 12.5 * (k + 1)) for k in range(5))
            x, rate = 20.0, 0.5 * (1.0 + rng.normal(0.0, 0.05))
    values = np.asarray(level[:rows]) + rng.normal(0.0, 0.2, rows)
    return _series(
        "tank_fill",
        values,
        ("level_pct",),
        _labels(rows, worn, (stuck, stuck + 60)),
        10.0,
        2500,
        "fill and drain cycles, 10 s; a slow fill, a drain that sticks",
    )


def machine_starts(*, seed: int = 0) -> LabelledSeries:
    """A machine each second that starts and stops at random times (spells of 100-400 s):
    1,500 rpm and a vibration of 1.0 running, 0 and 0.1 at rest, its temperature following
    slowly (55 C running, 30 C at rest, a time constant of 200 s). Two faults, each while it
    runs: for 300 readings its vibration is 40 % higher (a bearing), and later, for 100, the
    vibration reads its at-rest level while the machine turns (a sensor come loose)."""
    rng = np.random.default_rng(seed)
    rows = 8000
    running = _switching(rng, rows, (100, 400), (100, 400))
    bearing, loose = (5500, 5800), (7000, 7100)
    running[bearing[0] - 50 : bearing[1]] = True
    running[loose[0] - 50 : loose[1]] = True
    rpm = np.where(running, 1500.0 + rng.normal(0.0, 10.0, rows), rng.normal(0.0, 1.0, rows))
    vibration = np.where(running, 1.0, 0.1) + rng.normal(0.0, 0.05, rows)
    vibration[bearing[0] : bearing[1]] *= 1.4
    vibration[loose[0] : loose[1]] = 0.1 + rng.normal(0.0, 0.05, loose[1] - loose[0])
    temperature = np.empty(rows)
    level = 30.0
    for i in range(rows):
        level += ((55.0 if running[i] else 30.0) - level) / 200.0
        temperature[i] = level
    temperature += rng.normal(0.0, 0.1, rows)
    return _series(
        "machine_starts",
        np.column_stack((rpm, vibration, temperature)),
        ("rpm", "vibration", "temperature"),
        _labels(rows, bearing, loose),
        1.0,
        4000,
        "starts and stops at random times, 1 s; a bearing, a loose sensor",
    )


def weather_1h(*, seed: int = 0) -> LabelledSeries:
    """An outdoor temperature each hour: a daily cycle of 5 C on weather that wanders (an
    AR(1) of 2 C, 0.98 an hour) and 0.3 C of noise. For two days the sensor reads 2.5 C
    high (a calibration drift): a step at its start and end, a level the weather reaches
    on its own -- subtle on purpose."""
    rng = np.random.default_rng(seed)
    rows = 2000
    t = np.arange(rows) * 3600.0
    values = 15 + 5 * np.sin(2 * np.pi * t / DAY) + _ar1(rng, rows, 2.0, 0.98)
    values += rng.normal(0.0, 0.3, rows)
    values[1500:1548] += 2.5
    return _series(
        "weather_1h",
        values,
        ("temperature_c",),
        _labels(rows, (1500, 1548)),
        3600.0,
        1000,
        "daily cycle on wandering weather, hourly; a 2.5 C offset for two days",
    )


KINDS: dict[str, Callable[..., LabelledSeries]] = {
    "trend_5min": trend_5min,
    "jittered_traffic": jittered_traffic,
    "random_walk": random_walk,
    "heavy_tails": heavy_tails,
    "white_noise_1h": white_noise_1h,
    "weekly_pair_1h": weekly_pair_1h,
    "hvac_thermostat": hvac_thermostat,
    "tank_fill": tank_fill,
    "machine_starts": machine_starts,
    "weather_1h": weather_1h,
}
"""Every held-out kind by name, each ``(seed=...) -> LabelledSeries``."""


def generate(name: str, *, seed: int = 0) -> LabelledSeries:
    """The series of kind ``name`` (a key of :data:`KINDS`)."""
    try:
        make = KINDS[name]
    except KeyError as err:
        raise ValueError(f"unknown kind {name!r}; one of {', '.join(KINDS)}") from err
    return make(seed=seed)
