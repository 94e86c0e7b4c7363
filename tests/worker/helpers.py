"""Shared by the worker's end-to-end check tests: one device's rows as deliveries, and the
alerts as first opened."""

from __future__ import annotations

import time

import numpy as np
import torch

from sentinel.config import SentinelConfig
from sentinel.model import LstmForecastDetector, TrainOptions
from sentinel.records import Alert, Delivery, Reading
from tests.fakes import Harness

__all__ = ["deliveries", "opened", "process_rows", "small_config", "trained_forecaster"]


def deliveries(values: np.ndarray) -> list[Delivery]:
    """Rows of (T, F) ``values`` as device d1's readings on stream "pump", one a second."""
    return [
        Delivery(
            topic="p/d1",
            readings=(Reading("pump", "d1", float(t), tuple(float(v) for v in row)),),
            rejected=(),
            ack=None,
            received_at=time.time(),
        )
        for t, row in enumerate(values)
    ]


def process_rows(h: Harness, stream: str, topic: str, values: np.ndarray) -> None:
    """Rows of (T, F) ``values`` as device d1's readings on ``stream``, one a second,
    through ``h``'s pipeline synchronously in passes of 64 readings on ``topic``."""
    readings = [
        Reading(stream, "d1", float(t), tuple(float(v) for v in row))
        for t, row in enumerate(values)
    ]
    for i in range(0, len(readings), 64):
        batch = tuple(readings[i : i + 64])
        h.batches.append(h.pipeline.process([Delivery(topic, batch, (), None, batch[-1].ts)]))


def opened(alerts: list[Alert]) -> list[Alert]:
    """Each alert as it was first seen (opened), in order."""
    first: dict[str, Alert] = {}
    for alert in alerts:
        first.setdefault(alert.uid, alert)
    return list(first.values())


def small_config(features: list[str], **sections: object) -> SentinelConfig:
    """Stream "pump" of ``features`` (topic p/{device}), windows of 16 at hop 4, a small
    LSTM-AE that trains in seconds, and ``sections`` over the defaults."""
    return SentinelConfig.model_validate(
        {
            "streams": [{"name": "pump", "topic": "p/{device}", "features": features}],
            "windows": {"length": 16, "hop": 4, "max_gap": 100},
            "model": {
                "hidden_size": 16,
                "latent_size": 4,
                "epochs": 12,
                "learning_rate": 1e-2,
                "train_stride": 2,
                "seed": 1,
            },
            **sections,
        }
    )


def trained_forecaster(config: SentinelConfig, rows: np.ndarray) -> LstmForecastDetector:
    """A forecaster trained on the CPU on ``rows`` (T, F) as one segment, for the config's
    first stream (its features, window and model settings)."""
    stream = config.streams[0]
    options = TrainOptions(stream.name, stream.feature_names, config.windows.length, config.model)
    trained = LstmForecastDetector.train([rows], options, device=torch.device("cpu"))
    assert isinstance(trained, LstmForecastDetector)
    return trained
