"""Three real ``sentinel run`` processes sharing one fleet through a private nats-server and
one PostgreSQL database (issue #24): partitions split fairly, a daemon that joins takes its
share, a SIGKILLed one's partitions are taken over, and every reading is counted once, in
order (an out-of-order or repeated one would be rejected, leaving a device short)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from prometheus_client import generate_latest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from sentinel.cluster import owners
from sentinel.cluster.ownership import PUBLISHER_SLOT
from sentinel.config import NatsConfig, StreamConfig
from sentinel.ingest.subjects import server_mappings
from sentinel.store import AlertRecord
from simulators.fleet import FleetSimulator, encode
from simulators.nats_server import PrivateNats, find_nats_server
from tests.e2e_helpers import (
    NoBroker,
    all_alerts,
    daemon_config,
    install_model,
    running_app,
    start_daemon,
    train_fleet_model,
    wait_for,
    write_toml,
)
from tests.nats_helpers import EPOCH, FEATURES, TOPIC, device_names, nats_daemon_config, publish

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slow]

PARTITIONS = 6
GROUP = "sentinel"  # the default: [nats] consumer_prefix


@pytest.fixture
def cluster_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    if find_nats_server() is None:
        pytest.skip("no nats-server binary (apt-get install nats-server)")
    stream = StreamConfig.model_validate({"name": "pump", "topic": TOPIC, "features": FEATURES})
    mappings = server_mappings(NatsConfig(partitions=PARTITIONS), [stream])
    with PrivateNats(workdir=tmp_path / "nats", mappings=mappings) as server:
        yield server


def member_config(
    tmp_path: Path, name: str, server: PrivateNats, url: str, **sections: dict[str, Any]
) -> Path:
    state = tmp_path / name
    config = nats_daemon_config(
        state,
        server,
        database={"url": url},
        nats={"partitions": PARTITIONS, "name": f"sentinel-{name}"},
        cluster={"enabled": True, "member": name, "interval": 0.5},
        **sections,
    )
    return write_toml(tmp_path / f"{name}.toml", config)


def shares(url: str) -> dict[str, int]:
    """Member -> how many partitions it holds now."""
    found: dict[str, int] = {}
    for slot, member in owners(url, GROUP).items():
        if slot != PUBLISHER_SLOT:
            found[member] = found.get(member, 0) + 1
    return found


def progress(url: str) -> dict[tuple[str, str], tuple[float, int]]:
    """Each device's stored last timestamp and count of accepted readings."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT stream, device, last_ts, readings FROM device_state"))
            return {(r.stream, r.device): (r.last_ts, r.readings) for r in rows}
    finally:
        engine.dispose()


def committed(url: str) -> int:
    return sum(readings for _, readings in progress(url).values())


def timed_wait(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``condition`` held (polled every 0.1 s): a figure to report, not to
    assert on (the box is shared)."""
    start = time.monotonic()
    wait_for(condition, timeout, what)
    return time.monotonic() - start


def stop_all(daemons: dict[str, subprocess.Popen[bytes]]) -> dict[str, int | None]:
    for proc in daemons.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes: dict[str, int | None] = {}
    for name, proc in daemons.items():
        try:
            codes[name] = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
            codes[name] = None
    return codes


class GatedPublisher(threading.Thread):
    """Publishes ``steps`` steps of every device, in chunks; it goes past the first third
    only once ``joined`` is set and past the second only once ``killed`` is, so that the
    join and the kill both happen with readings still to come."""

    def __init__(self, server: PrivateNats, devices: list[str], steps: int) -> None:
        super().__init__(name="gated-publisher", daemon=True)
        self.server, self.devices, self.steps = server, devices, steps
        self.joined = threading.Event()
        self.killed = threading.Event()
        self.sent = 0
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            for start in range(0, self.steps, 10):
                if start >= self.steps // 3:
                    self.joined.wait(300)
                if start >= 2 * self.steps // 3:
                    self.killed.wait(300)
                chunk = range(start, min(start + 10, self.steps))
                self.sent += publish(self.server, self.devices, chunk)
        except Exception as err:  # noqa: BLE001 - thread boundary: the test reports it
            self.error = err


def test_three_daemons_share_rebalance_and_take_over_a_killed_one(
    cluster_nats: PrivateNats, postgres_url: str, tmp_path: Path
) -> None:
    url = postgres_url
    devices = device_names(12)
    steps = 600
    total = len(devices) * steps
    configs = {n: member_config(tmp_path, n, cluster_nats, url) for n in ("d0", "d1", "d2")}
    logs = {n: tmp_path / f"{n}.log" for n in configs}
    daemons: dict[str, subprocess.Popen[bytes]] = {}
    publisher = GatedPublisher(cluster_nats, devices, steps)
    figures: dict[str, float] = {}
    try:
        for name in ("d0", "d1"):
            daemons[name] = start_daemon(configs[name], logs[name])
        wait_for(lambda: shares(url) == {"d0": 3, "d1": 3}, 120, "two daemons to split 3 + 3")
        publisher.start()
        wait_for(lambda: committed(url) > 600, 120, "readings to flow")

        # A third joins mid-stream: the others hand it one partition each, cleanly.
        daemons["d2"] = start_daemon(configs["d2"], logs["d2"])
        figures["rebalance_s"] = timed_wait(
            lambda: shares(url) == {"d0": 2, "d1": 2, "d2": 2}, 120, "a 2 + 2 + 2 split"
        )
        mid = committed(url)
        publisher.joined.set()
        wait_for(lambda: committed(url) > mid + 300, 120, "readings to flow on three")

        # d1 dies mid-stream: its two partitions go to d0 and d2.
        daemons["d1"].send_signal(signal.SIGKILL)
        daemons["d1"].wait(60)
        killed_at = committed(url)
        figures["takeover_s"] = timed_wait(
            lambda: shares(url) == {"d0": 3, "d2": 3}, 120, "d1's partitions taken over"
        )
        publisher.killed.set()
        publisher.join(300)
        assert publisher.error is None
        assert publisher.sent == total
        assert killed_at < total, "the kill should happen mid-stream"
        wait_for(lambda: committed(url) >= total, 180, "every reading committed")
    finally:
        publisher.joined.set()
        publisher.killed.set()
        codes = stop_all({n: p for n, p in daemons.items() if n != "d1"})
        if "d1" in daemons and daemons["d1"].poll() is None:
            daemons["d1"].kill()
    assert codes == {"d0": 0, "d2": 0}
    # Each device: every reading once, the last one last (kept in order).
    final = progress(url)
    assert len(final) == len(devices)
    assert {key: readings for key, (_, readings) in final.items()} == {
        ("pump", d): steps for d in devices
    }
    assert {last for last, _ in final.values()} == {EPOCH + steps - 1}
    text = "".join(log.read_text() for log in logs.values())
    assert "cluster_released" in text
    assert "nats_partition_released" in text
    print(
        f"\nkilled at {killed_at}/{total}; rebalance_s={figures['rebalance_s']:.1f} "
        f"(from the third daemon's start); takeover_s={figures['takeover_s']:.1f}"
    )


@pytest.fixture(scope="module")
def fleet_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pump model trained once for the module (outside the test's timeout): what the
    test needs is alerts, not the best detector."""
    models = tmp_path_factory.mktemp("cluster-fleet-model")
    train_fleet_model(models, steps=600)
    return models


def fleet_messages(devices: int, steps: int) -> list[tuple[str, bytes, str]]:
    """(subject, payload, message id) of a simulated fleet with frequent anomalies."""
    sim = FleetSimulator(devices, seed=7, anomaly_rate=40.0, warmup=120.0)
    found = []
    for k, step in zip(range(steps), sim.steps(), strict=False):
        for reading in step:
            found.append(
                (
                    f"plant.{reading.device}.pump",
                    encode(reading, k, "json"),
                    f"{reading.device}-{k}",
                )
            )
    return found


def publish_messages(server: PrivateNats, messages: list[tuple[str, bytes, str]]) -> int:
    async def run() -> int:
        nc = await nats.connect(server.url)
        js = nc.jetstream(timeout=10)
        try:
            for subject, data, msg_id in messages:
                await js.publish(subject, data, headers={"Nats-Msg-Id": msg_id})
        finally:
            await nc.close()
        return len(messages)

    return asyncio.run(run())


def test_alerts_stay_single_when_a_partition_changes_hands(
    cluster_nats: PrivateNats, postgres_url: str, tmp_path: Path, fleet_model: Path
) -> None:
    """Two daemons scoring with a model; one is SIGKILLed while alerts are open. The other
    takes its partitions with their open alerts from the database: no device ever has two
    alerts at once, and every reading is counted once."""
    url = postgres_url
    devices, steps = 8, 900
    messages = fleet_messages(devices, steps)
    third = len(messages) // 3
    daemons: dict[str, subprocess.Popen[bytes]] = {}
    logs = {n: tmp_path / f"{n}.log" for n in ("d0", "d1")}
    try:
        for name in ("d0", "d1"):
            state = tmp_path / name
            install_model(fleet_model, state)
            config = daemon_config(
                state,
                NoBroker(),
                database_url=url,
                ingest={"source": "nats"},
                nats={"servers": [cluster_nats.url], "partitions": PARTITIONS, "name": name},
                cluster={"enabled": True, "member": name, "interval": 0.5},
                publish={"enabled": False},
                retrain={"enabled": False},
            )
            daemons[name] = start_daemon(write_toml(tmp_path / f"{name}.toml", config), logs[name])
        wait_for(lambda: shares(url) == {"d0": 3, "d1": 3}, 120, "two daemons to split 3 + 3")
        publish_messages(cluster_nats, messages[: 2 * third])
        wait_for(lambda: committed(url) >= third, 180, "a third committed")
        daemons["d1"].send_signal(signal.SIGKILL)
        daemons["d1"].wait(60)
        killed_at = committed(url)
        wait_for(lambda: shares(url) == {"d0": 6}, 120, "d0 to take every partition")
        publish_messages(cluster_nats, messages[2 * third :])
        wait_for(lambda: committed(url) >= len(messages), 300, "every reading committed")
    finally:
        codes = stop_all({"d0": daemons["d0"]} if "d0" in daemons else {})
        if "d1" in daemons and daemons["d1"].poll() is None:
            daemons["d1"].kill()
    assert codes == {"d0": 0}
    assert killed_at < len(messages)
    final = progress(url)
    assert {key: readings for key, (_, readings) in final.items()} == {
        ("pump", device): steps for device in FleetSimulator(devices, seed=7).devices
    }
    alerts = all_alerts(url)
    assert alerts, "the anomalies raised no alert: nothing was checked"
    by_device: dict[str, list[AlertRecord]] = {}
    for alert in alerts:
        by_device.setdefault(alert.device, []).append(alert)
    for device, found in by_device.items():
        found.sort(key=lambda a: a.started_at)
        assert sum(a.ended_at is None for a in found) <= 1, f"{device}: two open alerts"
        for earlier, later in itertools.pairwise(found):
            assert earlier.ended_at is not None
            assert earlier.ended_at <= later.started_at, f"{device}: overlapping alerts"
    # A figure, not a check (it depends on when the kill lands): alerts d1 opened and d0
    # went on with after taking them from the database.
    opened = {e["uid"] for e in log_events(logs["d1"]) if e.get("event") == "alert_opened"}
    continued = {e["uid"] for e in log_events(logs["d0"]) if e.get("uid") in opened}
    print(
        f"\nkilled at {killed_at}/{len(messages)}; {len(alerts)} alerts, none overlapping; "
        f"{len(continued)} opened by the killed daemon and continued by the survivor"
    )


def log_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):  # a SIGKILL cuts the last line
                events.append(json.loads(line))
    return events


def test_a_nats_server_restart_loses_nothing_in_a_cluster(
    cluster_nats: PrivateNats, postgres_url: str, tmp_path: Path
) -> None:
    """Two members through a restart of the server: each recreates the consumers of the
    partitions it owns at their ack floor, and every reading is counted once."""
    url = postgres_url
    devices = device_names(8)
    configs = {n: member_config(tmp_path, n, cluster_nats, url) for n in ("d0", "d1")}
    daemons: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, path in configs.items():
            daemons[name] = start_daemon(path, tmp_path / f"{name}.log")
        wait_for(lambda: shares(url) == {"d0": 3, "d1": 3}, 120, "two daemons to split 3 + 3")
        first = publish(cluster_nats, devices, range(100))
        wait_for(lambda: committed(url) >= first // 2, 120, "readings to flow")
        cluster_nats.restart()
        second = publish(cluster_nats, devices, range(100, 200))
        wait_for(lambda: committed(url) >= first + second, 180, "every reading committed")
        assert shares(url) == {"d0": 3, "d1": 3}  # the locks never moved
    finally:
        codes = stop_all(daemons)
    assert codes == {"d0": 0, "d1": 0}
    assert {key: readings for key, (_, readings) in progress(url).items()} == {
        ("pump", d): 200 for d in devices
    }


def test_healthz_and_metrics_report_the_members_partitions(
    cluster_nats: PrivateNats, postgres_url: str, tmp_path: Path
) -> None:
    """One member in this process: it holds every partition and the publisher lock, and
    /healthz's report and /metrics say so; its stop lets them go."""
    config = nats_daemon_config(
        tmp_path / "solo",
        cluster_nats,
        database={"url": postgres_url},
        nats={"partitions": PARTITIONS},
        cluster={"enabled": True, "member": "solo", "interval": 0.2},
    )
    with running_app(config) as running:
        cluster = running.app.cluster
        assert cluster is not None
        wait_for(lambda: len(cluster.owned) == PARTITIONS, 60, "every partition held")
        wait_for(lambda: cluster.publisher, 30, "the publisher lock held")
        report = running.app.health.report()
        status = report.checks["cluster"]
        assert status["partitions"] == list(range(PARTITIONS))
        assert status["publisher"] is True
        assert status["members"] == 1
        assert not any(p.startswith("cluster") for p in report.problems)
        metrics = generate_latest(running.app.metrics.registry).decode()
        assert f"sentinel_cluster_partitions {float(PARTITIONS)}" in metrics
        assert "sentinel_cluster_publisher 1.0" in metrics
    assert owners(postgres_url, GROUP) == {}


def test_a_member_whose_session_is_terminated_mid_stream_counts_nothing_twice(
    cluster_nats: PrivateNats, postgres_url: str, tmp_path: Path
) -> None:
    """The server ends d0's ownership session while it reads and writes: d1 takes d0's
    partitions at once (bumping their epochs) while d0 learns of it only at its next look;
    d0's writes in between either commit before the bump or are fenced off and left to d1
    (sentinel.cluster.fence). Every reading is still counted once, in order."""
    url = postgres_url
    devices = device_names(12)
    steps = 450
    total = len(devices) * steps
    configs = {n: member_config(tmp_path, n, cluster_nats, url) for n in ("d0", "d1")}
    logs = {n: tmp_path / f"{n}.log" for n in configs}
    daemons: dict[str, subprocess.Popen[bytes]] = {}
    publisher = GatedPublisher(cluster_nats, devices, steps)
    try:
        for name in ("d0", "d1"):
            daemons[name] = start_daemon(configs[name], logs[name])
        wait_for(lambda: shares(url) == {"d0": 3, "d1": 3}, 120, "two daemons to split 3 + 3")
        publisher.start()
        wait_for(lambda: committed(url) > 600, 120, "readings to flow")
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                ended = conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name LIKE 'sentinel:%:d0:%'"
                    )
                ).all()
        finally:
            engine.dispose()
        assert ended == [(True,)]
        publisher.joined.set()
        publisher.killed.set()
        publisher.join(300)
        assert publisher.error is None
        assert publisher.sent == total
        wait_for(lambda: committed(url) >= total, 180, "every reading committed")
        wait_for(lambda: shares(url) == {"d0": 3, "d1": 3}, 120, "d0 back to its share")
    finally:
        publisher.joined.set()
        publisher.killed.set()
        codes = stop_all(daemons)
    assert codes == {"d0": 0, "d1": 0}
    final = progress(url)
    assert {key: readings for key, (_, readings) in final.items()} == {
        ("pump", d): steps for d in devices
    }
    assert {last for last, _ in final.values()} == {EPOCH + steps - 1}
    events = [e["event"] for e in log_events(logs["d0"])]
    assert "cluster_partitions_dropped" in events
    # Whether d0 wrote in the window at all depends on timing: reported, not asserted.
    print(f"\nd0 fenced off {events.count('writer_fenced')} transactions after the termination")
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            epochs = conn.execute(text("SELECT partition, epoch FROM partition_epochs")).all()
    finally:
        engine.dispose()
    # Each partition was taken at least twice: d0's three by d1 after the termination.
    assert len(epochs) == PARTITIONS
    assert sum(epoch for _, epoch in epochs) >= PARTITIONS + 3
