"""The private broker: free port, restart on the same port, persistence, users, amqtt."""

from __future__ import annotations

import importlib.util
import socket
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from simulators.broker import PrivateBroker, Publisher, find_mosquitto, free_ports, parse_url

pytestmark = pytest.mark.integration
needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="no mosquitto binary")


class Inbox:
    """A subscriber that hands over messages through an event, with deadlines."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        protocol: MQTTProtocolVersion = mqtt.MQTTv5,
        client_id: str = "",
        session_expiry: int = 0,
    ) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.ready = threading.Event()
        self._new = threading.Condition()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
        )
        self.client.on_connect = lambda c, *_: c.subscribe("t/#", qos=1)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._on_message
        props = None
        if protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry
            self.client.connect(host, port, clean_start=session_expiry == 0, properties=props)
        else:
            self.client.connect(host, port)
        self.client.loop_start()
        assert self.ready.wait(60), "no SUBACK"

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._new:
            self.messages.append(msg)
            self._new.notify_all()

    def wait_for(self, count: int, timeout: float = 60.0) -> list[mqtt.MQTTMessage]:
        with self._new:
            self._new.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_parse_url() -> None:
    assert parse_url("mqtt://127.0.0.1:1884") == ("127.0.0.1", 1884)
    assert parse_url("broker.local") == ("broker.local", 1883)
    with pytest.raises(ValueError, match="URL"):
        parse_url("http://x:1")


@needs_mosquitto
def test_mosquitto_starts_on_a_free_port_and_stops() -> None:
    broker = PrivateBroker()
    with pytest.raises(RuntimeError):
        _ = broker.port  # no I/O before start()
    broker.start()
    try:
        assert broker.kind == "mosquitto"
        assert broker.protocol == "5"
        assert broker.port != 1883
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        assert _accepts(broker.port)
        workdir = broker.workdir
    finally:
        broker.stop()
    broker.stop()  # idempotent
    assert not _accepts(broker.port)
    assert not workdir.exists()


@needs_mosquitto
def test_restart_keeps_port_and_persistent_sessions(tmp_path: Path) -> None:
    with PrivateBroker(persistence=True, workdir=tmp_path) as broker:
        port = broker.port
        inbox = Inbox(broker.host, port, client_id="keeper", session_expiry=300)
        inbox.close()  # away, but the broker keeps the session and queues for it
        pub = Publisher(broker.url)
        pub.start()
        pub.publish("t/queued", b"while-away", 1)
        assert pub.finish(60) == 0
        broker.restart()
        assert broker.port == port
        assert (tmp_path / "persist" / "mosquitto.db").exists()
        inbox = Inbox(broker.host, port, client_id="keeper", session_expiry=300)
        try:
            got = inbox.wait_for(1)
        finally:
            inbox.close()
    assert [m.payload for m in got] == [b"while-away"]


@needs_mosquitto
def test_a_publishing_window_bounds_what_waits_for_the_broker() -> None:
    """With a window, ``publish`` waits while that many are unacknowledged: never more are
    outstanding, and every message still reaches the subscriber."""
    with PrivateBroker() as broker:
        inbox = Inbox(broker.host, broker.port, client_id="windowed", session_expiry=300)
        pub = Publisher(broker.url, window=4)
        pub.start()
        outstanding = []
        try:
            for i in range(400):
                pub.publish("t/windowed", str(i).encode(), 1)
                outstanding.append(pub.unacknowledged)
            assert pub.finish(60) == 0
            got = inbox.wait_for(400, timeout=120)
        finally:
            inbox.close()
    assert max(outstanding) <= 4
    assert sorted(int(m.payload) for m in got) == list(range(400))


@needs_mosquitto
def test_users_make_anonymous_connections_fail() -> None:
    with PrivateBroker(users={"sim": "s3cret"}) as broker:
        with pytest.raises(ConnectionError, match="refused"):
            Publisher(broker.url).start(timeout=60)
        with pytest.raises(ConnectionError, match="refused"):
            Publisher(broker.url, username="sim", password="wrong").start(timeout=60)
        pub = Publisher(broker.url, username="sim", password="s3cret")
        pub.start(timeout=60)
        pub.publish("t/x", b"1", 1)
        assert pub.finish(60) == 0


@needs_mosquitto
def test_start_refuses_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = PrivateBroker()
        broker._port = taken.getsockname()[1]  # a port already in use
        with pytest.raises(RuntimeError, match="in use"):
            broker.start(timeout=5)
        broker.stop()


@pytest.mark.skipif(importlib.util.find_spec("amqtt") is None, reason="amqtt not installed")
def test_amqtt_fallback_carries_mqtt_311() -> None:
    with PrivateBroker(prefer="amqtt") as broker:
        assert broker.kind == "amqtt"
        assert broker.protocol == "3.1.1"
        inbox = Inbox(broker.host, broker.port, protocol=mqtt.MQTTv311)
        try:
            pub = Publisher(broker.url, protocol="3.1.1")
            pub.start()
            for i in range(5):
                pub.publish(f"t/{i}", str(i).encode(), 1)
            assert pub.finish(60) == 0
            got = inbox.wait_for(5)
        finally:
            inbox.close()
    assert sorted(m.payload for m in got) == [b"0", b"1", b"2", b"3", b"4"]


def test_free_ports_are_distinct_while_asked_together() -> None:
    """Two free_port() calls in a row may give the same port (the first socket is closed
    before the second binds): a private nats-server given one port for its client and MQTT
    listeners exited, "address already in use" (a CI run, 2026-12-04)."""
    for _ in range(50):
        ports = free_ports(3)
        assert len(set(ports)) == 3
        assert all(0 < port < 65536 for port in ports)
