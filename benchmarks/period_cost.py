"""What the period check costs a window, where a stream has a cycle longer than a window.

The check (``sentinel.judge.periods``) is free on a stream without such a cycle (it returns
before looking at a window); on one with a cycle, each window in which a block completed
compares the newest period with the device's earlier ones. This times
``PeriodCheck.check`` alone, one device, window 32 and hop 4 as the defaults, over the
live part of synthetic series whose features have cycles (the training part taken in
first, unjudged, as the warm start does), and prints per series the judged features,
their blocks, the median of ``--repeat`` runs in microseconds per window and per judged
feature a window, and the blocks a device holds for them (KB). No model is trained: the
periods come from ``PeriodStats.fit`` on the training rows, as training makes them.

    .venv/bin/python benchmarks/period_cost.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.config import PeriodsConfig
from sentinel.judge.periods import PeriodCheck
from sentinel.model.periods import PeriodStats
from sentinel.records import Window
from simulators import synthetic, unseen

WINDOW, HOP = 32, 4
SERIES = (
    ("missed_start", synthetic.generate),  # 5 min, a day of 288 readings in blocks of 5
    ("cycle_1s", synthetic.generate),  # 1 s, a cycle of 300 readings
    ("rare_commands", synthetic.generate),  # 1 min, a 90-reading cycle in blocks of 2
    ("jittered_traffic", unseen.generate),  # 1-10 min at random, a day of ~255 readings
)


def windows(values: np.ndarray, times: np.ndarray, first: int, last: int) -> list[Window]:
    return [
        Window(
            "s",
            "d",
            times[end - WINDOW],
            times[end - 1],
            values[end - WINDOW : end],
            times[end - WINDOW : end].copy(),
        )
        for end in range(first + HOP, last + 1, HOP)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(
        "| series | judged features (period/block/blocks a period) | µs a window "
        "| µs a judged feature a window | blocks held a device (KB) |"
    )
    print("|---|---|---|---|---|")
    for name, generate in SERIES:
        series = generate(name, seed=0)
        values = np.asarray(series.values, dtype=np.float64)
        times = np.asarray(series.timestamps, dtype=np.float64)
        train = series.train_rows
        stats = PeriodStats.fit([values[:train]], WINDOW)
        interval = float(np.median(np.diff(times[:train])))
        detector = SimpleNamespace(
            period_stats=lambda stats=stats: stats,
            version="v1",
            meta=SimpleNamespace(training={"n_readings": train}, interval=interval),
        )
        warm = windows(values, times, WINDOW - HOP, train)
        live = windows(values, times, train, len(values))
        runs, held = [], 0
        for _ in range(args.repeat):
            check = PeriodCheck(PeriodsConfig())
            check.check("s", detector, warm, judge=False)  # type: ignore[arg-type]
            started = time.perf_counter()
            for window in live:  # one window a pass, as a device's readings arrive
                check.check("s", detector, [window], max_gap=60 * interval)  # type: ignore[arg-type]
            runs.append((time.perf_counter() - started) / len(live) * 1e6)
            held = sum(f.ring.nbytes for d in check._devices.values() for f in d.features)
        per = statistics.median(runs)
        judged = ", ".join(f"{s.period}/{s.block}/{s.length}" for s in stats.features)
        count = max(1, len(stats.features))
        print(
            f"| {name} | {judged or 'none'} | {per:.0f} | {per / count:.0f} | {held / 1000:.1f} |"
        )


if __name__ == "__main__":
    main()
