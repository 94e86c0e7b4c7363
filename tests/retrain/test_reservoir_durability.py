"""Which reservoir commits are fsynced (issue #22): readings alone are not (best effort,
nothing acknowledged waits for them); a commit with exclusion or accepted spans is, before
the pass's alerts are committed and its readings acknowledged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e_helpers import REPO, subprocess_env
from tests.strace_helpers import parse_trace, strace_command, strace_unusable

# Each phase starts by fsyncing an empty marker file, which places it in the trace.
_CHILD = """
import os, sys
from pathlib import Path
from sentinel.records import Reading
from sentinel.retrain.reservoir import Reservoir

work = Path(sys.argv[1])
def phase(name):
    fd = os.open(work / name, os.O_CREAT | os.O_WRONLY)
    os.fsync(fd)
    os.close(fd)

res = Reservoir(work / "pump.sqlite", 1, max_rows=10_000, max_age=1e9, margin=5.0).open()
phase("readings")
for t in range(5):
    res.add([Reading("pump", "d1", float(t), (0.1,))])
phase("excluded")
res.add([Reading("pump", "d1", 5.0, (9.0,))], excluded=[("d1", 0.0, 5.0)])
phase("accepted")
res.add([], accepted=[("d1", 0.0, 5.0)])
phase("readings-again")
res.add([Reading("pump", "d1", 6.0, (0.1,))])
phase("end")
res.close()
"""


def test_only_commits_with_spans_are_fsynced(tmp_path: Path) -> None:
    if (reason := strace_unusable()) is not None:
        pytest.skip(reason)
    trace = tmp_path / "strace.txt"
    subprocess.run(
        strace_command(trace, [sys.executable, "-c", _CHILD, str(tmp_path)]),
        cwd=REPO,
        env=subprocess_env(),
        check=True,
        timeout=120,
    )
    wal = str(tmp_path / "pump.sqlite-wal")
    phases: dict[str, list[str]] = {}
    current: list[str] | None = None
    for call in parse_trace(trace):
        name = Path(call.fd).name
        if (
            call.name == "fsync"
            and Path(call.fd).parent == tmp_path
            and name
            in (
                "readings",
                "excluded",
                "accepted",
                "readings-again",
                "end",
            )
        ):
            current = phases.setdefault(name, [])
        elif current is not None and call.fd == wal:
            current.append(call.name)
    assert "pwrite64" in phases["readings"]
    assert "pwrite64" in phases["readings-again"]
    for readings_only in ("readings", "readings-again"):
        assert not {"fsync", "fdatasync"} & set(phases[readings_only]), readings_only
    for with_spans in ("excluded", "accepted"):
        calls = phases[with_spans]
        assert "pwrite64" in calls
        # The sync follows the commit's writes.
        synced = [i for i, c in enumerate(calls) if c in ("fsync", "fdatasync")]
        assert synced, with_spans
        assert synced[-1] > max(i for i, c in enumerate(calls) if c == "pwrite64")
