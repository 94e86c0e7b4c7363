"""Scaling out: readings/s with 1, 2 and 3 daemons sharing one fleet (issue #24).

Each run gets a private nats-server (JetStream, ``--partitions`` partitions by the server's
subject mapping) and a PostgreSQL database of its own (created on ``--postgres``, dropped
after). N real ``sentinel run`` processes with ``[cluster]`` on share the partitions; once
they have split them, ``--devices`` x ``--steps`` readings (one 6-feature JSON reading a
message) are published at once and the clock runs from the first committed reading to the
last (polled every 0.1 s). The daemons have no model (their stream is still collecting its
cold start), as in ``nats_drain.py``: this measures the source, parsing, the device checks,
windows and the PostgreSQL commits with their acks, not scoring. CPU is the daemons'
user + system time over the drain (from /proc), commits are PostgreSQL's ``xact_commit``.

The last run (the most daemons) then takes a second backlog and SIGKILLs one daemon once a
third of it is committed: ``takeover_s`` runs from the kill until the survivors hold every
partition, and the last line counts every device's readings against what was sent.

    .venv/bin/python benchmarks/scaleout.py --postgres postgresql+psycopg://postgres@127.0.0.1/test
        [--daemons 1 2 3] [--devices 100] [--steps 600] [--partitions 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import nats
from nats.js.api import StorageType
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sentinel.cluster.ownership import PUBLISHER_SLOT, owners  # noqa: E402
from sentinel.config import NatsConfig, StreamConfig  # noqa: E402
from sentinel.ingest.subjects import server_mappings  # noqa: E402
from simulators.demo_cluster import start_member  # noqa: E402
from simulators.nats_server import PrivateNats  # noqa: E402

FEATURES = ["flow", "pressure", "current", "temperature", "vibration", "voltage"]
TOPIC = "plant/{device}/pump"
GROUP = "sentinel"


def _payload(i: int, start: float) -> bytes:
    values = {f: 1.0 + (i * (k + 1)) % 17 / 10 for k, f in enumerate(FEATURES)}
    return json.dumps({"ts": start + i, **values}).encode()


async def _publish(url: str, devices: int, steps: range, start: float) -> int:
    """Publish every device's readings for ``steps`` and wait until JetStream stored them."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        await js.stream_info("SENTINEL")
    except nats.js.errors.NotFoundError:
        await js.add_stream(name="SENTINEL", subjects=["sentinel.*.>"], storage=StorageType.FILE)
    before = (await js.stream_info("SENTINEL")).state.messages
    for i in steps:
        for d in range(devices):
            await nc.publish(f"plant.pump-{d}.pump", _payload(i, start))
    await nc.flush()
    want = before + devices * len(steps)
    deadline = time.monotonic() + 60
    stored = before
    while stored < want and time.monotonic() < deadline:
        stored = (await js.stream_info("SENTINEL")).state.messages
        await asyncio.sleep(0.05)
    await nc.close()
    return int(stored - before)


@contextmanager
def _database(admin_url: str) -> Iterator[str]:
    admin = make_url(admin_url)
    if admin.drivername == "postgresql":
        admin = admin.set(drivername="postgresql+psycopg")
    name = f"sentinel_scaleout_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def _query(url: str, sql: str) -> list[tuple[str, int]]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return [(str(r[0]), int(r[-1])) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def _per_device(url: str) -> dict[str, int]:
    return dict(_query(url, "SELECT device, readings FROM device_state"))


def _committed(url: str) -> int:
    return sum(_per_device(url).values())


def _commits(url: str) -> int:
    sql = "SELECT datname, xact_commit FROM pg_stat_database WHERE datname = current_database()"
    return _query(url, sql)[0][1]


def _shares(url: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for slot, member in owners(url, GROUP).items():
        if slot != PUBLISHER_SLOT:
            found[member] = found.get(member, 0) + 1
    return found


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not condition():  # a benchmark's poll, 0.1 s apart: its resolution
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - start


def _start(
    work: Path, name: str, server: PrivateNats, url: str, partitions: int
) -> subprocess.Popen[bytes]:
    return start_member(
        name, work, server.url, url, partitions, interval=0.5, label="bench", cwd=REPO
    )


def _stop(daemons: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in daemons.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in daemons.values():
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def run(admin_url: str, count: int, args: argparse.Namespace, kill: bool) -> dict[str, float]:
    mappings = server_mappings(
        NatsConfig(partitions=args.partitions),
        [StreamConfig.model_validate({"name": "pump", "topic": TOPIC, "features": FEATURES})],
    )
    result: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory(prefix="scaleout-") as tmp,
        _database(admin_url) as url,
        PrivateNats(workdir=Path(tmp) / "nats", mappings=mappings) as server,
    ):
        work = Path(tmp)
        names = [f"d{i}" for i in range(count)]
        daemons = {n: _start(work, n, server, url, args.partitions) for n in names}
        try:
            share = args.partitions // count

            def balanced() -> bool:
                held = _shares(url)
                return (
                    set(held) == set(names)
                    and sum(held.values()) == args.partitions
                    and all(share <= v <= share + 1 for v in held.values())
                )

            _wait(balanced, 300, "the daemons to split the partitions")
            start = time.time() - 10 * args.steps
            cpu = {n: _cpu_seconds(p.pid) for n, p in daemons.items()}
            commits = _commits(url)
            total = asyncio.run(_publish(server.url, args.devices, range(args.steps), start))
            _wait(lambda: _committed(url) > 0, 120, "the first commit")
            began = time.monotonic()
            _wait(lambda: _committed(url) >= total, 900, "every reading committed")
            elapsed = time.monotonic() - began
            used = sum(_cpu_seconds(p.pid) - cpu[n] for n, p in daemons.items())
            result.update(
                readings=total,
                rate=total / elapsed,
                cpu_per_million=used / total * 1e6,
                commits_per_s=(_commits(url) - commits) / elapsed,
            )
            if kill:
                second = range(args.steps, 2 * args.steps)
                sent = total + asyncio.run(_publish(server.url, args.devices, second, start))
                _wait(lambda: _committed(url) >= total + (sent - total) // 3, 300, "a third")
                victim = names[-1]
                daemons[victim].send_signal(signal.SIGKILL)
                killed = time.monotonic()
                daemons[victim].wait(60)
                survivors = set(names) - {victim}

                def taken_over() -> bool:
                    held = _shares(url)
                    return set(held) == survivors and sum(held.values()) == args.partitions

                _wait(taken_over, 300, "the survivors to take the partitions over")
                result["takeover_s"] = time.monotonic() - killed
                result["killed_at"] = _committed(url)
                _wait(lambda: _committed(url) >= sent, 900, "every reading committed")
                _stop({n: p for n, p in daemons.items() if n != victim})
                got = _per_device(url)
                expected = 2 * args.steps
                devices = [f"pump-{d}" for d in range(args.devices)]
                result["lost"] = sum(max(0, expected - got.get(d, 0)) for d in devices)
                result["duplicated"] = sum(max(0, got.get(d, 0) - expected) for d in devices)
                result["sent"] = sent
        finally:
            _stop(daemons)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=os.environ.get("SENTINEL_TEST_POSTGRES_URL"))
    parser.add_argument("--daemons", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args(argv)
    if not args.postgres:
        parser.error("--postgres URL (or SENTINEL_TEST_POSTGRES_URL) is needed")
    print(f"# {platform.node()}: {os.cpu_count()} cores, python {platform.python_version()}")
    base = None
    last: dict[str, float] = {}
    for count in args.daemons:
        last = run(args.postgres, count, args, kill=count == args.daemons[-1] and count > 1)
        base = base or last["rate"] / count
        print(
            f"daemons={count} readings={last['readings']:.0f} rate={last['rate']:,.0f}/s "
            f"per_daemon={last['rate'] / count:,.0f}/s "
            f"efficiency={last['rate'] / (count * base):.2f} "
            f"cpu_s_per_million={last['cpu_per_million']:.0f} "
            f"pg_commits_per_s={last['commits_per_s']:.0f}",
            flush=True,
        )
    if "takeover_s" in last:
        print(
            f"killed one of {args.daemons[-1]} at {last['killed_at']:.0f}/{last['sent']:.0f} "
            "readings"
        )
        print(
            f"lost={last['lost']:.0f} duplicated={last['duplicated']:.0f} "
            f"takeover_s={last['takeover_s']:.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
