"""The MQTT source with its client in a process of its own (``[mqtt] client_process``),
against a real Mosquitto: what it delivers, what its acknowledgements reach, and what
becomes of its messages when the client process or the daemon dies."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sentinel.config import MqttConfig, StreamConfig
from sentinel.errors import ConfigError
from sentinel.ingest.mqtt_process import ProcessMqttSource
from sentinel.ingest.parse import MessageParser
from sentinel.ingest.source import Source, SourceStatus
from sentinel.records import Ack, Delivery
from simulators.broker import PrivateBroker, find_mosquitto
from tests.e2e_helpers import REPO, subprocess_env, wait_for
from tests.tls_helpers import BROKER_NAME, BrokerPki

STREAM = StreamConfig.model_validate(
    {"name": "pump", "topic": "plant/{device}/pump", "features": ["flow"]}
)
TS = 1_700_000_000


def _source(
    broker_port: int,
    received: queue.Queue[Delivery],
    client_id: str,
    *,
    fatal: queue.Queue[str] | None = None,
    **mqtt_settings: object,
) -> ProcessMqttSource:
    config = MqttConfig.model_validate(
        {
            "host": mqtt_settings.pop("host", "127.0.0.1"),
            "port": broker_port,
            "client_id": client_id,
            "reconnect_min_delay": 1,
            "reconnect_max_delay": 1,
            **mqtt_settings,
        }
    )

    def accept(delivery: Delivery, timeout: float) -> bool:
        received.put(delivery)
        return True

    return ProcessMqttSource(
        config,
        [STREAM],
        parser=MessageParser([STREAM], max_payload_bytes=1024),
        sink=accept,
        receive_maximum=100,
        on_fatal=fatal.put if fatal is not None else lambda reason: None,
        password=os.environ.get("SENTINEL_MQTT_PASSWORD"),
    )


def _publish(broker: PrivateBroker, offsets: range) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for i in offsets:
            payload = b'{"ts": %d, "flow": %d}' % (TS + i, i)
            client.publish("plant/p1/pump", payload, qos=1).wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()


def _take(received: queue.Queue[Delivery], count: int) -> list[Delivery]:
    return [received.get(timeout=60) for _ in range(count)]


def _flows(deliveries: list[Delivery]) -> list[int]:
    return [int(d.readings[0].values[0]) for d in deliveries]


def test_it_is_a_source_and_its_constructor_does_no_io() -> None:
    source = _source(1, queue.Queue(), "contract")
    assert isinstance(source, Source)
    assert source.status() == SourceStatus(name="mqtt", connected=False, connects=0)
    assert source.child_pid is None
    source.ack([Ack(token=1, epoch=0)])  # not connected: dropped, for the broker to resend
    assert source.unacked_dropped == 1
    source.stop()  # never started: nothing to stop


@pytest.mark.integration
def test_only_what_was_acknowledged_is_not_delivered_again(
    private_broker: PrivateBroker,
) -> None:
    """Acks cross to the client process and reach the broker; what was not acknowledged
    comes again on the persistent session, parsed as before."""
    received: queue.Queue[Delivery] = queue.Queue()
    source = _source(private_broker.port, received, "acks")
    source.start()
    try:
        assert source.wait_subscribed(60)
        assert source.child_pid not in (None, os.getpid())
        _publish(private_broker, range(20))
        first = _take(received, 20)
        assert _flows(first) == list(range(20))  # in order, each parsed
        assert first[0].readings[0].device == "p1"
        assert first[0].readings[0].ts == TS
        source.ack([d.ack for d in first[:12] if d.ack is not None])
    finally:
        source.stop()
    assert source.child_pid is None
    source = _source(private_broker.port, received, "acks")
    source.start()
    try:
        assert source.wait_subscribed(60)
        again = _take(received, 8)
        assert _flows(again) == list(range(12, 20))
        source.ack([d.ack for d in again if d.ack is not None])
        _publish(private_broker, range(20, 21))  # a marker: nothing else came before it
        assert _flows(_take(received, 1)) == [20]
    finally:
        source.stop()


@pytest.mark.integration
def test_a_killed_client_process_is_started_again_and_its_messages_come_again(
    private_broker: PrivateBroker,
) -> None:
    received: queue.Queue[Delivery] = queue.Queue()
    source = _source(private_broker.port, received, "killed")
    source.start()
    try:
        assert source.wait_subscribed(60)
        _publish(private_broker, range(5))
        before = _take(received, 5)
        pid = source.child_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: source.connects >= 2 and source.subscribed, 60, "a new client process")
        assert source.restarts == 1
        assert source.child_pid not in (None, pid)
        # The dead process's connection is gone: acks naming it are not sent.
        source.ack([d.ack for d in before if d.ack is not None])
        assert source.unacked_dropped == 5
        again = _take(received, 5)
        assert _flows(again) == list(range(5))
        assert all(d.ack is not None and d.ack.epoch == 2 for d in again)
        source.ack([d.ack for d in again if d.ack is not None])
        _publish(private_broker, range(5, 6))
        assert _flows(_take(received, 1)) == [5]
    finally:
        source.stop()


_DAEMON = textwrap.dedent(
    """
    import queue, sys, time
    from sentinel.config import MqttConfig, StreamConfig
    from sentinel.ingest.mqtt_process import ProcessMqttSource
    from sentinel.ingest.parse import MessageParser
    from sentinel.logs import configure_logging

    configure_logging("warning")  # to stderr: stdout carries the pid
    stream = StreamConfig.model_validate(
        {"name": "pump", "topic": "plant/{device}/pump", "features": ["flow"]}
    )
    config = MqttConfig.model_validate(
        {"host": "127.0.0.1", "port": int(sys.argv[1]), "client_id": "orphan"}
    )
    source = ProcessMqttSource(
        config, [stream], parser=MessageParser([stream], max_payload_bytes=1024),
        sink=lambda delivery, timeout: True, receive_maximum=10, on_fatal=print,
    )
    source.start()
    assert source.wait_subscribed(60)
    print(source.child_pid, flush=True)
    time.sleep(600)
    """
)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # exited; its reaper has not collected it yet


@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_the_client_process_dies_with_the_daemon(private_broker: PrivateBroker) -> None:
    """A daemon killed outright leaves no client behind to hold its session (and to take
    messages no daemon will commit)."""
    daemon = subprocess.Popen(
        [sys.executable, "-c", _DAEMON, str(private_broker.port)],
        cwd=REPO,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
    )
    try:
        assert daemon.stdout is not None
        child = int(daemon.stdout.readline())
        assert not _gone(child)
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(60)
    wait_for(lambda: _gone(child), 60, "the client process to exit")


def test_a_tls_file_it_cannot_load_is_named_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    source = _source(8883, queue.Queue(), "tls-no-ca", tls={"enabled": True, "ca_file": missing})
    with pytest.raises(ConfigError, match=r"ca_file = .*no-such-ca\.pem"):
        source.start()
    source.stop()
    assert source.child_pid is None


@pytest.mark.integration
def test_bad_credentials_are_fatal_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if find_mosquitto() is None:
        pytest.skip("no mosquitto binary")
    broker = PrivateBroker(prefer="mosquitto", users={"sentinel": "right"}, workdir=tmp_path / "b")
    broker.start()
    fatal: queue.Queue[str] = queue.Queue()
    monkeypatch.setenv("SENTINEL_MQTT_PASSWORD", "wrong")
    source = _source(broker.port, queue.Queue(), "creds", fatal=fatal, username="sentinel")
    try:
        source.start()
        reason = fatal.get(timeout=60)
        assert "user name or password" in reason or "not authorized" in reason
        assert source.fatal == reason
        assert not source.connected
    finally:
        source.stop()
        broker.stop()
    assert fatal.empty(), "reported more than once"


@pytest.mark.integration
def test_what_arrives_after_pause_is_left_for_the_next_connection(
    private_broker: PrivateBroker,
) -> None:
    """A stopping daemon pauses its source first: what arrives then is neither delivered
    nor acknowledged, and comes to the next start."""
    received: queue.Queue[Delivery] = queue.Queue()
    source = _source(private_broker.port, received, "paused")
    source.start()
    try:
        assert source.wait_subscribed(60)
        _publish(private_broker, range(3))
        source.ack([d.ack for d in _take(received, 3) if d.ack is not None])
        source.pause()
        _publish(private_broker, range(3, 6))
    finally:
        source.stop()
    assert received.empty()
    source = _source(private_broker.port, received, "paused")
    source.start()
    try:
        assert source.wait_subscribed(60)
        assert _flows(_take(received, 3)) == [3, 4, 5]
    finally:
        source.stop()


@pytest.mark.integration
def test_a_tls_connection_delivers_and_acknowledges(
    tls_broker: tuple[PrivateBroker, BrokerPki],
) -> None:
    """The child reads [mqtt.tls] from the plain values it is handed, as the config has them."""
    broker, pki = tls_broker
    received: queue.Queue[Delivery] = queue.Queue()
    tls = {"enabled": True, "ca_file": str(pki.ca)}
    source = _source(broker.port, received, "tls-child", host=BROKER_NAME, tls=tls)
    source.start()
    try:
        assert source.wait_subscribed(60), "no TLS session"
        publisher = mqtt.Client(CallbackAPIVersion.VERSION2)
        publisher.tls_set(ca_certs=str(pki.ca))
        publisher.connect(BROKER_NAME, broker.port)
        publisher.loop_start()
        publisher.publish("plant/p1/pump", b'{"ts": 1700000000, "flow": 2.5}', qos=1)
        delivery = received.get(timeout=60)
        publisher.disconnect()
        publisher.loop_stop()
        assert delivery.readings[0].values == (2.5,)
        assert delivery.ack is not None
        source.ack([delivery.ack])
        assert source.fatal is None
    finally:
        source.stop()
