"""The simulated fleet's detection, offline: the same readings through the same ``Pipeline``,
no broker, no database, no daemon.

``fleet_detection.py`` is the end-to-end measure (real Mosquitto, the real daemon, ~3 min);
this one answers "what does the detector make of this fleet?" in about a minute and
deterministically, so a setting can be read off several draws, sampling intervals and pass
sizes. It follows the scenario's protocol (tests/e2e_helpers.py): 12 pumps, 800 clean
readings each, a model trained on the first 750 of every pump (the daemon's cold start), the
devices warmed on their 800, then 2,400 readings with faults; an anomaly counts as caught
when an alert on its device starts inside it or within one window's span after it.

It is not the daemon: the model is installed without the retraining job's per-device
threshold seeds and the passes are of a fixed size, so its figures differ from
``fleet_detection.py``'s by a few events. ``--step``, ``--day`` and ``--rate`` move the fleet to
another sampling interval (``--rate`` anomalies per device-hour: 2.0 at 5 s is one per
1,800 readings; keep readings per anomaly when changing ``--step``).

``--cold N``: the last N pumps joined after the model was trained, as a pump added to a
running fleet does: their readings are not in the training, nothing warms them, and their
800 clean readings arrive live (judged) before the 2,400 with faults. Their false alerts
are also counted apart, per device-hour of what they sent.

``--clean N``: each pump's clean readings before the faults, the pumps warmed on all of
them and the model trained on the first 15/16 (750 of 800; ``--train N``: on the first N;
with ``--train-chunks K`` on N taken as K stretches spread evenly over the clean readings).
By default 800, or as many as the model's 15/16 need to cover the daemon's cold start span
(``cold_start.span``, an hour) where that is more: 3,840 at ``--step 1``; and the model
trains on no more than ``cold_start.max_readings`` of all the pumps together allow
(``--pumps N``: a larger fleet, 12 by default), while the pumps learn the whole span, as
the daemon's do. The
simulated drive's load switches, ramps and thermal lags are in seconds, so at ``--step 1``
800 readings are 13 minutes of a pump's life where at 5 s they are an hour
(docs/BENCHMARKS.md, "The fleet read every second").

    .venv/bin/python benchmarks/fleet_offline.py [--seed 11] [--step 5] [--day 3600]
        [--rate 2.0] [--batch 20] [--pumps 12] [--cold N] [--clean N] [--config VARIANT.toml]
        [--keep DIR] [--test 2400] [--retrain] [--train N [--train-chunks K]]

``--retrain``: the daemon's retraining on the data's clock, as a replay's (its schedule,
a day of data by default: within the run only with a longer ``--test`` or a shorter
``retrain.every`` in ``--config``); ``--test N``: the readings a pump sends after the
clean ones, faults among them (default 2,400).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.config import ColdStartConfig, SentinelConfig
from sentinel.judge.alerts import alert_checks
from sentinel.logs import configure_logging
from sentinel.model import detector_type, training_options
from sentinel.records import Alert, Delivery, Reading, Verdict
from sentinel.retrain.clock import DataClockRetrainer
from sentinel.worker.pipeline import Pipeline
from simulators.fleet import FEATURES, FleetSimulator, SimReading

PUMPS, CLEAN, TEST = 12, 800, 2400
WINDOW = 32
START = 1_709_251_200.0
# The sections the scenario sets; a --config file's copies of them are ignored.
_OWNED = frozenset({"streams", "mqtt", "database", "health", "logging"})


def _reading(r: SimReading) -> Reading:
    return Reading("pump", r.device, float(r.ts), tuple(float(r.values[f]) for f in FEATURES))


def run(args: argparse.Namespace) -> dict[str, Any]:
    step, warm = args.step, args.clean
    train = args.train or warm - warm // 16  # 750 of the default 800
    pumps = args.pumps
    sim = FleetSimulator(
        pumps,
        seed=args.seed,
        step=step,
        start_ts=START,
        anomaly_rate=args.rate,
        warmup=warm * step,
        day_length=args.day,
    )
    steps = sim.steps()
    test = args.test
    readings = [next(steps) for _ in range(warm + test)]
    sections: dict[str, Any] = {
        "streams": [{"name": "pump", "topic": "plant/{device}/pump", "features": list(FEATURES)}],
        "windows": {"max_gap": 3 * step},
        "cold_start": {"readings": (pumps - args.cold) * train},
        "model": {"seed": 3},  # the scenario's (tests/e2e_helpers.py MODEL)
    }
    extra = tomllib.loads(args.config.read_text()) if args.config else {}
    for key, value in extra.items():
        if isinstance(value, dict) and key not in _OWNED:
            sections[key] = {**sections.get(key, {}), **value}
    config = SentinelConfig.model_validate(sections)
    # --train-chunks K: each pump's ``train`` readings as K stretches spread evenly over
    # the clean ones (a sample of the span in time), not its first ``train``
    size = train // args.train_chunks
    starts = np.linspace(0, warm - size, args.train_chunks).astype(int).tolist()
    segments = [
        np.array(
            [[s[d].values[f] for f in FEATURES] for s in readings[start : start + size]],
            dtype=np.float32,
        )
        for d in range(args.model_pumps or pumps - args.cold)
        for start in starts
    ]
    detector = detector_type(config.model.detector).train(
        segments,
        training_options(config, "pump", step),
        device=torch.device("cpu"),
        first_ts=START,
        last_ts=START + (train - 1) * step,
    )
    cold = {f"pump-{d:03d}" for d in range(pumps - args.cold, pumps)}
    clock: DataClockRetrainer | None = None
    scratch: tempfile.TemporaryDirectory[str] | None = None
    if args.retrain:
        # The daemon's retraining on the data's clock, as a replay's (--retrain): the
        # reservoir holds what the model trained on, then every reading judged.
        scratch = tempfile.TemporaryDirectory(prefix="fleet-offline-")
        clock = DataClockRetrainer(
            config.model_copy(update={"state_dir": Path(scratch.name)}),
            torch.device("cpu"),
            start_ts=START + warm * step,
            initial=[detector],
        )
        clock.seed([_reading(r) for s in readings[:train] for r in s if r.device not in cold])
    alerts: dict[str, Alert] = {}

    def observe(verdict: Verdict, alert: Alert | None) -> None:
        if alert is not None:
            alerts[alert.uid] = alert

    pipeline = Pipeline(
        config,
        sink=lambda batch: None,
        request_training=lambda job: None,
        models={"pump": detector},
        observer=observe,
        tap=clock.tap if clock is not None else None,
        # as the daemon's empty database: a pump not warmed with the model is new to it
        recall=lambda stream, devices: {},
    )
    pipeline.warm_up(
        "pump", [_reading(r) for s in readings[:warm] for r in s if r.device not in cold]
    )
    for i in range(0, warm if cold else 0, args.batch):  # the new pumps' first readings, live
        batch = tuple(
            _reading(r) for s in readings[i : i + args.batch] for r in s if r.device in cold
        )
        pipeline.process(
            [Delivery("fleet", batch, rejected=(), ack=None, received_at=batch[-1].ts)]
        )
    for i in range(warm, warm + test, args.batch):
        batch = tuple(_reading(r) for s in readings[i : i + args.batch] for r in s)
        pipeline.process(
            [Delivery("fleet", batch, rejected=(), ack=None, received_at=batch[-1].ts)]
        )
        if clock is not None:
            clock.tick(batch[-1].ts, pipeline.install_model)
    retrained = []
    if clock is not None:
        retrained = [{"ts": ts, "status": o.status, "reason": o.reason} for ts, o in clock.outcomes]
        clock.close()
    if scratch is not None:
        scratch.cleanup()
    return {
        "alerts": [
            {
                "device": a.device,
                "started_at": a.started_at,
                "ended_at": a.ended_at if a.ended_at is not None else a.updated_at,
                "top_features": [c.feature for c in a.top_features],
                "checks": alert_checks(a).split("+"),
            }
            for a in sorted(alerts.values(), key=lambda a: (a.device, a.started_at))
        ],
        "truth": [json.loads(event.to_json()) for event in sim.truth],
        "cold": sorted(cold),
        "warm": warm,
        "test": test,
        "pumps": pumps,
        "retrained": retrained,
    }


def score(found: dict[str, Any], step: float) -> dict[str, Any]:
    """Recall, false alerts and per-kind counts by the scenario's rule."""
    span = WINDOW * step
    warm = found["warm"]
    test = found["test"]
    last_ts = START + (warm + test - 1) * step
    truth = found["truth"]
    visible = [t for t in truth if t["start"] + span < last_ts]

    def explains(t: dict[str, Any], a: dict[str, Any]) -> bool:
        return bool(a["device"] == t["device"] and t["start"] <= a["started_at"] <= t["end"] + span)

    caught = [t for t in visible if any(explains(t, a) for a in found["alerts"])]
    false = [a for a in found["alerts"] if not any(explains(t, a) for t in truth)]
    kinds = sorted({t["kind"] for t in visible})
    cold = set(found["cold"])
    return {
        "visible": len(visible),
        "caught": len(caught),
        "false": len(false),
        "false_cold": sum(a["device"] in cold for a in false),
        "cold_hours": len(cold) * (warm + test) * step / 3600,
        "cold_caught": f"{sum(t['device'] in cold for t in caught)}/"
        f"{sum(t['device'] in cold for t in visible)}",
        "device_hours": (found["pumps"] * test + len(cold) * warm) * step / 3600,
        "by_kind": {
            k: f"{sum(t['kind'] == k for t in caught)}/{sum(t['kind'] == k for t in visible)}"
            for k in kinds
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=11, help="the fleet's draw (default 11)")
    ap.add_argument("--pumps", type=int, default=PUMPS, help=f"pumps (default {PUMPS})")
    ap.add_argument("--step", type=float, default=5.0, help="seconds between readings")
    ap.add_argument("--day", type=float, default=3600.0, help="seconds in a simulated day")
    ap.add_argument("--rate", type=float, default=2.0, help="anomalies per device-hour")
    ap.add_argument("--batch", type=int, default=20, help="time steps (x 12 readings) a pass")
    ap.add_argument("--config", type=Path, help="TOML of config sections for the run")
    ap.add_argument("--keep", type=Path, help="write alerts.json and truth.json here")
    ap.add_argument(
        "--cold",
        type=int,
        default=0,
        help="pumps (the last N) that joined after training: not trained on, not warmed",
    )
    ap.add_argument(
        "--clean",
        type=int,
        default=None,
        help=f"clean readings a pump sends before the faults, the model trained on the first "
        f"15/16 (default {CLEAN}, or where more, those whose 15/16 cover cold_start.span)",
    )
    ap.add_argument(
        "--train",
        type=int,
        default=None,
        help="clean readings of each pump the model trains on (default: the first 15/16 of "
        "--clean, or by default what cold_start.max_readings of all the pumps allows where "
        "that is fewer); the pumps are warmed, alerts suppressed, on all --clean",
    )
    ap.add_argument(
        "--train-chunks",
        type=int,
        default=1,
        metavar="K",
        help="the model's --train readings of each pump as K stretches spread evenly over "
        "--clean, not the first --train (default 1)",
    )
    ap.add_argument(
        "--model-pumps",
        type=int,
        default=None,
        help="the model trains on the first N pumps only (default: every pump not --cold); "
        "every pump is warmed",
    )
    ap.add_argument(
        "--test",
        type=int,
        default=TEST,
        help=f"readings a pump sends after the clean ones, faults among them (default {TEST})",
    )
    ap.add_argument(
        "--retrain",
        action="store_true",
        help="retrain as the daemon would, on the data's clock (retrain.every)",
    )
    args = ap.parse_args()
    if args.step <= 0:
        ap.error("--step must be positive")
    if args.pumps < 1:
        ap.error("--pumps must be at least 1")
    if args.clean is None:  # as the daemon's cold start: each pump learns the span; the
        # first model trains on as much of it as max_readings of all the pumps together
        # allows, the pumps going on learning for the rest (Pipeline._learn_the_span)
        extra = tomllib.loads(args.config.read_text()) if args.config else {}
        rule = ColdStartConfig.model_validate(extra.get("cold_start", {}))
        args.clean = max(CLEAN, math.ceil(rule.span / args.step * 16 / 15))
        per_pump = max(rule.readings, rule.max_readings) // args.pumps
        if args.train is None and per_pump < args.clean - args.clean // 16:
            args.train = max(2 * WINDOW, per_pump)
    if args.clean < 2 * WINDOW:
        ap.error(f"--clean must be at least {2 * WINDOW}")
    if args.train is not None and not 2 * WINDOW <= args.train <= args.clean:
        ap.error(f"--train must be between {2 * WINDOW} and --clean ({args.clean})")
    if args.train_chunks < 1 or (args.train or args.clean) // args.train_chunks < 2 * WINDOW:
        ap.error(f"--train-chunks must leave at least {2 * WINDOW} readings a stretch")
    if args.test < 1:
        ap.error("--test must be at least 1")
    if args.step <= 0 or args.day <= 0 or args.rate < 0 or args.batch < 1:
        ap.error("--step, --day and --batch must be positive, --rate at least 0")
    if not 0 <= args.cold < args.pumps:
        ap.error(f"--cold must be 0 to {args.pumps - 1}")
    if args.model_pumps is not None and not 1 <= args.model_pumps <= args.pumps - args.cold:
        ap.error(f"--model-pumps must be 1 to {args.pumps - args.cold}")
    configure_logging("warning", "console")
    torch.set_num_threads(1)
    found = run(args)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        (args.keep / "alerts.json").write_text(json.dumps(found["alerts"], indent=1))
        (args.keep / "truth.json").write_text(json.dumps(found["truth"], indent=1))
    result = score(found, args.step)
    kinds = ", ".join(f"{k} {v}" for k, v in result["by_kind"].items())
    recall = result["caught"] / result["visible"] if result["visible"] else 0.0
    print(
        f"machine: {platform.machine()}, python {platform.python_version()}; {args.pumps} "
        f"pumps, seed {args.seed}, "
        f"step {args.step:g} s, day {args.day:g} s, rate {args.rate:g}/h, {args.clean} clean "
        f"readings a pump{f' (the model trained on {args.train})' if args.train else ''}"
        f"{f' in {args.train_chunks} stretches' if args.train_chunks > 1 else ''}"
        f"{f', the model on {args.model_pumps} pumps' if args.model_pumps else ''}, "
        "passes of "
        f"{args.batch} steps{f', config {args.config}' if args.config else ''}"
    )
    print(
        f"recall {recall:.2f} ({result['caught']}/{result['visible']}), "
        f"{result['false']} false alerts in {result['device_hours']:.0f} device-hours; {kinds}"
    )
    for done in found["retrained"]:
        print(
            f"retraining at {(done['ts'] - START) / 60:.1f} min of the fleet's data: "
            f"{done['status']} ({done['reason']})"
        )
    if args.cold:
        print(
            f"of them on the {args.cold} pumps that joined after training: caught "
            f"{result['cold_caught']}, {result['false_cold']} false alerts in "
            f"{result['cold_hours']:.0f} device-hours"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
