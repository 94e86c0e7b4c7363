"""Issue #21's development suite: synthetic classes, SKAB and UCR, one config, one command.

Everything goes through ``sentinel.offline.replay.replay`` -- the daemon's own windows,
model, thresholds and alert logic -- with ``SentinelConfig``'s defaults (or ``--config``
FILE for a comparison); per dataset only the stream's name, topic and feature names are set.

* Synthetic (``simulators.synthetic``): one row per class -- event recall and precision of
  alerts (an event is hit when an alert overlaps it or opens within ``GRACE`` readings after
  it), false alerts (alerts that hit no event), mean onset delay in
  readings, rows in alerts per labelled row; the same for per-row verdicts; an overall line.
  A series the config refuses (e.g. ``max_gap`` against 5-minute data) is reported as
  ``refused: <reason>`` and the run goes on. ``--train-fraction F`` trains each class on F
  of its training rows instead (a short probation, as NAB's 15 %): the rows between are
  normal test rows.
* SKAB: ``benchmarks/skab.py``'s protocol (first 400 rows of each file train; F1, FAR, MAR
  pooled; NAB) with the default config and only the feature list.
* UCR (four InternalBleeding series): the archive's rule, a hit when the highest per-row
  score after the training part lies within 100 readings of the anomaly.

    .venv/bin/python benchmarks/detection_suite.py --datasets ../shared/datasets
    .venv/bin/python benchmarks/detection_suite.py --only synthetic --seed 1 --train-fraction 0.3
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import platform
import sys
import tempfile
import time
import tomllib
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import skab  # benchmarks/skab.py: its protocol and scoring, reused as they are

from sentinel.config import ModelConfig, SentinelConfig, config_to_toml, load_config
from sentinel.errors import DataError
from sentinel.logs import configure_logging
from sentinel.offline.csvdata import RecordedData
from sentinel.offline.replay import replay
from sentinel.offline.suite import (
    SeriesScore,
    UcrOutcome,
    id_events,
    label_events,
    pool_scores,
    score_series,
    ucr_outcome,
    ucr_spec,
)
from simulators.synthetic import CLASSES, EPOCH, LabelledSeries, generate

PARTS = ("synthetic", "skab", "ucr")
# Only the feature names come from benchmarks/skab.toml: the suite judges the defaults.
SKAB_FEATURES = tuple(
    f.name for f in load_config(Path(__file__).with_name("skab.toml")).streams[0].features
)
# A labelled event is also hit by an alert that opens within this many readings after it
# (sentinel.offline.suite, "grace"): one default window. Fixed here, not read from the config,
# so that two configs are judged alike.
GRACE = 32
UCR_INTERVAL = 1.0  # the archive gives no time; one reading a second, the defaults' own scale


@dataclass(frozen=True)
class ClassResult:
    series: LabelledSeries
    refused: str | None  # why replay would not run it, or None
    alerts: SeriesScore | None = None
    verdicts: SeriesScore | None = None
    seconds: float = 0.0


class Suite:
    """One config (defaults or a file) applied to every dataset; scratch files in ``work``."""

    def __init__(
        self, raw: dict[str, Any], work: Path, keep: Path | None, retrain: bool = False
    ) -> None:
        self.raw = raw
        self.work = work
        self.keep = keep
        self.retrain = retrain

    def config(self, name: str, features: tuple[str, ...]) -> SentinelConfig:
        """The base config with one stream: only its name, topic and features are set."""
        raw = dict(self.raw)
        raw["state_dir"] = str(self.work / "state")
        raw["streams"] = [{"name": name, "topic": f"{name}/{{device}}", "features": [*features]}]
        return SentinelConfig.model_validate(raw)

    def replay_rows(
        self,
        name: str,
        features: tuple[str, ...],
        values: np.ndarray,
        timestamps: np.ndarray,
        train_rows: int,
    ) -> list[dict[str, str]]:
        """Replay one series; replay's output rows (raises DataError when refused)."""
        config = self.config("suite", features)
        torch.set_num_threads(config.model.torch_threads)
        data = RecordedData(values.astype(np.float32), timestamps, features, config.windows.max_gap)
        out = (self.keep or self.work) / f"{name}.csv"
        replay(
            config,
            config.streams[0],
            data,
            out,
            device=name,
            train_rows=train_rows,
            torch_device=torch.device("cpu"),
            show_progress=False,
            retrain=self.retrain,
        )
        with out.open(newline="") as handle:
            return list(csv.DictReader(handle))

    def synthetic(
        self, name: str, seed: int, quick: bool, train_fraction: float = 1.0
    ) -> ClassResult:
        series = generate(name, seed=seed, quick=quick)
        series = dataclasses.replace(
            series, train_rows=shortened(series.train_rows, train_fraction)
        )
        train_rows = series.train_rows
        started = time.monotonic()
        try:
            rows = self.replay_rows(
                name, series.features, series.values, series.timestamps, train_rows
            )
        except DataError as err:
            return ClassResult(series, f"refused: {err}", seconds=time.monotonic() - started)
        except Exception as err:  # noqa: BLE001 -- one class's crash must not end the run
            traceback.print_exc()
            return ClassResult(series, f"crashed: {type(err).__name__}: {err}")
        spans, ids = id_events([r["alert_id"] for r in rows])
        alerts = score_series(series.labels, spans, GRACE, ids)
        flags = np.array([int(r["is_anomaly"]) for r in rows])
        verdicts = score_series(series.labels, label_events(flags), GRACE)
        return ClassResult(series, None, alerts, verdicts, time.monotonic() - started)

    def skab(self, data: Path, quick: bool) -> list[skab.Outcome]:
        subsets = ["valve2"] if quick else list(skab.SUBSETS)
        raw = dict(self.raw)
        raw["streams"] = [{"name": "skab", "topic": "skab/{device}", "features": [*SKAB_FEATURES]}]
        path = self.work / "skab-suite.toml"
        path.write_text(config_to_toml(raw))
        default = ModelConfig().detector
        detector = str(raw.get("model", {}).get("detector", default))
        return skab.run(detector, skab.skab_files(data, subsets), path, self.work, [], self.keep)

    def ucr(self, path: Path) -> UcrOutcome:
        spec = ucr_spec(path.stem)
        values = np.loadtxt(path, dtype=np.float64).reshape(-1, 1)
        timestamps = EPOCH + UCR_INTERVAL * np.arange(len(values), dtype=np.float64)
        rows = self.replay_rows(spec.name, ("value",), values, timestamps, spec.train_end)
        scores = np.array([float(r["score"]) if r["score"] else np.nan for r in rows])
        return ucr_outcome(spec, scores)


MIN_TRAIN_ROWS = 200  # --train-fraction never trains on fewer rows


def shortened(train_rows: int, fraction: float) -> int:
    """The rows a ``--train-fraction`` run trains on: ``fraction`` of ``train_rows``, at
    least ``MIN_TRAIN_ROWS``, at most all of them."""
    return min(train_rows, max(MIN_TRAIN_ROWS, int(fraction * train_rows)))


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _interval(seconds: float) -> str:
    for unit, size in (("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def print_synthetic(results: list[ClassResult]) -> None:
    print(
        "| class | interval | rows (train) | events | recall | precision | false alerts "
        "| onset delay (readings) | rows in alerts / labelled | verdict recall "
        "| verdict rows / labelled | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        s = r.series
        head = f"| {s.name} | {_interval(s.interval)} | {s.rows} ({s.train_rows}) "
        if r.alerts is None or r.verdicts is None:
            reason = (r.refused or "").replace("|", "/").replace("\n", " ")
            events = len(label_events(s.labels))
            print(head + f"| {events} | {reason} | | | | | | | {r.seconds:.0f} |")
            continue
        a, v = r.alerts, r.verdicts
        print(
            head + f"| {a.events} | {a.detected}/{a.events} | {_f(a.precision)} "
            f"| {a.false_alerts} | {_f(a.mean_delay, 0)} "
            f"| {a.rows_flagged}/{a.rows_labelled} ({_f(a.flagged_ratio)}) "
            f"| {v.detected}/{v.events} | {v.rows_flagged}/{v.rows_labelled} "
            f"({_f(v.flagged_ratio)}) | {r.seconds:.0f} |"
        )
    scored = [r for r in results if r.alerts is not None and r.verdicts is not None]
    a = pool_scores(r.alerts for r in scored if r.alerts is not None)
    v = pool_scores(r.verdicts for r in scored if r.verdicts is not None)
    within = sum(
        1 for r in scored if r.alerts is not None and (r.alerts.flagged_ratio or 0.0) <= 1.5
    )
    print(
        f"| **overall** ({len(scored)} of {len(results)} classes scored) | | "
        f"| {a.events} | {a.detected}/{a.events} ({_f(a.recall)}) | {_f(a.precision)} "
        f"| {a.false_alerts} | {_f(a.mean_delay, 0)} "
        f"| {a.rows_flagged}/{a.rows_labelled} ({_f(a.flagged_ratio)}) "
        f"| {v.detected}/{v.events} | {v.rows_flagged}/{v.rows_labelled} "
        f"({_f(v.flagged_ratio)}) | {sum(r.seconds for r in results):.0f} |"
    )
    print(
        f"\nclasses with rows in alerts <= 1.5 x rows labelled (issue #21's target): {within} "
        f"of {len(results)} ({len(results) - len(scored)} refused or crashed)"
    )


def print_skab(outcomes: list[skab.Outcome]) -> None:
    print(
        "| SKAB | F1 | FAR % | MAR % | NAB standard (30 s centred) | NAB standard (60 s right) "
        "| faults detected | event precision | mean delay |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for o in outcomes:
        p, e = o.point, o.events
        delay = f"{o.mean_delay:.0f} s" if o.mean_delay is not None else "-"
        print(
            f"| {o.name} | {p.f1:.2f} | {100 * p.far:.1f} | {100 * p.mar:.1f} "
            f"| {o.nab.standard:.2f} | {o.nab_readme.standard:.2f} "
            f"| {e.detected_events}/{e.true_events} | {e.precision:.2f} | {delay} |"
        )


def print_ucr(outcomes: list[UcrOutcome | str]) -> None:
    print("| UCR series | train end | anomaly rows (0-based) | highest score at | hit |")
    print("|---|---|---|---|---|")
    hits = 0
    for o in outcomes:
        if isinstance(o, str):
            print(f"| {o} | | | | no |")
            continue
        hits += o.hit
        s = o.spec
        peak = "-" if o.peak is None else str(o.peak)
        hit = "yes" if o.hit else "no"
        print(f"| {s.name} | {s.train_end} | {s.first}-{s.last} | {peak} | {hit} |")
    print(f"\nUCR: {hits} of {len(outcomes)} hit (highest score within 100 readings)")


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({model}), load average {load} at start; python "
        f"{platform.python_version()}, torch {torch.__version__}; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--datasets",
        type=Path,
        default=Path("../shared/datasets"),
        help="folder holding skab/ and ucr/",
    )
    ap.add_argument("--only", default=",".join(PARTS), help="any of synthetic,skab,ucr")
    ap.add_argument("--classes", default="", help=f"synthetic classes: {', '.join(CLASSES)}")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="shorter synthetic series, SKAB valve2/ only, two UCR series",
    )
    ap.add_argument(
        "--config",
        type=Path,
        help="a TOML config to run instead of the defaults (its streams are replaced)",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic series")
    ap.add_argument("--keep", type=Path, help="keep every replay output here")
    ap.add_argument(
        "--train-fraction",
        type=float,
        default=1.0,
        help="train each synthetic class on this fraction of its training rows (at least "
        f"{MIN_TRAIN_ROWS}); the rows after them up to the first anomaly are normal test "
        "rows: what a short training, as NAB's 15 %% probation, does",
    )
    ap.add_argument(
        "--retrain",
        action="store_true",
        help="retrain on the [retrain] schedule in each series' own time, as the daemon and "
        "`sentinel replay` do by default (synthetic classes and UCR; SKAB's files are shorter "
        "than a day)",
    )
    args = ap.parse_args()
    if not 0 < args.train_fraction <= 1:
        ap.error("--train-fraction: between 0 (excluded) and 1")
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] or list(CLASSES)
    if unknown or set(classes) - set(CLASSES):
        ap.error(f"unknown: {sorted(unknown | (set(classes) - set(CLASSES)))}")
    configure_logging("warning", "console")
    raw: dict[str, Any] = tomllib.loads(args.config.read_text()) if args.config else {}
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"machine: {machine()}")
    print(f"command: .venv/bin/python benchmarks/detection_suite.py {' '.join(sys.argv[1:])}")
    print(f"config: {args.config or 'SentinelConfig defaults'}\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="sentinel-suite-") as tmp:
        suite = Suite(raw, Path(tmp), args.keep, args.retrain)
        if "synthetic" in parts:
            results = []
            for name in classes:
                results.append(suite.synthetic(name, args.seed, args.quick, args.train_fraction))
                print(f"  {name}: {results[-1].seconds:.0f} s", file=sys.stderr, flush=True)
            short = f", trained on {args.train_fraction:g} of the training rows"
            print(
                f"## Synthetic classes (seed {args.seed}{', quick' if args.quick else ''}"
                f"{short if args.train_fraction < 1 else ''})\n"
            )
            print(
                f"An event is hit when an alert overlaps it or opens up to {GRACE} readings "
                "after its last row; onset delay from its first row.\n"
            )
            print_synthetic(results)
            print(flush=True)
        if "skab" in parts:
            began = time.monotonic()
            outcomes = suite.skab(args.datasets / "skab", args.quick)
            print(f"## SKAB ({time.monotonic() - began:.0f} s)\n")
            print_skab(outcomes)
            print(flush=True)
        if "ucr" in parts:
            began = time.monotonic()
            files = sorted((args.datasets / "ucr").glob("*_UCR_Anomaly_*.txt"))
            if not files:
                raise SystemExit(f"{args.datasets / 'ucr'}: no *_UCR_Anomaly_*.txt series")
            ucr: list[UcrOutcome | str] = []
            for path in files[:2] if args.quick else files:
                try:
                    ucr.append(suite.ucr(path))
                except DataError as err:
                    ucr.append(f"{path.stem}: refused: {err}")
            print(f"## UCR ({time.monotonic() - began:.0f} s)\n")
            print_ucr(ucr)
    print(f"\ntotal wall time: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
