"""``make demo-cluster``: three daemons share a simulated fleet through NATS; one is killed.

A private nats-server (JetStream, its MQTT listener, the subject mappings of ``--partitions``
partitions) and a PostgreSQL database of the demo's own (created on ``--postgres``, dropped
at the end) carry three ``sentinel run`` processes with ``[cluster]`` on. The simulated pump
fleet publishes MQTT to NATS's MQTT listener, as sensors would. Once a second the screen
shows which daemon holds which partition and how many readings are committed; after
``--kill-after`` seconds one daemon is SIGKILLed and the others take its partitions over.
At the end every device's committed readings are counted against what the fleet sent.
The daemons have no model (their stream collects its cold start): the demo is about the
partitions, `make demo` about detection. Logs: ``demo-cluster-state/d*.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from sentinel.cluster.ownership import PUBLISHER_SLOT, owners
from sentinel.config import NatsConfig, StreamConfig, config_to_toml
from sentinel.ingest.subjects import server_mappings
from simulators.nats_server import PrivateNats, find_nats_server

__all__ = ["main", "start_member"]

FEATURES = ["flow", "pressure", "current", "temperature", "vibration", "voltage"]
TOPIC = "plant/{device}/pump"
STATE = Path("demo-cluster-state")
MEMBERS = ("d0", "d1", "d2")


def _counts(url: str) -> dict[str, int]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT device, readings FROM device_state"))
            return {str(r.device): int(r.readings) for r in rows}
    except Exception:  # noqa: BLE001 - the schema may not exist yet: nothing committed
        return {}
    finally:
        engine.dispose()


def _holders(url: str) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for slot, member in sorted(owners(url, "sentinel").items()):
        if slot != PUBLISHER_SLOT:
            found.setdefault(member, []).append(slot)
    return found


def start_member(
    name: str,
    state: Path,
    nats_url: str,
    url: str,
    partitions: int,
    *,
    interval: float,
    label: str,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """One ``sentinel run`` member of a cluster with no model (its stream collects a cold
    start it never reaches), its config ``state/<name>.toml`` and log ``state/<name>.log``;
    ``interval``: its ownership look. The demo's daemons and ``benchmarks/scaleout.py``'s."""
    config = {
        "state_dir": str(state / name),
        "database": {"url": url},
        "ingest": {"source": "nats"},
        "nats": {"servers": [nats_url], "partitions": partitions, "name": f"{label}-{name}"},
        "cluster": {"enabled": True, "member": name, "interval": interval},
        "publish": {"enabled": False},
        "retrain": {"enabled": False},
        "cold_start": {"readings": 10_000_000},
        "health": {"enabled": False},
        "logging": {"level": "info", "format": "json"},
        "streams": [{"name": "pump", "topic": TOPIC, "features": FEATURES}],
    }
    path = state / f"{name}.toml"
    path.write_text(config_to_toml(config))
    env = {k: v for k, v in os.environ.items() if k != "SENTINEL_CONFIG"}
    return subprocess.Popen(
        [sys.executable, "-m", "sentinel.cli", "run", "--config", str(path)],
        cwd=cwd,
        stdout=(state / f"{name}.log").open("ab"),
        stderr=subprocess.STDOUT,
        env=env,
    )


def _daemon(name: str, server: PrivateNats, url: str, partitions: int) -> subprocess.Popen[bytes]:
    return start_member(name, STATE, server.url, url, partitions, interval=1.0, label="demo")


def _line(started: float, url: str, alive: set[str]) -> str:
    held = _holders(url)
    cells = []
    for name in MEMBERS:
        mark = "" if name in alive else " (killed)"
        cells.append(f"{name}{mark}: {held.get(name, [])}")
    return (
        f"t={time.monotonic() - started:5.1f}s  "
        + "  ".join(cells)
        + (f"  committed={sum(_counts(url).values())}")
    )


def run(args: argparse.Namespace, url: str) -> int:
    mappings = server_mappings(
        NatsConfig(partitions=args.partitions),
        [StreamConfig.model_validate({"name": "pump", "topic": TOPIC, "features": FEATURES})],
    )
    shutil.rmtree(STATE, ignore_errors=True)
    STATE.mkdir(parents=True)
    with PrivateNats(workdir=STATE / "nats", mappings=mappings, mqtt=True) as server:
        print(f"nats-server on {server.url}, MQTT listener on port {server.mqtt_port}")
        daemons = {n: _daemon(n, server, url, args.partitions) for n in MEMBERS}
        fleet: subprocess.Popen[bytes] | None = None
        try:
            started = time.monotonic()
            share = args.partitions // len(MEMBERS)
            while sorted(map(len, _holders(url).values())) != [share] * len(MEMBERS):
                if time.monotonic() - started > 180:
                    print("the daemons did not split the partitions in 180 s; see the logs")
                    return 1
                time.sleep(1.0)
            print(_line(started, url, set(MEMBERS)))
            summary = STATE / "fleet.json"
            fleet = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "simulators.fleet",
                    "--broker",
                    f"mqtt://127.0.0.1:{server.mqtt_port}",
                    "--protocol",
                    "3.1.1",
                    "--devices",
                    str(args.devices),
                    "--rate",
                    str(args.rate),
                    "--duration",
                    str(args.duration),
                    "--summary",
                    str(summary),
                ],
                stdout=subprocess.DEVNULL,
            )
            print(f"fleet: {args.devices} pumps, {args.rate:g} readings/s each, over MQTT")
            began = time.monotonic()
            alive = set(MEMBERS)
            killed_at: float | None = None
            takeover: float | None = None
            while fleet.poll() is None:
                time.sleep(1.0)
                if killed_at is None and time.monotonic() - began >= args.kill_after:
                    daemons["d1"].send_signal(signal.SIGKILL)
                    daemons["d1"].wait(30)
                    alive.discard("d1")
                    killed_at = time.monotonic()
                    print(">>> SIGKILL d1")
                held = _holders(url)
                if (
                    killed_at is not None
                    and takeover is None
                    and "d1" not in held
                    and sum(map(len, held.values())) == args.partitions
                ):
                    takeover = time.monotonic() - killed_at
                    print(f">>> d1's partitions taken over {takeover:.1f} s after the kill")
                print(_line(started, url, alive))
            sent = int(json.loads(summary.read_text())["total"])
            deadline = time.monotonic() + 120
            while sum(_counts(url).values()) < sent and time.monotonic() < deadline:
                time.sleep(0.5)
            counts = _counts(url)
            per_device = sent // args.devices
            lost = sum(max(0, per_device - c) for c in counts.values())
            lost += per_device * (args.devices - len(counts))
            twice = sum(max(0, c - per_device) for c in counts.values())
            print(_line(started, url, alive))
            print(
                f"sent={sent} committed={sum(counts.values())} lost={lost} duplicated={twice} "
                f"takeover_s={'-' if takeover is None else f'{takeover:.1f}'}"
            )
            return 0 if lost == 0 and twice == 0 else 1
        finally:
            if fleet is not None and fleet.poll() is None:
                fleet.terminate()
                fleet.wait(30)
            for proc in daemons.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in daemons.values():
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--postgres",
        default=os.environ.get(
            "SENTINEL_DEMO_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server where the demo may create (and drop) a database",
    )
    ap.add_argument("--devices", type=int, default=24)
    ap.add_argument("--rate", type=float, default=5.0, help="readings/s per pump")
    ap.add_argument("--duration", type=float, default=40.0, help="seconds the fleet publishes")
    ap.add_argument("--kill-after", type=float, default=15.0, help="seconds into the fleet's run")
    ap.add_argument("--partitions", type=int, default=6)
    args = ap.parse_args(argv)
    if find_nats_server() is None:
        print("needs the nats-server binary (apt-get install nats-server)")
        return 2
    admin = make_url(args.postgres)
    name = f"sentinel_demo_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        return run(args, admin.set(database=name).render_as_string(hide_password=False))
    except KeyboardInterrupt:
        return 130
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
