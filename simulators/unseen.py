"""Labelled series of kinds the development suite does not hold, kept out of all tuning.

``simulators.synthetic`` is what detection is tuned on (issue #21: "tune on the broad
suite"). These kinds are the check that what was tuned there holds on data of other
shapes -- as the held-out benchmarks Sentinel is judged on are: real and artificial
univariate series sampled every 5 minutes to every hour, with trends, irregular sampling,
heavy tails and random walks. Nothing in the product may be chosen by its figures here;
``benchmarks/unseen_kinds.py`` reports them beside the suite's.

Each generator is deterministic for its ``seed`` and returns a ``LabelledSeries`` labelled
by the suite's rules (``simulators.synthetic``): a change that goes away is labelled over
every reading it touches, a lasting new level over its first ``NEW_NORMAL_LABELLED``
readings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from simulators.synthetic import (
    DAY,
    EPOCH,
    NEW_NORMAL_LABELLED,
    LabelledSeries,
    _labels,
    _noise,
    _series,
)

__all__ = ["KINDS", "generate"]


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


KINDS: dict[str, Callable[..., LabelledSeries]] = {
    "trend_5min": trend_5min,
    "jittered_traffic": jittered_traffic,
    "random_walk": random_walk,
    "heavy_tails": heavy_tails,
    "white_noise_1h": white_noise_1h,
    "weekly_pair_1h": weekly_pair_1h,
}
"""Every held-out kind by name, each ``(seed=...) -> LabelledSeries``."""


def generate(name: str, *, seed: int = 0) -> LabelledSeries:
    """The series of kind ``name`` (a key of :data:`KINDS`)."""
    try:
        make = KINDS[name]
    except KeyError as err:
        raise ValueError(f"unknown kind {name!r}; one of {', '.join(KINDS)}") from err
    return make(seed=seed)
