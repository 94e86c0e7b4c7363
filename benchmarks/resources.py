"""Memory and CPU of a real `sentinel run` process under the simulated fleet.

Three phases, each sampled with psutil every 0.5 s from outside the process:

1. idle: started, connected, nothing arriving (what the box pays for torch and Python);
2. cold start: a burst of clean readings fills the cold-start reservoir and the daemon
   trains its first model (default architecture) in a child process: the peak;
3. steady state: ``--devices`` pumps at 1 reading/s each for ``--seconds``, scored with the
   trained model.

Reported per phase: RSS (max; the daemon plus its training child, and the daemon alone),
and CPU as a percentage of one core (mean, ended children included). The daemon runs
with the product defaults (window 32, hop 4, torch_threads 1) on SQLite.

    .venv/bin/python benchmarks/resources.py [--devices 50] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.config import config_to_toml
from simulators.broker import PrivateBroker, free_port

REPO = Path(__file__).resolve().parents[1]


class Sampler:
    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)

    def sample(self, seconds: float, until: Any = None) -> dict[str, float]:
        """RSS max (the daemon plus its training child processes, and the daemon alone) and
        mean CPU (% of one core, children that ended included) over ``seconds`` (or until
        ``until()``)."""
        start_cpu = self.proc.cpu_times()
        start = time.monotonic()
        rss_max = rss_main_max = 0
        while True:
            main = self.proc.memory_info().rss
            children = 0
            for child in self.proc.children(recursive=True):
                try:
                    children += child.memory_info().rss
                except psutil.Error:  # ended between the listing and the read
                    continue
            rss_main_max = max(rss_main_max, main)
            rss_max = max(rss_max, main + children)
            elapsed = time.monotonic() - start
            if (until is not None and until()) or (until is None and elapsed >= seconds):
                break
            if until is not None and elapsed >= seconds:
                raise TimeoutError("phase did not finish in time")
            time.sleep(0.5)
        cpu = self.proc.cpu_times()
        used = sum(
            getattr(cpu, f) - getattr(start_cpu, f)
            for f in ("user", "system", "children_user", "children_system")
        )
        elapsed = time.monotonic() - start
        return {
            "seconds": round(elapsed, 1),
            "rss_max_mb": round(rss_max / 2**20, 1),
            "rss_main_max_mb": round(rss_main_max / 2**20, 1),
            "cpu_pct_of_one_core": round(100 * used / elapsed, 1),
        }


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def fleet(broker: PrivateBroker, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "simulators.fleet", "--broker", broker.url, *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sentinel-resources-"))
    broker = PrivateBroker(prefer="mosquitto", workdir=work / "broker")
    broker.start()
    port = free_port()
    config = {
        "state_dir": str(work / "state"),
        "mqtt": {"host": broker.host, "port": broker.port, "client_id": "resources"},
        "health": {"port": port},
        # 60 readings per pump: the default 3,000 spread over a large fleet would give each
        # pump fewer readings than one window, and training would find no data.
        # span 0: the readings alone, not an hour of the fleet's time (cold_start.span).
        "cold_start": {"readings": max(3000, 60 * args.devices), "span": 0},
        "logging": {"format": "json", "level": "info"},
        "streams": [
            {
                "name": "pump",
                "topic": "plant/{device}/pump",
                "features": ["flow", "pressure", "current", "temperature", "vibration", "voltage"],
            }
        ],
    }
    path = work / "sentinel.toml"
    path.write_text(config_to_toml(config))
    log = (work / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "sentinel.cli", "run", "--config", str(path)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} cores",
        "devices": args.devices,
    }
    try:
        sampler = Sampler(daemon.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                metric(port, "sentinel_mqtt_connected")
                break
            except OSError:
                time.sleep(0.5)
        results["idle"] = sampler.sample(10)

        # Cold start: clean readings as fast as possible until the model is trained.
        warm = fleet(
            broker,
            *("--devices", str(args.devices), "--rate", "0", "--steps", "80"),
            *("--anomaly-rate", "0", "--start", "2024-01-01T00:00:00Z", "--step", "1"),
        )

        def trained() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
                return json.loads(r.read())["checks"]["models"]["pump"] is not None

        def trained_or_503() -> bool:
            try:
                return trained()
            except urllib.error.HTTPError as err:
                return json.loads(err.read())["checks"]["models"]["pump"] is not None

        results["cold_start_training"] = sampler.sample(600, until=trained_or_503)
        warm.wait(60)

        # Steady state: every pump at 1 reading/s.
        live = fleet(
            broker,
            *("--devices", str(args.devices), "--rate", "1", "--duration", str(args.seconds)),
            *("--start", "2024-01-02T00:00:00Z", "--step", "1", "--warmup", "0"),
        )
        time.sleep(5)  # let the windows fill
        before = metric(port, "sentinel_readings_total")
        results["steady_state"] = sampler.sample(args.seconds - 10)
        results["steady_state"]["readings_per_s"] = round(
            (metric(port, "sentinel_readings_total") - before) / (args.seconds - 10), 1
        )
        results["steady_state"]["windows_scored"] = metric(port, "sentinel_windows_total")
        live.wait(args.seconds + 30)
        results["state_dir_mb"] = round(metric(port, "sentinel_state_dir_bytes") / 2**20, 2)
    finally:
        daemon.terminate()
        daemon.wait(60)
        broker.stop()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
