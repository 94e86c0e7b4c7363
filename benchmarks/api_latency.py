"""Latency of the daemon's HTTP endpoints, and what FastAPI and uvicorn cost in memory.

Three parts, each its own process run (``--part``):

* ``api``: a daemon in this process (SQLite, a private Mosquitto, no model: its stream is
  collecting) whose database holds ``--alerts`` alerts and ``--devices`` devices' progress;
  ``--requests`` sequential keep-alive requests per endpoint, then the same alert list from
  8 client threads at once;
* ``health``: /healthz and /metrics alone, served by whatever server the imported tree has
  (``HealthServer`` on http.server before issue #25, ``HttpServer`` on uvicorn after), for
  a like-for-like comparison: run it once with ``SENTINEL_TREE`` set to a checkout of the
  previous commit;
* ``import``: the peak RSS of a process that imports ``sentinel.daemon.app`` (torch
  included), the daemon's floor, with or without the new dependencies.

    .venv/bin/python benchmarks/api_latency.py --part api
    .venv/bin/python benchmarks/api_latency.py --part health
    SENTINEL_TREE=/tmp/sentinel-prev .venv/bin/python benchmarks/api_latency.py --part health
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.environ.get("SENTINEL_TREE") or str(Path(__file__).resolve().parents[1]))

import httpx


def _timed(get: Callable[[], httpx.Response], n: int) -> dict[str, float]:
    """``n`` calls of ``get``: p50, p95, p99 in ms and requests per second."""
    get()  # a first request opens the connection
    times = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        answer = get()
        times.append(time.perf_counter() - t0)
        if answer.status_code >= 500 and answer.status_code != 503:
            raise RuntimeError(f"{answer.status_code}: {answer.text[:200]}")
    total = time.perf_counter() - start
    cuts = statistics.quantiles(times, n=100)
    return {
        "p50_ms": round(1000 * statistics.median(times), 2),
        "p95_ms": round(1000 * cuts[94], 2),
        "p99_ms": round(1000 * cuts[98], 2),
        "per_s": round(n / total, 1),
    }


def _seed(url: str, alerts: int, devices: int) -> None:
    from sentinel.records import Alert, AlertStatus, DeviceProgress, FeatureContribution
    from sentinel.records import WriteBatch as Batch
    from sentinel.store import AlertStore

    store = AlertStore(url)
    store.open()
    try:
        store.migrate()
        t0 = 1_700_000_000.0
        rows = [
            Alert(
                uid=f"bench-{i:06d}",
                stream="pump",
                device=f"dev-{i % devices:04d}",
                status=AlertStatus.OPEN if i % 10 == 0 else AlertStatus.CLOSED,
                started_at=t0 + 60 * i,
                updated_at=t0 + 60 * i + 30,
                ended_at=None if i % 10 == 0 else t0 + 60 * i + 30,
                peak_score=3.0,
                threshold=1.0,
                top_features=(FeatureContribution("flow", 0.6), FeatureContribution("amps", 0.4)),
                model_version="v1",
                windows=4,
            )
            for i in range(alerts)
        ]
        progress = [
            DeviceProgress("pump", f"dev-{i:04d}", t0 + 60 * alerts, 1000) for i in range(devices)
        ]
        for start in range(0, alerts, 1000):
            store.write([Batch(alerts=tuple(rows[start : start + 1000]))])
        store.write([Batch(progress=tuple(progress))])
    finally:
        store.close()


def part_api(args: argparse.Namespace) -> dict[str, Any]:
    from sentinel.config import SentinelConfig
    from sentinel.daemon.app import SentinelApp
    from simulators.broker import PrivateBroker

    work = Path(tempfile.mkdtemp(prefix="sentinel-api-bench-"))
    url = f"sqlite:///{work / 'state' / 'sentinel.db'}"
    (work / "state").mkdir()
    _seed(url, args.alerts, args.devices)
    broker = PrivateBroker(prefer="mosquitto", workdir=work / "broker")
    broker.start()
    config = SentinelConfig.model_validate(
        {
            "state_dir": str(work / "state"),
            "mqtt": {"host": broker.host, "port": broker.port, "client_id": "api-bench"},
            "database": {"url": url},
            "logging": {"level": "warning", "format": "json"},
            "streams": [{"name": "pump", "topic": "plant/{device}/pump", "features": ["flow"]}],
            "health": {"port": 0},
        }
    )
    app = SentinelApp(config)
    stop = threading.Event()
    thread = threading.Thread(target=app.run, args=(stop,), daemon=True)
    thread.start()
    results: dict[str, Any] = {}
    try:
        if not app.ready.wait(60) or app.health_server is None:
            raise RuntimeError("the daemon did not start")
        base = f"http://127.0.0.1:{app.health_server.port}"
        paths = [
            "/healthz",
            "/metrics",
            "/api/v1/alerts?limit=100",
            "/api/v1/alerts?status=open&device=dev-0007&limit=100",
            "/api/v1/alerts/5000",
            "/api/v1/devices?limit=100",
            "/api/v1/devices/pump/dev-0500",
            "/api/v1/models",
        ]
        with httpx.Client(base_url=base, timeout=30) as client:
            for path in paths:
                results[path] = _timed(functools.partial(client.get, path), args.requests)
        results["/api/v1/alerts?limit=100, 8 clients"] = _concurrent(base, args.requests)
    finally:
        stop.set()
        thread.join(60)
        broker.stop()
    return results


def _concurrent(base: str, requests: int) -> dict[str, float]:
    done: list[float] = []

    def client() -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            for _ in range(requests // 8):
                t0 = time.perf_counter()
                http.get("/api/v1/alerts?limit=100").raise_for_status()
                done.append(time.perf_counter() - t0)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = time.perf_counter() - start
    return {
        "p50_ms": round(1000 * statistics.median(done), 2),
        "per_s": round(len(done) / total, 1),
    }


def part_health(args: argparse.Namespace) -> dict[str, Any]:
    from sentinel.daemon import health
    from sentinel.daemon.metrics import Metrics

    state = Path(tempfile.mkdtemp(prefix="sentinel-health-bench-"))
    checks, metrics = health.Health(), Metrics(state)
    server: Any
    if hasattr(health, "HealthServer"):  # before issue #25
        server, kind = health.HealthServer("127.0.0.1", 0, checks, metrics), "http.server"
    else:
        from sentinel.api import ApiContext, build_app
        from sentinel.config import SentinelConfig
        from sentinel.daemon.server import HttpServer
        from sentinel.model import ModelRegistry
        from sentinel.store import AlertStore

        config = SentinelConfig.model_validate(
            {"streams": [{"name": "pump", "topic": "p/{device}", "features": ["flow"]}]}
        )
        context = ApiContext(
            config=lambda: config,
            store=AlertStore(f"sqlite:///{state / 'unused.db'}"),
            registry=ModelRegistry(state / "models"),
            health=checks,
            metrics=metrics,
            model_versions=dict,
            describe_devices=lambda keys: None,
            reload_model=None,
            token=None,
        )
        server, kind = HttpServer("127.0.0.1", 0, build_app(context)), "uvicorn"
    server.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
            return {
                "server": kind,
                "/healthz": _timed(lambda: client.get("/healthz"), args.requests),
                "/metrics": _timed(lambda: client.get("/metrics"), args.requests),
            }
    finally:
        server.stop()


def part_import(args: argparse.Namespace) -> dict[str, Any]:
    import sentinel.daemon.app  # noqa: F401

    loaded = sorted(m for m in ("fastapi", "uvicorn", "starlette") if m in sys.modules)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_rss_mb": round(peak_kib / 1024, 1), "loaded": loaded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("api", "health", "import"), required=True)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--devices", type=int, default=1_000)
    args = parser.parse_args()
    part = {"api": part_api, "health": part_health, "import": part_import}[args.part]
    print(json.dumps(part(args), indent=1))


if __name__ == "__main__":
    main()
