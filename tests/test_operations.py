"""The real `sentinel run` process: SIGHUP reloads, and the systemd notify protocol."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sentinel.config import config_to_toml
from simulators.broker import PrivateBroker, free_port
from tests.e2e_helpers import REPO, daemon_config, subprocess_env, wait_for
from tests.ops_helpers import healthz, install_untrained_model, metrics, publish_fleet, sample

pytestmark = [pytest.mark.integration]


def events(log: Path) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line from a library that bypassed structlog
    return found


def named(log: Path, event: str) -> list[dict[str, Any]]:
    return [e for e in events(log) if e.get("event") == event]


def start(
    config_path: Path, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sentinel.cli", "run", "--config", str(config_path)],
        cwd=REPO,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**subprocess_env(), **(env or {})},
    )


@pytest.fixture
def daemon_files(tmp_path: Path, mqtt_broker: PrivateBroker) -> tuple[dict[str, Any], Path, int]:
    state = tmp_path / "state"
    install_untrained_model(state)
    port = free_port()
    config = daemon_config(
        state,
        mqtt_broker,
        database_url=f"sqlite:///{state / 'sentinel.db'}",
        client_id=f"ops-{tmp_path.name}"[:60],
        health={"port": port},
    )
    path = tmp_path / "sentinel.toml"
    path.write_text(config_to_toml(config))
    return config, path, port


@pytest.fixture
def stopper() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_sighup_applies_a_valid_file_and_refuses_an_invalid_one(
    mqtt_broker: PrivateBroker,
    daemon_files: tuple[dict[str, Any], Path, int],
    tmp_path: Path,
    stopper: list[subprocess.Popen[bytes]],
) -> None:
    config, path, port = daemon_files
    log = tmp_path / "daemon.log"
    daemon = start(path, log)
    stopper.append(daemon)
    wait_for(lambda: bool(named(log, "mqtt_subscribed")), 60, "the daemon to subscribe")
    wait_for(lambda: healthz(port)[0] == 200, 60, "healthy")

    # A valid file: thresholds and the log level are live; the window length is not.
    config["threshold"] = {"multiplier": 2.5}
    config["logging"] = {"level": "debug", "format": "json"}
    config["windows"] = {**config["windows"], "length": 24}
    path.write_text(config_to_toml(config))
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: bool(named(log, "config_applied")), 60, "the worker to apply the reload")
    reloaded = named(log, "config_reloaded")[0]["changed"]
    assert reloaded == {
        "threshold.multiplier": {"old": 1.5, "new": 2.5},
        "logging.level": {"old": "info", "new": "debug"},
    }
    assert named(log, "config_applied")[0]["threshold"]["multiplier"] == 2.5
    restart = named(log, "config_reload_needs_restart")[0]["keys"]
    assert restart == {"windows.length": {"running": 16, "file": 24}}
    # The untrained test model finds everything anomalous: growing alerts log at debug.
    publish_fleet(mqtt_broker.url, mqtt_broker.protocol, devices=2, steps=60)
    wait_for(lambda: any(e.get("level") == "debug" for e in events(log)), 60, "debug lines")
    assert sample(metrics(port), "sentinel_config_reloads_total", result="applied") == 1

    # An invalid value, then a file that is not TOML at all: refused, the daemon carries on.
    config["threshold"] = {"multiplier": 0.5}
    path.write_text(config_to_toml(config))
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: len(named(log, "config_reload_refused")) == 1, 60, "refusal")
    assert "threshold.multiplier" in named(log, "config_reload_refused")[0]["error"]
    path.write_text("[threshold\nmultiplier = ")
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: len(named(log, "config_reload_refused")) == 2, 60, "second refusal")
    assert daemon.poll() is None, "a bad file must not stop the daemon"
    assert healthz(port)[0] == 200
    assert sample(metrics(port), "sentinel_config_reloads_total", result="refused") == 2
    assert len(named(log, "config_applied")) == 1, "a refused file changes nothing"

    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(120) == 0


def test_watchdog_is_fed_only_while_the_pipeline_makes_progress(
    tmp_path: Path, stopper: list[subprocess.Popen[bytes]]
) -> None:
    """systemd's side of Type=notify + WatchdogSec=, played by a real datagram socket."""
    broker = PrivateBroker(prefer="mosquitto", workdir=tmp_path / "broker")
    broker.start()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock_path = str(tmp_path / "notify.sock")
    sock.bind(sock_path)
    sock.settimeout(0.2)
    try:
        state = tmp_path / "state"
        install_untrained_model(state)
        config = daemon_config(state, broker, client_id="ops-watchdog", health={"enabled": False})
        path = tmp_path / "sentinel.toml"
        path.write_text(config_to_toml(config))
        log = tmp_path / "daemon.log"
        # A 2 s watchdog: the daemon checks for progress every 0.5 s.
        daemon = start(path, log, {"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "2000000"})
        stopper.append(daemon)
        received: list[tuple[float, str]] = []

        def drain(seconds: float) -> list[str]:
            got: list[str] = []
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    message = sock.recv(4096).decode()
                except TimeoutError:
                    continue
                received.append((time.monotonic(), message))
                got.append(message)
            return got

        wait_for(lambda: any("READY=1" in m for m in drain(0.5)), 60, "READY=1")
        assert drain(3).count("WATCHDOG=1") >= 3, "idle and connected: the watchdog is fed"

        broker.stop()
        after_stop = drain(1.5)  # the disconnect is noticed within one check
        starved = drain(4)
        assert "WATCHDOG=1" not in starved, "cut off from the broker, it must not be fed"
        assert any(m.startswith("STATUS=degraded") for m in after_stop + starved)
        assert named(log, "watchdog_not_fed")

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(120) == 0
        assert "STOPPING=1" in drain(0.5) + [m for _, m in received]
    finally:
        sock.close()
        broker.stop()
        os.environ.pop("NOTIFY_SOCKET", None)


def test_sighup_with_a_new_stream_list_restarts_the_components_in_process(
    mqtt_broker: PrivateBroker,
    daemon_files: tuple[dict[str, Any], Path, int],
    tmp_path: Path,
    stopper: list[subprocess.Popen[bytes]],
) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from sqlalchemy import create_engine, text

    config, path, port = daemon_files
    log = tmp_path / "daemon.log"
    daemon = start(path, log)
    stopper.append(daemon)
    wait_for(lambda: bool(named(log, "mqtt_subscribed")), 60, "the daemon to subscribe")
    url = config["database"]["url"]

    def committed() -> dict[str, int]:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT stream, SUM(readings) FROM device_state GROUP BY stream")
                )
                return {r[0]: int(r[1]) for r in rows}
        finally:
            engine.dispose()

    pump = publish_fleet(mqtt_broker.url, mqtt_broker.protocol, devices=2, steps=30)
    wait_for(lambda: committed().get("pump") == pump, 60, "pump readings committed")

    # A second kind of device: its stream joins on SIGHUP, without a new process.
    config["streams"] = [
        *config["streams"],
        {"name": "fan", "topic": "plant/{device}/fan", "features": ["rpm", "amps"]},
    ]
    path.write_text(config_to_toml(config))
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: len(named(log, "sentinel_running")) == 2, 60, "the components to run again")
    restarting = named(log, "config_reload_restarting_components")[0]["streams"]
    assert restarting == {"old": ["pump"], "new": ["pump", "fan"]}
    assert named(log, "sentinel_running")[-1]["streams"] == ["pump", "fan"]
    assert daemon.poll() is None, "the same process carries on"
    wait_for(lambda: healthz(port)[0] in (200, 503), 60, "health served again")

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(mqtt_broker.host, mqtt_broker.port)
    client.loop_start()
    try:
        for i in range(20):
            body = json.dumps({"ts": 1_704_067_200 + i, "rpm": 1400 + i, "amps": 3.1})
            client.publish("plant/fan-1/fan", body, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
    more = publish_fleet(
        mqtt_broker.url, mqtt_broker.protocol, devices=2, steps=30, start_ts=1_704_070_000.0
    )
    wait_for(lambda: committed() == {"pump": pump + more, "fan": 20}, 60, "both streams")

    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(120) == 0
