"""What training the first model costs by how much of the plant it learns from (issue #21).

The cold start trains the first model on ``cold_start.readings`` readings of a stream, all
its devices together: a count, not a time. A dozen pumps read every second fill the default
3,000 in about four minutes of their process, and the fleet read every second raises
several times the false alerts after 13 minutes of learning that it does after an hour
(docs/BENCHMARKS.md, "A ramp's lead"). Learning from a longer span costs training time;
this times the default detector's training on the simulated fleet
(``simulators.fleet``, faults off) for each ``--minutes`` of every pump's readings, on one
thread, as the daemon's training child runs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cold_start_cost.py [--pumps 12]
        [--step 1] [--minutes 4 13 60]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.config import SentinelConfig
from sentinel.logs import configure_logging
from sentinel.model import detector_type, training_options
from simulators.fleet import FEATURES, FleetSimulator

START = 1_709_251_200.0


def train_seconds(pumps: int, step: float, readings: int, seed: int) -> float:
    """Wall seconds the default detector takes to train on ``readings`` of each pump."""
    sim = FleetSimulator(
        pumps,
        seed=seed,
        step=step,
        start_ts=START,
        anomaly_rate=0.0,
        warmup=readings * step,
        day_length=720 * step,
    )
    steps = sim.steps()
    rows = [next(steps) for _ in range(readings)]
    config = SentinelConfig.model_validate(
        {
            "streams": [
                {"name": "pump", "topic": "plant/{device}/pump", "features": list(FEATURES)}
            ],
            "windows": {"max_gap": 3 * step},
        }
    )
    segments = [
        np.array([[r[d].values[f] for f in FEATURES] for r in rows], dtype=np.float32)
        for d in range(pumps)
    ]
    started = time.perf_counter()
    detector_type(config.model.detector).train(
        segments,
        training_options(config, "pump", step),
        device=torch.device("cpu"),
        first_ts=START,
        last_ts=START + (readings - 1) * step,
    )
    return time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pumps", type=int, default=12, help="simulated pumps (default 12)")
    ap.add_argument("--step", type=float, default=1.0, help="seconds between readings")
    ap.add_argument(
        "--minutes",
        type=float,
        nargs="+",
        default=[4.0, 13.0, 60.0],
        help="minutes of each pump's readings to train on (default 4 13 60)",
    )
    ap.add_argument("--seed", type=int, default=11, help="the fleet's draw (default 11)")
    args = ap.parse_args()
    if args.pumps < 1 or args.step <= 0 or any(m <= 0 for m in args.minutes):
        ap.error("--pumps, --step and --minutes must be positive")
    configure_logging("warning", "console")
    torch.set_num_threads(1)
    print(
        f"machine: {platform.machine()}, python {platform.python_version()}, "
        f"torch {torch.__version__}; {args.pumps} pumps, a reading every {args.step:g} s"
    )
    print("| minutes of each pump | readings in all | training, wall s | s per 1,000 readings |")
    print("|---|---|---|---|")
    for minutes in args.minutes:
        readings = max(64, round(minutes * 60 / args.step))
        seconds = train_seconds(args.pumps, args.step, readings, args.seed)
        total = readings * args.pumps
        print(f"| {minutes:g} | {total:,} | {seconds:.1f} | {1000 * seconds / total:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
