"""Kinds of series nobody tuned on (``simulators.unseen``), with the default config.

The development suite (``detection_suite.py``) is what detection is tuned on; these kinds
are held out of it to show whether what holds there holds on other shapes: a trend beyond
training's levels, irregular sampling, a random walk, heavy-tailed noise, hourly white
noise, a weekly cycle on two channels; and plant kinds: a compressor its thermostat cycles
at random times, a tank that fills and drains, a machine that starts and stops at random
times, an outdoor temperature on wandering weather. Each seed is replayed through
``sentinel.offline.replay`` exactly as the suite replays its synthetic classes (the same
``Suite.replay_rows``, the same scoring and grace), and one table per run prints, per kind
and seed: events hit, false alerts, onset delays and rows in alerts per labelled row.

    .venv/bin/python benchmarks/unseen_kinds.py [--seeds 0 1 2 3 4] [--config FILE]
        [--train-fraction F]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from detection_suite import GRACE, MIN_TRAIN_ROWS, Suite, machine, shortened

from sentinel.logs import configure_logging
from sentinel.offline.suite import SeriesScore, id_events, score_series
from simulators.unseen import KINDS, generate


def run(suite: Suite, kind: str, seed: int, train_fraction: float = 1.0) -> SeriesScore:
    series = generate(kind, seed=seed)
    train_rows = shortened(series.train_rows, train_fraction)
    rows = suite.replay_rows(
        f"{kind}-{seed}", series.features, series.values, series.timestamps, train_rows
    )
    spans, ids = id_events([r["alert_id"] for r in rows])
    return score_series(series.labels, spans, GRACE, ids)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--kinds", default="", help=f"any of {', '.join(KINDS)}")
    ap.add_argument("--config", type=Path, help="a TOML config instead of the defaults")
    ap.add_argument("--keep", type=Path, help="keep every replay output here")
    ap.add_argument(
        "--train-fraction",
        type=float,
        default=1.0,
        help=f"train each kind on this fraction of its training rows (at least {MIN_TRAIN_ROWS})",
    )
    ap.add_argument(
        "--retrain",
        action="store_true",
        help="retrain on the [retrain] schedule in each series' own time, as `sentinel replay` "
        "does by default",
    )
    args = ap.parse_args()
    if not 0 < args.train_fraction <= 1:
        ap.error("--train-fraction: between 0 (excluded) and 1")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()] or list(KINDS)
    if unknown := set(kinds) - set(KINDS):
        ap.error(f"unknown kinds: {sorted(unknown)}")
    configure_logging("warning", "console")
    raw: dict[str, Any] = tomllib.loads(args.config.read_text()) if args.config else {}
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    print(f"command: .venv/bin/python benchmarks/unseen_kinds.py {' '.join(sys.argv[1:])}")
    print(f"config: {args.config or 'SentinelConfig defaults'}\n")
    if args.train_fraction < 1:
        print(f"trained on {args.train_fraction:g} of each kind's training rows\n")
    if args.retrain:
        print("retraining on the [retrain] schedule, as `sentinel replay` does\n")
    print(
        "| kind | events hit | false alerts | onset delays (readings) | rows in alerts / labelled |"
    )
    print("|---|---|---|---|---|")
    totals = [0, 0, 0]
    with tempfile.TemporaryDirectory(prefix="sentinel-unseen-") as tmp:
        suite = Suite(raw, Path(tmp), args.keep, args.retrain)
        for kind in kinds:
            scores = [run(suite, kind, seed, args.train_fraction) for seed in args.seeds]
            hit = ", ".join(f"{s.detected}/{s.events}" for s in scores)
            false = ", ".join(str(s.false_alerts) for s in scores)
            delays = ", ".join("/".join(str(d) for d in s.delays) or "-" for s in scores)
            ratio = ", ".join(f"{s.rows_flagged / max(s.rows_labelled, 1):.2f}" for s in scores)
            print(f"| {kind} | {hit} | {false} | {delays} | {ratio} |", flush=True)
            for s in scores:
                totals[0] += s.detected
                totals[1] += s.events
                totals[2] += s.false_alerts
    seeds = " ".join(map(str, args.seeds))
    print(f"\nseeds {seeds}: {totals[0]} of {totals[1]} events hit, {totals[2]} false alerts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
