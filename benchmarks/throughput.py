"""End-to-end ingest throughput against the bare MQTT client's ceiling, in one run.

The ceiling is a plain paho subscriber (QoS 1, automatic acks, no work per message)
receiving the same messages from the same private Mosquitto. The daemon run is the real
thing: parse, window, score in batches, threshold, alerts, commit to SQLite, then ack.
Reported: messages/s for both (median of --repeat runs) and their ratio, and the model's
scoring cost per window. Timings on shared machines are noisy; compare ratios.

    .venv/bin/python benchmarks/throughput.py [--devices 20] [--steps 1000] [--repeat 3]
        [--sqlite-durability full|unsafe-on-power-loss]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import torch
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.config import SentinelConfig
from sentinel.daemon.app import SentinelApp
from simulators.broker import PrivateBroker, Publisher
from simulators.fleet import FEATURES, FleetSimulator, encode
from tests.e2e_helpers import (
    daemon_config,
    install_model,
    readings_committed,
    train_fleet_model,
)


def payloads(devices: int, steps: int, seed: int) -> list[tuple[str, bytes]]:
    sim = FleetSimulator(devices, seed=seed, anomaly_rate=2.0, warmup=300.0)
    out: list[tuple[str, bytes]] = []
    for _, step in zip(range(steps), sim.steps(), strict=False):
        for reading in step:
            out.append((f"plant/{reading.device}/pump", encode(reading, len(out), "json")))
    return out


def publish(broker: PrivateBroker, messages: list[tuple[str, bytes]]) -> None:
    publisher = Publisher(broker.url, protocol=broker.protocol)
    publisher.start()
    for topic, payload in messages:
        publisher.publish(topic, payload)
    assert publisher.finish(120) == 0


def ceiling(broker: PrivateBroker, messages: list[tuple[str, bytes]], run: int) -> float:
    received = 0
    done = threading.Event()
    first: list[float] = []

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        nonlocal received
        if not first:
            first.append(time.perf_counter())
        received += 1
        if received == len(messages):
            done.set()

    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ceiling-{run}")
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_connect = lambda c, *args: c.subscribe("plant/+/pump", 1)
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert subscribed.wait(10)
    started = time.perf_counter()
    publish(broker, messages)
    assert done.wait(120), f"ceiling run received {received}/{len(messages)}"
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return len(messages) / elapsed


def daemon(
    broker: PrivateBroker,
    messages: list[tuple[str, bytes]],
    models: Path,
    work: Path,
    run: int,
    durability: str,
) -> tuple[float, float]:
    state = work / f"state-{run}"
    install_model(models, state)
    url = f"sqlite:///{state / 'sentinel.db'}"
    config = daemon_config(state, broker, database_url=url, client_id=f"bench-{run}")
    config["database"]["flush_interval"] = 0.2  # the product default, not the tests' 0.05
    config["database"]["sqlite_durability"] = durability
    config["logging"]["level"] = "warning"
    app = SentinelApp(SentinelConfig.model_validate(config), stats_interval=3600)
    stop = threading.Event()
    thread = threading.Thread(target=app.run, args=(stop,), daemon=True)
    thread.start()
    assert app.ready.wait(30)
    assert app.source is not None
    assert app.source.wait_subscribed(30)
    started = time.perf_counter()
    publish(broker, messages)
    deadline = time.monotonic() + 300
    while readings_committed(url) < len(messages):
        assert time.monotonic() < deadline, "daemon did not take everything in"
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    assert app.pipeline is not None
    stats = app.pipeline.stats
    ms_per_window = 1e3 * stats.score_seconds / max(stats.scored, 1)
    stop.set()
    thread.join(30)
    return len(messages) / elapsed, ms_per_window


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sqlite-durability", choices=("full", "unsafe-on-power-loss"), default="full")
    args = ap.parse_args()

    from sentinel.logs import configure_logging

    configure_logging("warning", "console")
    torch.set_num_threads(1)
    messages = payloads(args.devices, args.steps, seed=7)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = work / "models"
        train_fleet_model(models, devices=4, steps=1200)
        broker = PrivateBroker(prefer="mosquitto", workdir=work / "broker")
        broker.start()
        try:
            ceilings, rates, scoring = [], [], []
            for run in range(args.repeat):
                ceilings.append(ceiling(broker, messages, run))
                rate, ms = daemon(broker, messages, models, work, run, args.sqlite_durability)
                rates.append(rate)
                scoring.append(ms)
        finally:
            broker.stop()
    c, r = statistics.median(ceilings), statistics.median(rates)
    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{torch.get_num_threads()} torch thread(s), python {platform.python_version()}"
    )
    print(
        f"messages per run: {len(messages)} ({args.devices} devices x {args.steps} readings, "
        f"{len(FEATURES)} features), runs: {args.repeat}, "
        f"sqlite_durability: {args.sqlite_durability}"
    )
    print(f"bare paho subscriber (ceiling): {c:8.0f} msg/s  runs {[round(x) for x in ceilings]}")
    print(f"sentinel end to end:            {r:8.0f} msg/s  runs {[round(x) for x in rates]}")
    print(f"ratio: {r / c:.2f} of the ceiling; scoring {statistics.median(scoring):.3f} ms/window")
    return 0


if __name__ == "__main__":
    sys.exit(main())
