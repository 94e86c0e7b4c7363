"""Model scoring cost per window on each available device, against a matmul roofline.

Scores random windows with the default model shape (window 32, 6 features, hidden 32,
latent 8) through ``Detector.score`` -- scaling, the LSTM autoencoder, per-feature errors and
the transfer back -- for several batch sizes, on the CPU and, where one exists, on CUDA.
Reported per device and batch: the median time per batch over --repeat runs, windows per
second, and microseconds per window. As a yardstick measured in the same run, each device's
float32 matrix-multiply rate (a 1024 x 1024 product) gives the FLOP/s the LSTM's own
arithmetic would need at that throughput, as a fraction of what the device can do. Timings on
shared machines are noisy: read ratios and medians.

    .venv/bin/python benchmarks/scoring.py [--batches 1,16,256,1024] [--repeat 20]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.model import (
    Calibration,
    Detector,
    LstmAeDetector,
    LstmAeMeta,
    LstmAutoencoder,
    Scaler,
)

WINDOW, FEATURES, HIDDEN, LATENT = 32, 6, 32, 8


def detector(device: torch.device) -> Detector:
    torch.manual_seed(0)
    module = LstmAutoencoder(FEATURES, hidden_size=HIDDEN, latent_size=LATENT, num_layers=1)
    meta = LstmAeMeta(
        version="bench",
        stream="pump",
        features=tuple(f"f{i}" for i in range(FEATURES)),
        window=WINDOW,
        hidden_size=HIDDEN,
        latent_size=LATENT,
        num_layers=1,
        scaler=Scaler(mean=np.zeros(FEATURES, np.float32), scale=np.ones(FEATURES, np.float32)),
        calibration=Calibration(
            quantiles={q: 1.0 for q in ("0.5", "0.9", "0.99", "0.995", "0.999")},
            max=1.0,
            feature_mean_errors=(1.0,) * FEATURES,
        ),
        created="2026-01-01T00:00:00+00:00",
    )
    return LstmAeDetector(meta, module, device, max_batch=4096)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: object, device: torch.device, repeat: int) -> float:
    assert callable(fn)
    for _ in range(3):  # warm-up: allocator, cuDNN plans
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def matmul_flops(device: torch.device, repeat: int) -> float:
    a = torch.randn(1024, 1024, device=device)
    b = torch.randn(1024, 1024, device=device)
    seconds = median_seconds(lambda: a @ b, device, repeat)
    return 2 * 1024**3 / seconds


def lstm_flops_per_window() -> float:
    """Multiply-adds of the two LSTMs and the linear layers, x2 for FLOPs."""
    gates = 4 * HIDDEN
    encoder = WINDOW * gates * (FEATURES + HIDDEN)
    decoder = WINDOW * gates * (HIDDEN + HIDDEN)
    linear = HIDDEN * LATENT + LATENT * HIDDEN + WINDOW * HIDDEN * FEATURES
    return 2.0 * (encoder + decoder + linear)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,16,256,1024")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (daemon: 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    batches = [int(b) for b in args.batches.split(",")]
    rng = np.random.default_rng(0)
    per_window = lstm_flops_per_window()
    print(
        f"{platform.machine()}, python {platform.python_version()}, torch {torch.__version__}, "
        f"CPU threads {args.threads}"
        + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")
    )
    print(f"command: .venv/bin/python benchmarks/scoring.py {' '.join(sys.argv[1:])}\n")
    print("| device | batch | median ms / batch | windows / s | µs / window | of matmul rate |")
    print("|---|---|---|---|---|---|")
    for device in devices:
        model = detector(device)
        roof = matmul_flops(device, args.repeat)
        for batch in batches:
            windows = rng.normal(size=(batch, WINDOW, FEATURES)).astype(np.float32)
            seconds = median_seconds(lambda w=windows, m=model: m.score(w), device, args.repeat)
            rate = batch / seconds
            print(
                f"| {device.type} | {batch} | {1000 * seconds:.3f} | {rate:,.0f} | "
                f"{1e6 / rate:.1f} | {rate * per_window / roof:.4f} |"
            )
        print(f"| {device.type} matmul 1024³ | | | | | {roof / 1e9:,.0f} GFLOP/s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
