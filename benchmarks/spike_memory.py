"""The spike check on synthetic channels, with and without its memory of normal pulses.

Each class is one device's channel (window 16, hop 4, as the fleet's), judged by
``SpikeCheck`` alone (no model): a one-reading spike the check flags is counted once, at
the reading it points at. Labelled spikes are the anomalies each class hides among its
normal behaviour; every other flagged reading is a false spike. Classes (issue #21,
cause 6): recurring pulses at several samplings, bursty counts, a set point that moves in
steps, and rare or frequent random spikes on plain noise (where remembering costs recall).

    .venv/bin/python benchmarks/spike_memory.py
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import numpy.typing as npt

from sentinel.config import SpikesConfig
from sentinel.judge.spikes import SpikeCheck

WINDOW, HOP = 16, 4
WARM_START = 3_000  # where the second table's model is installed
WARM_READINGS = (0, 1_000, 3_000)  # cold, the default cold_start.warm_readings, and more
Series = tuple[npt.NDArray[np.float64], set[int]]  # readings, labelled spike readings


def noise(n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    return 5.0 + 0.1 * rng.standard_normal(n)


def pulses(period: int, n: int) -> Callable[[np.random.Generator], Series]:
    """A one-reading pulse of 20 noise sd every ``period`` readings; three one-off spikes
    ten times the pulse, labelled."""

    def make(rng: np.random.Generator) -> Series:
        x = noise(n, rng)
        x[period // 2 :: period] += 2.0
        labelled = {int(v) for v in rng.choice(np.arange(n // 3, n - 10), 3, replace=False)}
        labelled -= set(range(period // 2, n, period))
        x[list(labelled)] += 20.0
        return x, labelled

    return make


def actuation(rng: np.random.Generator) -> Series:
    """A pulse of 20 noise sd (+-10%) at irregular intervals of 50 to 150 readings (an
    actuator that runs when it must); three one-off spikes ten times the pulse, labelled."""
    n = 10_000
    x = noise(n, rng)
    at = np.cumsum(rng.integers(50, 151, n // 50))
    at = at[at < n - 10]
    x[at] += rng.uniform(1.8, 2.2, len(at))
    labelled = {int(v) + 25 for v in rng.choice(at[len(at) // 3 : -1], 3, replace=False)}
    x[list(labelled)] += 20.0
    return x, labelled


def bursty(rng: np.random.Generator) -> Series:
    """Counts per interval: mostly 0, bursts of 1-3 readings of 1 to ~30; two of 300."""
    n = 20_000
    x = np.zeros(n)
    for start in rng.choice(n - 3, n // 40, replace=False):
        x[start : start + int(rng.integers(1, 4))] = rng.geometric(0.1)
    labelled = {6_000, 15_000}
    x[list(labelled)] = 300.0
    return x, labelled


def set_point(rng: np.random.Generator) -> Series:
    """Steps of 1-8 units every ~50 readings, one new value in ten held 1-3 readings;
    two spikes of 200 units."""
    n = 20_000
    x = np.empty(n)
    level, i = 20.0, 0
    while i < n:
        hold = int(rng.integers(1, 4)) if rng.random() < 0.1 else int(rng.geometric(1 / 50))
        x[i : i + hold] = level
        level += float(rng.choice([-1, 1]) * rng.integers(1, 9))
        i += hold
    labelled = {6_000, 15_000}
    x[list(labelled)] += 200.0
    return x, labelled


def random_spikes(every: int) -> Callable[[np.random.Generator], Series]:
    """Plain noise with spikes of 12-20 sd, either side, at random times about one per
    ``every`` readings, all labelled: the anomalies a memory may learn away."""

    def make(rng: np.random.Generator) -> Series:
        n = 40_000
        x = noise(n, rng)
        at = np.unique(rng.integers(300, n - 10, n // every))
        x[at] += rng.choice([-1, 1], len(at)) * rng.uniform(1.2, 2.0, len(at))
        return x, {int(a) for a in at}

    return make


CLASSES: list[tuple[str, Callable[[np.random.Generator], Series]]] = [
    ("pulse every 96 (daily at 15 min)", pulses(96, 4_000)),
    ("pulse every 288 (daily at 5 min)", pulses(288, 8_000)),
    ("pulse every 60 (hourly at 1 min)", pulses(60, 6_000)),
    ("pulse every 1440 (daily at 1 min)", pulses(1440, 20_000)),
    ("pulse every 3600 (hourly at 1 s)", pulses(3600, 40_000)),
    ("pulse every 50-150, irregular", actuation),
    ("bursty counts", bursty),
    ("set point in steps", set_point),
    ("random spikes, 1 per 2000", random_spikes(2000)),
    ("random spikes, 1 per 500", random_spikes(500)),
]


def flagged(config: SpikesConfig, x: npt.NDArray[np.float64], start: int = 0) -> set[int]:
    """The readings flagged, judging from reading ``start`` on (a cold start there)."""
    batch = np.stack([x[i : i + WINDOW] for i in range(start, len(x) - WINDOW + 1, HOP)])
    hits = SpikeCheck(config, HOP).check("s", ["d"] * len(batch), batch[..., None])
    return {start + i * HOP + WINDOW - 1 - h.age for i, h in enumerate(hits) if h is not None}


def after_start(config: SpikesConfig, x: npt.NDArray[np.float64], warm: int) -> set[int]:
    """The readings flagged from reading ``WARM_START`` on, for a model installed there:
    judged cold from it (``warm`` 0), or after the pipeline's warm start has judged the
    ``warm`` readings before it (``cold_start.warm_readings``, sentinel.worker.warmup)."""
    return {i for i in flagged(config, x, WARM_START - warm) if i >= WARM_START}


def main() -> int:
    settings: list[tuple[str, SpikesConfig]] = []
    if "recurring" in SpikesConfig.model_fields:
        settings.append(("memory off", SpikesConfig.model_validate({"recurring": False})))
    settings.append(("default", SpikesConfig()))
    print("| class | setting | false spikes | labelled caught |")
    print("|---|---|---|---|")
    for name, make in CLASSES:
        x, labelled = make(np.random.default_rng(7))
        for setting, config in settings:
            got = flagged(config, x)
            print(
                f"| {name} | {setting} | {len(got - labelled)} | "
                f"{len(got & labelled)}/{len(labelled)} |"
            )
    # The warm start (issue #21): a model installed at reading WARM_START, and the spike
    # check judging from there cold, or warmed on the readings before it.
    print(f"\nFrom reading {WARM_START} on (a first model installed there), default settings:\n")
    print("| class | warm start readings | false spikes | labelled caught |")
    print("|---|---|---|---|")
    for name, make in CLASSES:
        x, labelled = make(np.random.default_rng(7))
        later = {i for i in labelled if i >= WARM_START}
        for warm in WARM_READINGS:
            got = after_start(SpikesConfig(), x, warm)
            print(f"| {name} | {warm} | {len(got - later)} | {len(got & later)}/{len(later)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
