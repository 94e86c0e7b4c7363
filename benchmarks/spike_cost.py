"""What the per-reading spike check costs beside the model, per window, as a ratio.

Scores the same batches of random windows (the daemon's default shape: window 32, 6
features, hop 4) with ``Detector.score`` (an untrained model of the default size; the cost
does not depend on the weights) and with ``SpikeCheck.check``, on one torch thread as the
daemon runs, and reports the medians and the spike check's cost as a share of the model's.

    .venv/bin/python benchmarks/spike_cost.py [--batch 64] [--repeat 50]

With ``--series CLASS [--seed S]`` it times the spike check alone over a synthetic class's
windows instead (``simulators.synthetic``; window 32, hop 4, one window a call as a
device's readings arrive), whose channels hold the pulses, steps and heavy tails random
windows do not: what remembering spikes and near misses costs on such data.

    .venv/bin/python benchmarks/spike_cost.py --series wide_server --seed 1 [--repeat 7]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from sentinel.config import SpikesConfig
from sentinel.judge.spikes import SpikeCheck
from sentinel.model import Calibration, LstmAeDetector, LstmAeMeta
from sentinel.model.lstm_ae import LstmAutoencoder
from sentinel.model.scaler import Scaler
from simulators.synthetic import generate

WINDOW, FEATURES, HOP = 32, 6, 4


def detector() -> LstmAeDetector:
    module = LstmAutoencoder(FEATURES, 32, 8, 1)
    calibration = Calibration.from_errors(np.ones((10, FEATURES)))
    meta = LstmAeMeta(
        version="bench",
        stream="pump",
        features=tuple(f"f{i}" for i in range(FEATURES)),
        window=WINDOW,
        hidden_size=32,
        latent_size=8,
        num_layers=1,
        scaler=Scaler.fit(np.random.default_rng(0).standard_normal((100, FEATURES))),
        calibration=calibration,
        created="2026-01-01T00:00:00Z",
    )
    return LstmAeDetector(meta, module, torch.device("cpu"))


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def series_cost(name: str, seed: int, repeat: int) -> None:
    """The spike check alone over one synthetic series' windows, one window a call; with
    its learnt tails (``tail``, the default) and without, runs interleaved."""
    series = generate(name, seed=seed)
    values = series.values.astype(np.float32)
    windows = np.stack([values[i : i + WINDOW] for i in range(0, len(values) - WINDOW + 1, HOP)])

    def run(tail: bool) -> float:
        check = SpikeCheck(SpikesConfig(tail=tail), HOP)
        started = time.perf_counter()
        for i in range(len(windows)):
            check.check("s", ["d"], windows[i : i + 1])
        return time.perf_counter() - started

    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeat):
        for tail in (True, False):
            times[tail].append(run(tail))
    with_tail, without = (float(np.median(times[t])) for t in (True, False))
    print(
        f"{platform.machine()}, python {platform.python_version()}; {name} seed {seed}: "
        f"{len(windows)} windows of {WINDOW} x {values.shape[1]}, median of {repeat}"
    )
    print(
        f"spike check: {with_tail / len(windows) * 1e6:.1f} us/window "
        f"({without / len(windows) * 1e6:.1f} without learnt tails: "
        f"x{with_tail / without:.2f})"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64, help="windows per pass")
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--series", help="a synthetic class: time the spike check on its windows")
    ap.add_argument("--seed", type=int, default=0, help="with --series: its seed")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.series:
        series_cost(args.series, args.seed, args.repeat)
        return 0
    windows = np.random.default_rng(1).standard_normal((args.batch, WINDOW, FEATURES))
    devices = [f"pump-{i % args.devices}" for i in range(args.batch)]
    model = detector()
    check = SpikeCheck(SpikesConfig(), HOP)
    for _ in range(10):  # warm up, and past the spike check's own warm-up
        model.score(windows)
        check.check("pump", devices, windows)
    model_s = median_seconds(lambda: model.score(windows), args.repeat)
    spike_s = median_seconds(lambda: check.check("pump", devices, windows), args.repeat)
    per = 1e6 / args.batch
    print(
        f"{platform.machine()}, python {platform.python_version()}, torch {torch.__version__}, "
        f"1 thread; batch {args.batch} windows of {WINDOW} x {FEATURES}, median of {args.repeat}"
    )
    print(f"model score: {model_s * per:.1f} us/window")
    print(f"spike check: {spike_s * per:.1f} us/window")
    print(f"spike check / model: {spike_s / model_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
