"""Where SKAB's changepoint (NAB) score is won and lost, window by window.

SKAB marks changepoints where a fault's labelled span begins and ends and, in most files, two
more inside it (where the rig's state changes within the fault). This script reads the
per-row output that ``benchmarks/skab.py --keep DIR`` keeps and, for the verdicts, the open
alerts and the labels themselves used as a prediction, counts per changepoint ordinal in the
file (1st, 2nd, ...) how many windows got a detection and the mean credit it earned on the
standard profile's curve, and where the predictions outside every window lie. With several
directories (one per model seed) it also prints each one's NAB scores, so a score can be
read with its seed spread.

    .venv/bin/python benchmarks/skab.py --detectors lstm_ae --keep /tmp/s0
    .venv/bin/python benchmarks/skab.py --detectors lstm_ae --set model.seed=1 --keep /tmp/s1
    .venv/bin/python benchmarks/skab_nab.py /tmp/s0 /tmp/s1
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.offline.evaluation import (
    NabFile,
    Placement,
    changepoints_from_predictions,
    nab_file,
    nab_scores,
)

TRAIN_ROWS = 400
KINDS = {"verdict": "is_anomaly", "alert": "alert_id", "labels": "anomaly"}
PROTOCOLS: dict[str, tuple[float, Placement]] = {
    "SKAB's scorer (30 s centred)": (30.0, "center"),
    "dataset README (60 s right)": (60.0, "right"),
}

Kept = dict[str, list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]]


def load(directory: Path) -> Kept:
    """Per kind: (file, timestamps, true changepoints, predicted changepoints) per file."""
    kept: Kept = defaultdict(list)
    files = sorted(directory.glob("lstm_ae-*.csv"))
    if not files:
        raise SystemExit(f"{directory}: no lstm_ae-*.csv (run benchmarks/skab.py --keep DIR)")
    for path in files:
        with path.open() as handle:
            rows = list(csv.DictReader(handle))[TRAIN_ROWS:]
        ts = np.array([datetime.fromisoformat(r["timestamp"]).timestamp() for r in rows])
        true_cps = ts[np.array([float(r["changepoint"]) for r in rows]) == 1]
        for kind, column in KINDS.items():
            pred = np.array([0 if r[column] in ("", "0", "0.0") else 1 for r in rows])
            predicted = np.asarray(changepoints_from_predictions(ts, pred), dtype=np.float64)
            kept[kind].append((path.stem.removeprefix("lstm_ae-"), ts, true_cps, predicted))
    return kept


def where(outcome: NabFile, predicted: np.ndarray) -> tuple[int, int, int]:
    """Predictions outside every window: before the first, between two, after the last."""
    if not outcome.windows:
        return 0, 0, int(predicted.size)
    inside = np.zeros(predicted.size, dtype=bool)
    for w in outcome.windows:
        inside |= (predicted >= w.start) & (predicted <= w.end)
    before = int(np.sum(~inside & (predicted < outcome.windows[0].start)))
    after = int(np.sum(~inside & (predicted > outcome.windows[-1].end)))
    return before, outcome.false_positives - before - after, after


def table(kept: Kept, window: float, placement: Placement) -> None:
    print("| prediction | changepoint (in file) | windows | detected | mean credit | offset s |")
    print("|---|---|---|---|---|---|")
    outside: dict[str, list[int]] = {}
    for kind, files in kept.items():
        by_ordinal: dict[int, list[tuple[float, float] | None]] = defaultdict(list)
        totals = [0, 0, 0]
        for _, _, true_cps, predicted in files:
            outcome = nab_file(true_cps, predicted, window, placement)
            for i, w in enumerate(outcome.windows):
                hit = None
                if w.detected is not None:
                    hit = (w.credit(), w.detected - w.changepoint)
                by_ordinal[i].append(hit)
            totals = [a + b for a, b in zip(totals, where(outcome, predicted), strict=True)]
        outside[kind] = totals
        for i in sorted(by_ordinal):
            hits = [h for h in by_ordinal[i] if h is not None]
            credit = f"{np.mean([h[0] for h in hits]):.2f}" if hits else "-"
            offset = f"{np.mean([h[1] for h in hits]):+.1f}" if hits else "-"
            print(
                f"| {kind} | {i + 1} | {len(by_ordinal[i])} | {len(hits)} | {credit} | {offset} |"
            )
    print()
    print("| prediction | outside every window: before the first | between | after the last |")
    print("|---|---|---|---|")
    for kind, (before, between, after) in outside.items():
        print(f"| {kind} | {before} | {between} | {after} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="benchmarks/skab.py --keep outputs")
    args = parser.parse_args()
    runs = [load(d) for d in args.dirs]
    for name, (window, placement) in PROTOCOLS.items():
        print(f"## {name}\n")
        print("| run | " + " | ".join(f"{k} standard" for k in KINDS) + " |")
        print("|---|" + "---|" * len(KINDS))
        for directory, kept in zip(args.dirs, runs, strict=True):
            scores = [
                nab_scores([(ts, t, p) for _, ts, t, p in kept[kind]], window, placement).standard
                for kind in KINDS
            ]
            print(f"| {directory} | " + " | ".join(f"{s:.2f}" for s in scores) + " |")
        print(f"\nWindows and detections, {args.dirs[0]}:\n")
        table(runs[0], window, placement)


if __name__ == "__main__":
    main()
