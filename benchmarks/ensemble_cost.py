"""Training time of the LSTM ensemble against its two members, on one cold start's data.

The ensemble prepares the data once and trains both members as each trains alone, so its
cost is about the sum of theirs; an edge box (Raspberry Pi class) pays that at every cold
start and retraining. Each detector is trained on the first ``--rows`` rows (the default
cold start's 3,000) of SKAB's anomaly-free recording (8 channels) with the default config,
on the CPU with one torch thread, as the daemon does, after one untimed warm-up; printed:
seconds and epochs per detector, the members' own seconds inside the ensemble, the ratios.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ensemble_cost.py --datasets DIR [--rows 3000]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from sentinel.config import ModelConfig
from sentinel.logs import configure_logging
from sentinel.model import DETECTORS, TrainOptions

KEYS = ("lstm_forecast", "lstm_ae", "lstm_ensemble")


def skab_normal(datasets: Path, rows: int) -> tuple[tuple[str, ...], np.ndarray]:
    path = datasets / "skab" / "anomaly-free" / "anomaly-free.csv"
    with path.open(newline="") as f:
        reader = csv.reader(f, delimiter=";")
        header = next(reader)
        data = [[float(v) for v in row[1:]] for _, row in zip(range(rows), reader, strict=False)]
    return tuple(header[1:]), np.asarray(data, dtype=np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    ap.add_argument("--rows", type=int, default=3000)
    args = ap.parse_args()
    configure_logging("warning", "console")
    torch.set_num_threads(1)
    features, data = skab_normal(args.datasets, args.rows)
    options = TrainOptions("skab", features, 32, ModelConfig())
    print(f"{len(data)} rows x {len(features)} features, window 32, default model config")
    # Torch's first training in a process pays its one-off start-up; not the detector's.
    warm_up = TrainOptions("skab", features, 32, ModelConfig(epochs=1))
    DETECTORS["lstm_forecast"].train([data[:300]], warm_up, device=torch.device("cpu"))
    seconds: dict[str, float] = {}
    for key in KEYS:
        started = time.monotonic()
        model = DETECTORS[key].train([data], options, device=torch.device("cpu"))
        seconds[key] = time.monotonic() - started
        training = model.meta.training
        parts = ", ".join(f"{k} {v}" for k, v in training.items() if k != "seed")
        print(f"{key}: {seconds[key]:.1f} s ({parts})", flush=True)
    ensemble = seconds["lstm_ensemble"]
    print(
        f"ensemble / forecaster {ensemble / seconds['lstm_forecast']:.2f}x, "
        f"ensemble / autoencoder {ensemble / seconds['lstm_ae']:.2f}x, "
        f"ensemble / (sum of both) {ensemble / (seconds['lstm_forecast'] + seconds['lstm_ae']):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
