"""The daemon on the NATS JetStream source, against a real private nats-server: readings on
subjects reach the database; a SIGKILL mid-stream and a server restart lose nothing and
count nothing twice; MQTT publishers reach it through NATS's MQTT listener."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sentinel.config import SentinelConfig
from sentinel.daemon.app import EXIT_FATAL_CONNECTION, SentinelApp
from simulators.broker import Publisher
from simulators.nats_server import PrivateNats, find_nats_server
from tests.e2e_helpers import (
    readings_committed,
    running_app,
    start_daemon,
    wait_for,
    write_toml,
)
from tests.nats_helpers import (
    device_names,
    nats_daemon_config,
    payload,
    publish,
    publish_tls,
    stream_mappings,
)
from tests.tls_helpers import BROKER_NAME, BrokerPki, have_openssl, make_pki

pytestmark = pytest.mark.integration


def _url(state: Path) -> str:
    return f"sqlite:///{state / 'sentinel.db'}"


def test_readings_on_subjects_reach_the_database(private_nats: PrivateNats, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running_app(nats_daemon_config(state, private_nats)) as running:
        sent = publish(private_nats, device_names(6), range(40))
        wait_for(lambda: readings_committed(_url(state)) >= sent, 60, "readings committed")
        assert running.app.source is not None
        assert running.app.source.status().name == "nats"
    assert readings_committed(_url(state)) == sent


@pytest.mark.slow
def test_sigkill_mid_stream_loses_nothing_and_counts_nothing_twice(
    private_nats: PrivateNats, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    url = _url(state)
    config_path = write_toml(tmp_path / "sentinel.toml", nats_daemon_config(state, private_nats))
    log = tmp_path / "daemon.log"
    devices = device_names(8)
    steps = 400
    sent: list[int] = []
    publisher = threading.Thread(
        target=lambda: sent.append(publish(private_nats, devices, range(steps))), daemon=True
    )

    daemon = start_daemon(config_path, log)
    try:
        wait_for(lambda: b"nats_subscribed" in log.read_bytes(), 60, "the daemon to subscribe")
        publisher.start()
        wait_for(lambda: readings_committed(url) > 500, 60, "the daemon to take in readings")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(60)
        killed_at = readings_committed(url)
        daemon = start_daemon(config_path, log)
        publisher.join(120)
        assert sent == [len(devices) * steps]
        total = sent[0]
        assert killed_at < total, "the kill should happen mid-stream"
        wait_for(lambda: readings_committed(url) >= total, 120, "every reading committed")
        # Nothing more may arrive: stop cleanly (draining what is in flight), then count.
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(30)
    assert readings_committed(url) == total
    print(f"\nkilled at {killed_at}/{total} readings")


def test_server_restart_loses_nothing(private_nats: PrivateNats, tmp_path: Path) -> None:
    state = tmp_path / "state"
    url = _url(state)
    devices = device_names(4)
    with running_app(nats_daemon_config(state, private_nats)) as running:
        first = publish(private_nats, devices, range(100))
        private_nats.restart()
        second = publish(private_nats, devices, range(100, 200))
        wait_for(lambda: readings_committed(url) >= first + second, 90, "every reading")
        source = running.app.source
        assert source is not None
        wait_for(lambda: source.status().connects >= 2, 30, "the source to reconnect")
    assert readings_committed(url) == first + second


def test_mqtt_publishers_reach_the_daemon_through_the_nats_mqtt_listener(
    private_nats: PrivateNats, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    devices = device_names(3)
    with running_app(nats_daemon_config(state, private_nats)):
        publisher = Publisher(
            f"mqtt://127.0.0.1:{private_nats.mqtt_port}", protocol="3.1.1", client_id="sim"
        )
        publisher.start()
        for i in range(30):
            for device in devices:
                publisher.publish(f"plant/{device}/pump", payload(i), qos=1)
        assert publisher.finish(30) == 0, "NATS acknowledged every MQTT publish"
        wait_for(lambda: readings_committed(_url(state)) >= 90, 60, "MQTT readings committed")
    assert readings_committed(_url(state)) == 90


def test_bad_credentials_stop_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if find_nats_server() is None:
        pytest.skip("no nats-server binary")
    monkeypatch.setenv("SENTINEL_NATS_PASSWORD", "wrong")
    with PrivateNats(workdir=tmp_path / "nats", users={"sentinel": "right"}) as server:
        config = nats_daemon_config(tmp_path / "state", server, nats={"username": "sentinel"})
        app = SentinelApp(SentinelConfig.model_validate(config))
        with capture_logs() as logs:
            result = app.run(threading.Event())
    assert result == EXIT_FATAL_CONNECTION
    assert app.fatal is not None
    assert "credentials" in app.fatal
    # It gave up at the refusal instead of retrying, and its thread is gone.
    assert [e["event"] for e in logs].count("nats_refused_fatal") == 1
    assert "nats-source" not in {t.name for t in threading.enumerate()}


@pytest.fixture
def tls_nats(tmp_path: Path) -> Iterator[tuple[PrivateNats, BrokerPki]]:
    if find_nats_server() is None or not have_openssl():
        pytest.skip("needs the nats-server and openssl binaries")
    pki = make_pki(tmp_path / "pki")
    server = PrivateNats(workdir=tmp_path / "nats", mappings=stream_mappings(), tls=pki.broker)
    server.start()
    try:
        yield server, pki
    finally:
        server.stop()


def test_tls_with_the_servers_ca_reaches_the_database(
    tls_nats: tuple[PrivateNats, BrokerPki], tmp_path: Path
) -> None:
    server, pki = tls_nats
    state = tmp_path / "state"
    config = nats_daemon_config(
        state,
        server,
        nats={
            "servers": [f"tls://{BROKER_NAME}:{server.port}"],
            "tls": {"enabled": True, "ca_file": str(pki.broker.ca_file)},
        },
    )
    with running_app(config):
        sent = publish_tls(server, pki, device_names(2), range(20))
        wait_for(lambda: readings_committed(_url(state)) >= sent, 60, "readings committed")
    assert readings_committed(_url(state)) == sent


def test_a_certificate_that_does_not_verify_stops_with_a_clear_error(
    tls_nats: tuple[PrivateNats, BrokerPki], tmp_path: Path
) -> None:
    server, pki = tls_nats
    config = nats_daemon_config(
        tmp_path / "state",
        server,
        nats={
            "servers": [f"tls://{BROKER_NAME}:{server.port}"],
            "tls": {"enabled": True, "ca_file": str(pki.other_ca)},
        },
    )
    app = SentinelApp(SentinelConfig.model_validate(config))
    with capture_logs() as logs:
        result = app.run(threading.Event())
    assert result == EXIT_FATAL_CONNECTION
    assert app.fatal is not None
    assert str(pki.other_ca) in app.fatal
    assert "does not verify" in app.fatal
    assert [e["event"] for e in logs].count("nats_refused_fatal") == 1
    assert "nats-source" not in {t.name for t in threading.enumerate()}
