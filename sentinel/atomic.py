"""Replacing a state file in one rename, so a reader or a crash never sees half of one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["fsync_dir", "write_atomically"]


def write_atomically(path: Path, text: str | Iterable[str]) -> None:
    """Replace ``path`` with ``text``: written to a hidden sibling, fsynced, renamed over
    it, and the rename fsynced, so a power cut keeps the old file or the new one. ``text``
    may come in pieces (the worker's snapshot, a device's data at a time), so that a large
    file is never one string in memory.

    When any step fails (a full disk, an unwritable directory) the sibling is removed and
    the error raised: a failed snapshot used to leave a 0-byte ``.thresholds.json.tmp``
    behind (issue #19). The pid in its name keeps two processes (the daemon and a
    training run's child, or a CLI command) from writing the same one.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            if isinstance(text, str):
                handle.write(text)
            else:
                handle.writelines(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make the renames and new files in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
