"""Sentinel on SKAB, by the benchmark's own protocol, beside the published leaderboard.

Per file, the first 400 rows train (assumed normal, labels unseen) and the rest are
scored online through ``sentinel replay``'s code -- the daemon's own windows, model,
thresholds and alert logic. Point metrics (F1, FAR, MAR) are pooled over the test rows of
all 34 files; the NAB changepoint score follows SKAB's scorer (sentinel.offline.evaluation).
Detectors side by side in one run: the LSTM autoencoder and two baselines through the
same pipeline. Configuration: benchmarks/skab.toml, the same for every file (no per-file
tuning).

    .venv/bin/python benchmarks/skab.py --data ../shared/datasets/skab
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.config import config_to_toml, load_config
from sentinel.logs import configure_logging
from sentinel.offline.csvdata import read_feature_csv
from sentinel.offline.evaluation import (
    EventMetrics,
    NabScores,
    PointMetrics,
    changepoints_from_predictions,
    detection_delays,
    event_metrics,
    events_from_labels,
    nab_scores,
    pooled_point_metrics,
)
from sentinel.offline.replay import replay

TRAIN_ROWS = 400
DETECTORS = ("lstm_forecast", "lstm_ae", "hst", "zscore")
SUBSETS = ("valve1", "valve2", "other")
# From the dataset's README (../shared/datasets/skab/README.md), as published.
LEADERBOARD = [
    ("Conv-AE", 0.78, 13.55, 28.02, 23.61),
    ("MSET", 0.78, 39.73, 14.13, 13.84),
    ("T²+Q (PCA)", 0.76, 26.62, 24.92, 25.35),
    ("LSTM-AE", 0.74, 29.96, 25.92, 23.51),
    ("Vanilla LSTM", 0.54, 12.54, 59.53, 11.31),
    ("Isolation forest", 0.29, 2.56, 82.89, 26.16),
    ("MSCRED", 0.36, 49.94, 69.88, 32.42),
]


@dataclass
class Outcome:
    name: str
    point: PointMetrics
    nab: NabScores  # SKAB's notebooks and leaderboard: 30 s window centred on each changepoint
    nab_readme: NabScores  # the shared dataset README's wording: 60 s opening to the right
    events: EventMetrics  # pooled: every file's labelled and predicted events together
    mean_delay: float | None  # seconds from a fault's start to its first prediction
    seconds: float


def skab_files(data: Path, subsets: list[str]) -> list[Path]:
    files = sorted(p for d in subsets for p in (data / d).glob("*.csv"))
    if subsets == list(SUBSETS) and len(files) != 34:
        raise SystemExit(f"{data}: expected SKAB's 34 experiment files, found {len(files)}")
    if not files:
        raise SystemExit(f"{data}: no CSV files in {', '.join(subsets)}")
    return files


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> None:
    """``section.key=value`` (TOML value syntax), for hyper-parameter searches."""
    for item in overrides:
        key, _, text = item.partition("=")
        section, _, name = key.partition(".")
        raw.setdefault(section, {})[name] = tomllib.loads(f"v = {text}")["v"]


def run(
    detector: str,
    files: list[Path],
    config_path: Path,
    work: Path,
    overrides: list[str],
    keep: Path | None = None,
) -> list[Outcome]:
    raw = tomllib.loads(config_path.read_text())
    apply_overrides(raw, overrides)
    raw.setdefault("model", {})["detector"] = detector
    raw["state_dir"] = str(work / "state")
    config_file = work / f"{detector}.toml"
    config_file.write_text(config_to_toml(raw))
    config = load_config(config_file)
    stream = config.streams[0]
    per_file: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = {
        "verdict": [],
        "alert": [],
    }
    started = time.monotonic()
    for path in files:
        data = read_feature_csv(
            path,
            stream.feature_names,
            carry=("anomaly", "changepoint"),
            max_gap=config.windows.max_gap,
            require_timestamps=True,
        )
        out = (keep or work) / f"{detector}-{path.parent.name}-{path.stem}.csv"
        replay(
            config,
            stream,
            data,
            out,
            device=path.stem,
            train_rows=TRAIN_ROWS,
            torch_device=torch.device("cpu"),
            show_progress=False,
        )
        with out.open() as handle:
            rows = list(csv.DictReader(handle))[TRAIN_ROWS:]
        ts = np.array([datetime.fromisoformat(r["timestamp"]).timestamp() for r in rows])
        labels = np.array([float(r["anomaly"]) for r in rows]).astype(int)
        true_cps = ts[np.array([float(r["changepoint"]) for r in rows]) == 1]
        for kind, column in (("verdict", "is_anomaly"), ("alert", "alert_id")):
            pred = np.array([1 if (r[column] not in ("", "0")) else 0 for r in rows])
            per_file[kind].append((ts, labels, pred, true_cps))
    seconds = time.monotonic() - started
    # The labels themselves as predictions: the ceiling of any point-wise detector's NAB,
    # which is far below 100 because SKAB marks changepoints inside faults that a 0/1
    # prediction of the labels never switches at.
    per_file["labels as predictions"] = [(t, y, y, c) for t, y, _, c in per_file["verdict"]]
    outcomes = []
    for kind, results in per_file.items():
        point = pooled_point_metrics((labels, pred) for _, labels, pred, _ in results)
        cps = [
            (ts, true_cps, np.asarray(changepoints_from_predictions(ts, pred)))
            for ts, _, pred, true_cps in results
        ]
        nab = nab_scores(cps)
        nab_readme = nab_scores(cps, window=60.0, placement="right")
        true_events, predicted, delays = [], [], []
        for ts, labels, pred, _ in results:
            file_true = events_from_labels(ts, labels)
            file_pred = events_from_labels(ts, pred)
            true_events += file_true
            predicted += file_pred
            delays += detection_delays(file_true, file_pred)
        # Files do not overlap in time, so pooling their events is safe.
        events = event_metrics(true_events, predicted)
        delay = sum(delays) / len(delays) if delays else None
        name = f"Sentinel {detector} ({kind})" if kind in ("verdict", "alert") else kind
        outcomes.append(Outcome(name, point, nab, nab_readme, events, delay, seconds))
    return outcomes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/skab"))
    ap.add_argument("--config", type=Path, default=Path(__file__).with_name("skab.toml"))
    ap.add_argument("--detectors", default=",".join(DETECTORS))
    ap.add_argument(
        "--subsets",
        default=",".join(SUBSETS),
        help="folders to score, e.g. valve1 for a hyper-parameter search",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override the config, e.g. --set threshold.multiplier=1.2",
    )
    ap.add_argument("--keep", type=Path, help="keep each file's replay output here")
    args = ap.parse_args()
    configure_logging("warning", "console")
    torch.set_num_threads(1)
    files = skab_files(args.data, [x.strip() for x in args.subsets.split(",")])
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    total = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for detector in args.detectors.split(","):
            got = run(detector.strip(), files, args.config, Path(tmp), args.set, args.keep)
            seen = {o.name for o in outcomes}
            outcomes += [o for o in got if o.name not in seen]
            print(f"{detector}: done in {got[0].seconds:.0f} s", flush=True)
    # The labels-as-predictions row last: it is a reference, not a detector.
    outcomes.sort(key=lambda o: o.name == "labels as predictions")
    total_s = time.monotonic() - total
    print(
        f"\nSKAB, {len(files)} files, first {TRAIN_ROWS} rows train; "
        f"{datetime.now(UTC):%Y-%m-%d}; {platform.machine()}, python "
        f"{platform.python_version()}, torch {torch.__version__}; whole run {total_s:.0f} s"
    )
    print(f"command: .venv/bin/python benchmarks/skab.py {' '.join(sys.argv[1:])}\n")
    print(
        "| Algorithm | F1 | FAR % | MAR % | NAB standard | NAB low FP | NAB low FN "
        "| NAB standard, 60 s right |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for o in outcomes:
        p, n = o.point, o.nab
        print(
            f"| **{o.name}** | {p.f1:.2f} | {100 * p.far:.2f} | {100 * p.mar:.2f} | "
            f"{n.standard:.2f} | {n.low_fp:.2f} | {n.low_fn:.2f} | {o.nab_readme.standard:.2f} |"
        )
    for name, f1, far, mar, nab in LEADERBOARD:
        print(f"| {name} (published) | {f1:.2f} | {far:.2f} | {mar:.2f} | {nab:.2f} | | | |")
    print(
        "\n| Sentinel | faults detected | event precision | predicted events "
        "| mean detection delay |"
    )
    print("|---|---|---|---|---|")
    for o in outcomes:
        e = o.events
        delay = f"{o.mean_delay:.0f} s" if o.mean_delay is not None else "-"
        print(
            f"| {o.name} | {e.detected_events}/{e.true_events} ({e.recall:.2f}) | "
            f"{e.precision:.2f} | {e.predicted_events} | {delay} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
