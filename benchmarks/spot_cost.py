"""SPOT's cost per observation and its false-alarm rate against the number of peaks.

Usage: .venv/bin/python benchmarks/spot_cost.py

1. Steps per second on a Student-t(3) stream once ``max_peaks`` (5000) excesses are stored,
   with the incremental refit (the default: a local bracket around the last root, a full
   search every FULL_SEARCH_EVERY peaks) and with a full search on every peak; and the
   largest difference between the two runs' thresholds.
2. The observed false-alarm rate on Gaussian data against ``q``, for calibration batches
   that leave ~40 and ~400 peaks above the initial threshold (level 0.98): ``q`` is
   extrapolated (1 - level) / q = 200 times beyond the peaks, so a few hundred are needed.
"""

from __future__ import annotations

import time

import numpy as np

from sentinel.judge import spot
from sentinel.judge.spot import Spot


def steps_per_second(
    full_every: int, values: np.ndarray, calibration: np.ndarray
) -> tuple[float, list[float]]:
    spot.FULL_SEARCH_EVERY = full_every
    detector = Spot(q=1e-4, level=0.98, max_peaks=5000)
    detector.fit(calibration)
    thresholds = []
    started = time.perf_counter()
    for x in values:
        detector.step(float(x))
        thresholds.append(detector.threshold)
    return len(values) / (time.perf_counter() - started), thresholds


def false_alarm_rate(calibration_size: int, rng: np.random.Generator) -> float:
    detector = Spot(q=1e-3, level=0.98)
    detector.fit(rng.standard_normal(calibration_size))
    stream = rng.standard_normal(200_000)
    alarms = sum(detector.step(float(x)) == "anomaly" for x in stream)
    return alarms / len(stream)


def main() -> None:
    rng = np.random.default_rng(0)
    calibration = rng.standard_t(3, 300_000)  # 6,000 peaks at level 0.98: max_peaks is full
    values = rng.standard_t(3, 50_000)
    default = spot.FULL_SEARCH_EVERY
    fast, a = steps_per_second(default, values, calibration)
    slow, b = steps_per_second(1, values, calibration)
    spot.FULL_SEARCH_EVERY = default
    print(f"incremental refit: {fast:,.0f} steps/s; full search on every peak: {slow:,.0f} steps/s")
    print(f"largest threshold difference: {max(abs(x - y) for x, y in zip(a, b, strict=True)):.2e}")
    for size in (2_000, 20_000):
        rate = false_alarm_rate(size, rng)
        print(
            f"calibration {size:,} (~{int(size * 0.02)} peaks): false alarms {rate:.2e} at q 1e-03"
        )


if __name__ == "__main__":
    main()
