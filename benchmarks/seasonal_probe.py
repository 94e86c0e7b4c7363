"""What a seasonal check would catch, and what it would raise falsely, before anyone builds it.

Much of what the suite's alerts miss is a periodic signal doing the wrong thing for a while:
``cycle_*`` flattened or mirrored for half a period, ``amplitude_change``,
``frequency_change``. The forecaster sees such a fault's first readings and then follows it.
This probe judges each periodic feature against itself one period back:

* the period is the highest local maximum of the training data's autocorrelation, at
  least 0.5 and at least 0.3 above its lowest point before it (a slowly wandering
  channel's autocorrelation only falls: no period), between a quarter window and
  ``--max-lag`` readings, with two periods and two windows of training;
* a window's statistic is its readings' mean absolute residual against the reading one
  period back (``--slack`` > 0: the best of lags within that share of the period), over
  the training residuals' robust scale; a window is flagged beyond ``--factor`` times the
  largest training window's;
* a flagged window's new readings are replaced in the history by their reference (so the
  next period is judged against normal, not the fault) for at most ``--bound`` periods.

It counts, per class with a periodic feature and over the seeds: events hit (a flagged
window within the event or 32 readings after it) and false runs (flagged runs not within
32 readings of a label). No model, threshold or alert logic is involved (docs/BENCHMARKS.md,
"A new command's first pulse, and a fault's milder windows forgotten").

    .venv/bin/python benchmarks/seasonal_probe.py [--factor 1.5] [--bound 8] [--slack 0]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulators.synthetic import CLASSES, LabelledSeries, generate

WINDOW, HOP = 32, 4  # the defaults' window and hop, in readings
MAD_TO_SIGMA = 1.4826


def autocorrelation(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    spectrum = np.fft.rfft(x, 2 * len(x))
    a = np.fft.irfft(spectrum * np.conj(spectrum))[: len(x)]
    return a / a[0] if a[0] > 0 else np.zeros(len(x))


def period(x: np.ndarray, max_lag: int) -> int | None:
    x = x[np.isfinite(x)]
    if len(x) < 4 * WINDOW or np.std(x) == 0:
        return None
    a = autocorrelation(x)
    best = None
    for lag in range(max(4, WINDOW // 4), min(max_lag, (len(x) - WINDOW) // 2)):
        peak = a[lag] >= a[lag - 1] and a[lag] >= a[lag + 1]
        strong = a[lag] >= 0.5 and a[lag] - a[1:lag].min() >= 0.3
        if peak and strong and (best is None or a[lag] > a[best] + 0.05):
            best = lag
    return best


def residual(
    x: np.ndarray, history: np.ndarray, at: np.ndarray, lags: list[int]
) -> tuple[float, int]:
    """The window ``at``'s mean absolute residual against ``history`` at the best lag."""
    best, chosen = np.inf, lags[0]
    for lag in lags:
        value = float(np.nanmean(np.abs(x[at] - history[at - lag])))
        if value < best:
            best, chosen = value, lag
    return best, chosen


def flagged(
    series: LabelledSeries, factor: float, bound: float, slack: float, max_lag: int
) -> np.ndarray:
    """Which readings the newest hop of a flagged window holds, any periodic feature."""
    out = np.zeros(series.rows, dtype=bool)
    train = series.train_rows
    for f in range(series.values.shape[1]):
        x = series.values[:, f].astype(np.float64)
        lag = period(x[:train], max_lag)
        if lag is None:
            continue
        spread = max(1, round(slack * lag)) if slack > 0 else 0
        lags = list(range(max(1, lag - spread), lag + spread + 1))
        top = max(lags)
        if train < top + 2 * WINDOW:
            continue
        diffs = np.abs(x[lag:train] - x[: train - lag])
        scale = MAD_TO_SIGMA * float(np.nanmedian(diffs)) or float(np.nanmean(diffs))
        if not scale > 0:
            continue
        largest = (
            max(
                residual(x, x, np.arange(end - WINDOW, end), lags)[0]
                for end in range(top + WINDOW, train + 1, HOP)
            )
            / scale
        )
        history, run = x.copy(), 0
        for end in range(train + HOP, series.rows + 1, HOP):
            value, chosen = residual(x, history, np.arange(end - WINDOW, end), lags)
            bad = value / scale > factor * largest
            run = run + HOP if bad else 0
            new = np.arange(end - HOP, end)
            history[new] = history[new - chosen] if bad and run <= bound * lag else x[new]
            if bad:
                out[new] = True
    return out


def spans(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--factor", type=float, default=1.5, help="x training's largest window")
    ap.add_argument("--bound", type=float, default=8.0, help="periods a fault is replaced for")
    ap.add_argument("--slack", type=float, default=0.0, help="lags within this share of the period")
    ap.add_argument("--max-lag", type=int, default=2048, help="longest period, readings")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = ap.parse_args()
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for seed in args.seeds:
        for name in CLASSES:
            series = generate(name, seed=seed)
            mask = flagged(series, args.factor, args.bound, args.slack, args.max_lag)
            events = spans(series.labels.astype(bool))
            row = totals[name]
            row[0] += len(events)
            row[1] += sum(1 for a, b in events if mask[a : b + WINDOW].any())
            runs = spans(mask)
            row[2] += sum(1 for a, b in runs if not series.labels[max(0, a - WINDOW) : b].any())
    print(f"factor {args.factor}, bound {args.bound}, slack {args.slack}, seeds {args.seeds}")
    print("| class | events hit | false runs |\n|---|---|---|")
    hit = false = 0
    for name, (count, caught, wrong) in totals.items():
        if caught or wrong:
            print(f"| {name} | {caught}/{count} | {wrong} |")
        hit, false = hit + caught, false + wrong
    print(f"\nall classes: {hit} events hit, {false} false runs")


if __name__ == "__main__":
    main()
