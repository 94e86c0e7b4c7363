"""The MQTT source against a real Mosquitto: TLS, acknowledgements, parsing on the way in.

The broker's certificate comes from a throwaway CA made at test time (tests/tls_helpers.py);
an unrelated CA plays the wrong one, and 127.0.0.1 reaches the broker under a name its
certificate does not hold.
"""

from __future__ import annotations

import queue
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sentinel.config import MqttConfig, StreamConfig
from sentinel.errors import ConfigError
from sentinel.ingest.mqtt import MqttSource
from sentinel.ingest.parse import MessageParser
from sentinel.records import Delivery
from simulators.broker import PrivateBroker
from tests.tls_helpers import BROKER_NAME, BrokerPki

pytestmark = pytest.mark.integration

STREAM = StreamConfig.model_validate(
    {"name": "pump", "topic": "plant/{device}/pump", "features": ["flow"]}
)


def _source(
    host: str,
    port: int,
    ca: Path,
    sink: queue.Queue[Delivery],
    client_id: str,
    fatal: queue.Queue[str] | None = None,
) -> MqttSource:
    config = MqttConfig.model_validate(
        {
            "host": host,
            "port": port,
            "client_id": client_id,
            "reconnect_min_delay": 1,
            "reconnect_max_delay": 1,
            "tls": {"enabled": True, "ca_file": str(ca)},
        }
    )

    def accept(delivery: Delivery, timeout: float) -> bool:
        sink.put(delivery)
        return True

    return MqttSource(
        config,
        [STREAM],
        parser=MessageParser([STREAM], max_payload_bytes=1024),
        sink=accept,
        receive_maximum=100,
        on_fatal=fatal.put if fatal is not None else lambda reason: None,
    )


def test_tls_connection_delivers_and_acknowledges(
    tls_broker: tuple[PrivateBroker, BrokerPki],
) -> None:
    broker, pki = tls_broker
    received: queue.Queue[Delivery] = queue.Queue()
    source = _source(BROKER_NAME, broker.port, pki.ca, received, "tls-ok")
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
        assert delivery.readings[0].device == "p1"
        assert delivery.readings[0].values == (2.5,)
        assert delivery.ack is not None
        source.ack([delivery.ack])
        assert source.fatal is None
    finally:
        source.stop()


def test_a_broker_certificate_from_another_ca_is_fatal_and_named(
    tls_broker: tuple[PrivateBroker, BrokerPki],
) -> None:
    """Retrying cannot make a certificate verify: the source stops and says which CA file
    failed for which host, and why, instead of logging mqtt_connect_failed forever."""
    broker, pki = tls_broker
    fatal: queue.Queue[str] = queue.Queue()
    source = _source(BROKER_NAME, broker.port, pki.other_ca, queue.Queue(), "tls-bad-ca", fatal)
    source.start()
    try:
        reason = fatal.get(timeout=30)
        assert source.fatal == reason
        assert str(pki.other_ca) in reason
        assert f"{BROKER_NAME}:{broker.port}" in reason
        # OpenSSL's words for a chain that ends in a CA we were not given.
        assert (
            "unable to get local issuer certificate" in reason
            or "self-signed certificate in certificate chain" in reason
        ), reason
        assert "mqtt.tls.ca_file" in reason  # what to change
        assert not source.connected
    finally:
        source.stop()
    assert fatal.empty(), "reported more than once"


def test_a_broker_certificate_for_another_name_is_fatal_and_named(
    tls_broker: tuple[PrivateBroker, BrokerPki],
) -> None:
    broker, pki = tls_broker
    fatal: queue.Queue[str] = queue.Queue()
    source = _source("127.0.0.1", broker.port, pki.ca, queue.Queue(), "tls-bad-name", fatal)
    source.start()
    try:
        reason = fatal.get(timeout=30)
        assert f"127.0.0.1:{broker.port}" in reason
        assert "mismatch" in reason
        assert "mqtt.host" in reason
        assert str(pki.ca) in reason
    finally:
        source.stop()


def test_an_unreadable_ca_file_is_named_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    source = _source(BROKER_NAME, 8883, missing, queue.Queue(), "tls-no-ca")
    with pytest.raises(ConfigError, match=r"ca_file = .*no-such-ca\.pem"):
        source.start()
    source.stop()
