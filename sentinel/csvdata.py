"""Recorded sensor data from CSV files, for offline training (and later, replay)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from sentinel.errors import DataError

__all__ = ["RecordedData", "parse_timestamp", "read_feature_csv"]

TIMESTAMP_CANDIDATES = ("ts", "timestamp", "time", "datetime", "date")
_MS_THRESHOLD = 1e11  # epoch values above this are milliseconds (1e11 s is the year 5138)


def parse_timestamp(text: str) -> float:
    """Epoch seconds or milliseconds, or ISO 8601 (naive means UTC), to epoch seconds."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        when = datetime.fromisoformat(text)  # raises ValueError with a clear message
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite time")
    return value / 1000.0 if value > _MS_THRESHOLD else value


@dataclass(frozen=True)
class RecordedData:
    values: np.ndarray  # (rows, features) float32
    timestamps: np.ndarray | None  # (rows,) epoch seconds, or None without a time column
    features: tuple[str, ...]
    max_gap: float
    carried: dict[str, list[str]] = field(default_factory=dict)  # e.g. label columns, as text

    @property
    def first_ts(self) -> float | None:
        return float(self.timestamps[0]) if self.timestamps is not None else None

    @property
    def last_ts(self) -> float | None:
        return float(self.timestamps[-1]) if self.timestamps is not None else None

    def segments(self, min_length: int) -> list[np.ndarray]:
        """Gap-free runs of rows (split where time jumps back or by more than max_gap)."""
        if self.timestamps is None:
            runs = [self.values]
        else:
            steps = np.diff(self.timestamps)
            cuts = np.flatnonzero((steps > self.max_gap) | (steps <= 0)) + 1
            runs = np.split(self.values, cuts)
        return [run for run in runs if len(run) >= min_length]


def _sniff_delimiter(header: str) -> str:
    counts = {d: header.count(d) for d in (";", ",", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_feature_csv(
    path: str | Path,
    features: Sequence[str],
    *,
    timestamp_column: str | None = None,
    max_gap: float = math.inf,
    carry: Sequence[str] = (),
    require_timestamps: bool = False,
) -> RecordedData:
    """Read the given feature columns (and a timestamp column, if any) from a CSV file.

    ``carry`` columns (labels, say) are kept as text, never parsed or used as features.
    Every problem is a ``DataError`` naming the file, and the row and column where useful.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header_line = handle.readline()
            if not header_line.strip():
                raise DataError(f"{path}: the file is empty")
            delimiter = _sniff_delimiter(header_line)
            handle.seek(0)
            reader = csv.reader(handle, delimiter=delimiter)
            header = [h.strip() for h in next(reader)]
            rows = list(reader)
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text") from err

    missing = [f for f in (*features, *carry) if f not in header]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; the file has: {', '.join(header)}"
        )
    if timestamp_column is None:
        timestamp_column = next((c for c in header if c.lower() in TIMESTAMP_CANDIDATES), None)
    elif timestamp_column not in header:
        raise DataError(f"{path}: no timestamp column {timestamp_column!r}")
    if timestamp_column is None and require_timestamps:
        raise DataError(
            f"{path}: no timestamp column found (looked for {', '.join(TIMESTAMP_CANDIDATES)}); "
            "name it with --timestamp-column"
        )
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"{path}: no data rows")

    indexes = [header.index(f) for f in features]
    values = np.empty((len(rows), len(features)), dtype=np.float32)
    for r, row in enumerate(rows):
        line = r + 2  # 1-based, after the header
        if len(row) != len(header):
            raise DataError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
        for c, index in enumerate(indexes):
            try:
                value = float(row[index])
            except ValueError as err:
                raise DataError(
                    f"{path}:{line}: column {features[c]!r}: {row[index]!r} is not a number"
                ) from err
            if not math.isfinite(value):
                raise DataError(f"{path}:{line}: column {features[c]!r}: {row[index]!r}")
            values[r, c] = value

    timestamps = None
    if timestamp_column is not None:
        ts_index = header.index(timestamp_column)
        timestamps = np.empty(len(rows), dtype=np.float64)
        for r, row in enumerate(rows):
            try:
                timestamps[r] = parse_timestamp(row[ts_index])
            except ValueError as err:
                raise DataError(
                    f"{path}:{r + 2}: column {timestamp_column!r}: unparsable time "
                    f"{row[ts_index]!r}"
                ) from err
    carried = {name: [row[header.index(name)] for row in rows] for name in carry}
    return RecordedData(values, timestamps, tuple(features), max_gap, carried)
