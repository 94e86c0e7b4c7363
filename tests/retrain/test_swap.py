"""Swapping models in a running pipeline: no reading dropped, no window scored twice."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

from sentinel.pipeline import Pipeline
from sentinel.records import Alert, Delivery, Reading, Verdict, WriteBatch
from tests.unit.test_pipeline import FakeDetector, make_config


@dataclass
class Versioned(FakeDetector):
    version: str = "fake-1"


def test_swapping_under_load_loses_no_reading_and_scores_each_window_once() -> None:
    devices, per_device = 16, 600
    scored: list[tuple[str, float, str]] = []
    batches: list[WriteBatch] = []

    def observe(verdict: Verdict, alert: Alert | None) -> None:
        w = verdict.score.window
        scored.append((w.device, w.end_ts, verdict.score.model_version))

    pipeline = Pipeline(
        make_config(),
        sink=batches.append,
        request_training=lambda job: None,
        models={"pump": Versioned(version="v0")},
        observer=observe,
    )
    pipeline.start()
    done = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        while not done.is_set():
            swaps += 1
            pipeline.install_model("pump", Versioned(version=f"v{swaps}"))  # type: ignore[arg-type]
            time.sleep(0.002)

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        for i in range(per_device):
            readings = tuple(
                Reading("pump", f"d{d}", 1000.0 + i, (0.1, 0.2)) for d in range(devices)
            )
            delivery = Delivery("p/x", readings, (), None, float(i))
            while not pipeline.offer(delivery):
                time.sleep(0.001)
        deadline = time.monotonic() + 20
        while pipeline.depth and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        done.set()
        thread.join()
        pipeline.stop()

    windows_per_device = per_device - 4 + 1  # length 4, hop 1, no gaps
    counts = Counter((device, end) for device, end, _ in scored)
    assert len(counts) == devices * windows_per_device  # every window scored ...
    assert set(counts.values()) == {1}  # ... exactly once
    assert pipeline.stats.readings == devices * per_device
    assert pipeline.rejections.as_dict() == {}
    versions = {v for _, _, v in scored}
    assert swaps > 10
    assert len(versions) > 3
    last = {p.device: p.readings for b in batches for p in b.progress}
    assert last == {f"d{d}": per_device for d in range(devices)}
