"""What a nearest-neighbour discord check would catch, and raise falsely, before anyone builds it.

The forecaster judges a window from its 32 readings of context. A daily pattern 288 readings
long (5-minute data) that fails to happen -- an air handler that never starts one morning
(``missed_start``), a day whose rise is missing -- leaves every reading at a level the
channel holds each night, so no window of 32 readings shows anything wrong. What does is
the day as a whole against the days before it: the newest subsequence of one period's
length against its nearest neighbour in the history (a left discord, as in the matrix
profile's online form: Lu, Keogh et al., "Matrix Profile XXIV: DAMP", KDD 2022).

Per feature of each synthetic class (no model, threshold or alert logic):

* the period is the training data's autocorrelation peak, as ``seasonal_probe.py`` finds
  it (at least 0.5, 0.3 above its lowest point before it, up to ``--max-lag`` readings);
  features without one are not judged;
* the subsequence is ``--share`` of the period long (at least 32 readings); its distance is
  the RMS difference to the nearest earlier subsequence ending at least its own length
  before it, within ``--hist`` periods;
* the reference is the largest such distance over training (subsequences with at least a
  period of history before them), so training needs a period and two lengths;
* a window (every 4 readings) is flagged beyond ``--factor`` times the reference; with
  ``--new N`` only where its newest N readings also differ from the neighbour's by more
  than ``--factor`` times training's largest such difference (the subsequence holds a
  past fault for its whole length; this asks the newest readings to carry it).

It counts, per class over the seeds: events hit (a flagged window inside the event or up
to 32 readings after it) and false runs (flagged runs not within 32 readings of a label).

    .venv/bin/python benchmarks/discord_probe.py [--share 1.0] [--factor 1.5] [--new 16]
        [--train-fraction 0.3] [--classes missed_start,cycle_5min] [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from seasonal_probe import period, spans

from simulators.synthetic import CLASSES, generate

WINDOW, HOP = 32, 4  # the defaults' window and hop, in readings
MIN_TRAIN_ROWS = 300  # as detection_suite.py's --train-fraction


def nearest(x: np.ndarray, end: int, length: int, first: int, new: int) -> tuple[float, float]:
    """RMS distance of ``x[end - length:end]`` to its nearest subsequence ending in
    ``[first, end - length]``, and the RMS over the newest ``new`` readings against that
    neighbour's (0 when ``new`` is 0)."""
    query = x[end - length : end]
    candidates = sliding_window_view(x[first - length : end - length], length)
    squared = ((candidates - query) ** 2).mean(axis=1)
    best = int(squared.argmin())
    tail = 0.0
    if new:
        tail = float(np.sqrt(((candidates[best, -new:] - query[-new:]) ** 2).mean()))
    return float(np.sqrt(squared[best])), tail


def flagged(x: np.ndarray, train: int, args: argparse.Namespace) -> np.ndarray | None:
    """Readings in the newest hop of a flagged window; None where ``x`` is not judged."""
    lag = period(x[:train], args.max_lag)
    if lag is None:
        return None
    length = max(WINDOW, int(args.share * lag))
    if train < lag + 2 * length:
        return None
    reach = int(args.hist * lag)
    reference = [
        nearest(x, end, length, max(length, end - reach), args.new)
        for end in range(lag + 2 * length, train + 1, HOP)
    ]
    top = max(r[0] for r in reference)
    top_new = max(r[1] for r in reference)
    out = np.zeros(len(x), dtype=bool)
    for end in range(train + HOP, len(x) + 1, HOP):
        whole, newest = nearest(x, end, length, max(length, end - reach), args.new)
        if whole > args.factor * top and (not args.new or newest > args.factor * top_new):
            out[end - HOP : end] = True
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--share", type=float, default=1.0, help="subsequence, share of period")
    ap.add_argument("--factor", type=float, default=1.5, help="x training's largest distance")
    ap.add_argument("--hist", type=float, default=16.0, help="periods of history searched")
    ap.add_argument("--new", type=int, default=0, help="newest readings that must differ too")
    ap.add_argument("--max-lag", type=int, default=2048, help="longest period, readings")
    ap.add_argument("--train-fraction", type=float, default=1.0)
    ap.add_argument("--classes", default="", help="default: every synthetic class")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = ap.parse_args()
    names = [c for c in args.classes.split(",") if c] or list(CLASSES)
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for seed in args.seeds:
        for name in names:
            series = generate(name, seed=seed)
            train = max(MIN_TRAIN_ROWS, int(series.train_rows * args.train_fraction))
            train = min(train, series.train_rows)
            mask = np.zeros(series.rows, dtype=bool)
            judged = 0
            for f in range(series.values.shape[1]):
                x = series.values[:, f].astype(np.float64)
                if not np.isfinite(x).all():
                    continue
                found = flagged(x, train, args)
                if found is not None:
                    mask |= found
                    judged += 1
            events = spans(series.labels.astype(bool))
            row = totals[name]
            row[0] += len(events)
            row[1] += sum(1 for a, b in events if mask[a : b + WINDOW].any())
            runs = spans(mask)
            row[2] += sum(1 for a, b in runs if not series.labels[max(0, a - WINDOW) : b].any())
            row[3] += judged
    print(
        f"share {args.share}, factor {args.factor}, hist {args.hist}, new {args.new}, "
        f"train fraction {args.train_fraction}, seeds {args.seeds}"
    )
    print("| class | features judged | events hit | false runs |")
    print("|---|---|---|---|")
    for name in names:
        count, hit, false, features = totals[name]
        print(f"| {name} | {features} | {hit}/{count} | {false} |")
    hits = sum(r[1] for r in totals.values())
    labelled = sum(r[0] for r in totals.values())
    wrong = sum(r[2] for r in totals.values())
    print(f"| **overall** | | {hits}/{labelled} | {wrong} |")


if __name__ == "__main__":
    main()
