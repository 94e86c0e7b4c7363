"""What a noise check would catch, and what it would raise falsely, before anyone builds it.

Issue #21's noise bursts (a sensor's noise grows several-fold for a minute or two) are
missed where something else sets the score's tail: on the synthetic ``telemetry_modes``
series every command moves the channel with one reading the forecaster cannot anticipate,
and a five-fold noise burst scores 32-39 against a threshold of 38-44. A window's *robust*
noise -- per feature, the median absolute difference between consecutive readings -- is
untouched by such single steps (one or two large differences among 31) and rises with noise
on every reading. This probe judges every window of the data against the largest such
median any training window of the same feature showed, times ``--factor``, pooled over a
stream's devices as a model's statistics are, and counts:

* the simulated fleet (``simulators.fleet``, the scenario of ``fleet_offline.py``: 12
  pumps, 800 clean readings, 2,400 with faults, windows of 32 at hop 4, training on the first
  750): noise bursts hit, other faults hit, and false episodes (flagged windows outside
  every fault and its window span, runs closer than 8 windows counted once);
* the synthetic suite (``simulators.synthetic``, every class, seeds 0-4): labelled events
  hit, false episodes;
* SKAB (``--skab DIR``, the first 400 rows of each file train): faults hit, false
  episodes, and how many flagged windows lie inside a labelled fault.

No model, threshold or alert logic is involved: this measures the statistic alone, as a
prototype's evidence (docs/BENCHMARKS.md, "A noise check, probed").

``--statistic spread`` probes a window's *spread* instead: per feature, the standard
deviation of its readings about their least-squares line, against the largest of any
training window times ``--factor`` -- what an oscillation whose amplitude or frequency
changed does to a window, where its one-step forecast and its consecutive differences
hardly move (docs/BENCHMARKS.md, "A window's spread, probed"). A feature whose training
readings mostly repeat the one before (a set point, a counter, a command: its spread is
its steps) is not judged by it. ``--train-fraction`` trains the synthetic classes on that
share of their training rows, as ``detection_suite.py`` does.

    .venv/bin/python benchmarks/noise_probe.py [--factor 1.5] [--skab ../shared/datasets/skab]
        [--statistic rough|spread] [--train-fraction 1.0]
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.config import load_config
from simulators.fleet import FEATURES, FleetSimulator
from simulators.synthetic import CLASSES, generate

WINDOW, HOP = 32, 4
SEPARATE = 8  # flagged windows further apart than this are separate episodes
# The feature names the detection suite reads SKAB with (benchmarks/skab.toml).
SKAB_FEATURES = tuple(
    f.name for f in load_config(Path(__file__).with_name("skab.toml")).streams[0].features
)


def robust_noise(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, ...) readings -> window ends (N,) and each window's median absolute consecutive
    difference (N, ...), windows of WINDOW at hop HOP."""
    ends = np.arange(WINDOW - 1, len(values), HOP)
    steps = np.abs(np.diff(values, axis=0))
    medians = np.stack([np.nanmedian(steps[e - WINDOW + 1 : e], axis=0) for e in ends])
    return ends, medians


def spread(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, F) readings -> window ends (N,) and each window's standard deviation of each
    feature about its least-squares line (N, F), windows of WINDOW at hop HOP."""
    ends = np.arange(WINDOW - 1, len(values), HOP)
    t = np.arange(WINDOW) - (WINDOW - 1) / 2
    out = np.empty((len(ends), values.shape[1]))
    for k, e in enumerate(ends):
        window = values[e - WINDOW + 1 : e + 1]
        centred = window - window.mean(axis=0)
        out[k] = (centred - np.outer(t, (t @ centred) / (t @ t))).std(axis=0)
    return ends, out


STATISTICS = {"rough": robust_noise, "spread": spread}


def episodes(flagged: Iterable[int]) -> int:
    count, last = 0, -(10**9)
    for i in flagged:
        if i - last > SEPARATE:
            count += 1
        last = i
    return count


def fleet(seed: int, factor: float, step: float = 5.0) -> tuple[int, int, int, int]:
    """(noise bursts hit, noise bursts, other faults hit, false episodes)."""
    warm, test, train = 800, 2400, 750
    sim = FleetSimulator(
        12, seed=seed, step=step, start_ts=1_709_251_200.0, anomaly_rate=2.0,
        warmup=warm * step, day_length=3600.0,
    )  # fmt: skip
    steps = sim.steps()
    readings = [next(steps) for _ in range(warm + test)]
    times = np.array([s[0].ts for s in readings])
    values = np.array([[[r.values[f] for f in FEATURES] for r in s] for s in readings])
    ends, noise = robust_noise(values)  # (N, devices, F)
    limit = noise[ends < train].max(axis=(0, 1))
    flag: np.ndarray = np.any(noise > factor * np.where(limit > 0, limit, np.inf), axis=2)
    span = WINDOW * step
    hit = bursts = others = false = 0
    at = times[ends]
    for d, device in enumerate(sim.devices):
        truth = [e for e in sim.truth if e.device == device]
        live = [int(i) for i in np.flatnonzero(flag[:, d] & (ends >= warm))]
        false += episodes(
            i for i in live if not any(e.start <= at[i] <= e.end + span for e in truth)
        )
        for event in truth:
            if event.start + span >= times[-1]:
                continue
            seen = any(event.start <= at[i] <= event.end + span for i in live)
            if event.kind == "noise_burst":
                bursts += 1
                hit += seen
            else:
                others += seen
    return hit, bursts, others, false


def labelled(
    values: np.ndarray, labels: np.ndarray, train_rows: int, factor: float, statistic: str = "rough"
) -> tuple[int, int, int, int, int]:
    """(events hit, events, false episodes, flagged windows, of them inside a label)."""
    ends, noise = STATISTICS[statistic](values)
    trained = ends < train_rows
    limit = np.nanmax(noise[trained], axis=0)
    if statistic == "spread":  # a channel holding its value between steps: not judged
        holds = (np.diff(values[:train_rows], axis=0) == 0).mean(axis=0) >= 0.5
        limit = np.where(holds, 0.0, limit)
    flag = (noise > factor * np.where(limit > 0, limit, np.inf)).any(axis=1) & ~trained
    edges = np.flatnonzero(np.diff(np.r_[0, labels.astype(int), 0])).reshape(-1, 2)
    inside = np.zeros(len(ends), dtype=bool)
    hit = 0
    for first, end in edges:
        near = (ends >= first) & (ends <= end + WINDOW)
        inside |= near
        hit += bool(flag[near].any())
    false = episodes(int(i) for i in np.flatnonzero(flag & ~inside))
    return hit, len(edges), false, int(flag.sum()), int((flag & labels[ends]).sum())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--factor", type=float, default=1.5, help="x training's largest median")
    ap.add_argument("--skab", type=Path, help="SKAB's directory (valve1, valve2, other)")
    ap.add_argument("--statistic", choices=sorted(STATISTICS), default="rough")
    ap.add_argument(
        "--train-fraction",
        type=float,
        default=1.0,
        help="synthetic classes: train on this share of their training rows (at least 200)",
    )
    args = ap.parse_args()
    print(
        f"{args.statistic}, factor {args.factor:g}, windows of {WINDOW} at hop {HOP}, "
        f"synthetic trained on {args.train_fraction:g} of their training rows\n"
    )

    totals = np.zeros(4, dtype=int)
    for seed in range(11, 19) if args.statistic == "rough" else ():
        row = fleet(seed, args.factor)
        totals += row
        print(f"fleet seed {seed}: noise bursts {row[0]}/{row[1]}, other faults hit {row[2]}, "
              f"false episodes {row[3]}")  # fmt: skip
    if args.statistic == "rough":
        print(f"fleet seeds 11-18: noise bursts {totals[0]}/{totals[1]}, other faults hit "
              f"{totals[2]}, false episodes {totals[3]}\n")  # fmt: skip

    hit = events = false = 0
    print("| synthetic class | seeds 0-4: events hit/events, false episodes |\n|---|---|")
    for name in CLASSES:
        cells = []
        for seed in range(5):
            series = generate(name, seed=seed)
            values = np.asarray(series.values, dtype=np.float64)
            values = values[:, None] if values.ndim == 1 else values
            labels = np.asarray(series.labels, bool)
            train = min(series.train_rows, max(200, int(args.train_fraction * series.train_rows)))
            labels[:train] = False  # rows after a shortened training up to the first: normal
            got = labelled(values, labels, train, args.factor, args.statistic)
            hit, events, false = hit + got[0], events + got[1], false + got[2]
            cells.append(f"{got[0]}/{got[1]}, {got[2]}")
        print(f"| {name} | {'; '.join(cells)} |")
    print(f"\nsynthetic: {hit}/{events} events hit, {false} false episodes")

    if args.skab:
        files = sorted(
            p for d in ("valve1", "valve2", "other") for p in (args.skab / d).glob("*.csv")
        )
        sums = np.zeros(5, dtype=int)
        for path in files:
            with path.open(newline="") as handle:
                rows = list(csv.DictReader(handle, delimiter=";"))
            values = np.array([[float(r[c]) for c in SKAB_FEATURES] for r in rows])
            labels = np.array([float(r["anomaly"]) > 0 for r in rows])
            sums += labelled(values, labels, 400, args.factor, args.statistic)
        print(f"\nSKAB, {len(files)} files: faults hit {sums[0]}/{sums[1]}, false episodes "
              f"{sums[2]}, flagged windows {sums[3]} ({sums[4]} inside a fault)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
