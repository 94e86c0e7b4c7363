"""benchmarks/detection_suite.py: a series the config refuses is a table row, not a crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a subprocess that imports torch: about 10 s on the loaded box
def test_a_refused_series_is_reported_and_the_run_goes_on(tmp_path: Path) -> None:
    # max_gap under the sampling interval splits every pair of readings, so training is
    # refused before it starts (as the defaults' 60 s refuse 5-minute data): cheap, no model.
    config = tmp_path / "tight.toml"
    config.write_text("[windows]\nmax_gap = 0.5\n")
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "detection_suite.py"),
            "--only",
            "synthetic",
            "--classes",
            "cycle_1s,gaps",
            "--quick",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=280,  # a hang guard only, under the per-test 300 s: ~10 s even on a loaded box
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| cycle_1s", "| gaps"))]
    assert len(rows) == 2
    assert all("refused: no training data" in row for row in rows)
    assert "0 of 2 classes scored" in done.stdout
    assert "total wall time" in done.stdout
