"""benchmarks/memory.py --summarise: a soak's RSS at full fill and the band after it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _summary(path: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "memory.py"), "--summarise", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _row(t: float, rss: float, readings: float) -> str:
    return json.dumps({"t": t, "rss_mb": rss, "readings": readings, "cpu_s": readings / 1e4})


def test_the_band_after_full_fill_is_read_from_the_last_run(tmp_path: Path) -> None:
    fill = 2000 * 4 + 32  # the defaults: threshold.history windows at hop 4, plus one window
    soak = tmp_path / "soak.jsonl"
    lines = [
        json.dumps({"event": "start", "devices": [3]}),  # an earlier run in the same file
        _row(0, 999.0, 10 * fill),
        json.dumps({"event": "start", "devices": [2]}),
        json.dumps({"event": "trained", "rss_mb": 100.0}),
        _row(0, 110.0, 0),
        _row(10, 160.0, fill),  # before fill, the highest: not part of the band after
        _row(20, 140.0, 2 * fill),  # every device's histories full
        _row(30, 150.0, 3 * fill),
        _row(40, 145.0, 4 * fill),
    ]
    soak.write_text("\n".join(lines) + "\n")
    summary = _summary(soak)
    assert summary["devices"] == 2
    assert summary["full_fill_per_device"] == fill
    assert summary["rss_mb_at_full_fill"] == 140.0
    assert summary["rss_mb_after_fill"] == [140.0, 150.0]
    assert summary["readings_after_fill"] == 2 * fill
    assert summary["rss_mb_last"] == 145.0


def test_a_soak_cut_short_says_it_never_filled(tmp_path: Path) -> None:
    soak = tmp_path / "soak.jsonl"
    soak.write_text(json.dumps({"event": "start", "devices": [100]}) + "\n" + _row(5, 120.0, 500))
    summary = _summary(soak)
    assert "not_full" in summary
    assert "rss_mb_at_full_fill" not in summary


def test_the_client_process_cpu_is_summarised_where_the_file_has_it(tmp_path: Path) -> None:
    soak = tmp_path / "soak.jsonl"
    row = {"t": 10, "rss_mb": 120.0, "readings": 2e6, "cpu_s": 200.0, "cpu_live_children_s": 90.0}
    soak.write_text(json.dumps({"event": "start", "devices": [2]}) + "\n" + json.dumps(row) + "\n")
    summary = _summary(soak)
    assert summary["cpu_s_per_million"] == 100
    assert summary["client_cpu_s_per_million"] == 45
