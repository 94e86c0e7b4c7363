"""What the daemon writes to disk and how often it syncs, per second and per commit, at a
steady fleet rate: the SD-card wear of ``[database] sqlite_durability`` (issue #22).

The real daemon (``sentinel run``, a model installed, SQLite) runs under strace
(``tests/strace_helpers.py``) while the fleet simulator publishes at a fixed wall-clock
rate; bytes and syncs are summed per file from the trace. Needs strace and ptrace.

    .venv/bin/python benchmarks/disk_writes.py [--devices 20] [--rate 1] [--seconds 60]
        [--sqlite-durability full|unsafe-on-power-loss] [--flush-interval 0.2] [--spread]

``--spread`` has the simulator publish each second's readings evenly over the second, as
devices whose clocks are not in step do; without it all of a step's readings go at once,
so the daemon's passes (and commits) come once a step whatever its flush interval.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulators.broker import PrivateBroker
from tests.e2e_helpers import (
    REPO,
    daemon_config,
    install_model,
    readings_committed,
    run_fleet,
    subprocess_env,
    train_fleet_model,
    wait_for,
    write_toml,
)
from tests.strace_helpers import Syscall, parse_trace, strace_command, strace_unusable


def _kind(path: str, state: Path) -> str:
    if not path.startswith(str(state)):
        return "other"
    name = Path(path).name
    if name.startswith("sentinel.db"):
        return name.replace("sentinel.db", "database")
    if "reservoir" in path:
        return "reservoir" + name.split(".sqlite", 1)[-1] if ".sqlite" in name else "reservoir/"
    return "state files"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--rate", type=float, default=1.0, help="readings/s per device")
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--sqlite-durability", choices=("full", "unsafe-on-power-loss"), default="full")
    ap.add_argument("--flush-interval", type=float, default=None, help="s (default: the product's)")
    ap.add_argument("--spread", action="store_true", help="readings spread over each second")
    ap.add_argument(
        "--history-hours",
        type=float,
        default=0.0,
        help="score history (a row a device and minute) already in the database when the "
        "daemon starts, as after that many hours of running: a short run alone writes to a "
        "small table",
    )
    args = ap.parse_args()
    from sentinel.config import DatabaseConfig
    from sentinel.logs import configure_logging

    if args.flush_interval is None:
        args.flush_interval = DatabaseConfig().flush_interval

    configure_logging("warning", "console")
    if (reason := strace_unusable()) is not None:
        print(f"cannot measure: {reason}")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_fleet_model(work / "models", devices=4, steps=1200)
        broker = PrivateBroker(prefer="mosquitto", workdir=work / "broker")
        broker.start()
        try:
            state = work / "state"
            install_model(work / "models", state)
            url = f"sqlite:///{state / 'sentinel.db'}"
            config = daemon_config(state, broker, database_url=url)
            config["database"].update(
                flush_interval=args.flush_interval, sqlite_durability=args.sqlite_durability
            )
            path = write_toml(work / "sentinel.toml", config)
            if args.history_hours > 0:
                _history(url, args.devices, args.history_hours)
            log, trace = work / "daemon.log", work / "strace.txt"
            argv = [sys.executable, "-m", "sentinel.cli", "run", "--config", str(path)]
            env = {**subprocess_env(), "OMP_NUM_THREADS": "1"}
            proc = subprocess.Popen(
                strace_command(trace, argv), cwd=REPO, stdout=log.open("ab"),
                stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
            steps = int(args.seconds * args.rate)
            total = args.devices * steps
            try:
                wait_for(lambda: _subscribed(log), 120, "the daemon to subscribe")
                fleet = run_fleet(
                    broker, work, "--devices", str(args.devices), "--rate", str(args.rate),
                    "--steps", str(steps), "--anomaly-rate", "2", "--seed", "5",
                    *(["--spread"] if args.spread else []),
                )  # fmt: skip
                first = _lines(trace)
                fleet.communicate(timeout=args.seconds * 3 + 120)
                wait_for(lambda: readings_committed(url) >= total, 120, "every reading committed")
                last = _lines(trace)
            finally:
                for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
                    os.kill(int(child), signal.SIGTERM)
                proc.wait(60)
            _report(parse_trace(trace), first, last, state, args, total)
        finally:
            broker.stop()
    return 0


def _history(url: str, devices: int, hours: float) -> None:
    """Migrate the database and fill score_history with ``hours`` of minutes for the
    fleet's pumps, ending where the fleet's readings begin (now)."""
    import time

    from sentinel.records import ScoreBucket
    from sentinel.store.db import AlertStore
    from sentinel.store.history import record_history

    store = AlertStore(url)
    store.open()
    store.migrate()
    now = int(time.time()) // 60 * 60
    minutes = int(hours * 60)
    with store.engine.begin() as conn:
        for m in range(minutes, 0, -1):
            start = now - 60 * m
            record_history(
                conn,
                (
                    ScoreBucket("pump", f"pump-{d:03d}", start, 15, 0, 1.0, 2.0, 0.5)
                    for d in range(devices)
                ),
            )
    store.close()
    print(f"score history: {minutes} minutes x {devices} pumps before the run")


def _subscribed(log: Path) -> bool:
    return b"mqtt_subscribed" in log.read_bytes()


def _lines(trace: Path) -> int:
    with trace.open("rb") as f:
        return sum(1 for _ in f)


def _report(
    calls: list[Syscall],
    first: int,
    last: int,
    state: Path,
    args: argparse.Namespace,
    total: int,
) -> None:
    written: collections.Counter[str] = collections.Counter()
    writes: collections.Counter[str] = collections.Counter()
    syncs: collections.Counter[str] = collections.Counter()
    for call in calls:
        if not first <= call.start < last or call.fd.startswith("TCP"):
            continue
        kind = _kind(call.fd, state)
        if call.name == "pwrite64":
            writes[kind] += 1
            written[kind] += call.result or 0
        elif call.name in ("fsync", "fdatasync"):
            syncs[kind] += 1
    seconds = args.seconds
    commits = syncs["database-wal"]
    print(
        f"{args.devices} devices x {args.rate:g} readings/s for {seconds} s ({total} readings), "
        f"sqlite_durability = {args.sqlite_durability}, flush_interval {args.flush_interval:g} s"
        + (", readings spread over each second" if args.spread else ", each second's at once")
    )
    print(f"{'file':<22}{'writes/s':>10}{'KiB/s':>10}{'syncs/s':>10}")
    for kind in sorted(set(written) | set(syncs)):
        print(
            f"{kind:<22}{writes[kind] / seconds:>10.1f}{written[kind] / 1024 / seconds:>10.1f}"
            f"{syncs[kind] / seconds:>10.2f}"
        )
    all_bytes = sum(written.values())
    print(
        f"all: {all_bytes / 1024 / seconds:.1f} KiB/s ({all_bytes / 2**20 * 86400 / seconds:.0f}"
        f" MiB/day), {sum(syncs.values()) / seconds:.2f} syncs/s; database WAL syncs: {commits}"
    )


if __name__ == "__main__":
    sys.exit(main())
