"""RSS of a real `sentinel run` by fleet size, and over a soak (issue #23).

Each run starts a private Mosquitto and a real daemon (product defaults, SQLite), trains the
stream's first model on a small clean fleet (10 pumps x 320 readings, as fast as possible),
then feeds the measured fleet. RSS is sampled from outside with psutil every
``--interval`` seconds: the daemon alone, and its children (the retraining child process)
apart.

* ``--devices N [N ...]``: one fresh daemon per N. Every pump sends ``--steps`` readings as
  fast as the daemon takes them (enough to fill its window ring, its order state and the
  first windows of its threshold, spike and relation state), then the fleet stops and RSS is
  sampled for ``--settle`` seconds: the median is reported, with CPU-seconds per million
  readings over the drain, the daemon's and its MQTT client process's apart.
* ``--soak SECONDS``: one daemon, ``--devices`` pumps (one N) at ``--rate`` readings/s each
  for SECONDS; every sample is written as a JSON line to ``--out`` as it is taken, so a
  run cut short keeps what it measured. The last line printed summarises it: RSS when
  every per-device history is full (``full_fill``, readings per device from the default
  config) and the band it moved in after, the question a soak asks (issue #23: flat, or
  the bound it converges to). ``--summarise FILE`` prints that line for a soak's file
  (its last run when the file holds several).

    .venv/bin/python benchmarks/memory.py --devices 10 100 1000 10000 --steps 64
    .venv/bin/python benchmarks/memory.py --soak 3600 --devices 1000 --out soak.jsonl
    .venv/bin/python benchmarks/memory.py --summarise soak.jsonl

The windows, thresholds and the other per-device states fill at the fleet's pace; which of
them a run has filled is docs/BENCHMARKS.md's concern ("Memory by fleet size").
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.config import ThresholdConfig, WindowConfig, config_to_toml
from simulators.broker import PrivateBroker, free_port

REPO = Path(__file__).resolve().parents[1]
WARM_DEVICES = 10
WARM_STEPS = 320  # 3,200 readings: the default cold_start.readings (3,000) and some


def _rss_parts(pid: int) -> dict[str, float]:
    """RssAnon and RssFile of ``pid`` in MB, from /proc (empty where there is none)."""
    parts: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile"):
                    parts[f"{key[3:].lower()}_mb"] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return parts


def metric(port: int, name: str) -> float:
    """Sum of a metric's samples on the daemon's /metrics (0 when absent)."""
    total = 0.0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


def fleet(broker: PrivateBroker, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "simulators.fleet", "--broker", broker.url, *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.5)


class Daemon:
    """A `sentinel run` process on a private broker, its model trained on a small fleet."""

    def __init__(self, devices: int, work: Path, traced: list[str] | None = None) -> None:
        self.work = work
        # benchmarks/traced_daemon.py's arguments (output directory first), or None
        self.traced = traced
        self.broker = PrivateBroker(prefer="mosquitto", workdir=work / "broker")
        self.port = free_port()
        self.devices = devices
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.broker.start()
        config = {
            "state_dir": str(self.work / "state"),
            "mqtt": {"host": self.broker.host, "port": self.broker.port, "client_id": "memory"},
            "health": {"port": self.port},
            "logging": {"format": "json", "level": "info"},
            # The first model on the warm fleet's 3,200 readings (320 s of it), as before the
            # cold start also waited for an hour of the stream's time (cold_start.span).
            "cold_start": {"span": 0},
            "streams": [
                {
                    "name": "pump",
                    "topic": "plant/{device}/pump",
                    "features": [
                        *("flow", "pressure", "current"),
                        *("temperature", "vibration", "voltage"),
                    ],
                }
            ],
        }
        path = self.work / "sentinel.toml"
        path.write_text(config_to_toml(config))
        log = (self.work / "daemon.log").open("wb")
        command = [sys.executable, "-m", "sentinel.cli"]
        if self.traced is not None:
            command = [sys.executable, str(REPO / "benchmarks" / "traced_daemon.py"), *self.traced]
            command.append("--")
        self.proc = subprocess.Popen(
            [*command, "run", "--config", str(path)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.ps = psutil.Process(self.proc.pid)

        def up() -> bool:
            try:
                metric(self.port, "sentinel_mqtt_connected")
            except OSError:
                return False
            return True

        # imports under tracemalloc on a loaded box take minutes
        wait_for(up, 600 if self.traced is not None else 120, "daemon did not start")
        # The first model: clean readings from a small fleet (the model is the stream's, not
        # a device's), as fast as possible, then wait until it is trained and loaded.
        warm = fleet(
            self.broker,
            *("--devices", str(WARM_DEVICES), "--rate", "0", "--steps", str(WARM_STEPS)),
            *("--anomaly-rate", "0", "--start", "2024-01-01T00:00:00Z", "--step", "1"),
        )
        wait_for(self.trained, 900, "no model trained")
        warm.wait(120)

    def trained(self) -> bool:
        url = f"http://127.0.0.1:{self.port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                body = json.loads(reply.read())
        except urllib.error.HTTPError as err:
            body = json.loads(err.read())
        return body["checks"]["models"]["pump"] is not None

    def sample(self) -> dict[str, float]:
        """RSS of the daemon and of its children (MB), its CPU-seconds (children that ended
        included), and the counters that say how far the fleet got."""
        main = self.ps.memory_info().rss
        children = 0
        live_cpu = 0.0  # the children running now: the MQTT client process, a training
        for child in self.ps.children(recursive=True):
            try:
                children += child.memory_info().rss
                times = child.cpu_times()
            except psutil.Error:  # ended between the listing and the read
                continue
            live_cpu += times.user + times.system
        cpu = self.ps.cpu_times()
        sample: dict[str, float] = {
            "rss_mb": round(main / 2**20, 1),
            # anonymous (heap, NumPy, torch) and file-backed (mapped libraries, files) parts:
            # which one grows says whether it is the process's own memory or the page cache
            **_rss_parts(self.ps.pid),
            "children_rss_mb": round(children / 2**20, 1),
            "cpu_s": round(cpu.user + cpu.system, 2),
            "cpu_children_s": round(cpu.children_user + cpu.children_system, 2),
            "cpu_live_children_s": round(live_cpu, 2),
        }
        names = ("readings", "windows", "devices", "retraining_runs", "queue")
        metrics = ("readings_total", "windows_total", "devices", "retraining_runs_total")
        try:
            for key, name in zip(names, (*metrics, "queue_depth"), strict=True):
                sample[key] = metric(self.port, f"sentinel_{name}")
        except OSError:  # a busy box can keep /metrics from answering: RSS still counts
            pass
        return sample

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(120)
        self.broker.stop()


def by_size(devices: int, steps: int, settle: float, interval: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"sentinel-memory-{devices}-"))
    daemon = Daemon(devices, work)
    feed: subprocess.Popen[bytes] | None = None
    try:
        daemon.start()
        trained = daemon.sample()
        start = time.monotonic()
        feed = fleet(
            daemon.broker,
            *("--devices", str(devices), "--rate", "0", "--steps", str(steps)),
            *("--start", "2024-01-02T00:00:00Z", "--step", "1", "--warmup", "0"),
            # a loaded box can leave the publisher's queue unsent for longer than 30 s
            *("--ack-timeout", "1800"),
        )
        target = trained["readings"] + devices * steps
        peak = 0.0

        def drained() -> bool:
            nonlocal peak
            if feed.poll():  # it gave up: what it did not publish would never arrive
                raise RuntimeError(f"the fleet simulator failed ({feed.returncode})")
            peak = max(peak, daemon.ps.memory_info().rss / 2**20)
            return metric(daemon.port, "sentinel_readings_total") >= target

        wait_for(drained, 3600, f"{devices} devices x {steps} readings not drained")
        fed = daemon.sample()
        drain_s = time.monotonic() - start
        if feed.wait(120) != 0:
            raise RuntimeError("the fleet simulator failed")
        samples = []
        end = time.monotonic() + settle
        while time.monotonic() < end:
            samples.append(daemon.sample())
            time.sleep(interval)
        readings = fed["readings"] - trained["readings"]
        cpu = fed["cpu_s"] - trained["cpu_s"]
        # the MQTT client process (``[mqtt] client_process``) works for the daemon: its CPU
        # is part of what a reading costs
        client = fed["cpu_live_children_s"] - trained["cpu_live_children_s"]
        rss = statistics.median(s["rss_mb"] for s in samples)
        return {
            "devices": devices,
            "readings": readings,
            "drain_s": round(drain_s, 1),
            "cpu_s": round(cpu, 1),
            "cpu_s_per_million_readings": round(cpu / readings * 1e6, 1),
            "client_cpu_s_per_million_readings": round(client / readings * 1e6, 1),
            "rss_trained_mb": trained["rss_mb"],
            "rss_peak_mb": round(peak, 1),
            "rss_settled_median_mb": rss,
            "mb_per_device_over_trained": round((rss - trained["rss_mb"]) / devices, 4),
            "children_rss_mb": max(s["children_rss_mb"] for s in samples),
            "windows": samples[-1].get("windows"),
            "devices_held": samples[-1].get("devices"),
        }
    finally:
        if feed is not None and feed.poll() is None:
            feed.terminate()
            feed.wait(60)
        daemon.stop()


def soak(
    devices: int,
    seconds: float,
    rate: float,
    interval: float,
    out: TextIO,
    traced: list[str] | None = None,
) -> None:
    work = Path(tempfile.mkdtemp(prefix="sentinel-soak-"))
    daemon = Daemon(devices, work, traced)
    live: subprocess.Popen[bytes] | None = None
    try:
        daemon.start()
        out.write(json.dumps({"event": "trained", **daemon.sample()}) + "\n")
        out.flush()
        live = fleet(
            daemon.broker,
            *("--devices", str(devices), "--rate", str(rate), "--duration", str(seconds)),
            *("--start", "2024-01-02T00:00:00Z", "--step", "1", "--warmup", "0"),
        )
        start = time.monotonic()
        while live.poll() is None:
            row = {"t": round(time.monotonic() - start, 1), **daemon.sample()}
            out.write(json.dumps(row) + "\n")
            out.flush()
            time.sleep(interval)
        out.write(json.dumps({"event": "fleet_done", "rc": live.returncode}) + "\n")
        out.flush()
    finally:
        if live is not None and live.poll() is None:
            live.terminate()
            live.wait(60)
        daemon.stop()


def full_fill() -> int:
    """Readings a device needs before every per-device history is at its bound on the
    default config: the threshold's ``history`` windows at ``hop``, plus one window."""
    windows = WindowConfig()
    return ThresholdConfig().history * windows.hop + windows.length


def summarise(lines: list[str]) -> dict[str, Any]:
    """A soak's samples (``--out``'s JSON lines; the last run's where there are several)
    -> RSS at full fill and its band after."""
    rows: list[dict[str, Any]] = []
    devices = 0
    for line in lines:
        row = json.loads(line)
        if row.get("event") == "start":
            rows, devices = [], int(row["devices"][0])
        elif "t" in row:
            rows.append(row)
    if not rows or devices == 0:
        return {"summary": "no samples"}
    fill = full_fill()
    last = rows[-1]
    out: dict[str, Any] = {
        "summary": "soak",
        "devices": devices,
        "readings_per_device": round(last["readings"] / devices),
        "full_fill_per_device": fill,
        "rss_mb_last": last["rss_mb"],
        "rss_mb_max": max(r["rss_mb"] for r in rows),
        "cpu_s_per_million": round(last["cpu_s"] / max(last["readings"], 1) * 1e6),
    }
    if "cpu_live_children_s" in last:  # the MQTT client process, where the file has it
        client = last["cpu_live_children_s"]  # (and a training child, were one running)
        out["client_cpu_s_per_million"] = round(client / max(last["readings"], 1) * 1e6)
    after = [r for r in rows if r["readings"] >= fill * devices]
    if after:
        out["rss_mb_at_full_fill"] = after[0]["rss_mb"]
        out["rss_mb_after_fill"] = [
            min(r["rss_mb"] for r in after),
            max(r["rss_mb"] for r in after),
        ]
        out["readings_after_fill"] = int(last["readings"] - after[0]["readings"])
    else:
        out["not_full"] = "the soak ended before every history was full"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, nargs="+", default=[10, 100, 1000, 10000])
    ap.add_argument("--steps", type=int, default=64, help="readings per device (by size)")
    ap.add_argument("--settle", type=float, default=30.0, help="seconds sampled after a drain")
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    ap.add_argument("--soak", type=float, default=0.0, help="soak seconds (0: by size)")
    ap.add_argument("--rate", type=float, default=1.0, help="readings/s per device (soak)")
    ap.add_argument("--out", type=Path, help="JSON lines of the soak's samples")
    ap.add_argument(
        "--traced",
        type=shlex.split,
        metavar="ARGS",
        help="soak: run the daemon under benchmarks/traced_daemon.py with these arguments, "
        "its output directory first (e.g. --traced 'DIR --frames 8 --every 300')",
    )
    ap.add_argument("--summarise", type=Path, metavar="FILE", help="summarise a soak's --out")
    args = ap.parse_args()
    if args.summarise:
        print(json.dumps(summarise(args.summarise.read_text().splitlines())))
        return 0
    # SIGTERM (and SIGINT, which a shell ignores in a background job) stop the run through
    # the finally blocks, which stop the fleet, the daemon and the broker.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    machine = f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} cores"
    if args.soak:
        if len(args.devices) != 1 or args.out is None:
            ap.error("--soak takes one --devices and an --out file")
        with args.out.open("a") as out:
            out.write(json.dumps({"event": "start", "machine": machine, **vars(args)}, default=str))
            out.write("\n")
            soak(args.devices[0], args.soak, args.rate, args.interval, out, args.traced)
        print(json.dumps(summarise(args.out.read_text().splitlines())))
        return 0
    for devices in args.devices:
        print(
            json.dumps(
                {"machine": machine, **by_size(devices, args.steps, args.settle, args.interval)}
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
