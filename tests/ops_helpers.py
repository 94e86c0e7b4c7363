"""Helpers for the operations tests: a quick model, HTTP scrapes, metric look-ups."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from prometheus_client.parser import text_string_to_metric_families

from sentinel.model import (
    Calibration,
    LstmAeDetector,
    LstmAeMeta,
    LstmAutoencoder,
    ModelRegistry,
    Scaler,
)
from simulators.broker import Publisher
from simulators.fleet import FEATURES, FleetSimulator, encode
from tests.e2e_helpers import WINDOW

VERSION = "20250101T000000Z-opstst"


def install_untrained_model(state_dir: Path, version: str = VERSION, window: int = WINDOW) -> str:
    """An untrained pump model with a plausible calibration: scores, never meaningful ones.

    The operations tests need a model to be *there* (health, metrics, reload), not a good
    one; training a real one would cost them most of their run time.
    """
    torch.manual_seed(0)
    n = len(FEATURES)
    meta = LstmAeMeta(
        version=version,
        stream="pump",
        features=tuple(FEATURES),
        window=window,
        hidden_size=8,
        latent_size=4,
        num_layers=1,
        scaler=Scaler(mean=np.zeros(n, np.float32), scale=np.full(n, 100.0, np.float32)),
        calibration=Calibration(
            quantiles={"0.5": 1.0, "0.9": 2.0, "0.99": 3.0, "0.995": 4.0, "0.999": 5.0},
            max=6.0,
            feature_mean_errors=tuple([0.5] * n),
        ),
        created="2025-01-01T00:00:00+00:00",
    )
    registry = ModelRegistry(state_dir / "models")
    registry.save(LstmAeDetector(meta, LstmAutoencoder(n, 8, 4, 1), torch.device("cpu")))
    registry.activate("pump", version)
    return version


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=20) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    status, body = http_get(port, "/healthz")
    return status, json.loads(body)


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by (name, sorted labels)."""
    status, body = http_get(port, "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def sample(
    scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def publish_fleet(
    url: str,
    protocol: Literal["5", "3.1.1"],
    devices: int,
    steps: int,
    start_ts: float = 1_704_067_200.0,
) -> int:
    """Publish ``steps`` readings of each simulated pump (QoS 1); returns how many."""
    sim = FleetSimulator(devices, seed=1, anomaly_rate=0.0, warmup=0.0, start_ts=start_ts)
    publisher = Publisher(url, protocol=protocol)
    publisher.start()
    sent = 0
    for _, step in zip(range(steps), sim.steps(), strict=False):
        for reading in step:
            publisher.publish(f"plant/{reading.device}/pump", encode(reading, sent, "json"))
            sent += 1
    assert publisher.finish(30) == 0
    return sent
