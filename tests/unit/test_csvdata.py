from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sentinel.csvdata import parse_timestamp, read_feature_csv
from sentinel.errors import DataError


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
