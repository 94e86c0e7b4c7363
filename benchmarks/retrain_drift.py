"""False alerts under slow concept drift, with and without scheduled retraining, one run.

A simulated pump fleet (simulators/fleet.py, ``drift``: pump wear grows every simulated
day, so pressure, current and vibration move away from what the first model saw) is
replayed through the daemon's own pipeline code, driven by the data's timestamps: the
first day trains the initial model, the following days are scored. Both arms see the same
readings and start from the same model; one retrains on the ``[retrain]`` schedule (daily
by default) exactly as the daemon would (sentinel/retrain/clock.py), the other never does.

An alert is false when no injected fault on its device overlaps it (with one window of
slack on each side). Reported per scored day, per device.

    .venv/bin/python benchmarks/retrain_drift.py            # 3 pumps, 6 days, 4-8 min
    .venv/bin/python benchmarks/retrain_drift.py --days 4 --devices 2   # quicker
    .venv/bin/python benchmarks/retrain_drift.py --thresholds fixed     # model-only comparison
    .venv/bin/python benchmarks/retrain_drift.py --thresholds calibration  # fixed + re-baselining
    .venv/bin/python benchmarks/retrain_drift.py --thresholds frozen  # per device, kept per model
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import math
import platform
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.config import SentinelConfig, ThresholdConfig
from sentinel.logs import configure_logging
from sentinel.model import Detector, train_detector, training_options
from sentinel.records import Alert, AuditEvent, Delivery, Reading, Verdict, Window
from sentinel.retrain.clock import DataClockRetrainer
from sentinel.worker.pipeline import Pipeline, PipelineTap
from simulators.fleet import DAY, FEATURES, AnomalyEvent, FleetSimulator

_PASS = 64  # simulator steps per pipeline pass (the daemon drains up to 256 deliveries)


@dataclass
class Arm:
    name: str
    alerts: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    flagged: list[tuple[str, float, float]] = field(default_factory=list)  # anomalous windows
    windows: int = 0
    runs: list[str] = field(default_factory=list)
    accepted: list[float] = field(default_factory=list)  # data time of each accepted run
    seconds: float = 0.0


# --thresholds fixed: every device stays on its model's own calibration threshold (never
# warms up to a per-device quantile, never re-baselines), so what a stale model does to the
# false alerts is not hidden by each device's threshold climbing with the drift.
FIXED_THRESHOLDS = {"warmup": 1_000_000, "history": 1_000_000, "rebaseline_after": 0}
# --thresholds calibration: the same, but a lasting rise of a device's score still
# re-baselines it after rebaseline_after (each time an audited, alerting episode), and the
# re-baselined span becomes training data.
CALIBRATION_THRESHOLDS = {"warmup": 1_000_000, "history": 1_000_000}
# --thresholds frozen: each device's own threshold, learnt once per model (seeded at a swap
# from the run's held-back windows; for the first model, its first warmup normal windows)
# and kept until the next model, never re-baselined (threshold.adapt = false). Per device,
# unlike fixed, so one device whose normal scores run high does not decide the comparison.
FROZEN_THRESHOLDS = {"adapt": False, "rebaseline_after": 0}
THRESHOLDS = {
    "adaptive": {},
    "fixed": FIXED_THRESHOLDS,
    "calibration": CALIBRATION_THRESHOLDS,
    "frozen": FROZEN_THRESHOLDS,
}


def make_config(args: argparse.Namespace, state_dir: Path, shadow: float) -> SentinelConfig:
    return SentinelConfig.model_validate(
        {
            "state_dir": str(state_dir),
            "threshold": {**THRESHOLDS[args.thresholds], "multiplier": args.multiplier},
            "streams": [{"name": "pump", "topic": "plant/{device}/pump", "features": FEATURES}],
            "windows": {"length": 32, "hop": 4, "max_gap": 3 * args.step},
            "model": {
                "epochs": args.epochs,
                "train_stride": 4,
                "device": "cpu",
                "seed": args.model_seed,
            },
            "cold_start": {"readings": 1000},
            "retrain": {
                "every": args.every,
                "reservoir_age": args.reservoir_days * DAY,
                "reservoir_rows": 1_000_000,
                "min_rows": 2000,
                "exclusion_margin": args.margin,
                "shadow": shadow,
                "tolerance": args.tolerance,
            },
        }
    )


def simulate(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, list[str], list[Any]]:
    sim = FleetSimulator(
        args.devices,
        seed=args.seed,
        step=args.step,
        anomaly_rate=args.anomaly_rate,
        warmup=DAY,  # the training day is clean
        drift=args.drift,
    )
    steps = int((args.days + 1) * DAY / args.step)
    values = np.empty((steps, args.devices, len(FEATURES)), dtype=np.float32)
    ts = np.empty(steps)
    for k, step in zip(range(steps), sim.steps(), strict=False):
        ts[k] = step[0].ts
        for d, reading in enumerate(step):
            values[k, d] = [reading.values[f] for f in FEATURES]
    return ts, values, sim.devices, list(sim.truth)


def run_arm(
    arm: Arm,
    config: SentinelConfig,
    detector: Detector,
    ts: np.ndarray,
    values: np.ndarray,
    devices: list[str],
    first: int,
    retrain: bool,
    keep_anomalies: bool = False,
) -> None:
    started = time.monotonic()

    def observe(verdict: Verdict, alert: Alert | None) -> None:
        arm.windows += 1
        if verdict.is_anomaly:
            w = verdict.score.window
            arm.flagged.append((w.device, w.start_ts, w.end_ts))
        if alert is not None:
            end = alert.ended_at or alert.updated_at
            arm.alerts[alert.uid] = (alert.device, alert.started_at, end)

    clock = None
    if retrain:
        clock = DataClockRetrainer(
            config, torch.device("cpu"), start_ts=float(ts[first]), initial=[detector]
        )
        clock.seed(
            [
                Reading("pump", dev, float(ts[k]), tuple(map(float, values[k, d])))
                for k in range(first)
                for d, dev in enumerate(devices)
            ]
        )
    pipeline = Pipeline(
        config,
        sink=lambda batch: None,
        request_training=lambda job: None,
        models={"pump": detector},
        observer=observe,
        tap=(Unfiltered(clock.tap) if keep_anomalies else clock.tap) if clock else None,
    )
    for start in range(first, len(ts), _PASS):
        stop = min(start + _PASS, len(ts))
        deliveries = [
            Delivery(
                "sim",
                tuple(
                    Reading("pump", dev, float(ts[k]), tuple(map(float, values[k, d])))
                    for d, dev in enumerate(devices)
                ),
                (),
                None,
                float(ts[k]),
            )
            for k in range(start, stop)
        ]
        pipeline.process(deliveries)
        if clock is not None:
            clock.tick(float(ts[stop - 1]), pipeline.install_model)
    if clock is not None:
        arm.runs = [
            f"{datetime.fromtimestamp(t, UTC):%m-%d %H:%M} {o.status}: {o.reason}"
            for t, o in clock.outcomes
        ]
        arm.accepted = [t for t, o in clock.outcomes if o.status == "accepted"]
        clock.close()
    arm.seconds = time.monotonic() - started


class Unfiltered:
    """``--keep-anomalies``: the reservoir stores every reading as clean, nothing left out
    -- the upper bound of what any rule for leaving anomalies out of training could give
    against a drift, since faults then train too."""

    def __init__(self, tap: PipelineTap) -> None:
        self._tap = tap

    def observe(
        self,
        readings: Sequence[Reading],
        flagged: Sequence[Window],
        alerts: Sequence[Alert],
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        self._tap.observe(readings, (), (), audit)

    def latest(self, stream: str, per_device: int) -> Sequence[Reading]:
        return self._tap.latest(stream, per_device)

    def first_seen(self, stream: str) -> Mapping[str, float]:
        return self._tap.first_seen(stream)

    def tick(self) -> None:
        self._tap.tick()


def false_spans(
    spans: list[tuple[str, float, float]], truth: list[AnomalyEvent], slack: float
) -> tuple[list[tuple[str, float, float]], int]:
    """Spans (alerts or flagged windows) overlapping no fault; faults overlapped."""
    caught: set[int] = set()
    false: list[tuple[str, float, float]] = []
    by_device: dict[str, list[tuple[int, AnomalyEvent]]] = {}
    for i, e in enumerate(truth):
        by_device.setdefault(e.device, []).append((i, e))
    for span in spans:
        device, start, end = span
        hits = [
            i
            for i, e in by_device.get(device, ())
            if e.start - slack <= end and start <= e.end + slack
        ]
        caught.update(hits)
        if not hits:
            false.append(span)
    return false, len(caught)


def false_per_day(
    spans: list[tuple[str, float, float]],
    truth: list[AnomalyEvent],
    day0: float,
    days: int,
    slack: float,
) -> tuple[list[int], int]:
    """Spans (alerts or flagged windows) overlapping no fault, by day; faults overlapped."""
    false, caught = false_spans(spans, truth, slack)
    per_day = [0] * days
    for _, start, _ in false:
        per_day[min(days - 1, int((start - day0) // DAY))] += 1
    return per_day, caught


def since_swap(
    windows: list[tuple[str, float, float]],
    swaps: list[float],
    end: float,
    windows_per_second: float,
    bin_seconds: float,
    bins: int,
) -> list[float]:
    """False windows by time since the latest accepted run, % of the windows in each bin
    (every bin pooled over all swaps; the runs' data time, not a shadow period's end). The
    last bin takes everything from its start on: after a rejected run, the time since the
    latest accepted one runs past the schedule's interval."""
    counts = [0] * bins
    seconds = [0.0] * bins
    bounds = [*swaps, end]
    for begin, stop in itertools.pairwise(bounds):
        for b in range(bins):
            lo = begin + b * bin_seconds
            hi = stop if b == bins - 1 else min(stop, begin + (b + 1) * bin_seconds)
            seconds[b] += max(0.0, hi - lo)
    for _, start, _ in windows:
        k = bisect.bisect_right(swaps, start) - 1
        if k < 0:
            continue
        counts[min(bins - 1, int((start - swaps[k]) // bin_seconds))] += 1
    return [
        100 * c / (s * windows_per_second) if s else 0.0
        for c, s in zip(counts, seconds, strict=True)
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=3)
    ap.add_argument("--days", type=int, default=6, help="scored days after the training day")
    ap.add_argument("--step", type=float, default=10.0, help="simulated seconds per reading")
    ap.add_argument("--drift", type=float, default=0.1, help="pump wear per simulated day")
    ap.add_argument("--anomaly-rate", type=float, default=0.25, help="faults per device-hour")
    ap.add_argument("--every", type=float, default=DAY, help="retraining interval, seconds")
    ap.add_argument("--reservoir-days", type=float, default=2.0)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--margin", type=float, default=120.0, help="retrain.exclusion_margin, s")
    ap.add_argument("--seed", type=int, default=7, help="the simulated fleet's seed")
    ap.add_argument("--model-seed", type=int, default=0, help="model.seed of every model")
    ap.add_argument(
        "--tolerance", type=float, default=0.02, help="retrain.tolerance (promotion margin)"
    )
    ap.add_argument(
        "--shadow",
        type=float,
        default=3600.0,
        help="retrain.shadow, s, of the third arm (the second swaps at once)",
    )
    ap.add_argument(
        "--multiplier",
        type=float,
        default=ThresholdConfig().multiplier,
        help="threshold.multiplier: headroom over the threshold quantile, every arm",
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=2.0,
        help="percent of a day's windows allowed to be judged anomalous with no fault nearby",
    )
    ap.add_argument(
        "--thresholds",
        choices=tuple(THRESHOLDS),
        default="adaptive",
        help="adaptive: the daemon's per-device thresholds (default); fixed: every device "
        "judged against its model's calibration threshold only, as a model-only comparison; "
        "calibration: fixed, but re-baselining after a lasting rise; frozen: each device's "
        "own threshold, learnt once per model and kept until the next "
        "(threshold.adapt = false, no re-baselining)",
    )
    ap.add_argument(
        "--keep-anomalies",
        action="store_true",
        help="retraining arms train on every reading, anomalous windows and alerts included "
        "(an upper bound for any exclusion rule)",
    )
    ap.add_argument("--verbose", action="store_true", help="log retraining as it happens")
    args = ap.parse_args(argv)
    configure_logging("info" if args.verbose else "warning", "console")
    torch.set_num_threads(1)

    ts, values, devices, truth = simulate(args)
    first = int(DAY / args.step)
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(args, Path(tmp), 0.0)
        started = time.monotonic()
        detector = train_detector(
            [values[:first, d] for d in range(len(devices))],
            training_options(config, "pump"),
            device=torch.device("cpu"),
            first_ts=float(ts[0]),
            last_ts=float(ts[first - 1]),
        )
        print(f"initial model trained in {time.monotonic() - started:.0f} s", flush=True)
        arms = [
            Arm("without retraining"),
            Arm("with retraining, swap at once"),
            Arm(f"with retraining, {args.shadow / 3600:g} h shadow"),
        ]
        settings = ((False, 0.0), (True, 0.0), (True, args.shadow))
        for n, (arm, (retrain, shadow)) in enumerate(zip(arms, settings, strict=True)):
            arm_config = make_config(args, Path(tmp) / str(n), shadow)
            run_arm(
                arm, arm_config, detector, ts, values, devices, first, retrain, args.keep_anomalies
            )
            print(f"{arm.name}: {len(arm.alerts)} alerts, {arm.seconds:.0f} s", flush=True)

    slack = config.windows.length * args.step
    scored = [e for e in truth if e.start >= ts[first]]
    print(
        f"\n{len(devices)} pumps, {args.days} scored days at {args.step:g} s, wear "
        f"{args.drift:g}/day, retraining every {args.every / 3600:g} h, {len(scored)} "
        f"injected faults; budget: {args.budget:g}% of a day's windows falsely anomalous; "
        f"{args.thresholds} thresholds"
        + ("; retraining arms keep anomalies in training" if args.keep_anomalies else "")
    )
    print(f"machine: {platform.machine()}, python {platform.python_version()}")
    day0 = float(ts[first])
    header = " | ".join(f"day {d + 1}" for d in range(args.days))
    print("\nfalse alerts (no injected fault overlapping), per scored day:\n")
    print(f"| arm | {header} | total | faults caught |")
    print("|---|" + "---|" * (args.days + 2))
    for arm in arms:
        per_day, caught = false_per_day(list(arm.alerts.values()), scored, day0, args.days, slack)
        print(
            f"| {arm.name} | {' | '.join(map(str, per_day))} | {sum(per_day)} | "
            f"{caught}/{len(scored)} |"
        )
    per_day_windows = args.devices * DAY / args.step / config.windows.hop
    print("\nwindows judged anomalous with no fault nearby, % of the day's windows:\n")
    print(f"| arm | {header} | within budget |")
    print("|---|" + "---|" * (args.days + 1))
    for arm in arms:
        per_day, _ = false_per_day(arm.flagged, scored, day0, args.days, slack)
        share = [100 * n / per_day_windows for n in per_day]
        ok = "yes" if all(v <= args.budget for v in share) else "no"
        print(f"| {arm.name} | {' | '.join(f'{v:.2f}' for v in share)} | {ok} |")
    print("\ninjected faults overlapped by an alert, per day the fault started:\n")
    print(f"| arm | {header} |")
    print("|---|" + "---|" * args.days)
    for arm in arms:
        cells = []
        for d in range(args.days):
            today = [e for e in scored if int((e.start - day0) // DAY) == d]
            _, caught = false_per_day(list(arm.alerts.values()), today, day0, args.days, slack)
            cells.append(f"{caught}/{len(today)}")
        print(f"| {arm.name} | {' | '.join(cells)} |")
    bin_hours = 4
    print(
        f"\nfalse windows by hours since the latest accepted retraining run, % of those "
        f"hours' windows ({bin_hours} h bins, pooled over the run's swaps):\n"
    )
    bins = max(1, math.ceil(args.every / (bin_hours * 3600)))
    labels = " | ".join(f"{b * bin_hours}-{(b + 1) * bin_hours} h" for b in range(bins - 1))
    labels += f"{' | ' if bins > 1 else ''}{(bins - 1) * bin_hours} h on"
    print(f"| arm | {labels} |")
    print("|---|" + "---|" * bins)
    end = float(ts[-1])
    for arm in arms[1:]:
        false, _ = false_spans(arm.flagged, scored, slack)
        rates = since_swap(
            false,
            arm.accepted,
            end,
            args.devices / args.step / config.windows.hop,
            bin_hours * 3600,
            bins,
        )
        print(f"| {arm.name} | {' | '.join(f'{v:.2f}' for v in rates)} |")
    # A threshold shared by every device (fixed) fails first on the device whose normal
    # scores run highest; per device, that shows apart from the drift.
    print("\nfalse windows by device over the scored days, % of the device's windows:\n")
    print(f"| arm | {' | '.join(devices)} |")
    print("|---|" + "---|" * len(devices))
    device_windows = args.days * DAY / args.step / config.windows.hop
    for arm in arms:
        false, _ = false_spans(arm.flagged, scored, slack)
        cells = [100 * sum(1 for f in false if f[0] == d) / device_windows for d in devices]
        print(f"| {arm.name} | {' | '.join(f'{v:.2f}' for v in cells)} |")
    for arm in arms[1:]:
        print(f"\nretraining runs (data time), {arm.name}:")
        for line in arm.runs:
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
