"""What one ``thresholds.json`` snapshot costs the worker at full fill (issue #23).

The worker writes every stream's per-device judge state every ``snapshot_interval`` (a
minute) on its own thread. Here a ``Pipeline`` with the product-default model (trained as
``device_state.py`` trains it) takes ``--devices`` clean simulated pumps to ``--readings``
readings each (8,192 fill every history), then saves the snapshot ``--saves`` times and
prints, as one JSON line: the seconds of each save, the file's bytes (in all and per device,
and per part of a device's state), the peak of Python's heap during one save (tracemalloc),
how much the process's RSS rose over the timed saves, and the seconds to parse the file.

    .venv/bin/python benchmarks/snapshot_cost.py [--devices 100] [--readings 8192]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from device_state import config, deliveries, model, pipeline_for  # the state walk's

from sentinel.logs import configure_logging


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--readings", type=int, default=8192, help="per device")
    ap.add_argument("--saves", type=int, default=3, help="timed saves")
    args = ap.parse_args()
    configure_logging("warning", "console")
    cfg = config()
    detector = model(cfg)
    with tempfile.TemporaryDirectory(prefix="sentinel-snapshot-") as tmp:
        path = Path(tmp) / "thresholds.json"
        pipeline = pipeline_for(cfg, detector, path)
        for n, delivery in enumerate(deliveries(args.devices, 1.7e9), start=1):
            pipeline.process([delivery])
            if n >= args.readings:
                break
        gc.collect()
        rss = psutil.Process().memory_info().rss
        seconds = []
        for _ in range(args.saves):
            began = time.perf_counter()
            pipeline._save_thresholds()  # what the worker calls every snapshot_interval
            seconds.append(round(time.perf_counter() - began, 3))
        rose = psutil.Process().memory_info().rss - rss
        tracemalloc.start()
        pipeline._save_thresholds()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        size = path.stat().st_size
        began = time.perf_counter()
        saved = json.loads(path.read_text())
        parse = time.perf_counter() - began
    parts = saved["streams"]["pump"]
    print(
        json.dumps(
            {
                "devices": args.devices,
                "readings_per_device": args.readings,
                "save_s": seconds,
                "bytes": size,
                "kb_per_device": round(size / 1e3 / args.devices, 1),
                "kb_per_device_by_part": {
                    k: round(len(json.dumps(v)) / 1e3 / args.devices, 1)
                    for k, v in parts.items()
                    if isinstance(v, dict)
                },
                "peak_heap_mb": round(peak / 1e6, 1),
                "rss_rise_mb": round(rose / 1e6, 1),
                "parse_s": round(parse, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
