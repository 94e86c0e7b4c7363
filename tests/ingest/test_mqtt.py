"""The MQTT source against a real Mosquitto: TLS, acknowledgements, parsing on the way in."""

from __future__ import annotations

import queue
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sentinel.config import MqttConfig, StreamConfig
from sentinel.ingest.mqtt import MqttSource
from sentinel.ingest.parse import MessageParser
from sentinel.records import Delivery
from simulators.broker import find_mosquitto, free_port

pytestmark = pytest.mark.integration

STREAM = StreamConfig.model_validate(
    {"name": "pump", "topic": "plant/{device}/pump", "features": ["flow"]}
)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, Path]]:
    """Mosquitto with a TLS listener and a throwaway CA; yields (port, ca, other_ca)."""
    mosquitto = find_mosquitto()
    if mosquitto is None or shutil.which("openssl") is None:
        pytest.skip("needs mosquitto and openssl")
    work = tmp_path_factory.mktemp("tls")
    for name in ("ca", "other"):
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN=sentinel test {name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.pem",
            cwd=work,
        )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=work,
    )
    (work / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
        cwd=work,
    )
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        f"cafile {work / 'ca.pem'}\ncertfile {work / 'server.pem'}\n"
        f"keyfile {work / 'server.key'}\nuser root\nlog_dest file {work / 'log'}\n"
    )
    proc = subprocess.Popen([mosquitto, "-c", str(conf)])
    try:
        deadline = time.monotonic() + 10
        while (
            not (work / "log").exists()
            or "Opening ipv4 listen socket" not in (work / "log").read_text()
        ):
            assert time.monotonic() < deadline, "TLS broker did not start"
            assert proc.poll() is None, (work / "log").read_text()
            time.sleep(0.05)
        yield port, work / "ca.pem", work / "other.pem"
    finally:
        proc.terminate()
        proc.wait(10)


def _source(port: int, ca: Path, sink: queue.Queue[Delivery], client_id: str) -> MqttSource:
    config = MqttConfig.model_validate(
        {
            "host": "localhost",
            "port": port,
            "client_id": client_id,
            "tls": {"enabled": True, "ca_file": str(ca)},
        }
    )
    return MqttSource(
        config,
        [STREAM],
        parser=MessageParser([STREAM], max_payload_bytes=1024),
        sink=lambda d: sink.put(d) is None,
        receive_maximum=100,
        on_fatal=lambda reason: None,
    )


def test_tls_connection_delivers_and_acknowledges(tls_broker: tuple[int, Path, Path]) -> None:
    port, ca, _ = tls_broker
    received: queue.Queue[Delivery] = queue.Queue()
    source = _source(port, ca, received, "tls-ok")
    source.start()
    try:
        assert source.wait_subscribed(15), "no TLS session"
        publisher = mqtt.Client(CallbackAPIVersion.VERSION2)
        publisher.tls_set(ca_certs=str(ca))
        publisher.connect("localhost", port)
        publisher.loop_start()
        publisher.publish("plant/p1/pump", b'{"ts": 1700000000, "flow": 2.5}', qos=1)
        delivery = received.get(timeout=10)
        publisher.disconnect()
        publisher.loop_stop()
        assert delivery.readings[0].device == "p1"
        assert delivery.readings[0].values == (2.5,)
        assert delivery.ack is not None
        source.ack(delivery.ack)
    finally:
        source.stop()


@pytest.mark.allow_log_exceptions
def test_tls_with_an_untrusted_broker_certificate_never_connects(
    tls_broker: tuple[int, Path, Path],
) -> None:
    port, _, other_ca = tls_broker
    source = _source(port, other_ca, queue.Queue(), "tls-bad")
    source.start()
    try:
        assert not source.wait_connected(3), "connected to a broker it should not trust"
        assert source.fatal is None  # a certificate problem may be fixed on the broker side
    finally:
        source.stop()
