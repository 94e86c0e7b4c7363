"""How long a swap takes to reach every daemon through the shared registry (issue #24).

A private nats-server, one publishing client (a training daemon or the CLI) and
``--watchers`` registry clients that watch the active keys, as daemons do. For each of
``--rounds`` versions (an LSTM-AE of the daemon's default size on ``--features`` features,
untrained: the size is what matters): the upload (``save``), the activation, the time until
every watcher has seen it (``next_activation``), and each watcher's fetch and load
(``load_version``, into an empty cache). All clients run in this process, each with its own
NATS connection and loop thread.

    .venv/bin/python benchmarks/registry_swap.py --watchers 3 --rounds 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from sentinel.config import NatsConfig, RegistryConfig
from sentinel.model import Calibration, LstmAeDetector, LstmAeMeta, LstmAutoencoder, Scaler
from sentinel.model.nats_registry import NatsRegistry
from simulators.nats_server import PrivateNats

CPU = torch.device("cpu")


def detector(version: str, features: int) -> LstmAeDetector:
    names = tuple(f"f{i}" for i in range(features))
    meta = LstmAeMeta(
        version=version,
        stream="pump",
        features=names,
        window=32,
        hidden_size=32,
        latent_size=8,
        num_layers=1,
        scaler=Scaler(mean=np.zeros(features, np.float32), scale=np.ones(features, np.float32)),
        calibration=Calibration(
            quantiles={"0.5": 0.1, "0.9": 0.2, "0.99": 0.3, "0.995": 0.35, "0.999": 0.4},
            max=0.5,
            feature_mean_errors=(0.1,) * features,
        ),
        created="2025-01-01T00:00:00+00:00",
    )
    return LstmAeDetector(meta, LstmAutoencoder(features, 32, 8, 1), CPU)


def summary(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return (
        f"{name:<22} p50 {statistics.median(ms):7.1f} ms  p95 {p95:7.1f} ms  max {ms[-1]:7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--features", type=int, default=6)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sentinel-registry-bench-"))
    with PrivateNats(workdir=work / "nats") as server:
        nats = NatsConfig(servers=[server.url])
        config = RegistryConfig()
        publisher = NatsRegistry(config, nats, work / "publisher", role="publisher")
        watchers = [
            NatsRegistry(config, nats, work / f"watcher{i}", role=f"w{i}")
            for i in range(args.watchers)
        ]
        for client in (publisher, *watchers):
            assert client.start(), "no NATS"
        for watcher in watchers:
            watcher.watch()
        upload: list[float] = []
        activate: list[float] = []
        delivered: list[float] = []
        fetch: list[float] = []
        size = 0
        try:
            for i in range(args.rounds):
                version = f"20250101T{i // 60:02d}{i % 60:02d}00Z-{i:06x}"
                model = detector(version, args.features)
                start = time.perf_counter()
                publisher.save(model)
                upload.append(time.perf_counter() - start)
                size = sum(p.stat().st_size for p in (publisher.root / "pump" / version).iterdir())
                start = time.perf_counter()
                publisher.activate("pump", version)
                activate.append(time.perf_counter() - start)
                for watcher in watchers:
                    while True:
                        seen = watcher.next_activation(timeout=10.0)
                        assert seen is not None, "an activation did not arrive within 10 s"
                        if seen.version == version:
                            break
                delivered.append(time.perf_counter() - start)  # the last watcher's
                for watcher in watchers:
                    start = time.perf_counter()
                    watcher.load_version("pump", version, CPU)
                    fetch.append(time.perf_counter() - start)
        finally:
            for client in (publisher, *watchers):
                client.stop()
    print(f"model files: {size} bytes; {args.watchers} watchers; {args.rounds} rounds")
    print(summary("save (upload)", upload))
    print(summary("activate", activate))
    print(summary("seen by all watchers", delivered))
    print(summary("fetch + load", fetch))


if __name__ == "__main__":
    main()
