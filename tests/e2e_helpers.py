"""Helpers for end-to-end tests: a trained fleet model, the fleet simulator, the daemon."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pytest
import torch

from sentinel.config import ColdStartConfig, SentinelConfig, config_to_toml
from sentinel.daemon.app import SentinelApp
from sentinel.model import ModelRegistry, train_detector, training_options
from sentinel.store import AlertRecord, AlertStore
from simulators.broker import PrivateBroker, Publisher
from simulators.fleet import FEATURES, FleetSimulator, SimReading, encode

REPO = Path(__file__).resolve().parents[1]
WINDOW = 16
HOP = 4
MODEL = {"hidden_size": 32, "latent_size": 8, "epochs": 30, "batch_size": 64, "seed": 3}


class BrokerAddress(Protocol):
    """What a daemon config needs of a broker: a PrivateBroker, or NoBroker."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def protocol(self) -> Literal["5", "3.1.1"]: ...


@dataclass(frozen=True)
class NoBroker:
    """For a config that no daemon will run with."""

    host: str = "127.0.0.1"
    port: int = 1
    protocol: Literal["5", "3.1.1"] = "5"


def daemon_config(
    state_dir: Path,
    broker: BrokerAddress,
    *,
    database_url: str | None = None,
    client_id: str = "sentinel-test",
    **sections: dict[str, Any],
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "state_dir": str(state_dir),
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "protocol": broker.protocol,
            "client_id": client_id,
            "reconnect_min_delay": 1,
            "reconnect_max_delay": 2,
        },
        "database": {"url": database_url, "flush_interval": 0.05},
        "windows": {"length": WINDOW, "hop": HOP, "max_gap": 30},
        "model": MODEL,
        "cold_start": {"readings": 2000, "span": 0},
        "logging": {"level": "info", "format": "json"},
        "streams": [{"name": "pump", "topic": "plant/{device}/pump", "features": FEATURES}],
        # A free port each: tests (and other checkouts' tests) run side by side.
        "health": {"port": 0},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return config


def train_fleet_model(models_dir: Path, devices: int = 4, steps: int = 1500) -> str:
    """Train the pump stream's model on clean simulated data; returns its version."""
    sim = FleetSimulator(devices, seed=101, anomaly_rate=0.0, warmup=0.0)
    rows: dict[str, list[list[float]]] = {name: [] for name in sim.devices}
    for _, step in zip(range(steps), sim.steps(), strict=False):
        for reading in step:
            rows[reading.device].append([reading.values[f] for f in FEATURES])
    config = SentinelConfig.model_validate(daemon_config(models_dir, NoBroker()))
    detector = train_detector(
        [np.asarray(r, dtype=np.float32) for r in rows.values()],
        training_options(config, "pump"),
        device=torch.device("cpu"),
    )
    registry = ModelRegistry(models_dir)
    registry.save(detector)
    registry.activate("pump", detector.version)
    return detector.version


def install_model(models_dir: Path, state_dir: Path) -> None:
    shutil.copytree(models_dir, state_dir / "models")


def run_fleet(broker: PrivateBroker, tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start the fleet simulator; its summary lands in tmp_path/summary.json."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators.fleet",
            "--broker",
            broker.url,
            "--protocol",
            broker.protocol,
            "--truth",
            str(tmp_path / "truth.jsonl"),
            "--summary",
            str(tmp_path / "summary.json"),
            *args,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def start_daemon(config_path: Path, log: Path) -> subprocess.Popen[bytes]:
    """A real ``sentinel run`` process; its output is appended to ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "sentinel.cli", "run", "--config", str(config_path)],
        cwd=REPO,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=subprocess_env(),
    )


def write_toml(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(config_to_toml(config))
    return path


def finish(proc: subprocess.Popen[bytes], timeout: float = 120) -> str:
    out, _ = proc.communicate(timeout=timeout)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{text[-3000:]}"
    return text


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def read_truth(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# Seconds a test waits for a cold-start training to finish. Generous on purpose: it is a
# condition, met as soon as the model is there (tens of seconds on an idle box), and training
# on a loaded 2-core box has taken over 240 s; no test may fail because the box is busy.
TRAINING_WAIT = 900.0
# pytest-timeout for a test whose body holds a cold start's training (the product path
# trains inside the daemon, so it cannot move to a fixture): the wait plus the test's rest.
TRAINS_IN_BODY: pytest.MarkDecorator = pytest.mark.timeout(TRAINING_WAIT + 300)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def readings_committed(url: str) -> int:
    store = AlertStore(url)
    store.open()
    try:
        return sum(p.readings for p in store.device_progress().values())
    finally:
        store.close()


def all_alerts(url: str) -> list[AlertRecord]:
    store = AlertStore(url)
    store.open()
    try:
        return store.list_alerts(limit=100_000)
    finally:
        store.close()


@dataclass
class RunningApp:
    app: SentinelApp
    stop: threading.Event
    thread: threading.Thread
    result: list[int]


@contextmanager
def running_app(config: dict[str, Any], ready_timeout: float = 30) -> Iterator[RunningApp]:
    """The daemon in this process, on its own thread, stopped (and checked) on exit."""
    app = SentinelApp(SentinelConfig.model_validate(config), stats_interval=5)
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(app.run(stop)), daemon=True)
    thread.start()
    assert app.ready.wait(ready_timeout), "the daemon did not start"
    source = app.source
    assert source is not None
    assert source.wait_subscribed(ready_timeout), "the daemon did not subscribe"
    running = RunningApp(app, stop, thread, result)
    try:
        yield running
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the daemon did not stop within 30 s"


def overlaps(alert: AlertRecord, event: dict[str, Any], slack: float) -> bool:
    start = alert.started_at.timestamp()
    end = (alert.ended_at or alert.updated_at).timestamp()
    return start <= float(event["end"]) + slack and end >= float(event["start"]) - slack


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SENTINEL_CONFIG", None)
    return env


def _publish_steps(publisher: Publisher, steps: Iterator[list[SimReading]], count: int) -> int:
    sent = 0
    for _, step in zip(range(count), steps, strict=False):
        for reading in step:
            publisher.publish(f"plant/{reading.device}/pump", encode(reading, sent, "json"))
            sent += 1
    return sent


@dataclass
class DetectionResult:
    visible: int  # injected anomalies that started early enough to be seen
    caught: list[dict[str, Any]]
    false_alerts: int
    device_hours: float
    by_kind: dict[str, str]
    alerts: list[AlertRecord]
    rejected: dict[str, int]
    scored: int
    ms_per_window: float

    @property
    def recall(self) -> float:
        return len(self.caught) / self.visible if self.visible else 0.0

    def summary(self) -> str:
        return (
            f"recall {self.recall:.2f} ({len(self.caught)}/{self.visible}; by kind "
            f"{self.by_kind}), {self.false_alerts} false alerts in {self.device_hours:.1f} "
            f"device-hours, {self.scored} windows scored, {self.ms_per_window:.2f} ms/window"
        )


def fleet_detection_scenario(
    broker: PrivateBroker,
    tmp_path: Path,
    database_url: str,
    *,
    threshold: dict[str, Any] | None = None,
    alerts: dict[str, Any] | None = None,
    spikes: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    extra: dict[str, dict[str, Any]] | None = None,
    training_wait: float = TRAINING_WAIT,
    seed: int = 11,
    step: float = 5.0,
    day_length: float = 3600.0,
    warmup_steps: int = 800,
    product_cold_start: bool = False,
    devices: int = 12,
    model_after: int | None = None,
) -> DetectionResult:
    """12 simulated pumps (``devices``) from nothing: clean operation, cold-start training,
    then faults.

    One continuous stream; anomalies begin only after the clean warm-up the daemon trains
    on. 5 simulated seconds per reading and a "day" compressed to one hour: the cold start
    (800 readings per pump, 67 minutes) covers a whole daily cycle and several load changes
    per pump. (A model that never saw part of the day flags winding temperature there --
    a cold-start sizing question, not what this measures.)

    An injected anomaly counts as caught when an alert on its device *starts* inside it, or
    within one window's span after it; an alert that starts anywhere else is false.

    ``extra``: further config sections (e.g. ``{"levels": {"enabled": True}}``), merged under
    the named ones, so a benchmark can measure any setting on this scenario.

    ``seed``: the simulator's draw (pumps, loads, faults). 11 is the scenario every setting
    was measured on; other seeds are fleets nobody tuned on.

    ``step``, ``day_length``, ``warmup_steps``: the fleet at another sampling interval
    (``benchmarks/fleet_detection.py --step``). ``product_cold_start``: the daemon's default
    cold start (``cold_start.readings`` covering ``cold_start.span``) instead of the
    scenario's 750 readings a pump; ``warmup_steps`` must then cover the span.

    The faults are published only once the model is trained, so ``training_wait`` (seconds
    allowed for the cold-start training) changes how long a slow detector may take, never
    what it detects. ``model_after``: only that many of the warm-up steps are published
    before the wait for the model, the rest after it -- as a live fleet's model arrives
    while its readings go on, before its devices' hour where ``cold_start.max_readings``
    ends the cold start (``extra``'s ``[cold_start]``).
    """
    test_steps = 2400
    sim = FleetSimulator(
        devices,
        seed=seed,
        step=step,
        start_ts=1_709_251_200.0,
        anomaly_rate=2.0,
        warmup=warmup_steps * step,
        day_length=day_length,
    )
    # The product's cold start is spelt out: daemon_config's is the tests' (readings alone).
    product = ColdStartConfig().model_dump(include={"readings", "span", "max_readings"})
    sections: dict[str, dict[str, Any]] = {
        # At 5 s the scenario's 750 readings a pump cover 62 minutes: the span's hour too.
        "cold_start": product
        if product_cold_start
        else {"readings": devices * (warmup_steps - 50)},
        "windows": {"max_gap": 3 * step},
    }
    for key, value in (extra or {}).items():
        sections[key] = {**sections.get(key, {}), **value}
    if threshold:
        sections["threshold"] = {**sections.get("threshold", {}), **threshold}
    if alerts:
        sections["alerts"] = {**sections.get("alerts", {}), **alerts}
    if spikes:
        sections["spikes"] = {**sections.get("spikes", {}), **spikes}
    if model:
        sections["model"] = {**sections.get("model", {}), **model}
    config = daemon_config(
        tmp_path / "state",
        broker,
        database_url=database_url,
        client_id=f"e2e-{tmp_path.name}",
        **sections,
    )
    steps = sim.steps()
    # A window, as the fleet simulator's: a larger fleet's hundreds of thousands of
    # publishes all queued in paho stalled it (48 pumps: 82,756 of 184,320 ever sent).
    publisher = Publisher(broker.url, protocol=broker.protocol, window=10_000)
    publisher.start()
    with running_app(config) as running:
        pipeline = running.app.pipeline
        assert pipeline is not None
        before = warmup_steps if model_after is None else min(model_after, warmup_steps)
        sent = _publish_steps(publisher, steps, before)
        wait_for(lambda: pipeline.has_model("pump"), training_wait, "cold-start training")
        sent += _publish_steps(publisher, steps, warmup_steps - before)
        sent += _publish_steps(publisher, steps, test_steps)
        # a window of 10,000 publishes may wait on a broker that a busy box slows
        assert publisher.finish(300) == 0
        wait_for(lambda: readings_committed(database_url) == sent, 300, "all readings committed")
        stats = pipeline.stats
        rejected = pipeline.rejections.as_dict()
    assert running.result == [0]

    last_ts = sim.start_ts + (warmup_steps + test_steps - 1) * step
    # a window holds an anomaly's readings this long after they arrive
    span = float(config["windows"]["length"]) * step
    truth = [json.loads(t.to_json()) for t in sim.truth]
    visible = [t for t in truth if t["start"] + span < last_ts]
    found = all_alerts(database_url)

    def explains(t: dict[str, Any], alert: AlertRecord) -> bool:
        start = alert.started_at.timestamp()
        return alert.device == t["device"] and float(t["start"]) <= start <= float(t["end"]) + span

    # Kept beside the run's files for a person to look at when the numbers move.
    (tmp_path / "alerts.json").write_text(json.dumps([a.to_dict() for a in found], indent=1))
    (tmp_path / "truth.json").write_text(json.dumps(truth, indent=1))
    caught = [t for t in visible if any(explains(t, a) for a in found)]
    kinds = sorted({t["kind"] for t in visible})
    return DetectionResult(
        visible=len(visible),
        caught=caught,
        false_alerts=sum(1 for a in found if not any(explains(t, a) for t in truth)),
        device_hours=devices * test_steps * step / 3600,
        by_kind={
            k: f"{sum(t['kind'] == k for t in caught)}/{sum(t['kind'] == k for t in visible)}"
            for k in kinds
        },
        alerts=found,
        rejected=rejected,
        scored=stats.scored,
        ms_per_window=1e3 * stats.score_seconds / max(stats.scored, 1),
    )
