"""Scoring without torch (issue #23, memory): what NumPy scoring saves and what it costs.

For the product's default detector and sizes (``lstm_forecast``, window 32, hidden 32, 6
features; and ``lstm_ae`` beside it), trained for a few epochs on clean simulated pumps:

* RSS of a fresh process that imports the daemon's modules, loads the model the way the
  daemon does (``scoring_device`` -> ``load_detector``) and scores a batch, once with
  ``model.runtime = "numpy"`` and once with ``"torch"`` (separate processes, peak RSS);
* per-window scoring time at batch sizes 1, 16, 128 and 512, median of ``--repeat`` timings
  each, NumPy against torch (one thread) in this process;
* the largest relative difference between the two runtimes' scores.

    .venv/bin/python benchmarks/numpy_scoring.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.config import ModelConfig
from sentinel.logs import configure_logging
from sentinel.model import TrainOptions, detector_type, make_windows
from sentinel.model.numpy_lstm import NumpyLstmDetector
from simulators.fleet import FEATURES, FleetSimulator

REPO = Path(__file__).resolve().parents[1]
WINDOW = 32

_CHILD = """
import json, sys
import numpy as np
import sentinel.cli.main, sentinel.daemon.app
from sentinel.config import ModelConfig
from sentinel.model import load_detector, scoring_device
device = scoring_device(ModelConfig(device="cpu", runtime=sys.argv[2]))
detector = load_detector(sys.argv[1], device)
detector.score(np.zeros((64, detector.window, len(detector.features)), dtype=np.float32))
# VmHWM: this process's peak RSS (ru_maxrss would carry the parent's over fork and exec)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"runtime": sys.argv[2], "class": type(detector).__name__,
    "rss_mb": int(status["VmHWM"].split()[0]) / 1024,
    "torch": "torch" in sys.modules}))
"""


def pump_data(devices: int = 4, steps: int = 1500) -> list[np.ndarray]:
    sim = FleetSimulator(devices, seed=3, step=1.0, anomaly_rate=0.0, warmup=steps)
    rows: dict[str, list[tuple[float, ...]]] = {}
    for step in itertools.islice(sim.steps(), steps):
        for reading in step:
            rows.setdefault(reading.device, []).append(tuple(reading.values[f] for f in FEATURES))
    return [np.asarray(r, dtype=np.float64) for r in rows.values()]


def per_window(score: object, windows: np.ndarray, repeat: int) -> float:
    fn = score  # a bound score method
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn(windows)  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times) / len(windows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="timings per batch size (median)")
    args = ap.parse_args()
    configure_logging("warning", "console")
    torch.set_num_threads(1)
    print(f"command: {' '.join(sys.argv)}")
    print(f"machine: {platform.machine()}, {platform.python_version()}, torch {torch.__version__}")
    data = pump_data()
    held = np.ascontiguousarray(make_windows(data[0], WINDOW, 1)[:512]).astype(np.float32)
    for key in ("lstm_forecast", "lstm_ae"):
        model = ModelConfig.model_validate({"detector": key, "epochs": 3})
        trained = detector_type(key).train(
            data, TrainOptions("pump", tuple(FEATURES), WINDOW, model), device=torch.device("cpu")
        )
        assert not isinstance(trained, NumpyLstmDetector)
        twin = NumpyLstmDetector.from_detector(trained)  # type: ignore[arg-type]
        a, b = trained.score(held)[0], twin.score(held)[0]
        print(f"\n## {key} (hidden {model.hidden_size}, window {WINDOW}, {len(FEATURES)} features)")
        print(f"largest relative score difference: {float(np.max(np.abs(a - b) / np.abs(a))):.1e}")
        with tempfile.TemporaryDirectory() as scratch:
            trained.save(Path(scratch) / "m")
            print("\n| runtime | class loaded | torch imported | peak RSS |")
            print("|---|---|---|---|")
            for runtime in ("numpy", "torch"):
                out = subprocess.run(
                    [sys.executable, "-c", _CHILD, str(Path(scratch) / "m"), runtime],
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.strip()
                row = json.loads(out.splitlines()[-1])
                print(f"| {runtime} | {row['class']} | {row['torch']} | {row['rss_mb']:.0f} MB |")
        print("\n| batch | NumPy µs/window | torch µs/window | NumPy / torch |")
        print("|---|---|---|---|")
        for batch in (1, 16, 128, 512):
            windows = held[:batch]
            np_t = per_window(twin.score, windows, args.repeat)
            torch_t = per_window(trained.score, windows, args.repeat)
            print(f"| {batch} | {np_t * 1e6:.1f} | {torch_t * 1e6:.1f} | {np_t / torch_t:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
