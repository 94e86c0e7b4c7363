"""The default config at 1 s, 1 min, 5 min and 1 h a reading: trained, scored, not blinded.

One synthetic series per sampling interval, the same in readings: two noisy sines (a cycle
every 48 readings), gaps in the first rows (a day after row 5, 6 hours after row 20), one
spike of 30 noise standard deviations at row 2000, and a lasting offset of 3 on the second
channel over rows 2500-2600, the fault to find. ``sentinel.offline.replay`` trains on the
first 1000 rows and scores the rest with the default config (a small model, few epochs).
Printed per interval: whether it trained (or the refusal), the threshold before and after
the spike, re-baselines, whether the fault alerted, and rows in alerts outside it.

    .venv/bin/python benchmarks/timescale.py [--rows 3000]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from sentinel.config import SentinelConfig
from sentinel.errors import DataError
from sentinel.logs import configure_logging
from sentinel.offline.csvdata import RecordedData
from sentinel.offline.replay import replay

INTERVALS = {"1 s": 1.0, "1 min": 60.0, "5 min": 300.0, "1 h": 3600.0}
TRAIN_ROWS, SPIKE, FAULT = 1000, 2000, (2500, 2600)


def series(rows: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    i = np.arange(rows)
    a = np.sin(2 * np.pi * i / 48) + 0.1 * rng.standard_normal(rows)
    b = np.cos(2 * np.pi * i / 48) + 0.1 * rng.standard_normal(rows)
    a[SPIKE] += 30.0
    b[FAULT[0] : FAULT[1]] += 3.0
    ts = 1_700_000_000.0 + i * step
    ts[5:] += 86_400.0
    ts[20:] += 6 * 3600.0
    return ts, np.stack([a, b], axis=1).astype(np.float32)


def run(rows: int, step: float, overrides: dict[str, Any]) -> str:
    raw: dict[str, Any] = {
        "model": {"hidden_size": 16, "latent_size": 4, "epochs": 5},
        "streams": [{"name": "meter", "topic": "m/{device}", "features": ["a", "b"]}],
        **overrides,
    }
    config = SentinelConfig.model_validate(raw)
    ts, values = series(rows, step)
    data = RecordedData(values, ts, ("a", "b"), config.windows.max_gap)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scores.csv"
        torch.manual_seed(0)
        try:
            summary = replay(
                config,
                config.streams[0],
                data,
                out,
                device="m1",
                train_rows=TRAIN_ROWS,
                torch_device=torch.device("cpu"),
                show_progress=False,
            )
        except DataError as err:
            return f"refused: {err}".replace("|", "/") + " | | | |"
        with out.open() as handle:
            out_rows = list(csv.DictReader(handle))
    before = float(out_rows[SPIKE - 10]["threshold"])
    after = float(out_rows[-1]["threshold"])
    caught = any(r["alert_id"] for r in out_rows[FAULT[0] : FAULT[1]])
    outside = sum(
        1
        for k, r in enumerate(out_rows[TRAIN_ROWS:], start=TRAIN_ROWS)
        if r["alert_id"] and not FAULT[0] <= k < FAULT[1] + 64
    )
    return (
        f"trained, {summary.scored_windows} windows scored | {before:.3g} -> {after:.3g} "
        f"(x{after / before:.3g}) | {'yes' if caught else 'no'} | {outside} | "
        f"{summary.alerts}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument(
        "--max-gap", type=float, help="set windows.max_gap in seconds (default: the config's)"
    )
    args = ap.parse_args()
    configure_logging("warning", "console")
    torch.set_num_threads(1)
    overrides = {"windows": {"max_gap": args.max_gap}} if args.max_gap else {}
    print(
        "| interval | training | threshold before -> after the spike | fault alerted "
        "| rows in alerts outside the fault (the spike's included) | alerts |"
    )
    print("|---|---|---|---|---|---|")
    for name, step in INTERVALS.items():
        print(f"| {name} | {run(args.rows, step, overrides)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
