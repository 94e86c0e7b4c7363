"""Thresholds after lasting regime changes: the old streaming quantile vs SPOT + re-baselining.

One run, the same data for every setting. A simulated pump fleet (``simulators.fleet``,
clean) trains an LSTM autoencoder on its first readings; then every setting scores the same
continuation through the real ``Pipeline.process`` (windows, model, thresholds, alerts; no
MQTT or database, as in ``sentinel replay``). On top of the clean signal
(``simulators.regimes``): on a quarter of the pumps each, a lasting level shift, a
multiplicative (gain) drift and a noise change, starting hours into the run; on every pump,
short labelled spikes, the recall target.

Measured per setting:

* recall of the spikes (a notification -- an alert opening or reopening -- on the pump
  within the spike or one window span after it);
* false alerts per device-day (notifications that neither a spike nor a change explains),
  against the budget ``risk x windows per device-day`` for spot (an upper bound: every
  alert needs at least one anomalous window, and M-of-N grouping only removes some);
* per change: whether it raised an alert, its recovery time (change start until the
  alerting it caused ended: its alert, chained with further ones starting within 15
  minutes of the previous one's end -- counted as "repeat" notifications; "never" if still
  alerting when the run ended), against ``threshold.rebaseline_after``; and the share of
  the time after the changes that those pumps spent in an alert.

    .venv/bin/python benchmarks/threshold_scenarios.py [--hours 24] [--devices 12]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from sentinel.config import SentinelConfig
from sentinel.logs import configure_logging
from sentinel.model import train_detector, training_options
from sentinel.timescale import learn_interval
from sentinel.worker.pipeline import Pipeline
from simulators.fleet import FEATURES, FleetSimulator
from simulators.regimes import CHANGE_KINDS, Evaluation, Recorder, RegimeChange, RegimeScenario

STEP = 5.0  # simulated seconds per reading
WINDOW, HOP = 16, 4
TRAIN_STEPS = 800  # readings per pump for the model (a compressed "day": 3600 s)
START = 1_709_251_200.0
MODEL = {"hidden_size": 32, "latent_size": 8, "epochs": 30, "batch_size": 64, "seed": 3}


def settings(
    args: argparse.Namespace,
) -> list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(name, threshold, alerts, spikes) per setting; the first is the first version's."""
    old = {"method": "quantile", "rebaseline_after": 0}
    cooldown = {"cooldown": args.cooldown}
    tail = f"re-baseline {args.rebaseline_after:g} s, cooldown {args.cooldown:g} s"
    off = {"enabled": False}

    def spot(risk: float) -> dict[str, Any]:
        return {"method": "spot", "risk": risk, "rebaseline_after": args.rebaseline_after}

    first_risk = args.risk[0]
    return [
        (
            "first version: quantile q0.995 x 1.5, no re-baseline, no cooldown, no spike check",
            old,
            {"cooldown": 0},
            off,
        ),
        (f"spot risk {first_risk:g} + {tail}, no spike check", spot(first_risk), cooldown, off),
        *(
            (f"spot risk {risk:g} + {tail} + spike check", spot(risk), cooldown, {})
            for risk in args.risk
        ),
        (
            f"quantile + {tail} + spike check (the daemon's default at 1 reading/s)",
            {"method": "quantile", "rebaseline_after": args.rebaseline_after},
            cooldown,
            {},
        ),
        (
            # What the defaults now are at this data's 5 s a reading (sentinel.timescale):
            # re-baselining after 720 readings (1 h), cooldown 300 readings (25 min).
            "quantile + auto time settings (720 / 300 readings of the learnt interval) + "
            "spike check (the daemon's default)",
            {"method": "quantile"},
            {},
            {},
        ),
    ]


def make_scenario(args: argparse.Namespace) -> RegimeScenario:
    sim = FleetSimulator(
        args.devices, seed=args.seed, step=STEP, start_ts=START, anomaly_rate=0.0,
        warmup=0.0, day_length=3600.0,
    )  # fmt: skip
    test_start = START + TRAIN_STEPS * STEP
    rng = np.random.default_rng(args.seed)
    changes = []
    for i, device in enumerate(sim.devices):
        kind_index = i % 4
        if kind_index == 3:
            continue  # a quarter of the fleet stays as it was: the control group
        kind = CHANGE_KINDS[kind_index]
        start = test_start + args.change_after * 3600 + float(rng.uniform(-1800, 1800))
        feature = FEATURES[int(rng.integers(len(FEATURES)))]
        # Sized so that every change alerts at first: what matters here is what comes after.
        if kind == "level_shift":
            size = float(rng.choice([-12.0, 12.0]))
            change = RegimeChange(device, kind, feature, start, size)
        elif kind == "gain_drift":
            feature = str(rng.choice(["flow", "current", "pressure"]))
            change = RegimeChange(device, kind, feature, start, 0.3, ramp=7200.0)
        else:
            change = RegimeChange(device, kind, feature, start, 4.0)
        changes.append(change)
    return RegimeScenario(
        sim,
        changes,
        seed=args.seed,
        spike_rate=args.spike_rate,
        spikes_after=test_start,
        spike_size=args.spike_size,
    )


def config_for(
    threshold: dict[str, Any], alerts: dict[str, Any], spikes: dict[str, Any] | None = None
) -> SentinelConfig:
    return SentinelConfig.model_validate(
        {
            "spikes": spikes or {},
            "windows": {"length": WINDOW, "hop": HOP, "max_gap": 3 * STEP},
            "model": MODEL,
            "cold_start": {"readings": 2000},
            "threshold": threshold,
            "alerts": alerts,
            "streams": [{"name": "pump", "topic": "plant/{device}/pump", "features": FEATURES}],
        }
    )


def train(args: argparse.Namespace) -> Any:
    scenario = make_scenario(args)
    rows: dict[str, list[list[float]]] = {d: [] for d in scenario.sim.devices}
    times: dict[str, list[float]] = {d: [] for d in scenario.sim.devices}
    for _, step in zip(range(TRAIN_STEPS), scenario.steps(), strict=False):
        for r in step:
            rows[r.device].append([r.values[f] for f in FEATURES])
            times[r.device].append(r.ts)
    torch.set_num_threads(1)
    # As the cold start does: the model keeps the interval learnt from its training data,
    # which scales the auto time settings (settings in seconds are unaffected).
    interval = learn_interval(np.asarray(t) for t in times.values())
    return train_detector(
        [np.asarray(r, dtype=np.float32) for r in rows.values()],
        training_options(config_for({}, {}), "pump", interval),
        device=torch.device("cpu"),
    )


def run_setting(
    args: argparse.Namespace,
    detector: Any,
    threshold: dict[str, Any],
    alerts: dict[str, Any],
    spikes: dict[str, Any],
) -> tuple[Evaluation, Any, float]:
    from simulators.regimes import evaluate

    config = config_for(threshold, alerts, spikes)
    scenario = make_scenario(args)
    steps = scenario.steps()
    for _ in range(TRAIN_STEPS):  # the model's training data; scoring starts after it
        next(steps)
    recorder = Recorder()
    pipeline = Pipeline(
        config,
        sink=lambda batch: None,
        request_training=lambda job: None,
        models={"pump": detector},
        observer=recorder.observe,
    )
    started = time.monotonic()
    test_steps = round(args.hours * 3600 / STEP)
    record = recorder.drive(pipeline, steps, test_steps, "pump")
    seconds = time.monotonic() - started
    span = WINDOW * STEP
    result = evaluate(
        record,
        scenario,
        span=span,
        scored_from=START + TRAIN_STEPS * STEP,
        onset_slack=1800.0,
    )
    return result, record, seconds


def _minutes(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds / 60)


def _recovery(result: Evaluation, kind: str, end_note: float) -> str:
    times = [t for c, t in result.recovery.items() if c.kind == kind]
    parts = []
    for t in times:
        parts.append("never" if t is None else ("no alert" if t == 0.0 else f"{t / 60:.0f}"))
    return " / ".join(parts) if parts else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=12)
    ap.add_argument("--hours", type=float, default=24.0, help="simulated hours scored")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--change-after", type=float, default=6.0, help="hours into the run")
    ap.add_argument("--spike-rate", type=float, default=1.0, help="per pump per hour")
    ap.add_argument(
        "--spike-size",
        type=lambda text: tuple(float(v) for v in text.split(",")),
        default=(8.0, 12.0),
        help="LO,HI in multiples of the channel's scale (default 8,12 as simulators.fleet)",
    )
    ap.add_argument(
        "--risk",
        type=lambda text: [float(v) for v in text.split(",")],
        default=[1e-3, 2e-3, 1e-2],
        help="spot risks to run with the spike check, comma-separated (default "
        "1e-3,2e-3,1e-2); the first also runs without it",
    )
    ap.add_argument("--rebaseline-after", type=float, default=3600.0)
    ap.add_argument("--cooldown", type=float, default=300.0)
    args = ap.parse_args()
    configure_logging("warning", "console")
    t0 = time.monotonic()
    detector = train(args)
    print(f"trained {detector.version} in {time.monotonic() - t0:.0f} s", flush=True)
    windows_per_day = 86_400 / (HOP * STEP)
    # A change alerts from its first anomalous window; its episode is back-dated there, the
    # threshold re-baselines rebaseline_after later, and the alert closes after close_after
    # normal windows: the time a level shift may alert (docs/ARCHITECTURE.md).
    close_after = config_for({}, {}).alerts.close_after
    bound = args.rebaseline_after + close_after * HOP * STEP
    rows = []
    for name, threshold, alerts, spikes in settings(args):
        result, record, seconds = run_setting(args, detector, threshold, alerts, spikes)
        rebaselines = sum(1 for e in record.audit if e.kind == "threshold_rebaselined")
        rows.append((name, threshold, result, rebaselines))
        print(
            f"{name}: recall {result.recall:.2f} ({result.caught}/{result.spikes}), "
            f"{result.false_alerts} false alerts ({result.false_per_device_day:.2f} per "
            f"device-day), {result.repeat_alerts} repeat alerts, changes alerted "
            f"{result.changes_detected}/{len(result.recovery)}, "
            f"recovery {[_minutes(t) for t in result.recovery.values()]} min, "
            f"alerting {result.alert_fraction_after_change:.0%} of post-change time, "
            f"{rebaselines} re-baselines, {record.windows} windows in {seconds:.0f} s",
            flush=True,
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    print(
        f"\n{stamp}, {platform.machine()}, python {platform.python_version()}, "
        f"torch {torch.__version__}; {args.devices} pumps x {args.hours:g} h scored "
        f"({rows[0][2].device_days:.1f} device-days), seed {args.seed}; "
        f"{windows_per_day:.0f} windows per device-day; rebaseline_after "
        f"{args.rebaseline_after:g} s (a level shift may alert for rebaseline_after + "
        f"close_after windows = {bound / 60:.1f} min after its first anomalous window); "
        f"spikes {args.spike_size[0]:g}-{args.spike_size[1]:g} x scale\n"
    )
    print(
        "| setting | spike recall | false alerts / device-day (budget) | changes alerted "
        "(repeat alerts) | recovery, min: level shift | gain drift | noise change | "
        "post-change time alerting | re-baselines |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, threshold, r, rebaselines in rows:
        budget = (
            f"{threshold['risk'] * windows_per_day:.1f}"
            if threshold.get("method") == "spot"
            else "-"
        )
        print(
            f"| {name} | {r.recall:.2f} ({r.caught}/{r.spikes}) | "
            f"{r.false_per_device_day:.2f} ({r.false_alerts} in {r.device_days:.1f}; {budget}) | "
            f"{r.changes_detected}/{len(r.recovery)} ({r.repeat_alerts}) | "
            + " | ".join(_recovery(r, k, 0) for k in CHANGE_KINDS)
            + f" | {r.alert_fraction_after_change:.0%} | {rebaselines} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
