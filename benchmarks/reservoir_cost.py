"""What the training reservoir costs the worker a reading, by table layout (issue #23).

The pipeline worker stores every reading it takes in the stream's reservoir
(``sentinel.retrain.reservoir``) after each pass: one transaction, one ``INSERT OR IGNORE``
a reading. This times that for a fleet read live -- ``--devices`` pumps, one reading each
in turn, passes of ``--pass-size`` readings -- into a reservoir already at its row bound
(``--rows``, the default ``retrain.reservoir_rows``), so that every pass also pays its
share of the prunes. Two layouts, in the same run:

* ``time-first``: ``Reservoir.add`` as it is (readings keyed by (ts, device));
* ``device-first``: the layout before 2026-12-07 (keyed by (device, ts), a second index on
  ts), the same statements run against it directly.

Printed: CPU and wall time a reading for each, and the reads a training run and a restart
make (``clean_data``, ``latest``), which sort by device in the time-first layout.

    .venv/bin/python benchmarks/reservoir_cost.py [--devices 1000] [--pass-size 100]
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.records import Reading
from sentinel.retrain.reservoir import Reservoir

FEATURES = 6
DEVICE_FIRST = """
CREATE TABLE readings (
    device TEXT NOT NULL, ts REAL NOT NULL, vals BLOB NOT NULL, PRIMARY KEY (device, ts)
) WITHOUT ROWID;
CREATE INDEX readings_ts ON readings (ts);
"""


def fleet(devices: int, start: float) -> Iterator[Reading]:
    """Each pump's reading in turn, one a second each, as a live fleet's arrive."""
    names = [f"pump-{i:05d}" for i in range(devices)]
    values = tuple(float(i) for i in range(FEATURES))
    second = start
    while True:
        for name in names:
            yield Reading("pump", name, second, values)
        second += 1.0


def take(readings: Iterator[Reading], n: int) -> list[Reading]:
    return [next(readings) for _ in range(n)]


def device_first_add(conn: sqlite3.Connection, readings: list[Reading]) -> None:
    """``Reservoir.add``'s insert, against the old layout (its prune below)."""
    with conn:
        conn.executemany(
            "INSERT OR IGNORE INTO readings (device, ts, vals) VALUES (?, ?, ?)",
            [(r.device, r.ts, np.asarray(r.values, dtype=np.float32).tobytes()) for r in readings],
        )


def device_first_prune(conn: sqlite3.Connection, max_rows: int) -> None:
    with conn:
        count = conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
        if count > max_rows:
            conn.execute(
                "DELETE FROM readings WHERE ts < "
                "(SELECT ts FROM readings ORDER BY ts LIMIT 1 OFFSET ?)",
                (count - max_rows,),
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--pass-size", type=int, default=100)
    ap.add_argument("--rows", type=int, default=200_000, help="the reservoir's row bound")
    ap.add_argument("--readings", type=int, default=60_000, help="timed, after the fill")
    args = ap.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, python "
        f"{platform.python_version()}, sqlite {sqlite3.sqlite_version}; "
        f"{args.devices} devices, passes of {args.pass_size}, {args.rows} rows kept"
    )
    work = Path(tempfile.mkdtemp(prefix="reservoir-cost-"))

    reservoir = Reservoir(
        work / "time.sqlite", FEATURES, max_rows=args.rows, max_age=None, margin=None
    ).open()
    readings = fleet(args.devices, 1.7e9)
    for _ in range(args.rows // 1000):
        reservoir.add(take(readings, 1000))
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(args.readings // args.pass_size):
        reservoir.add(take(readings, args.pass_size))
    timed = {"time-first": (time.process_time() - cpu, time.perf_counter() - wall)}

    conn = sqlite3.connect(work / "device.sqlite")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(DEVICE_FIRST)
    readings = fleet(args.devices, 1.7e9)
    for _ in range(args.rows // 1000):
        device_first_add(conn, take(readings, 1000))
    cpu, wall = time.process_time(), time.perf_counter()
    since = 0
    for _ in range(args.readings // args.pass_size):
        device_first_add(conn, take(readings, args.pass_size))
        since += args.pass_size
        if since >= 2000:  # Reservoir.add prunes every 2,000 inserts
            device_first_prune(conn, args.rows)
            since = 0
    timed["device-first"] = (time.process_time() - cpu, time.perf_counter() - wall)
    conn.close()

    for layout, (cpu_s, wall_s) in timed.items():
        print(
            f"{layout:13s} {cpu_s / args.readings * 1e6:6.1f} us CPU a reading, "
            f"{wall_s / args.readings * 1e6:6.1f} us wall"
        )
    started = time.perf_counter()
    latest = reservoir.latest("pump", 64)
    middle = time.perf_counter()
    data = reservoir.clean_data(window=32, max_gap=None, holdout_fraction=0.2)
    print(
        f"time-first reads: latest(64) {len(latest)} readings in {middle - started:.2f} s, "
        f"clean_data {data.rows} in {time.perf_counter() - middle:.2f} s"
    )
    reservoir.close()
    ratio = timed["time-first"][0] / timed["device-first"][0]
    print(f"ratio: {ratio:.2f} of the device-first layout's CPU a reading")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
