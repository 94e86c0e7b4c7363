"""Memory of the pipeline worker under a flood of made-up device names (issue #19).

One reading each from ``--devices`` distinct names of one stream (6 features, product
windows), fed to a running ``Pipeline`` worker thread as MQTT deliveries are, then nothing
until ``ingest.device_idle`` has passed. Reported: Python heap (tracemalloc, what the
worker's data structures hold) and process RSS (psutil) after the flood and after the idle
devices were evicted, for ``max_devices`` at its default and with the cap lifted (what every
name cost before the cap existed). Then the same for ``--warm`` devices that scored enough
windows for a warm threshold, live and parked.

    .venv/bin/python benchmarks/device_flood.py [--devices 30000] [--warm 50]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.config import SentinelConfig
from sentinel.records import Delivery, Reading, WriteBatch
from sentinel.worker.pipeline import Pipeline

FEATURES = ["flow", "pressure", "current", "temperature", "vibration", "voltage"]
# Seconds: the benchmark's ingest.device_idle (and windows.max_gap); longer than a flood
# takes to arrive, so that none leaves before it is measured.
IDLE = 20.0


@dataclass
class _Calibration:
    quantiles: dict[str, float] = field(default_factory=lambda: {"0.995": 1.0})
    feature_mean_errors: tuple[float, ...] = (0.0,) * len(FEATURES)
    scores: tuple[float, ...] = ()


@dataclass
class _Meta:
    calibration: _Calibration = field(default_factory=_Calibration)


class QuietDetector:
    """Scores every window 0.1: normal, so every device's threshold learns from it."""

    features = tuple(FEATURES)
    window = 32
    version = "bench"
    meta = _Meta()

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(windows)
        return np.full(n, 0.1), np.full((n, len(FEATURES)), 0.1)


def config(max_devices: int) -> SentinelConfig:
    return SentinelConfig.model_validate(
        {
            "streams": [
                {
                    "name": "pump",
                    "topic": "plant/{device}/pump",
                    "features": FEATURES,
                    "max_devices": max_devices,
                }
            ],
            "windows": {"max_gap": IDLE},
            "ingest": {"device_idle": IDLE},
            "threshold": {"warmup": 200, "history": 2000},
        }
    )


def wait(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the pipeline did not get there")
        time.sleep(0.05)


def measure() -> dict[str, float]:
    gc.collect()
    return {
        "heap_mb": tracemalloc.get_traced_memory()[0] / 1e6,
        "rss_mb": psutil.Process().memory_info().rss / 1e6,
    }


def feed(pipeline: Pipeline, deliveries: list[Delivery]) -> None:
    for delivery in deliveries:
        while not pipeline.offer(delivery):
            time.sleep(0.001)
    wait(lambda: pipeline.depth == 0)


def run(max_devices: int, deliveries: list[Delivery], model: Any) -> dict[str, dict[str, float]]:
    committed: dict[str, int] = {}  # device -> readings, as the writer would store them

    def sink(batch: WriteBatch) -> None:
        committed.update((p.device, p.readings) for p in batch.progress)

    pipeline = Pipeline(
        config(max_devices),
        sink=sink,
        request_training=lambda job: None,
        models={"pump": model},
        cold_start_buffer=False,
    )
    gc.collect()
    tracemalloc.start()
    before = measure()
    pipeline.start()
    try:
        feed(pipeline, deliveries)
        # Every message taken and its pass handed on (readings are counted before that).
        wait(
            lambda: (
                pipeline.stats.messages == len(deliveries)
                and sum(committed.values()) == pipeline.stats.readings
            )
        )
        held = pipeline.devices_held()["pump"]
        flooded = measure()
        wait(lambda: pipeline.stats.evicted == held)  # counted once all is parked
        evicted = measure()
    finally:
        pipeline.stop()
        tracemalloc.stop()
    base = before["heap_mb"]
    return {
        "held": {"devices": held},
        "after the flood": {k: v - (base if k == "heap_mb" else 0) for k, v in flooded.items()},
        "after eviction": {k: v - (base if k == "heap_mb" else 0) for k, v in evicted.items()},
        "before": before,
    }


def flood(devices: int) -> list[Delivery]:
    now = time.time()
    return [
        Delivery(
            f"plant/flood-{i:06d}/pump",
            (Reading("pump", f"flood-{i:06d}", now, tuple(float(j) for j in range(6))),),
            (),
            None,
            now,
        )
        for i in range(devices)
    ]


def warm(devices: int, readings: int) -> list[Delivery]:
    start = time.time() - readings * 0.01
    rng = np.random.default_rng(0)
    out = []
    for t in range(readings):
        ts = start + t * 0.01
        out.append(
            Delivery(
                "plant/x/pump",
                tuple(
                    Reading("pump", f"warm-{d:04d}", ts, tuple(map(float, rng.normal(size=6))))
                    for d in range(devices)
                ),
                (),
                None,
                time.time(),
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=30_000)
    parser.add_argument("--warm", type=int, default=50)
    args = parser.parse_args()
    default_cap = (
        SentinelConfig.model_validate(
            {"streams": [{"name": "p", "topic": "p/{device}", "features": ["x"]}]}
        )
        .streams[0]
        .max_devices
    )
    names = flood(args.devices)
    for label, cap in (("cap lifted", args.devices), (f"max_devices = {default_cap}", default_cap)):
        print(label, run(cap, names, None))
    # 32 + 4 x 600 readings: 600 windows each, past the threshold's warm-up of 200
    print(f"{args.warm} warm devices", run(args.warm, warm(args.warm, 2432), QuietDetector()))


if __name__ == "__main__":
    main()
