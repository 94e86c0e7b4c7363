from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from sentinel.errors import DataError
from sentinel.offline.csvdata import CsvDialect, parse_timestamp, read_feature_csv
from sentinel.records import RejectReason


def test_parse_timestamp_forms() -> None:
    assert parse_timestamp("1700000000") == 1700000000.0
    assert parse_timestamp("1700000000500") == 1700000000.5
    assert parse_timestamp("2020-03-09 10:14:33") == parse_timestamp("2020-03-09T10:14:33Z")
    with pytest.raises(ValueError, match="yesterday"):
        parse_timestamp("yesterday")


def test_reads_semicolon_csv_and_splits_at_gaps(tmp_path: Path) -> None:
    path = tmp_path / "rec.csv"
    lines = ["datetime;a;b;label"]
    lines += [f"2020-01-01 00:00:{s:02d};{s};{2 * s};0" for s in range(10)]
    lines += [f"2020-01-01 01:00:{s:02d};{s};{2 * s};1" for s in range(5)]
    path.write_text("\n".join(lines) + "\n")
    data = read_feature_csv(path, ["a", "b"], max_gap=60)
    assert data.values.shape == (15, 2)
    segments = data.segments(min_length=3)
    assert [len(s) for s in segments] == [10, 5]
    np.testing.assert_array_equal(segments[1][:, 1], [0, 2, 4, 6, 8])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("ts,a\n", "no data rows"),
        ("ts,x\n1,2\n", "missing column"),
        ("ts,a\n1,abc\n", "not a number"),
        ("ts,a\nnever,1\n", "unparsable time"),
    ],
)
def test_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_feature_csv(path, ["a"])


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "export.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_european_export_with_decimal_comma_and_day_first_times(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        ["Zeit;a;b"] + [f"22.11.2026 14:03:{s:02d};{s},5;-{s},25" for s in range(20)],
    )
    data = read_feature_csv(
        path, ["a", "b"], timestamp_column="Zeit", dialect=CsvDialect(decimal=",")
    )
    np.testing.assert_allclose(data.values[3], [3.5, -3.25])
    assert data.timestamps is not None
    assert data.timestamps[0] == datetime(2026, 11, 22, 14, 3, tzinfo=UTC).timestamp()
    assert np.all(np.diff(data.timestamps) == 1.0)


def test_day_first_is_detected_when_a_day_past_twelve_settles_it(tmp_path: Path) -> None:
    # 01/02 and 02/02 fit both readings; 13/02 fits only day-first, so day-first it is.
    days = ["01/02/2026 10:00:00", "02/02/2026 10:00:00", "13/02/2026 10:00:00"]
    path = _write(tmp_path, ["ts,a"] + [f"{d},1" for d in days])
    data = read_feature_csv(path, ["a"])
    assert data.timestamps is not None
    assert data.timestamps[1] - data.timestamps[0] == 86400.0  # a day, not a month


def test_ambiguous_day_month_times_are_refused_not_guessed(tmp_path: Path) -> None:
    path = _write(tmp_path, ["ts,a", "01/02/2026 10:00:00,1", "02/03/2026 10:00:00,2"])
    with pytest.raises(DataError, match="--timestamp-format") as err:
        read_feature_csv(path, ["a"])
    assert "%d/%m/%Y %H:%M:%S" in str(err.value)
    assert "%m/%d/%Y %H:%M:%S" in str(err.value)
    data = read_feature_csv(path, ["a"], dialect=CsvDialect(timestamp_format="%m/%d/%Y %H:%M:%S"))
    assert data.timestamps is not None
    assert data.timestamps[1] - data.timestamps[0] == 32 * 86400.0  # Jan 2 to Feb 3


def test_day_month_ambiguity_is_judged_on_the_whole_column(tmp_path: Path) -> None:
    # 1 January reads the same both ways, for the first 1,200 rows; the last row, 02/01,
    # is 2 January or 1 February, so the file is ambiguous after all.
    times = [f"01/01/2026 10:{m:02d}:{s:02d}" for m in range(20) for s in range(60)]
    path = _write(tmp_path, ["ts,a"] + [f"{t},1" for t in [*times, "02/01/2026 10:00:00"]])
    with pytest.raises(DataError, match="--timestamp-format"):
        read_feature_csv(path, ["a"])


def test_twelve_hour_clock_and_a_time_zone(tmp_path: Path) -> None:
    path = _write(tmp_path, ["ts,a", "11/22/2026 2:03:05 PM,1", "11/22/2026 2:03:06 PM,2"])
    data = read_feature_csv(path, ["a"], dialect=CsvDialect(timezone="Europe/Berlin"))
    assert data.timestamps is not None
    assert data.timestamps[0] == datetime(2026, 11, 22, 13, 3, 5, tzinfo=UTC).timestamp()


def test_a_given_separator_wins_over_the_header_count(tmp_path: Path) -> None:
    # The header has more commas (in the column names) than semicolons.
    path = _write(tmp_path, ["ts;flow, l/min;p, bar", "1700000000;1,5;2", "1700000001;2;3"])
    data = read_feature_csv(path, ["flow, l/min"], dialect=CsvDialect(separator=";", decimal=","))
    np.testing.assert_allclose(data.values[:, 0], [1.5, 2.0])


@pytest.mark.parametrize(
    ("content", "dialect", "message"),
    [
        ("ts;a\n1;0,5\n", CsvDialect(), "decimal comma"),
        ("ts|a\n1|2\n", CsvDialect(separator=","), "--separator"),
        ("ts,a\n22.11.2026 14:03,1\n23.11.2026 x,2\n", CsvDialect(), "--timestamp-format"),
        ("ts,a\n1,1\n", CsvDialect(timestamp_format="%d.%m.%Y"), "not in the form '%d.%m.%Y'"),
    ],
)
def test_dialect_errors_say_what_to_pass(
    tmp_path: Path, content: str, dialect: CsvDialect, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=re.escape(message)):
        read_feature_csv(path, ["a"], dialect=dialect)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"separator": ";;"}, "one character"),
        ({"decimal": ";"}, "'.' or ','"),
        ({"separator": ",", "decimal": ","}, "both"),
        ({"timestamp_format": "dd.mm.yyyy"}, "strptime"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
    ],
)
def test_bad_dialects_are_refused_before_reading(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        CsvDialect(**kwargs)


def test_missing_and_non_finite_cells_are_refused_rows_with_skip_missing(tmp_path: Path) -> None:
    lines = ["ts,a,b"]
    cells = {3: ("", "1"), 5: ("NaN", "1"), 6: ("2", "NA"), 8: ("inf", "1"), 9: ("1e39", "1")}
    for s in range(12):
        a, b = cells.get(s, (str(s), str(2 * s)))
        lines.append(f"{1_700_000_000 + s},{a},{b}")
    path = _write(tmp_path, lines)
    # Without it the file is refused at the first such cell, naming it.
    with pytest.raises(DataError, match=r"export.csv:5: column 'a': '' is not a number"):
        read_feature_csv(path, ["a", "b"])

    data = read_feature_csv(path, ["a", "b"], max_gap=60, skip_missing=True)

    assert dict(data.refused) == {
        3: RejectReason.MISSING_FEATURE,
        5: RejectReason.MISSING_FEATURE,
        6: RejectReason.MISSING_FEATURE,
        8: RejectReason.NON_FINITE,
        9: RejectReason.NON_FINITE,  # beyond float32: it would be inf in a window
    }
    assert data.readable.tolist() == [i not in cells for i in range(12)]
    assert np.isnan(data.values[sorted(cells)]).any(axis=1).all()
    # Training leaves them out as readings that never arrived: gaps of a few seconds,
    # within max_gap, so one run of the 7 readable rows.
    (run,) = data.segments(min_length=3)
    np.testing.assert_array_equal(run[:, 0], [0, 1, 2, 4, 7, 10, 11])


def test_skip_missing_still_refuses_text_that_is_no_number(tmp_path: Path) -> None:
    # A decimal comma or a word is a format problem, not a missing value.
    for cell, message in (("1,5", "decimal comma"), ("abc", "not a number")):
        path = _write(tmp_path, ["ts;a", "1700000000;1", f"1700000001;{cell}"])
        with pytest.raises(DataError, match=message):
            read_feature_csv(path, ["a"], skip_missing=True)


def test_a_file_without_a_header_row_names_its_columns_and_counts_its_lines_from_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "samples.txt"
    path.write_text("1.5,2.5\n1.6,nan\n1.7,2.7\n")
    data = read_feature_csv(path, ["value1", "value2"], skip_missing=True, interval=60.0)
    assert data.values.shape == (3, 2)  # the first line is a reading
    assert data.first_line == 1
    assert dict(data.refused) == {1: RejectReason.MISSING_FEATURE}  # line 2
    assert data.timestamps is not None
    np.testing.assert_array_equal(data.timestamps, [0.0, 60.0, 120.0])
    path.write_text("1.5,2.5\n1.6,n/a?\n")
    with pytest.raises(DataError, match=r"samples.txt:2: column 'value2'"):
        read_feature_csv(path, ["value1", "value2"], skip_missing=True)
    path.write_text("   6.3732150e+01\n   6.3350680e+01\n")  # the UCR archive's form
    assert read_feature_csv(path, ["value"]).values[:, 0].tolist() == pytest.approx(
        [63.73215, 63.35068]
    )
