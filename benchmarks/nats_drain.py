"""Draining a JetStream backlog: the NATS source against a bare nats-py consumer (issue #24).

A private nats-server (JetStream, the subject mappings for ``--partitions``) holds a backlog
of ``--devices`` x ``--steps`` readings (one 6-feature JSON reading a message), published
before anyone reads. The ceiling is a bare nats-py pull consumer per partition on one
asyncio loop, fetching 100 at a time and acking each message, with no other work. The
daemon run is the real path without a model (the stream is still collecting its cold
start, so no scoring): connect, recreate the consumers, parse, the device checks, windows,
commit to SQLite, ack. Its time runs from the daemon's start (``SentinelApp.run``) until
the last reading is committed, so it includes connecting and setting up the consumers.

    .venv/bin/python benchmarks/nats_drain.py [--devices 20] [--steps 1000]
        [--partitions 1 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, StorageType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.config import NatsConfig, SentinelConfig, StreamConfig
from sentinel.daemon.app import SentinelApp
from sentinel.ingest.subjects import server_mappings
from sentinel.logs import configure_logging
from sentinel.store import AlertStore
from simulators.nats_server import PrivateNats

FEATURES = ["flow", "pressure", "current", "temperature", "vibration", "voltage"]
TOPIC = "plant/{device}/pump"


def _stream() -> StreamConfig:
    return StreamConfig.model_validate({"name": "pump", "topic": TOPIC, "features": FEATURES})


def _payload(i: int, start: float) -> bytes:
    values = {f: 1.0 + (i * (k + 1)) % 17 / 10 for k, f in enumerate(FEATURES)}
    return json.dumps({"ts": start + i, **values}).encode()


async def _backlog(url: str, devices: int, steps: int) -> int:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="SENTINEL", subjects=["sentinel.*.>"], storage=StorageType.FILE)
    start = time.time() - 2 * steps
    for i in range(steps):
        for d in range(devices):
            await nc.publish(f"plant.pump-{d}.pump", _payload(i, start))
    await nc.flush()
    stored = 0
    deadline = time.monotonic() + 60
    while stored < devices * steps and time.monotonic() < deadline:
        stored = (await js.stream_info("SENTINEL")).state.messages
        await asyncio.sleep(0.05)
    await nc.close()
    return int(stored)


async def _bare_drain(url: str, partitions: int, total: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    subs = []
    for p in range(partitions):
        await js.add_consumer(
            "SENTINEL",
            ConsumerConfig(
                durable_name=f"bare-p{p}",
                filter_subject=f"sentinel.{p}.>",
                ack_policy=AckPolicy.EXPLICIT,
                max_ack_pending=2000,
            ),
        )
        subs.append(await js.pull_subscribe_bind(durable=f"bare-p{p}", stream="SENTINEL"))
    got = 0
    started = time.perf_counter()

    async def read(sub: Any) -> None:
        nonlocal got
        while got < total:
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except TimeoutError:  # nats-py raises its own and asyncio's
                continue
            for msg in msgs:
                await msg.ack()
            got += len(msgs)

    await asyncio.gather(*(read(s) for s in subs))
    elapsed = time.perf_counter() - started
    await nc.close()
    return elapsed


def _committed(url: str) -> int:
    store = AlertStore(url)
    store.open()
    try:
        return sum(p.readings for p in store.device_progress().values())
    finally:
        store.close()


def _daemon_drain(server: PrivateNats, state: Path, partitions: int, total: int) -> float:
    url = f"sqlite:///{state / 'sentinel.db'}"
    config = SentinelConfig.model_validate(
        {
            "state_dir": str(state),
            "database": {"url": url},
            "ingest": {"source": "nats"},
            "nats": {"servers": [server.url], "partitions": partitions, "name": "bench"},
            "publish": {"enabled": False},
            "retrain": {"enabled": False},
            "cold_start": {"readings": 10_000_000, "span": 0},
            "windows": {"length": 32, "hop": 4},
            "health": {"enabled": False},
            "logging": {"level": "warning"},
            "streams": [{"name": "pump", "topic": TOPIC, "features": FEATURES}],
        }
    )
    app = SentinelApp(config)
    stop = threading.Event()
    started = time.perf_counter()
    thread = threading.Thread(target=app.run, args=(stop,), daemon=True)
    thread.start()
    assert app.ready.wait(60), "the daemon did not start"
    while _committed(url) < total:  # a benchmark's poll, 0.1 s apart: its resolution
        if time.perf_counter() - started > 600:
            raise RuntimeError("the daemon did not drain the backlog in 600 s")
        time.sleep(0.1)
    elapsed = time.perf_counter() - started
    stop.set()
    thread.join(60)
    return elapsed


def run_once(partitions: int, devices: int, steps: int) -> tuple[float, float, int]:
    mappings = server_mappings(NatsConfig(partitions=partitions), [_stream()])
    with tempfile.TemporaryDirectory(prefix="nats-drain-") as tmp:
        work = Path(tmp)
        with PrivateNats(workdir=work / "nats", mappings=mappings) as server:
            total = asyncio.run(_backlog(server.url, devices, steps))
            bare = asyncio.run(_bare_drain(server.url, partitions, total))
            daemon = _daemon_drain(server, work / "state", partitions, total)
    return total / bare, total / daemon, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--partitions", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    configure_logging("warning", "console")
    cores = os.cpu_count()
    print(f"# {platform.node()}: {cores} cores, python {platform.python_version()}")
    for partitions in args.partitions:
        bare_rates: list[float] = []
        daemon_rates: list[float] = []
        total = 0
        for _ in range(args.repeat):
            bare, daemon, total = run_once(partitions, args.devices, args.steps)
            bare_rates.append(bare)
            daemon_rates.append(daemon)
        b, d = statistics.median(bare_rates), statistics.median(daemon_rates)
        print(
            f"partitions={partitions} messages={total} "
            f"bare={b:,.0f}/s ({' / '.join(f'{r:,.0f}' for r in bare_rates)}) "
            f"sentinel={d:,.0f}/s ({' / '.join(f'{r:,.0f}' for r in daemon_rates)}) "
            f"ratio={d / b:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
