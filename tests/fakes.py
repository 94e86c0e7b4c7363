"""Fakes the pipeline's tests share: a detector, a config and a worker harness around them.

The worker, retraining and reload tests drive a real ``Pipeline`` with these; the real
model is exercised end to end elsewhere (tests/test_app.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from sentinel.config import SentinelConfig
from sentinel.ingest.source import SourceStatus
from sentinel.model import Calibration, Detector, DetectorMeta
from sentinel.records import Ack, Alert, Delivery, Reading, WriteBatch
from sentinel.worker.coldstart import TrainingJob
from sentinel.worker.pipeline import Pipeline

FEATURES = ["x", "y"]


def make_config(**overrides: Any) -> SentinelConfig:
    data: dict[str, Any] = {
        "streams": [{"name": "pump", "topic": "p/{device}", "features": FEATURES}],
        "windows": {"length": 4, "hop": 1, "max_gap": 100},
        "cold_start": {"readings": 64, "span": 0},  # readings alone
        "alerts": {"open_after": 1, "close_after": 2},
        "threshold": {"warmup": 1000},
    }
    data.update(overrides)
    return SentinelConfig.model_validate(data)


class FakeDetector(Detector):
    """Scores a window by its largest absolute value: > 1.5 * 1.0 is anomalous."""

    type_key = "fake"
    cannot_save = "a test fake"

    def __init__(self, version: str = "fake-1") -> None:
        self._meta = DetectorMeta(
            detector=self.type_key,
            version=version,
            stream="pump",
            features=tuple(FEATURES),
            window=4,
            calibration=Calibration({"0.995": 1.0}, 1.0, (0.0, 0.0)),
            created="2025-01-01T00:00:00+00:00",
        )

    @property
    def meta(self) -> DetectorMeta:
        return self._meta

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per_feature = np.abs(windows).max(axis=1).astype(np.float64)
        return per_feature.max(axis=1), per_feature

    @classmethod
    def train(cls, *args: Any, **kwargs: Any) -> FakeDetector:
        raise NotImplementedError("the pipeline never trains a model itself")


class Harness:
    """A pipeline whose write batches and training requests are kept in lists."""

    def __init__(
        self, models: dict[str, Detector | None], config: SentinelConfig | None = None, **kw: Any
    ) -> None:
        self.batches: list[WriteBatch] = []
        self.jobs: list[TrainingJob] = []
        self.pipeline = Pipeline(
            config or make_config(),
            sink=self.batches.append,
            request_training=self.jobs.append,
            models=models,
            **kw,
        )

    def run(self, deliveries: list[Delivery], until: Callable[[], bool] | None = None) -> None:
        self.pipeline.start()
        for d in deliveries:
            assert self.pipeline.offer(d)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.pipeline.depth == 0 and (until is None or until()):
                break
            time.sleep(0.01)
        self.pipeline.stop()

    @property
    def alerts(self) -> list[Alert]:
        return [a for b in self.batches for a in b.alerts]


def delivery(device: str, ts: float, x: float, mid: int | None = None) -> Delivery:
    return Delivery(
        topic=f"p/{device}",
        readings=(Reading("pump", device, ts, (x, 0.0)),),
        rejected=(),
        ack=Ack(mid, 1) if mid is not None else None,
        received_at=time.time(),
    )


class FakeSource:
    """What a second source (NATS JetStream, issue #24) would offer the daemon."""

    def __init__(self) -> None:
        self.connected = False
        self.acked: list[list[Ack]] = []

    def start(self) -> None:
        self.connected = True

    def pause(self) -> None:
        pass

    def stop(self, timeout: float = 5.0) -> None:
        self.connected = False

    def wait_subscribed(self, timeout: float) -> bool:
        return self.connected

    def ack(self, acks: Iterable[Ack]) -> None:
        self.acked.append(list(acks))

    def status(self) -> SourceStatus:
        return SourceStatus("nats", self.connected, 3)
