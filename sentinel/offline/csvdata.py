"""Recorded sensor data from CSV files, for offline training and replay.

How a file is written (its ``CsvDialect``) is detected where it can be and given where it
cannot: the separator from the header line; timestamps as epoch seconds or milliseconds,
ISO 8601, or one of the common day/month forms historians and spreadsheets export
(``22.11.2026 14:03:05``, ``11/22/2026 2:03:05 PM``), tried on the whole column so that a
form that only fits some rows, or two that both fit every row (``01/02/2026`` read day-first
and month-first), is refused instead of guessed. A file whose first line is all numbers has
no header row (the UCR anomaly archive's series, many server-metric exports): its columns
are named ``value`` (one) or ``value1`` ... ``valueN``, and its first line is a reading.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from sentinel.errors import DataError
from sentinel.records import RejectReason
from sentinel.timescale import TimeScale, learn_interval, no_runs_error

__all__ = [
    "LABEL_CANDIDATES",
    "CsvDialect",
    "RecordedData",
    "file_columns",
    "parse_timestamp",
    "read_feature_csv",
]

TIMESTAMP_CANDIDATES = ("ts", "timestamp", "time", "datetime", "date")
# Columns that hold a benchmark's answers rather than a sensor's readings (lowercased): a
# replay that takes its features from the file carries them to the output instead.
LABEL_CANDIDATES = frozenset(
    {"anomaly", "anomalies", "is_anomaly", "label", "labels", "changepoint", "attack"}
)
_MS_THRESHOLD = 1e11  # epoch values above this are milliseconds (1e11 s is the year 5138)
# Cells that say a reading is missing, as historians and spreadsheets export it (lowercased):
# the daemon refuses such a reading (missing_feature); ``skip_missing`` skips the row too.
_MISSING_CELLS = frozenset({"", "nan", "na", "n/a", "null", "none", "-"})
_FLOAT32_MAX = float(np.finfo(np.float32).max)


# Forms tried, on the whole column, when a file's times are neither epoch nor ISO 8601.
_DATES = ("%d.%m.%Y", "%d/%m/%Y", "%m/%d/%Y", "%Y/%m/%d", "%d-%m-%Y", "%m-%d-%Y")
_TIMES = ("%H:%M:%S", "%H:%M:%S.%f", "%H:%M", "%I:%M:%S %p", "%I:%M %p")
_DETECTED_FORMATS = tuple(f"{d} {t}" for d in _DATES for t in _TIMES)


def parse_timestamp(text: str, fmt: str | None = None, tz: tzinfo = UTC) -> float:
    """A time to epoch seconds.

    Without ``fmt``: epoch seconds or milliseconds, or ISO 8601. With ``fmt``: a ``strptime``
    format. Times without a zone are in ``tz`` (UTC unless given).
    """
    text = text.strip()
    if fmt is not None:
        when = datetime.strptime(text, fmt)  # raises ValueError with a clear message
        return (when if when.tzinfo else when.replace(tzinfo=tz)).timestamp()
    try:
        value = float(text)
    except ValueError:
        when = datetime.fromisoformat(text)  # raises ValueError with a clear message
        return (when if when.tzinfo else when.replace(tzinfo=tz)).timestamp()
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite time")
    return value / 1000.0 if value > _MS_THRESHOLD else value


@dataclass(frozen=True)
class CsvDialect:
    """How a recorded CSV is written. ``None`` means: detect it."""

    separator: str | None = None  # one character; detected from the header line
    decimal: str = "."  # "." or ","
    timestamp_format: str | None = None  # strptime; detected (epoch, ISO 8601, common forms)
    timezone: str | None = None  # IANA name for times without a zone; None: UTC

    def __post_init__(self) -> None:
        if self.separator is not None and len(self.separator) != 1:
            raise DataError(f"separator must be one character, got {self.separator!r}")
        if self.decimal not in (".", ","):
            raise DataError(f"decimal mark must be '.' or ',', got {self.decimal!r}")
        if self.separator == self.decimal:
            raise DataError(f"the separator and the decimal mark are both {self.decimal!r}")
        if self.timestamp_format is not None and "%" not in self.timestamp_format:
            raise DataError(
                f"timestamp format {self.timestamp_format!r} has no strptime field; "
                "write it like '%d.%m.%Y %H:%M:%S'"
            )
        self.tz()  # fail here, not at the first row

    def tz(self) -> tzinfo:
        if self.timezone is None:
            return UTC
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise DataError(
                f"unknown time zone {self.timezone!r}; use an IANA name like Europe/Berlin"
            ) from err


@dataclass(frozen=True)
class RecordedData:
    values: np.ndarray  # (rows, features) float32
    timestamps: np.ndarray | None  # (rows,) epoch seconds, or None without a time column
    features: tuple[str, ...]
    max_gap: float | None  # seconds; None: auto, 60 readings of the learnt interval
    carried: dict[str, list[str]] = field(default_factory=dict)  # e.g. label columns, as text
    # Rows read with ``skip_missing`` whose reading the daemon would refuse, by row index:
    # their values are NaN, and nothing trains on or is fed them.
    refused: Mapping[int, RejectReason] = field(default_factory=dict)
    first_line: int = 2  # the file's line number of row 0: 1 in a file without a header row

    @property
    def readable(self) -> np.ndarray:
        """(rows,) bool: rows whose every value is a number (all of them unless ``refused``)."""
        if not self.refused:
            return np.ones(len(self.values), dtype=bool)
        readable: np.ndarray = np.isfinite(self.values).all(axis=1)
        return readable

    @property
    def interval(self) -> float | None:
        """The sampling interval learnt from the timestamps (sentinel.timescale)."""
        return None if self.timestamps is None else learn_interval([self.timestamps])

    @property
    def gap(self) -> float:
        """``max_gap`` in seconds: as given, or auto for the learnt interval."""
        return TimeScale(self.interval).max_gap(self.max_gap)

    @property
    def first_ts(self) -> float | None:
        return float(self.timestamps[0]) if self.timestamps is not None else None

    @property
    def last_ts(self) -> float | None:
        return float(self.timestamps[-1]) if self.timestamps is not None else None

    def segments(self, min_length: int) -> list[np.ndarray]:
        """Gap-free runs of rows (split where time jumps back or by more than max_gap); a
        refused row is left out, as a reading that never arrived."""
        values, timestamps = self.values, self.timestamps
        if self.refused:
            keep = self.readable
            values = values[keep]
            timestamps = None if timestamps is None else timestamps[keep]
        if timestamps is None:
            runs = [values]
        else:
            steps = np.diff(timestamps)
            cuts = np.flatnonzero((steps > self.gap) | (steps <= 0)) + 1
            runs = np.split(values, cuts)
        return [run for run in runs if len(run) >= min_length]

    def training_segments(self, min_length: int) -> list[np.ndarray]:
        """``segments`` to train on: a DataError naming ``windows.max_gap`` when the gaps
        leave no run of ``min_length`` readings, where training would only say "no data"."""
        runs = self.segments(min_length)
        if not runs and len(self.values) >= min_length:
            raise no_runs_error(self.gap, min_length, len(self.values))
        return runs


def _sniff_delimiter(header: str) -> str:
    counts = {d: header.count(d) for d in (";", ",", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _detect_time_format(
    path: Path, column: str, cells: Sequence[str], first_line: int = 2
) -> tuple[str, tuple[datetime, ...]] | None:
    """None when the first time is epoch or ISO 8601; else the one common form every row
    fits, with the column as read in it (so the rows are not parsed a second time)."""
    first = cells[0].strip()
    try:
        parse_timestamp(first)
        return None
    except ValueError:
        pass
    fits: dict[str, tuple[datetime, ...]] = {}
    for fmt in _DETECTED_FORMATS:
        try:
            fits[fmt] = tuple(datetime.strptime(cell.strip(), fmt) for cell in cells)
        except ValueError:
            continue
    if not fits:
        raise DataError(
            f"{path}:{first_line}: column {column!r}: unparsable time {first!r}; give its "
            "form with --timestamp-format, e.g. '%d.%m.%Y %H:%M:%S'"
        )
    if len(set(fits.values())) > 1:  # e.g. day-first and month-first, both valid throughout
        raise DataError(
            f"{path}: column {column!r}: times like {first!r} fit "
            f"{' and '.join(repr(f) for f in fits)}; say which with --timestamp-format"
        )
    return next(iter(fits.items()))


def _read_table(
    path: Path, dialect: CsvDialect, *, header_only: bool = False
) -> tuple[list[str], str, list[list[str]], int]:
    """The header (cells stripped; ``_headless_names`` where the first line is readings),
    the separator it was split at, the rows as text and the file's line number of the
    first of them (2 after a header row, else 1)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header_line = handle.readline()
            if not header_line.strip():
                raise DataError(f"{path}: the file is empty")
            delimiter = dialect.separator or _sniff_delimiter(header_line)
            first = [h.strip() for h in next(csv.reader([header_line], delimiter=delimiter))]
            named = not _all_numbers(first, dialect.decimal)
            header = first if named else _headless_names(len(first))
            if header_only:
                return header, delimiter, [], 2 if named else 1
            handle.seek(0)
            reader = csv.reader(handle, delimiter=delimiter)
            if named:
                next(reader)
            return header, delimiter, list(reader), 2 if named else 1
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text") from err


def _time_column(header: Sequence[str]) -> str | None:
    """The header's time column as detected: the first named like one (``TIMESTAMP_CANDIDATES``)."""
    return next((c for c in header if c.lower() in TIMESTAMP_CANDIDATES), None)


def _all_numbers(cells: Sequence[str], decimal: str) -> bool:
    """Whether a first line is readings rather than column names: every cell a number."""
    try:
        for cell in cells:
            _number(cell, decimal)
    except ValueError:
        return False
    return bool(cells)


def _headless_names(count: int) -> list[str]:
    """The names a file without a header row gets for its columns: ``value`` for one,
    ``value1`` ... ``valueN`` for several (the UCR archive's series are one column of
    numbers; server-metric exports many)."""
    return ["value"] if count == 1 else [f"value{i}" for i in range(1, count + 1)]


def file_columns(
    path: str | Path,
    *,
    timestamp_column: str | None = None,
    carry: Sequence[str] = (),
    dialect: CsvDialect | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A file's own columns to judge, for a replay whose config names none: every column
    but the time column (``timestamp_column``, or the detected one) and the labels. Labels
    are ``carry`` where given, else the columns named as benchmarks name theirs
    (``LABEL_CANDIDATES``: ``anomaly``, ``label``, ``changepoint`` ...): a label read as a
    sensor would teach the model the answer. Returns (features, labels)."""
    path = Path(path)
    header, _, _, _ = _read_table(path, dialect or CsvDialect(), header_only=True)
    if timestamp_column is None:
        timestamp_column = _time_column(header)
    labels = tuple(carry) if carry else tuple(c for c in header if c.lower() in LABEL_CANDIDATES)
    features = tuple(c for c in header if c and c != timestamp_column and c not in labels)
    if not features:
        raise DataError(f"{path}: no column to judge besides times and labels: {', '.join(header)}")
    return features, labels


def _number(cell: str, decimal: str) -> float:
    return float(cell.replace(",", ".") if decimal == "," else cell)


def read_feature_csv(
    path: str | Path,
    features: Sequence[str],
    *,
    timestamp_column: str | None = None,
    max_gap: float | None = math.inf,
    carry: Sequence[str] = (),
    require_timestamps: bool = False,
    dialect: CsvDialect | None = None,
    skip_missing: bool = False,
    interval: float | None = None,
) -> RecordedData:
    """Read the given feature columns (and a timestamp column, if any) from a CSV file.

    ``carry`` columns (labels, say) are kept as text, never parsed or used as features.
    ``dialect``: the separator, decimal mark, timestamp form and time zone, where they are
    not to be detected. Every problem is a ``DataError`` naming the file, and the row and
    column where useful. ``skip_missing``: a row with a feature cell that says the value
    is missing (empty, ``nan``, ``NA``, ``null``, ``-``) or is not finite (``inf``, or too
    large for a float32) is kept in ``refused``, as the reading the daemon would refuse,
    instead of refusing the file; any other text is still an error (a decimal comma or a
    wrong separator must not pass as a file of missing values). ``interval``: the file has
    no time column and its rows are readings that many seconds apart, the first at the
    epoch (a recording exported without times: numbered samples, a benchmark's series).
    """
    path = Path(path)
    dialect = dialect or CsvDialect()
    header, delimiter, rows, first_line = _read_table(path, dialect)

    missing = [f for f in (*features, *carry) if f not in header]
    if missing:
        hint = ""
        if len(header) == 1:
            how = "given" if dialect.separator else "detected"
            hint = f" (one column when split at the {how} separator {delimiter!r}; --separator?)"
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; the file has: "
            f"{', '.join(header)}{hint}"
        )
    if timestamp_column is None:
        timestamp_column = _time_column(header)
    elif timestamp_column not in header:
        raise DataError(f"{path}: no timestamp column {timestamp_column!r}")
    if timestamp_column is not None and interval is not None:
        raise DataError(
            f"{path}: --interval is for a file without times, and this one has the column "
            f"{timestamp_column!r}; its times are used"
        )
    if interval is not None and not (math.isfinite(interval) and interval > 0):
        raise DataError(f"interval must be a positive number of seconds, got {interval}")
    if timestamp_column is None and interval is None and require_timestamps:
        raise DataError(
            f"{path}: no timestamp column found (looked for {', '.join(TIMESTAMP_CANDIDATES)}); "
            "name it with --timestamp-column, or give --interval SECONDS for a file of "
            "evenly spaced readings without times"
        )
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"{path}: no data rows")

    indexes = [header.index(f) for f in features]
    values = np.empty((len(rows), len(features)), dtype=np.float32)
    refused: dict[int, RejectReason] = {}
    for r, row in enumerate(rows):
        line = r + first_line
        if len(row) != len(header):
            raise DataError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
        for c, index in enumerate(indexes):
            cell = row[index]
            if skip_missing and cell.strip().lower() in _MISSING_CELLS:
                refused.setdefault(r, RejectReason.MISSING_FEATURE)
                values[r, c] = math.nan
                continue
            try:
                value = _number(cell, dialect.decimal)
            except ValueError as err:
                hint = ""
                if dialect.decimal == "." and "," in cell:
                    hint = " (a decimal comma? --decimal ,)"
                raise DataError(
                    f"{path}:{line}: column {features[c]!r}: {cell!r} is not a number{hint}"
                ) from err
            if not (math.isfinite(value) and abs(value) <= _FLOAT32_MAX):
                if not skip_missing:
                    raise DataError(
                        f"{path}:{line}: column {features[c]!r}: {cell!r} is not a finite "
                        "number of float32's range"
                    )
                refused.setdefault(r, RejectReason.NON_FINITE)
                value = math.nan
            values[r, c] = value

    timestamps = None
    if interval is not None:  # row i was read i x interval seconds after the epoch
        timestamps = np.arange(len(rows), dtype=np.float64) * interval
    if timestamp_column is not None:
        ts_index = header.index(timestamp_column)
        cells = [row[ts_index] for row in rows]
        tz = dialect.tz()
        fmt = dialect.timestamp_format
        detected = None if fmt else _detect_time_format(path, timestamp_column, cells, first_line)
        if detected is not None:  # every row was read in the one form that fits them all
            times = detected[1]
            timestamps = np.array([t.replace(tzinfo=tz).timestamp() for t in times])
        else:
            timestamps = np.empty(len(rows), dtype=np.float64)
            for r, cell in enumerate(cells):
                try:
                    timestamps[r] = parse_timestamp(cell, fmt, tz)
                except ValueError as err:
                    expected = f"not in the form {fmt!r}" if fmt else "not epoch or ISO 8601"
                    raise DataError(
                        f"{path}:{r + first_line}: column {timestamp_column!r}: unparsable time "
                        f"{cell!r} ({expected}; --timestamp-format)"
                    ) from err
    carried = {name: [row[header.index(name)] for row in rows] for name in carry}
    return RecordedData(values, timestamps, tuple(features), max_gap, carried, refused, first_line)
