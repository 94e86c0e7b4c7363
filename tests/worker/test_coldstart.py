"""The cold start on data sampled every 5 minutes (issue #21, cause 1): it learns the
interval from what it collected instead of splitting every step as a 60 s gap, and the
model's interval then governs the stream's windows."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sentinel.model import ModelRegistry
from sentinel.records import Delivery, Reading
from sentinel.worker.coldstart import Trainer, TrainingJob
from tests.fakes import FakeDetector, Harness, make_config

FIVE_MIN = 300.0


def _delivery(start: int, n: int) -> Delivery:
    readings = tuple(
        Reading("pump", "a", i * FIVE_MIN, (float(np.sin(i / 5)), 0.0))
        for i in range(start, start + n)
    )
    return Delivery("p/a", readings, rejected=(), ack=None, received_at=0.0)


def test_cold_start_learns_a_five_minute_interval_and_keeps_its_runs_whole() -> None:
    config = make_config(windows={"length": 4, "hop": 1})  # max_gap on auto
    h = Harness({"pump": None}, config)
    h.pipeline.process([_delivery(0, 64)])
    [job] = h.jobs
    assert [len(s) for s in job.segments] == [64]  # main: 64 runs of 1, none trainable
    assert job.interval == FIVE_MIN
    assert job.max_gap == 60 * FIVE_MIN


def test_the_models_interval_governs_the_windows() -> None:
    detector = FakeDetector()
    detector._meta = replace(detector.meta, interval=FIVE_MIN)
    h = Harness({"pump": detector}, make_config(windows={"length": 4, "hop": 1}))
    h.pipeline.process([_delivery(0, 20)])
    assert h.pipeline.stats.scored == 17  # every window from the fourth reading on


def test_a_refused_cold_start_names_max_gap(tmp_path: Path) -> None:
    config = make_config(windows={"length": 4, "hop": 1, "max_gap": 60})
    failed: list[str] = []
    done = threading.Event()

    def on_failure(stream: str, reason: str) -> None:
        failed.append(reason)
        done.set()

    trainer = Trainer(
        config,
        ModelRegistry(tmp_path / "models"),
        torch.device("cpu"),
        on_model=lambda stream, detector: done.set(),
        on_failure=on_failure,
    )
    trainer.start()
    try:
        trainer.submit(TrainingJob(config.streams[0], [], 0.0, 1.0, FIVE_MIN, 60.0, 64))
        assert done.wait(10)
    finally:
        trainer.stop()
    assert len(failed) == 1
    assert "windows.max_gap (=60 s)" in failed[0]
    assert "window (4 readings)" in failed[0]
