"""What one device's state costs the pipeline worker as it fills (issue #23).

A product-default model (the default detector, trained here on a few clean simulated pumps)
is installed in a ``Pipeline`` driven synchronously with ``process``, as replay drives it;
``--devices`` simulated pumps (clean, so every window is normal and every history fills at
its fastest) then send readings in time order, one a second. At each checkpoint (readings
per device) each of the worker's per-device structures is measured by walking the objects
it holds (``sys.getsizeof`` of each, NumPy buffers included; what was there before the
first reading subtracted), and divided by the devices:

* windows: the stream's window rings (``WindowAssembler``);
* devices: order state and counts (``DeviceTable``);
* thresholds: each device's remembered normal scores (in time order and sorted, the
  rolling quantile read off the latter) and its level-shift watch (``ThresholdBank``);
* spikes, levels, stuck, constants, relations, recurring, alerts: the other checks' state.

Process RSS (psutil) is printed beside it, for the check.

    .venv/bin/python benchmarks/device_state.py [--devices 50] [--readings 10000]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.config import SentinelConfig
from sentinel.model import Detector, detector_type, training_options
from sentinel.records import Delivery, Reading, WriteBatch
from sentinel.worker.pipeline import Pipeline
from simulators.fleet import FEATURES, FleetSimulator

CHECKPOINTS = (64, 256, 512, 1024, 2048, 4096, 8192, 10_000, 16_000)


def config() -> SentinelConfig:
    return SentinelConfig.model_validate(
        {"streams": [{"name": "pump", "topic": "plant/{device}/pump", "features": FEATURES}]}
    )


def model(cfg: SentinelConfig) -> Detector:
    sim = FleetSimulator(4, seed=101, anomaly_rate=0.0, warmup=0.0)
    rows: dict[str, list[list[float]]] = {name: [] for name in sim.devices}
    for _, step in zip(range(1500), sim.steps(), strict=False):
        for reading in step:
            rows[reading.device].append([reading.values[f] for f in FEATURES])
    return detector_type(cfg.model.detector).train(
        [np.asarray(r, dtype=np.float32) for r in rows.values()],
        training_options(cfg, "pump"),
        device=torch.device("cpu"),
    )


def pipeline_for(cfg: SentinelConfig, detector: Detector, snapshot: Path | None = None) -> Pipeline:
    """A pipeline driven in process as replay drives it, its batches dropped."""

    def sink(batch: WriteBatch) -> None:
        pass

    return Pipeline(
        cfg,
        sink=sink,
        request_training=lambda job: None,
        models={"pump": detector},
        cold_start_buffer=False,
        snapshot_path=snapshot,
    )


def deliveries(devices: int, start: float) -> Iterator[Delivery]:
    """One delivery a second, each holding a reading of every clean simulated pump."""
    sim = FleetSimulator(devices, seed=7, anomaly_rate=0.0, warmup=0.0)
    for n, step in enumerate(sim.steps(), start=1):
        readings = tuple(
            Reading("pump", r.device, start + n, tuple(r.values[f] for f in FEATURES)) for r in step
        )
        yield Delivery("plant/x/pump", readings, (), None, 0.0)


def deep_size(root: object, seen: set[int]) -> int:
    """Bytes held by ``root`` and everything it refers to, not counting what ``seen``
    (ids) already holds, nor classes, modules and functions (shared code, not state)."""
    total, stack = 0, [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type | types.ModuleType | types.FunctionType):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, np.ndarray) and obj.base is not None:
            stack.append(obj.base)  # a view: its buffer belongs to the base
        stack.extend(gc.get_referents(obj))
    return total


def components(pipeline: Pipeline) -> dict[str, object]:
    """The worker's per-device structures by name (private attributes: a benchmark's view)."""
    p = pipeline
    return {
        "windows": p._streams["pump"].windows,
        "devices": p._devices,
        "thresholds": p._thresholds,
        "spikes": p._spikes,
        "levels": p._levels,
        "stuck": p._stuck,
        "constants": p._constants,
        "relations": p._relations,
        "recurring": p._recurring,
        "alerts": p._alerts,
    }


def sizes(pipeline: Pipeline, config_and_model: list[object]) -> dict[str, int]:
    gc.collect()
    seen: set[int] = set()
    for shared in config_and_model:  # counted nowhere: not per device
        deep_size(shared, seen)
    return {name: deep_size(obj, seen) for name, obj in components(pipeline).items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--readings", type=int, default=10_000, help="per device")
    ap.add_argument("--start", type=float, default=1.7e9, help="first timestamp")
    args = ap.parse_args()
    cfg = config()
    detector = model(cfg)
    pipeline = pipeline_for(cfg, detector)
    shared: list[object] = [cfg, detector, pipeline._thresholds._models]
    base = sizes(pipeline, shared)
    rss0 = psutil.Process().memory_info().rss
    checkpoints = [c for c in CHECKPOINTS if c <= args.readings]
    for n, delivery in enumerate(deliveries(args.devices, args.start), start=1):
        pipeline.process([delivery])
        if n in checkpoints:
            now = sizes(pipeline, shared)
            per = {k: round((v - base[k]) / 1e3 / args.devices, 1) for k, v in now.items()}
            rss = (psutil.Process().memory_info().rss - rss0) / 1e3 / args.devices
            row = {
                "readings_per_device": n,
                "kb_per_device": round(sum(per.values()), 1),
                "rss_kb_per_device": round(rss, 1),
                **per,
            }
            print(json.dumps(row), flush=True)
        if n >= args.readings:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
