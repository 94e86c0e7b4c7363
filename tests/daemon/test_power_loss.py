"""A reading is acknowledged to the broker only once its commit is on disk (issue #22).

The real daemon runs under strace against a private Mosquitto; readings are published one
at a time (each waits until the previous one is counted in the database), and the trace
shows, per reading, its PUBLISH arriving, the commit's WAL writes, the WAL's fsync and the
PUBACK going out. With ``sqlite_durability = "full"`` every PUBACK follows the fsync; with
``"unsafe-on-power-loss"`` none does, which shows that the check can fail at all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from simulators.broker import PrivateBroker, Publisher
from simulators.fleet import FleetSimulator, encode
from tests.e2e_helpers import (
    REPO,
    daemon_config,
    readings_committed,
    subprocess_env,
    wait_for,
    write_toml,
)
from tests.strace_helpers import (
    PUBACK,
    acks_before_sync,
    mqtt_packets,
    parse_trace,
    strace_command,
    strace_unusable,
)

READINGS = 12


def _committed(url: str, n: int) -> bool:
    return readings_committed(url) >= n


def _pubacks_sent(trace: Path, port: int) -> int:
    calls = [c for c in parse_trace(trace) if c.fd.endswith(f":{port}]") and c.data]
    sends = [(c.start, c.data) for c in calls if c.name in ("sendto", "sendmsg") and c.data]
    return sum(p.kind == PUBACK for p in mqtt_packets(sends))


@pytest.mark.integration
@pytest.mark.parametrize("durability", ["full", "unsafe-on-power-loss"])
def test_every_puback_follows_the_fsync_of_its_commit(
    private_broker: PrivateBroker, tmp_path: Path, durability: str
) -> None:
    if (reason := strace_unusable()) is not None:
        pytest.skip(reason)
    state = tmp_path / "state"
    db = state / "sentinel.db"
    url = f"sqlite:///{db}"
    config = daemon_config(
        state,
        private_broker,
        database_url=url,
        database={"sqlite_durability": durability},
        # The store's writer is then the only thread that writes the database.
        publish={"enabled": False},
    )
    config_path = write_toml(tmp_path / "sentinel.toml", config)
    log, trace = tmp_path / "daemon.log", tmp_path / "strace.txt"
    argv = [sys.executable, "-m", "sentinel.cli", "run", "--config", str(config_path)]
    proc = subprocess.Popen(
        strace_command(trace, argv),
        cwd=REPO,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=subprocess_env(),
    )
    publisher = Publisher(private_broker.url, protocol=private_broker.protocol)
    try:
        wait_for(lambda: b"mqtt_subscribed" in log.read_bytes(), 120, "the daemon to subscribe")
        publisher.start()
        sim = FleetSimulator(1, seed=3, anomaly_rate=0.0, warmup=0.0)
        for n, step in zip(range(1, READINGS + 1), sim.steps(), strict=False):
            [reading] = step
            publisher.publish(f"plant/{reading.device}/pump", encode(reading, n, "json"))
            # One reading in flight: the next commit after its PUBLISH is the one holding it.
            wait_for(partial(_committed, url, n), 60, f"reading {n} committed")
        wait_for(
            lambda: _pubacks_sent(trace, private_broker.port) >= READINGS,
            60,
            "the daemon to acknowledge every reading",
        )
    finally:
        publisher.finish()
        # SIGTERM the daemon, strace's child; strace then exits with the daemon's status.
        for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
            os.kill(int(child), signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]

    acks, problems = acks_before_sync(parse_trace(trace), Path(f"{db}-wal"), private_broker.port)
    assert acks == READINGS
    if durability == "full":
        assert problems == []
    else:  # NORMAL syncs the WAL only at checkpoints: no PUBACK waited for one
        assert len(problems) == READINGS, problems
        assert all("was not synced" in p for p in problems), problems


def _trace(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "trace.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _hex(data: bytes) -> str:
    return "".join(f"\\x{b:02x}" for b in data)


WAL = "/state/sentinel.db-wal"
SOCK = "5<TCP:[127.0.0.1:40000->127.0.0.1:1883]>"
# PUBLISH QoS 1, topic "t", packet id 7, payload "x"; then PUBACK 7 (MQTT 5: reason 0).
PUBLISH_7 = bytes([0x32, 6, 0, 1, ord("t"), 0, 7, ord("x")])
PUBACK_7 = bytes([0x40, 3, 0, 7, 0])
WRITE = f'11 pwrite64(9<{_hex(WAL.encode())}>, "\\x00\\x01", 2, 4096) = 2'
SYNC = f"11 fdatasync(9<{_hex(WAL.encode())}>) = 0"
# The PUBLISH arrives in two reads, as paho reads it (header byte, then the rest).
RECEIVE = [
    f'12 recvfrom({SOCK}, "{_hex(PUBLISH_7[:1])}", 1, 0, NULL, NULL) = 1',
    f'12 recvfrom({SOCK}, "{_hex(PUBLISH_7[1:])}", 7, 0, NULL, NULL) = 7',
]
ACK = f'12 sendto({SOCK}, "{_hex(PUBACK_7)}", 5, 0, NULL, 0) = 5'


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        pytest.param([*RECEIVE, WRITE, SYNC, ACK], None, id="synced"),
        pytest.param([*RECEIVE, WRITE, ACK, SYNC], "was not synced", id="sync-after-ack"),
        pytest.param([*RECEIVE, WRITE, ACK], "was not synced", id="never-synced"),
        pytest.param([*RECEIVE, SYNC, ACK, WRITE], "no WAL write", id="ack-before-commit"),
        pytest.param([SYNC, WRITE, SYNC, ACK], "no PUBLISH", id="unknown-packet"),
        pytest.param(
            [
                *RECEIVE,
                f'11 pwrite64(9<{_hex(WAL.encode())}>, "\\x00", 1, 0 <unfinished ...>',
                # Another thread syncs the WAL while the commit's write is still running.
                SYNC.replace("11 ", "13 "),
                "11 <... pwrite64 resumed>) = 1",
                ACK,
            ],
            "was not synced",
            id="sync-while-write-unfinished",
        ),
    ],
)
def test_the_analysis_finds_acks_before_the_sync(
    tmp_path: Path, lines: list[str], problem: str | None
) -> None:
    """The check itself, on written traces: a PUBACK counts as safe only after an fsync
    that returned after the commit's WAL write ended."""
    acks, problems = acks_before_sync(parse_trace(_trace(tmp_path, lines)), Path(WAL), 1883)
    assert acks == 1
    if problem is None:
        assert problems == []
    else:
        [found] = problems
        assert problem in found
