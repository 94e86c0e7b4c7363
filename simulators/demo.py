"""``make demo``: a private broker, a simulated pump fleet and the daemon, with a live view.

Everything runs on the embedded defaults (SQLite under ./demo-state). The first run has no
model, so the daemon collects readings and trains one (progress bars); later runs reuse it.
Each alert is printed as it opens and closes, next to the anomaly the simulator injected on
that device, if any, and input the daemon rejects is reported. Ctrl-C stops everything
cleanly and prints a summary, also on a piped stdout.

The simulated clock runs ``--rate`` times faster than the wall clock, so it starts in the
past and reaches the wall clock as ``--duration`` ends: it is never ahead of it (the daemon
would refuse readings from the future). A rerun therefore starts earlier than the last run
ended: it keeps the last run's models (training is the slow part) and clears the rest of its
state (alerts, device state, reservoir, thresholds), which would reject every reading of the
new run as out of order.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sentinel.progress import progress_bar
from simulators.broker import PrivateBroker

__all__ = ["main"]

FEATURES = ["flow", "pressure", "current", "temperature", "vibration", "voltage"]
CONFIG = """\
# Written by `make demo` (simulators/demo.py); see deploy/sentinel.example.toml for every key.
state_dir = "{state}"

[mqtt]
host = "127.0.0.1"
port = {port}
protocol = "{protocol}"
client_id = "sentinel-demo"

[cold_start]
readings = {cold_start}
# The demo's day is {day_length:g} s: its cold start is counted in its days' readings, not in
# the hour of stream time (cold_start.span) a plant's first model waits for.
span = 0

[logging]
format = "json"

[health]
port = 0  # a free port: a Sentinel service on this machine keeps 9847

[[streams]]
name = "pump"
topic = "plant/{{device}}/pump"
features = {features}
"""


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")


@dataclass
class _View:
    """Follows the daemon's JSON log and the simulator's ground truth."""

    truth_path: Path
    truth: list[dict[str, Any]] = field(default_factory=list)
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_ts: float = 0.0
    bar: Any = None
    training: bool = False  # a training run is under way (its model_loaded is not a restart's)
    model: str | None = None  # the saved model the daemon started with
    rejected: dict[str, int] = field(default_factory=dict)  # the daemon's count per reason
    _truth_offset: int = 0

    def load_truth(self) -> None:
        if not self.truth_path.exists():
            return
        with self.truth_path.open(encoding="utf-8") as handle:
            handle.seek(self._truth_offset)
            for line in handle:
                if line.endswith("\n"):
                    self.truth.append(json.loads(line))
            self._truth_offset = handle.tell()

    def match(self, device: str, at: float, slack: float = 60.0) -> dict[str, Any] | None:
        for event in self.truth:
            if event["device"] == device and event["start"] - slack <= at <= event["end"] + slack:
                return event
        return None

    def handle(self, event: dict[str, Any]) -> None:
        name = event.get("event")
        if name == "cold_start_progress":
            self._bar("collecting normal data", event["target"], event["collected"], "reading")
        elif name == "cold_start_collected":
            self._close_bar(done=True)
            print(f"collected {event['readings']} readings; training the first model")
        elif name == "training_progress":
            # the event names the stream, not the detector (lstm_forecast by default)
            model = f"the {event['stream']} model" if event.get("stream") else "the model"
            self._bar(f"training {model}", event["epochs"], event["epoch"], "epoch")
        elif name == "model_trained":
            self._close_bar(done=True)
            print(f"model {event['version']} trained in {event.get('seconds', '?')} s; scoring")
        elif name == "retrain_requested":
            self.training = True
        elif name == "retrain_finished":
            self.training = False
            self._close_bar(done=bool(event.get("installed")))
            if event.get("installed"):
                print(f"model {event['version']} trained in {event['seconds']} s; scoring")
            elif event.get("status") != "skipped":  # a skipped run said why already
                print(f"training run {event['status']}; see the daemon's log")
        elif name == "retrain_skipped":
            self._close_bar()
            print(f"training skipped: {event['reason']}")
        elif name == "model_loaded" and not self.training and self.model != event["version"]:
            self.model = event["version"]  # loaded by the pipeline and the retrainer: once
            print(f"loaded saved model {event['version']}; scoring from the first window")
        elif name == "mqtt_subscribed":
            print("daemon connected and subscribed")
        elif name == "health_listening":
            print(f"web UI: http://127.0.0.1:{event['port']}/")
        elif name == "input_rejected":
            self._rejected(event)
        elif name == "alert_opened":
            self._alert_opened(event)
        elif name == "alert_reopened":
            self._alert_reopened(event)
        elif name == "alert_closed":
            self._alert_closed(event)
        elif event.get("level") in ("error", "critical"):
            self._close_bar()
            print(f"daemon error: {name} {event}")

    def _alert_opened(self, event: dict[str, Any]) -> None:
        self._close_bar()
        self.load_truth()
        at = float(event["at"])
        self.last_ts = max(self.last_ts, at)
        cause = self.match(event["device"], at)
        self.alerts[event["uid"]] = {**event, "truth": cause}
        why = (
            f"injected {cause['kind']} on {','.join(cause['features'])}"
            if cause
            else "no injected anomaly nearby (false alarm?)"
        )
        print(
            f"\033[31mALERT\033[0m  {_clock(at)}  {event['device']:<9} "
            f"score {event['score'] / event['threshold']:4.1f}x threshold  "
            f"by {event.get('checks', 'score')}  "
            f"features {event['features'] or '-'}  <- {why}"
        )

    def _rejected(self, event: dict[str, Any]) -> None:
        # The daemon logs one line per reason per ingest.log_interval, each with its total.
        self._close_bar()
        reason = str(event.get("reason"))
        self.rejected[reason] = int(event.get("total") or 0)
        print(
            f"\033[33mrejected\033[0m {self.rejected[reason]} readings so far as {reason}, "
            f"e.g. {event.get('topic')}: {event.get('detail') or event.get('payload')}"
        )

    def _alert_reopened(self, event: dict[str, Any]) -> None:
        self._close_bar()
        at = float(event["at"])
        self.last_ts = max(self.last_ts, at)
        print(
            f"\033[33mreopened\033[0m {_clock(at)}  {event['device']:<9} "
            f"score {event['score'] / event['threshold']:4.1f}x threshold  "
            f"(anomalous again within alerts.cooldown: the same alert continues)"
        )

    def _alert_closed(self, event: dict[str, Any]) -> None:
        at = float(event["at"])
        self.last_ts = max(self.last_ts, at)
        print(
            f"\033[32mclosed\033[0m {_clock(at)}  {event['device']:<9} "
            f"after {event['duration_s']:.0f} s, {event['windows']} windows"
        )

    def _bar(self, desc: str, total: int, n: int, unit: str) -> None:
        if self.bar is None or self.bar.desc != desc:
            self._close_bar()
            self.bar = progress_bar(total, desc, unit, initial=n)
        else:
            self.bar.update(n - self.bar.n)

    def _close_bar(self, done: bool = False) -> None:
        """Leave the bar where it stands; ``done``: it finished (early stopping included)."""
        if self.bar is not None:
            if done:
                self.bar.update(self.bar.total - self.bar.n)
            self.bar.close()
            self.bar = None

    def summary(self) -> str:
        self.load_truth()
        due = [t for t in self.truth if t["start"] <= self.last_ts]
        caught = [t for t in due if any(a["truth"] is t for a in self.alerts.values())]
        false = sum(1 for a in self.alerts.values() if a["truth"] is None)
        text = (
            f"{len(self.alerts)} alerts; {len(caught)} of {len(due)} injected anomalies caught; "
            f"{false} alerts with no injected anomaly nearby"
        )
        if self.rejected:
            counts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.rejected.items()))
            text += f"\nthe daemon rejected at least {sum(self.rejected.values())}: {counts}"
        return text


def _published(path: Path) -> str:
    """The simulator's count of what it sent, and whether the broker took all of it."""
    try:
        sent = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "simulator: no summary (it did not stop cleanly)"
    missing = sent["unacknowledged"]
    acked = "all acknowledged by the broker" if not missing else f"{missing} not acknowledged"
    return f"simulator: published {sent['total']} readings, {acked}"


def _follow(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    events = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        handle.seek(offset)
        while True:
            line = handle.readline()
            if not line.endswith("\n"):
                break
            offset = handle.tell()
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events, offset


def _start_over(state: Path) -> bool:
    """Clear what an earlier run left in ``state``, except its models; True if it left any.

    The daemon's device state, alerts, reservoir and thresholds all follow the last run's
    simulated clock, which ended where this run's starts again (see the module docstring).
    """
    state.mkdir(parents=True, exist_ok=True)
    leftovers = [p for p in state.iterdir() if p.name != "models"]
    ours = state / "sentinel.toml"
    if leftovers and not (
        ours.is_file() and ours.read_text(encoding="utf-8").startswith(CONFIG.split("\n", 1)[0])
    ):
        raise SystemExit(
            f"{state} holds files that `make demo` did not write: give --state a new or "
            "empty directory (the demo clears its state directory at each start)"
        )
    for path in leftovers:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return bool(leftovers)


def _say(text: str) -> None:
    """Print, and once stdout's reader is gone (`make demo | cat` and Ctrl-C, which stops
    `cat` too), say it on stderr instead of dying of a broken pipe."""
    try:
        print(text)
    except BrokenPipeError:
        # No more writes to the pipe: the interpreter's own flush at exit would fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.stdout = sys.stderr
        print(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simulators.demo", description=__doc__)
    ap.add_argument(
        "--state",
        type=Path,
        default=Path("demo-state"),
        help="state directory; each start clears it except models/",
    )
    ap.add_argument("--devices", type=int, default=8, help="simulated pumps")
    ap.add_argument(
        "--rate",
        type=float,
        default=40.0,
        help="readings per wall second per pump (each is 1 simulated second)",
    )
    ap.add_argument("--duration", type=float, default=3600.0, help="wall seconds to run")
    ap.add_argument(
        "--day-length",
        type=float,
        default=1200.0,
        help="simulated seconds per 'day': the demo compresses the daily cycle so that the "
        "cold start covers a whole one, as a real cold start should",
    )
    ap.add_argument(
        "--cold-start",
        type=int,
        default=None,
        help="readings before training (default: 1.1 simulated days of all pumps)",
    )
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    if args.cold_start is None:
        args.cold_start = int(1.1 * args.day_length * args.devices)
    if isinstance(sys.stdout, io.TextIOWrapper):
        # Piped (`make demo | tee demo.log`), Python would hold the lines back in a buffer.
        sys.stdout.reconfigure(line_buffering=True)

    state: Path = args.state.resolve()
    if _start_over(state):
        print(f"cleared the last run's alerts and readings from {state}; its models stay")
    log_path = state / "sentinel.log"
    truth_path = state / "truth.jsonl"
    fleet_summary = state / "simulator.json"
    broker = PrivateBroker(prefer="auto", workdir=state / "broker")
    config_path = state / "sentinel.toml"
    daemon: subprocess.Popen[bytes] | None = None
    fleet: subprocess.Popen[bytes] | None = None
    view = _View(truth_path)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # `kill` (SIGTERM) cleans up like Ctrl-C: no broker or daemon is left behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        broker.start()
        print(f"broker: {broker.kind} on {broker.url} (MQTT {broker.protocol})")
        config_path.write_text(
            CONFIG.format(
                state=state,
                port=broker.port,
                protocol=broker.protocol,
                cold_start=args.cold_start,
                day_length=args.day_length,
                features=json.dumps(FEATURES),
            )
        )
        # A token of this run's own, so that the web UI's Acknowledge works in the demo.
        token = secrets.token_hex(8)
        with log_path.open("wb") as log_file:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "sentinel.cli", "run", "--config", str(config_path)],
                env={**os.environ, "SENTINEL_API_TOKEN": token},
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        print(f"daemon: pid {daemon.pid}, log {log_path}; API token for the web UI: {token}")
        offset = 0
        deadline = time.monotonic() + 60
        while fleet is None:
            events, offset = _follow(log_path, offset)
            for event in events:
                view.handle(event)
                if event.get("event") == "mqtt_subscribed":
                    fleet = _start_fleet(
                        args, broker, view.model is not None, truth_path, fleet_summary
                    )
            if daemon.poll() is not None:
                raise SystemExit(f"the daemon exited ({daemon.returncode}); see {log_path}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the daemon did not connect within 60 s; see {log_path}")
            time.sleep(0.2)
        print("Ctrl-C stops the demo.\n")
        while daemon.poll() is None and fleet.poll() is None:
            events, offset = _follow(log_path, offset)
            for event in events:
                view.handle(event)
            time.sleep(0.2)
    except KeyboardInterrupt:
        view._close_bar()
        _say("\nstopping: the simulator and the daemon finish what they hold (up to 30 s) ...")
    finally:
        # A second Ctrl-C must not cut the clean-up short and lose the summary.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for proc in (fleet, daemon):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in (fleet, daemon):
            if proc is not None:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        view._close_bar()
        broker.stop()
    _say(_published(fleet_summary))
    _say(view.summary())
    _say(f"query them: .venv/bin/sentinel alerts list --config {config_path}")
    return 0 if daemon is None or daemon.returncode in (0, -signal.SIGINT) else 1


def _warmup(args: argparse.Namespace, model: bool) -> float:
    """Simulated seconds without faults: until the model scores (collection, plus training
    time at this rate), or, with a saved model, a few minutes for windows and thresholds."""
    return 300.0 if model else args.cold_start / args.devices + 40 * args.rate


def _fleet_argv(
    args: argparse.Namespace,
    url: str,
    protocol: Literal["5", "3.1.1"],
    model: bool,
    truth: Path,
    summary: Path,
) -> list[str]:
    """The simulator's command line; its clock ends at the wall clock when --duration ends."""
    start = round(time.time() - args.duration * args.rate)  # one simulated second a reading
    return [
        sys.executable,
        "-m",
        "simulators.fleet",
        "--broker",
        url,
        "--devices",
        str(args.devices),
        "--rate",
        str(args.rate),
        "--step",
        "1",
        "--start",
        str(start),
        "--duration",
        str(args.duration),
        "--day-length",
        str(args.day_length),
        "--seed",
        str(args.seed),
        "--truth",
        str(truth),
        "--warmup",
        str(_warmup(args, model)),
        "--anomaly-rate",
        "3",
        "--protocol",
        protocol,
        "--summary",
        str(summary),
    ]


def _start_fleet(
    args: argparse.Namespace, broker: PrivateBroker, model: bool, truth: Path, summary: Path
) -> subprocess.Popen[bytes]:
    fleet = subprocess.Popen(
        _fleet_argv(args, broker.url, broker.protocol, model, truth, summary),
        stdout=subprocess.DEVNULL,
    )
    print(
        f"simulator: {args.devices} pumps, {args.rate:g} readings/s each (1 simulated second "
        f"per reading, a {args.day_length / 60:g}-minute 'day'); its clock starts "
        f"{args.duration * args.rate / 3600:.3g} h back and reaches now in {args.duration:g} s, "
        f"never ahead; faults start after {_warmup(args, model) / args.rate:.0f} s"
    )
    return fleet


if __name__ == "__main__":
    sys.exit(main())
