"""benchmarks/false_rows.py: a kept replay's false rows, by check and position."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "false_rows.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("false_rows", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(label: int, anomalous: int, check: str = "") -> dict[str, str]:
    return {"anomaly": str(float(label)), "is_anomaly": str(anomalous), "check": check}


def test_false_rows_are_placed_before_in_the_tail_of_and_after_the_fault() -> None:
    fr = load()
    rows = [
        row(0, 1, "score"),  # before the fault
        row(0, 1, "level:T"),  # before
        row(1, 1, "score+level:T"),  # a true row: not counted
        row(0, 1, "level:T"),  # 1 row after the fault: its tail
        row(0, 0),
        row(0, 1, "spike:A+level:F"),  # 3 rows after: past a tail of 2
        row(0, 1, "score+level:F"),  # the model's, whatever the checks add
    ]
    by_kind, by_feature = fr.false_rows(rows, tail=2)
    assert by_kind == {
        ("score", "before"): 1,
        ("level", "before"): 1,
        ("level", "tail"): 1,
        ("level+spike", "after"): 1,
        ("score", "after"): 1,
    }
    assert by_feature == {"level:T": 2, "level:F": 1, "spike:A": 1}


def test_the_command_prints_the_totals(tmp_path: Path) -> None:
    lines = ["timestamp,is_anomaly,check,anomaly", "1,1,level:T,0", "2,1,score,1", "3,1,level:T,0"]
    (tmp_path / "lstm_forecast-x-1.csv").write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "--tail", "5"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "| level | 1 | 1 | 0 |" in out
    assert "level:T 2" in out
