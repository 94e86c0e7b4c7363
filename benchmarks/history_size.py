"""Disk used by the score history (issue #25): bytes per device-day, SQLite and PostgreSQL;
and what folding verdicts into minutes costs the pipeline per window.

Writes what the daemon writes for ``--devices`` devices over ``--days`` days of event time,
through ``AlertStore.write`` in the daemon's order: every pass touches each device's current
minute, each minute in ``--passes`` commits that the upsert merges (as live, where a minute's
windows arrive over several passes). Then prunes the first day as the writer would and
writes one more day, to show that pruned pages are reused and the file stops growing.

    .venv/bin/python benchmarks/history_size.py [--devices 100] [--days 2] [--passes 2]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]

The per-window cost is ``HistoryBuckets.add`` over 60,000 verdicts of one device in passes
of 256 (replay's pass size), each pass drained into buckets as the pipeline does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, make_url, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.logs import configure_logging
from sentinel.records import Score, ScoreBucket, Verdict, Window, WriteBatch
from sentinel.store import AlertStore
from sentinel.worker.history import HistoryBuckets

DAY = 86_400
START = 1_767_225_600  # 2026-01-01 00:00 UTC


def write_days(store: AlertStore, devices: int, first_day: int, days: int, passes: int) -> None:
    rng = np.random.default_rng(first_day)
    names = [f"pump-{i:04d}" for i in range(devices)]
    for minute in range(first_day * 1440, (first_day + days) * 1440):
        bucket = START + 60 * minute
        for _ in range(passes):
            scores = rng.gamma(2.0, 0.2, devices)
            store.write(
                [
                    WriteBatch(
                        history=tuple(
                            ScoreBucket(
                                stream="pump",
                                device=name,
                                start=bucket,
                                windows=15 // passes,
                                anomalous=int(score > 1.0),
                                max_score=float(score),
                                threshold=1.0,
                                max_ratio=float(score),
                            )
                            for name, score in zip(names, scores, strict=True)
                        )
                    )
                ]
            )


def sqlite_bytes(store: AlertStore) -> tuple[int, int]:
    """(file bytes in use, free pages' bytes): page_count and freelist_count x page_size."""
    with store.engine.connect() as conn:
        size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
        free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()
    return int(pages * size), int(free * size)


def table_bytes(store: AlertStore) -> int:
    """SQLite: the table's and its index's pages (dbstat); PostgreSQL: heap + indexes."""
    with store.engine.connect() as conn:
        if store.dialect == "postgresql":
            return int(
                conn.execute(text("SELECT pg_total_relation_size('score_history')")).scalar_one()
            )
        try:
            return int(
                conn.exec_driver_sql(
                    "SELECT SUM(pgsize) FROM dbstat "
                    "WHERE name IN ('score_history', 'ix_score_history_bucket')"
                ).scalar_one()
            )
        except Exception:  # noqa: BLE001 - dbstat is a compile-time option of SQLite
            return sqlite_bytes(store)[0]


def aggregation_cost(windows: int = 60_000, repeat: int = 5) -> None:
    values = np.zeros((32, 4), dtype=np.float32)
    verdicts = [
        Verdict(
            Score(Window("rig", "pump-1", float(i), i + 31.0, values), 0.5, (0.1,) * 4, "v1"),
            threshold=1.0,
            is_anomaly=i % 100 == 0,
        )
        for i in range(windows)
    ]
    best = float("inf")
    for _ in range(repeat):
        buckets = HistoryBuckets()
        started = time.perf_counter()
        for i in range(0, windows, 256):
            for verdict in verdicts[i : i + 256]:
                buckets.add(verdict)
            buckets.drain()
        best = min(best, time.perf_counter() - started)
    print(
        f"aggregation: {windows:,} windows in {best:.3f} s (best of {repeat}), "
        f"{best / windows * 1e6:.2f} us per window"
    )


def measure(url: str, args: argparse.Namespace) -> None:
    store = AlertStore(url, sqlite_durability="unsafe-on-power-loss")
    store.open()
    store.migrate()
    device_days = args.devices * args.days
    started = time.perf_counter()
    write_days(store, args.devices, 0, args.days, args.passes)
    elapsed = time.perf_counter() - started
    upserts = args.devices * args.days * 1440 * args.passes
    grown = table_bytes(store)
    print(
        f"{store.dialect}: {args.devices} devices x {args.days} days = "
        f"{args.devices * args.days * 1440:,} rows from {upserts:,} upserts in {elapsed:.0f} s "
        f"({upserts / elapsed:,.0f}/s): table + indexes {grown / 1e6:.1f} MB, "
        f"{grown / device_days / 1e3:.1f} kB per device-day, {grown / (device_days * 1440):.0f} "
        "bytes per row"
    )
    # Steady state: the first day ages out (as the writer prunes it), a new day comes in.
    cutoff = datetime.fromtimestamp(START + DAY, UTC)
    pruned = 0
    while (n := store.prune_history(cutoff, 20_000)) > 0:
        pruned += n
    if store.dialect == "postgresql":
        # What autovacuum does after a prune: the dead rows' space becomes reusable.
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM score_history")
    write_days(store, args.devices, args.days, 1, args.passes)
    after = table_bytes(store)
    print(
        f"{store.dialect}: pruned {pruned:,} rows (day 1), wrote day {args.days + 1}: "
        f"table + indexes {after / 1e6:.1f} MB ({after / grown:.2f}x before the prune and "
        "the new day)"
    )
    if store.dialect == "sqlite":
        used, free = sqlite_bytes(store)
        print(f"sqlite: file {used / 1e6:.1f} MB, of which free pages {free / 1e6:.1f} MB")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--passes", type=int, default=2, help="commits per device-minute")
    parser.add_argument("--postgres", help="an admin URL: a scratch database is made there")
    args = parser.parse_args()
    configure_logging("warning", "console")
    aggregation_cost()
    with tempfile.TemporaryDirectory() as tmp:
        measure(f"sqlite:///{Path(tmp) / 'history.db'}", args)
    if args.postgres:
        admin = make_url(args.postgres)
        name = f"sentinel_bench_{uuid.uuid4().hex[:8]}"
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            measure(admin.set(database=name).render_as_string(hide_password=False), args)
        finally:
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            engine.dispose()


if __name__ == "__main__":
    main()
