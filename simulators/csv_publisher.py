"""Publish a CSV recording (e.g. SKAB) over MQTT as one device, at its own pace or faster.

Each row becomes ``{"ts": <epoch s>, <numeric column>: <value>, ...}``. The timestamp column is
the first whose values parse as dates or epochs (naive date-times are UTC) unless named; label
columns (by default SKAB's ``anomaly`` and ``changepoint``) are left out.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from simulators.broker import PUBLISH_WINDOW, Publisher

__all__ = ["CsvSource", "ReplayError", "main", "open_csv", "parse_timestamp"]

_PROBE_ROWS = 20
_FORMATS = ("%Y/%m/%d %H:%M:%S", "%d.%m.%Y %H:%M:%S", "%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M")


class ReplayError(Exception):
    """A problem with the input file, reported without a traceback (exit code 2)."""


def parse_timestamp(text: str, *, strict: bool = True) -> float | None:
    """Epoch seconds from an epoch (s or ms) or a date-time string; None if it is neither.

    ``strict`` accepts only plausible epochs (1973..5138 in s, or ms), so that ordinary
    measurements are not mistaken for times while the column is being detected.
    """
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            return None
        if value >= 1e11:
            value /= 1000.0  # milliseconds
        return value if not strict or 1e8 <= value < 1e11 else None
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        for fmt in _FORMATS:
            try:
                stamp = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
        else:
            return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class CsvSource:
    """A CSV file's layout: which column holds time and which hold numbers."""

    path: Path
    sep: str
    timestamp_column: str
    columns: tuple[str, ...]  # numeric columns published, in file order
    rows: Iterator[list[str]]
    header: tuple[str, ...]

    def records(self, skipped: list[int]) -> Iterator[tuple[float, dict[str, float]]]:
        """(ts, values) per row; a row with a bad timestamp is counted in ``skipped[0]``."""
        t_idx = self.header.index(self.timestamp_column)
        idx = [(c, self.header.index(c)) for c in self.columns]
        for row in self.rows:
            if not row or all(not cell.strip() for cell in row):
                continue
            ts = parse_timestamp(row[t_idx], strict=False) if t_idx < len(row) else None
            if ts is None:
                skipped[0] += 1
                continue
            values: dict[str, float] = {}
            for name, i in idx:
                value = _number(row[i]) if i < len(row) else None
                if value is not None:
                    values[name] = value
            yield ts, values


def open_csv(
    path: Path,
    stream: TextIO,
    *,
    sep: str = "auto",
    timestamp_column: str | None = None,
    exclude: Sequence[str] = (),
) -> CsvSource:
    """Read the header and a few rows of ``stream`` to work out the file's layout."""
    sample = stream.read(64 * 1024)
    if not sample.strip():
        raise ReplayError(f"{path}: the file is empty")
    if sep == "auto":
        try:
            sep = (
                csv.Sniffer()
                .sniff("\n".join(sample.splitlines()[:5]), delimiters=";,\t|")
                .delimiter
            )
        except csv.Error:
            sep = ","
    reader = csv.reader(itertools.chain(io.StringIO(sample), stream), delimiter=sep)
    header = tuple(h.strip() for h in next(reader))
    probe = list(itertools.islice(reader, _PROBE_ROWS))
    probe = [r for r in probe if any(cell.strip() for cell in r)]
    if not probe:
        raise ReplayError(f"{path}: no data rows after the header")

    def column(i: int) -> list[str]:
        return [r[i] for r in probe if i < len(r) and r[i].strip()]

    if timestamp_column is None:
        for i, name in enumerate(header):
            cells = column(i)
            if cells and all(parse_timestamp(c) is not None for c in cells):
                timestamp_column = name
                break
        else:
            raise ReplayError(
                f"{path}: no column holds dates or epoch timestamps (columns: "
                f"{', '.join(header)}); name one with --timestamp-column"
            )
    elif timestamp_column not in header:
        raise ReplayError(f"{path}: no column {timestamp_column!r} (columns: {', '.join(header)})")
    skip = {e.strip().lower() for e in exclude if e.strip()}
    columns = tuple(
        name
        for i, name in enumerate(header)
        if name != timestamp_column
        and name.lower() not in skip
        and (cells := column(i))
        and _number(cells[0]) is not None
    )
    if not columns:
        raise ReplayError(f"{path}: no numeric columns besides {timestamp_column!r}")
    rows = itertools.chain(probe, reader)
    return CsvSource(path, sep, timestamp_column, columns, rows, header)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m simulators.csv_publisher", description=__doc__)
    ap.add_argument("file", type=Path, help="CSV file")
    ap.add_argument("--broker", required=True, help="mqtt://HOST:PORT")
    ap.add_argument("--topic", default="plant/{device}/pump")
    ap.add_argument("--device", default=None, help="device name (default: the file's stem)")
    ap.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="multiple of real time from the file's timestamps; 0 = as fast as possible",
    )
    ap.add_argument("--timestamp-column", default=None, help="default: detected")
    ap.add_argument("--sep", choices=("auto", ";", ",", "\t", "|"), default="auto")
    ap.add_argument(
        "--exclude-columns",
        default="anomaly,changepoint",
        help="comma-separated columns not to publish (default: SKAB's labels)",
    )
    ap.add_argument("--limit", type=int, default=None, help="publish at most N rows")
    ap.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    ap.add_argument("--protocol", choices=("5", "3.1.1"), default="5")
    ap.add_argument("--username", default=None, help="password from SENTINEL_SIM_PASSWORD")
    ap.add_argument("--summary", type=Path, default=None, help="write counts as JSON here")
    args = ap.parse_args(argv)
    if args.speed < 0:
        ap.error("--speed must be >= 0")
    if "{device}" not in args.topic:
        ap.error("--topic needs a {device} placeholder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    path: Path = args.file
    device = args.device or path.stem
    try:
        stream = path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        print(f"error: {path}: no such file", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {path}: cannot read: {err.strerror}", file=sys.stderr)
        return 2
    with stream:
        try:
            source = open_csv(
                path,
                stream,
                sep=args.sep,
                timestamp_column=args.timestamp_column,
                exclude=args.exclude_columns.split(","),
            )
        except ReplayError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return _publish(args, source, device)


def _publish(args: argparse.Namespace, source: CsvSource, device: str) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    pub = Publisher(
        args.broker,
        protocol=args.protocol,
        username=args.username,
        password=os.environ.get("SENTINEL_SIM_PASSWORD"),
        client_id=f"sim-replay-{device}-{os.getpid()}"[:64],
        window=PUBLISH_WINDOW,
    )
    try:
        pub.start()
    except (ConnectionError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    topic = args.topic.replace("{device}", device)
    skipped = [0]
    published = 0
    first: float | None = None
    last: float | None = None
    t0 = time.monotonic()
    for ts, values in source.records(skipped):
        if stop.is_set() or (args.limit is not None and published >= args.limit):
            break
        if first is None:
            first = ts
        if args.speed > 0:
            # Scheduled from the first row's time: no drift however long the file.
            wait = t0 + (ts - first) / args.speed - time.monotonic()
            if wait > 0 and stop.wait(wait):
                break
        payload = json.dumps({"ts": ts, **values}, separators=(",", ":")).encode()
        pub.publish(topic, payload, args.qos)
        published += 1
        last = ts
    unacked = pub.finish(30.0)
    summary = {
        "device": device,
        "topic": topic,
        "timestamp_column": source.timestamp_column,
        "columns": list(source.columns),
        "published": published,
        "skipped_rows": skipped[0],
        "unacknowledged": unacked,
        "first_ts": first,
        "last_ts": last,
    }
    if args.summary is not None:
        args.summary.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary))
    if skipped[0]:
        print(f"warning: {skipped[0]} row(s) with unreadable timestamps skipped", file=sys.stderr)
    return 1 if unacked else 0


if __name__ == "__main__":
    sys.exit(main())
