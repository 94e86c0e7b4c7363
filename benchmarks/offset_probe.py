"""What an offset check on the forecaster's signed errors would catch, before anyone builds it.

Issue #21: a lasting offset on one channel -- a flow 4 noise sigmas down for 150 readings --
is found at its onset, if at all, and then the forecaster follows it: its squared error
stays at 2-3 times its normal median for the whole event but under a threshold set for
single-reading surprises (``level_shift_anomaly`` seed 2: 0 of 2 events; ``amplitude_change``
at 30 %). What the squared error loses is the sign: a forecaster that has learnt a channel's
dynamics errs on both sides of normal readings, but on one side throughout an offset it
cannot explain (it pulls back towards the levels it was trained on). The relation check
judges window means' residuals this way between channels (``[relations] sustained``); this
is the same statistic on the forecaster's own residuals, so it needs no partner channel.

Per series: the default config's forecaster is trained as replay trains it (the detection
suite's own replay), then every window of the series (hop 4) gives each scored feature's
*signed* mean error over its newest ``score_steps`` predictions, and those are averaged over
the windows one window's readings span (8 at window 32, hop 4). A feature's limit is the
largest such average, in absolute value, over the training windows; a window is flagged
where its average is beyond ``--factor`` times the limit and its own mean beyond the limit
on the same side. Counted, against the replay's own alerts:

* synthetic (``simulators.synthetic``): events flagged, of them events the alerts missed,
  and false episodes (flagged windows holding no labelled reading in their sustained span,
  runs closer than 8 windows once), of them outside every alert;
* SKAB (``--skab DIR``; the first 400 rows of each file train): faults flagged, of them
  missed by the alerts, false episodes, and flagged windows inside and outside faults.

No check, threshold or alert logic is changed: this measures the statistic alone, as a
prototype's evidence (docs/BENCHMARKS.md, "Lasting offsets on the forecaster's signed
errors, probed").

    .venv/bin/python benchmarks/offset_probe.py [--seeds 0 1 2 3 4] [--train-fraction F]
        [--classes A,B] [--skab ../shared/datasets/skab] [--factors 1.5 2 2.5 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from detection_suite import SKAB_FEATURES, Suite, machine, shortened

from sentinel.logs import configure_logging
from sentinel.model.lstm_forecast import LstmForecastDetector, forecast_residuals
from sentinel.offline.csvdata import read_feature_csv
from simulators.synthetic import CLASSES, generate

HOP = 4
SEPARATE = 8  # flagged windows further apart than this are separate episodes
SKAB_TRAIN = 400

_trained: list[LstmForecastDetector] = []
_fit = LstmForecastDetector.fit.__func__  # type: ignore[attr-defined]


def _capture(cls: type[LstmForecastDetector], *args: Any, **kwargs: Any) -> LstmForecastDetector:
    detector: LstmForecastDetector = _fit(cls, *args, **kwargs)
    _trained.append(detector)
    return detector


LstmForecastDetector.fit = classmethod(_capture)  # type: ignore[method-assign,assignment]


def signed_means(
    detector: LstmForecastDetector, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Window ends (N,) at hop HOP and each window's signed mean error (N, F) over its newest
    ``score_steps`` predictions, in the model's scaled units."""
    meta = detector.meta
    window, steps = meta.window, meta.score_steps
    starts = np.arange(0, len(values) - window + 1, HOP)
    windows = np.stack([values[s : s + window] for s in starts]).astype(np.float32)
    module = detector.module

    def means(scaled: torch.Tensor) -> np.ndarray:
        return forecast_residuals(module, scaled, steps).mean(dim=1).double().cpu().numpy()

    parts = detector._batched(windows, means)  # a probe, not the product
    assert parts is not None
    return starts + window - 1, np.concatenate(parts)


SKIP_RELATIVE = False  # --skip-relative


def judged(detector: LstmForecastDetector) -> list[int]:
    """Features the score judges: not constant in training, not stepped or commanding (and
    with --skip-relative, not judged relative to their window: the wandering ones)."""
    meta = detector.meta
    skip = {*meta.constant_features, *meta.stepped_features, *meta.commanding_features}
    if SKIP_RELATIVE:
        skip |= set(meta.relative_features)
    return [f for f, name in enumerate(meta.features) if name not in skip]


def flags(
    detector: LstmForecastDetector, values: np.ndarray, train_rows: int, factor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Window ends and whether each is flagged (see the module doc)."""
    ends, means = signed_means(detector, values)
    span = detector.meta.window // HOP
    kernel = np.ones(span) / span
    sustained = np.stack(
        [np.convolve(means[:, f], kernel)[: len(means)] for f in range(means.shape[1])], axis=1
    )
    sustained[: span - 1] = 0.0  # not a full span yet
    trained = ends < train_rows
    limit = (
        np.abs(sustained[trained]).max(axis=0) if trained.any() else np.full(means.shape[1], np.inf)
    )
    limit = np.maximum(limit, 1e-9)
    features = judged(detector)
    hit = np.zeros(len(ends), dtype=bool)
    for f in features:
        same_side = np.sign(means[:, f]) == np.sign(sustained[:, f])
        hit |= (
            (np.abs(sustained[:, f]) > factor * limit[f])
            & (np.abs(means[:, f]) > limit[f])
            & same_side
        )
    hit &= ~trained
    return ends, hit


def spans(labels: np.ndarray) -> list[tuple[int, int]]:
    out, i = [], 0
    while i < len(labels):
        if labels[i]:
            j = i
            while j + 1 < len(labels) and labels[j + 1]:
                j += 1
            out.append((i, j))
            i = j + 1
        else:
            i += 1
    return out


def episodes(ends: np.ndarray) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for e in ends:
        if out and e - out[-1][1] <= SEPARATE * HOP:
            out[-1] = (out[-1][0], int(e))
        else:
            out.append((int(e), int(e)))
    return out


def count(
    ends: np.ndarray,
    hit: np.ndarray,
    labels: np.ndarray,
    alerted: np.ndarray,
    reach: int,
    scored_from: int,
) -> dict[str, int]:
    """Events flagged (and of them missed by the alerts), false episodes (and outside
    alerts), flagged windows inside and outside events."""
    events = spans(labels)
    tally: dict[str, int] = defaultdict(int)
    tally["events"] = len(events)
    for a, b in events:
        near = hit[(ends >= a) & (ends <= b + reach)]
        caught = bool(near.any())
        missed = not alerted[a : b + 33].any()
        tally["flagged"] += caught
        tally["missed_by_alerts"] += missed
        tally["flagged_missed"] += caught and missed
    clean = np.array([not labels[max(0, e - reach) : e + 1].any() for e in ends])
    tally["windows_in_events"] = int((hit & ~clean).sum())
    tally["windows_outside"] = int((hit & clean).sum())
    for first, last in episodes(ends[hit & clean]):
        tally["false"] += 1
        tally["false_outside_alerts"] += not alerted[first - reach : last + 1].any()
    # Rows, as SKAB scores them: each flagged window predicts its newest HOP rows. "or":
    # the alerts' rows or those; "hold": the alerts' rows, and flagged rows only where they
    # continue an alert's (an offset check that holds an alert open but opens none).
    flagged = np.zeros(len(labels), dtype=bool)
    for e in ends[hit]:
        flagged[max(0, e - HOP + 1) : e + 1] = True
    held = alerted.copy()
    for i in range(1, len(held)):
        held[i] = held[i] or (flagged[i] and held[i - 1])
    test = np.zeros(len(labels), dtype=bool)
    test[scored_from:] = True
    for name, predicted in (("alerts", alerted), ("or", alerted | flagged), ("hold", held)):
        tally[f"{name}_tp"] = int((predicted & labels & test).sum())
        tally[f"{name}_fp"] = int((predicted & ~labels & test).sum())
        tally[f"{name}_fn"] = int((~predicted & labels & test).sum())
        tally[f"{name}_tn"] = int((~predicted & ~labels & test).sum())
    return tally


def run_series(
    suite: Suite,
    name: str,
    features: tuple[str, ...],
    values: np.ndarray,
    timestamps: np.ndarray,
    labels: np.ndarray,
    train_rows: int,
    factors: list[float],
) -> dict[float, dict[str, int]]:
    _trained.clear()
    rows = suite.replay_rows(name, features, values, timestamps, train_rows)
    detector = _trained[0]
    alerted = np.array([bool(r["alert_id"]) for r in rows])
    reach = detector.meta.window + HOP * (detector.meta.window // HOP - 1)
    out = {}
    for factor in factors:
        ends, hit = flags(detector, values, train_rows, factor)
        out[factor] = count(ends, hit, labels, alerted, reach, train_rows)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--classes", default="", help="synthetic classes (default all)")
    ap.add_argument("--train-fraction", type=float, default=1.0)
    ap.add_argument("--skab", type=Path, help="SKAB's folder: its 34 files too")
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--factors", type=float, nargs="+", default=[1.5, 2.0, 2.5, 3.0])
    ap.add_argument(
        "--skip-relative",
        action="store_true",
        help="leave out the features the model judges relative (those that wandered in training)",
    )
    args = ap.parse_args()
    global SKIP_RELATIVE
    SKIP_RELATIVE = args.skip_relative
    configure_logging("warning", "console")
    print(machine())
    print("command:", " ".join(["benchmarks/offset_probe.py", *sys.argv[1:]]))
    totals: dict[str, dict[float, dict[str, int]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(int))
    )
    per_class: dict[float, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    with tempfile.TemporaryDirectory() as tmp:
        suite = Suite({}, Path(tmp), None)
        if not args.no_synthetic:
            names = [c for c in args.classes.split(",") if c] or list(CLASSES)
            for cls in names:
                for seed in args.seeds:
                    series = generate(cls, seed=seed)
                    train = shortened(series.train_rows, args.train_fraction)
                    result = run_series(
                        suite,
                        cls,
                        series.features,
                        series.values,
                        series.timestamps,
                        np.asarray(series.labels, dtype=bool),
                        train,
                        args.factors,
                    )
                    for factor, tally in result.items():
                        for key, value in tally.items():
                            totals["synthetic"][factor][key] += value
                        if tally["false"] or tally["flagged_missed"]:
                            per_class[factor][cls].append(
                                f"s{seed}: +{tally['flagged_missed']} events, "
                                f"{tally['false']} false ({tally['false_outside_alerts']} new)"
                            )
        if args.skab:
            for path in sorted(args.skab.glob("*/*.csv")):
                if path.parent.name == "anomaly-free":
                    continue
                data = read_feature_csv(
                    path, SKAB_FEATURES, carry=("anomaly",), require_timestamps=True
                )
                labels = np.asarray(data.carried["anomaly"], dtype=float) > 0
                assert data.timestamps is not None  # require_timestamps
                result = run_series(
                    suite,
                    f"skab-{path.parent.name}-{path.stem}",
                    SKAB_FEATURES,
                    data.values,
                    data.timestamps,
                    labels,
                    SKAB_TRAIN,
                    args.factors,
                )
                for factor, tally in result.items():
                    for key, value in tally.items():
                        totals["skab"][factor][key] += value
    keys = (
        "events",
        "flagged",
        "missed_by_alerts",
        "flagged_missed",
        "false",
        "false_outside_alerts",
        "windows_in_events",
        "windows_outside",
    )
    for part, by_factor in totals.items():
        print(f"\n## {part}\n")
        print("| factor | " + " | ".join(keys) + " |")
        print("|---" * (len(keys) + 1) + "|")
        for factor in sorted(by_factor):
            print(f"| {factor} | " + " | ".join(str(by_factor[factor][k]) for k in keys) + " |")
    for part, by_factor in totals.items():
        print(f"\n## {part}: rows (F1 / FAR % / MAR %)\n")
        print("| factor | alerts | alerts or flagged | alerts held by flagged |")
        print("|---|---|---|---|")
        for factor in sorted(by_factor):
            cells = []
            for name in ("alerts", "or", "hold"):
                t = {k: by_factor[factor][f"{name}_{k}"] for k in ("tp", "fp", "fn", "tn")}
                f1 = 2 * t["tp"] / max(1, 2 * t["tp"] + t["fp"] + t["fn"])
                far = 100 * t["fp"] / max(1, t["fp"] + t["tn"])
                mar = 100 * t["fn"] / max(1, t["fn"] + t["tp"])
                cells.append(f"{f1:.2f} / {far:.1f} / {mar:.1f}")
            print(f"| {factor} | " + " | ".join(cells) + " |")
    for factor in sorted(per_class):
        print(f"\nfactor {factor}, synthetic classes with new events or false episodes:")
        for cls, notes in per_class[factor].items():
            print(f"  {cls}: " + "; ".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
