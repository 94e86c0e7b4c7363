"""write_atomically: a state file is replaced whole or not at all, from a string or pieces."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel.atomic import write_atomically


def test_pieces_make_the_same_file_as_one_string(tmp_path: Path) -> None:
    data = {"schema": 1, "streams": {"pump": {"a": {"recent": {"float32": "AAAAPw=="}}}}}
    whole, pieces = tmp_path / "whole.json", tmp_path / "pieces.json"
    write_atomically(whole, json.dumps(data))
    write_atomically(pieces, json.JSONEncoder().iterencode(data))
    assert pieces.read_bytes() == whole.read_bytes()
    assert json.loads(pieces.read_text()) == data


def test_a_failure_between_pieces_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path,
) -> None:
    path = tmp_path / "thresholds.json"
    write_atomically(path, '{"old": true}')

    def pieces() -> Iterator[str]:
        yield '{"new": '
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # the disk filled mid-file

    with pytest.raises(OSError, match="No space"):
        write_atomically(path, pieces())
    assert path.read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thresholds.json"]
