"""Detection quality on the simulated pump fleet, for several threshold settings, one run.

The scenario is the end-to-end test's (tests/e2e_helpers.py, ``fleet_detection_scenario``):
12 pumps from nothing, clean cold start, training, then injected faults, through a real
Mosquitto and the real daemon into SQLite. Each setting is a fresh daemon on the same data.

    .venv/bin/python benchmarks/fleet_detection.py [--only 0,1,7,8] [--detector lstm_forecast]
        [--config VARIANT.toml] [--combine max] [--training-wait 600] [--seed 11]
        [--window 32] [--step 5 --day 3600] [--pumps 12] [--product-cold-start]

The daemon runs the product's window (32 readings, hop 4) unless ``--window`` says
otherwise; the end-to-end tests run the same scenario at 16 to train faster, and the
figures in docs/BENCHMARKS.md before 2026-12-04 were measured at 16.

``--config``: a TOML file of config sections (e.g. ``[levels]``) applied beneath every
setting, the same kind of file ``detection_suite.py --config`` takes, so one variant is
measured on the fleet and the suite alike (its ``streams``, ``mqtt``, ``database`` and
``state_dir`` are ignored: the scenario owns them).
"""

from __future__ import annotations

import argparse
import math
import platform
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.config import ColdStartConfig, WindowConfig
from sentinel.logs import configure_logging
from simulators.broker import PrivateBroker
from tests.e2e_helpers import HOP, TRAINING_WAIT, WINDOW, fleet_detection_scenario

SETTINGS: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("default: q0.995 x 1.5, open after 2, spike check on", {}, {}, {}),
    ("default, spike check off", {}, {}, {"enabled": False}),
    ("q0.995 x 1.2", {"multiplier": 1.2}, {}, {}),
    ("q0.99 x 1.2", {"quantile": 0.99, "multiplier": 1.2}, {}, {}),
    ("q0.99 x 1.0", {"quantile": 0.99, "multiplier": 1.0}, {}, {}),
    ("default, open after 1", {}, {"open_after": 1}, {}),
    ("default, open on 2 of 4", {}, {"open_after": 2, "open_within": 4}, {}),
    ("spot, risk 1e-3", {"method": "spot", "risk": 1e-3}, {}, {}),
    ("spot, risk 1e-3, spike check off", {"method": "spot", "risk": 1e-3}, {}, {"enabled": False}),
]

# Sections the scenario sets itself; a --config file's copies of them are ignored.
_SCENARIO_OWNS = frozenset({"streams", "mqtt", "database", "health", "logging"})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--only",
        type=lambda text: [int(v) for v in text.split(",")],
        default=list(range(len(SETTINGS))),
        help="comma-separated indexes into the settings (0-based; default all): "
        + "; ".join(f"{i} {s[0]}" for i, s in enumerate(SETTINGS)),
    )
    ap.add_argument(
        "--detector",
        default=None,
        help="model.detector for every setting (default: the config's default)",
    )
    ap.add_argument(
        "--config",
        type=Path,
        help="TOML of config sections applied beneath every setting (e.g. [levels])",
    )
    ap.add_argument(
        "--combine",
        default=None,
        help="model.ensemble_combine for every setting (lstm_ensemble only)",
    )
    ap.add_argument(
        "--training-wait",
        type=float,
        default=TRAINING_WAIT,
        help=f"seconds allowed for the cold-start training (default {TRAINING_WAIT:g}: a "
        "condition, met as soon as the model is there); the faults are published after "
        "it, so results do not change",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=11,
        help="the simulated fleet's draw (default 11, the scenario every setting was "
        "measured on; other seeds are fleets nobody tuned on)",
    )
    ap.add_argument(
        "--window",
        type=int,
        default=WindowConfig().length,
        help=f"readings per window (default {WindowConfig().length}, the product's; the "
        f"end-to-end tests run this scenario at {WINDOW}, hop {HOP}, to train faster); "
        "an anomaly counts as caught up to one window's span after it",
    )
    ap.add_argument(
        "--step",
        type=float,
        default=5.0,
        help="seconds between a pump's readings (default 5, the scenario's); with another, "
        "scale --day with it to keep a day's readings",
    )
    ap.add_argument("--day", type=float, default=3600.0, help="seconds in a simulated day")
    ap.add_argument("--pumps", type=int, default=12, help="pumps in the fleet (default 12)")
    ap.add_argument(
        "--product-cold-start",
        action="store_true",
        help="the daemon's default cold start (cold_start.readings covering "
        "cold_start.span) instead of the scenario's 750 readings a pump; the clean "
        "readings a pump sends before the faults then cover the span and 1/16 more",
    )
    ap.add_argument(
        "--keep",
        type=Path,
        help="copy each setting's alerts.json and truth.json here (KEEP/runN/), to read "
        "which faults were missed and which alerts were false",
    )
    ap.add_argument(
        "--model-after",
        type=int,
        default=None,
        help="publish only this many clean steps before waiting for the cold-start model, "
        "the rest after it, as a live fleet's model arrives while its readings go on (with "
        "a [cold_start] max_readings in --config that ends the cold start by then)",
    )
    args = ap.parse_args()
    if args.step <= 0 or args.day <= 0:
        ap.error("--step and --day must be positive")
    warmup = 800
    if args.pumps < 1:
        ap.error("--pumps must be at least 1")
    if args.product_cold_start:  # the span and 1/16 more, or what max_readings allows
        rule = ColdStartConfig()
        spanned = math.ceil(rule.span / args.step * 16 / 15)
        capped = max(rule.readings, rule.max_readings) * 16 // (15 * args.pumps)
        warmup = max(warmup, min(spanned, capped))
    model: dict[str, Any] | None = {"detector": args.detector} if args.detector else None
    if args.combine:
        model = {**(model or {}), "ensemble_combine": args.combine}
    raw: dict[str, Any] = tomllib.loads(args.config.read_text()) if args.config else {}
    extra = {
        key: value
        for key, value in raw.items()
        if isinstance(value, dict) and key not in _SCENARIO_OWNS
    }
    # The product's window unless asked otherwise (the scenario's own is the tests')
    extra["windows"] = {"length": args.window, "hop": HOP, **extra.get("windows", {})}
    if args.config:
        print(f"config beneath every setting: {args.config}: {extra}", flush=True)
    configure_logging("warning", "console")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = PrivateBroker(prefer="mosquitto", workdir=work / "broker")
        broker.start()
        try:
            for i in args.only:
                name, threshold, alerts, spikes = SETTINGS[i]
                run = work / f"run{i}"
                run.mkdir()
                result = fleet_detection_scenario(
                    broker,
                    run,
                    f"sqlite:///{run / 'alerts.db'}",
                    threshold=threshold,
                    alerts=alerts,
                    spikes=spikes,
                    model=model,
                    extra=extra,
                    training_wait=args.training_wait,
                    seed=args.seed,
                    step=args.step,
                    day_length=args.day,
                    warmup_steps=warmup,
                    product_cold_start=args.product_cold_start,
                    devices=args.pumps,
                    model_after=args.model_after,
                )
                rows.append((name, result))
                if args.keep:
                    kept = args.keep / f"run{i}"
                    kept.mkdir(parents=True, exist_ok=True)
                    for file in ("alerts.json", "truth.json"):
                        shutil.copy2(run / file, kept / file)
                print(f"{name}: {result.summary()}", flush=True)
        finally:
            broker.stop()
    print(
        f"\nmachine: {platform.machine()}, python {platform.python_version()}; "
        f"{args.pumps} pumps, fleet seed {args.seed}, window {extra['windows']['length']}, hop "
        f"{extra['windows']['hop']}; step {args.step:g} s, day {args.day:g} s, {warmup} clean "
        f"readings a pump, {'the daemon default' if args.product_cold_start else 'the scenario'}"
        "'s cold start"
    )
    print("| setting | recall | caught / injected | false alerts per device-hour | by kind |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        kinds = ", ".join(f"{k} {v}" for k, v in r.by_kind.items())
        print(
            f"| {name} | {r.recall:.2f} | {len(r.caught)}/{r.visible} | "
            f"{r.false_alerts / r.device_hours:.2f} ({r.false_alerts} in "
            f"{r.device_hours:.0f} h) | {kinds} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
