"""How fast `sentinel replay` scores a recording, against the model's own ceiling.

Writes a synthetic recording (one device, four coupled channels, a reading a second), trains
one model on its first rows, then times, on the same machine in the same run:

* ``replay``: ``sentinel.offline.replay.replay`` with that model (CSV parsed beforehand; the output
  CSV written): windows, model, thresholds, spike and level checks, alert logic;
* ``ceiling``: the detector's ``score`` alone over the same windows in batches of 256, the
  most a replay could go if everything around the model cost nothing.

The ratio of the two is what to read; the absolute rates move with the machine.

    .venv/bin/python benchmarks/replay_speed.py [--rows 60000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.config import load_config
from sentinel.logs import configure_logging
from sentinel.model import train_detector, training_options
from sentinel.offline.csvdata import read_feature_csv
from sentinel.offline.replay import replay

TRAIN_ROWS = 2000
CONFIG = """
state_dir = "{state}"
[windows]
length = 32
hop = 1
[cold_start]
readings = {train}
[retrain]
enabled = false
[[streams]]
name = "rig"
topic = "rig/{{device}}"
features = ["flow", "pressure", "current", "vibration"]
"""


def recording(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    i = np.arange(rows)
    flow = 30 + 2 * np.sin(i / 300) + 0.2 * rng.standard_normal(rows)
    pressure = 0.1 * flow + 0.05 * rng.standard_normal(rows)
    current = 1.2 + 0.02 * flow + 0.05 * rng.standard_normal(rows)
    vibration = 0.03 + 0.002 * rng.standard_normal(rows)
    with path.open("w") as handle:
        handle.write("timestamp,flow,pressure,current,vibration\n")
        for k in range(rows):
            when = (start + timedelta(seconds=int(k))).isoformat()
            handle.write(
                f"{when},{flow[k]:.4f},{pressure[k]:.4f},{current[k]:.4f},{vibration[k]:.5f}\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        metavar="SECTION",
        help="turn a check off ([SECTION] enabled = false), e.g. relations, to measure its cost",
    )
    args = parser.parse_args()
    configure_logging("warning", "console")
    torch.set_num_threads(1)  # the daemon's default (model.torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "rec.csv"
        recording(source, args.rows)
        config_file = work / "sentinel.toml"
        off = "".join(f"[{section}]\nenabled = false\n" for section in args.without)
        config_file.write_text(CONFIG.format(state=work / "state", train=TRAIN_ROWS) + off)
        config = load_config(config_file)
        stream = config.streams[0]
        data = read_feature_csv(source, stream.feature_names, max_gap=config.windows.max_gap)
        assert data.timestamps is not None
        detector = train_detector(
            [data.values[:TRAIN_ROWS]],
            training_options(config, stream.name),
            device=torch.device("cpu"),
            first_ts=float(data.timestamps[0]),
            last_ts=float(data.timestamps[TRAIN_ROWS - 1]),
        )
        windows = np.lib.stride_tricks.sliding_window_view(
            data.values, config.windows.length, axis=0
        ).transpose(0, 2, 1)
        replay_s, ceiling_s = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            for i in range(0, len(windows), 256):
                detector.score(np.ascontiguousarray(windows[i : i + 256]))
            ceiling_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            summary = replay(
                config,
                stream,
                data,
                work / "out.csv",
                device="pump-1",
                train_rows=TRAIN_ROWS,
                torch_device=torch.device("cpu"),
                detector=detector,
                show_progress=False,
            )
            replay_s.append(time.perf_counter() - started)
        n = summary.scored_windows
        replay_med, ceiling_med = statistics.median(replay_s), statistics.median(ceiling_s)
        print(
            f"{args.rows} rows, {n} windows of {config.windows.length}x4, median of "
            f"{args.repeat}; torch {torch.__version__}, 1 thread"
        )
        print("| | seconds | windows/s | share of the ceiling |")
        print("|---|---|---|---|")
        print(f"| model alone (ceiling) | {ceiling_med:.2f} | {n / ceiling_med:,.0f} | 1.00 |")
        print(
            f"| sentinel replay | {replay_med:.2f} | {n / replay_med:,.0f} | "
            f"{ceiling_med / replay_med:.2f} |"
        )


if __name__ == "__main__":
    main()
