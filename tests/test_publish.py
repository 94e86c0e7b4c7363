"""The alert publisher against a real Mosquitto and real databases.

Alert changes go through the real writer into the outbox; the publisher drains it to the
broker; a consumer of our own (a persistent MQTT 5 session, as a real one would use)
collects what arrives. The key property: whatever happens to the broker or the daemon, the
consumer gets every event, and after de-duplicating by (uid, seq) exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select
from structlog.testing import capture_logs

from sentinel.config import MqttConfig, PublishConfig
from sentinel.publish.publisher import AlertPublisher
from sentinel.records import AlertStatus, DeviceProgress, ScoreBucket, Severity, WriteBatch
from sentinel.store import AlertStore, AlertWriter
from sentinel.store.outbox import OutboxPolicy, pending_events
from sentinel.store.schema import AlertOutboxRow
from simulators.broker import PrivateBroker, find_mosquitto, free_port
from tests.e2e_helpers import wait_for
from tests.mqtt_helpers import consuming, retained
from tests.store.helpers import T0, make_alert
from tests.tls_helpers import BROKER_NAME, BrokerPki

pytestmark = pytest.mark.integration


# -- the components -------------------------------------------------------------------------


@dataclass
class Out:
    store: AlertStore
    writer: AlertWriter
    publisher: AlertPublisher

    def write(self, *alerts: Any, progress: tuple[DeviceProgress, ...] = ()) -> None:
        self.writer.submit(WriteBatch(alerts=alerts, progress=progress))

    def pending(self) -> int:
        return len(pending_events(self.store.engine, 100_000))


def make_publisher(
    store: AlertStore,
    broker: PrivateBroker,
    config: PublishConfig,
    client_id: str,
    drains: Callable[[], bool] | None = None,
) -> AlertPublisher:
    mqtt_config = MqttConfig(
        host=broker.host,
        port=broker.port,
        protocol=broker.protocol,
        client_id=client_id,
        reconnect_min_delay=1,
        reconnect_max_delay=1,
    )
    return AlertPublisher(
        config, mqtt_config, store, poll_interval=0.2, score_interval=0.2, drains=drains
    )


@contextmanager
def alert_output(
    url: str,
    broker: PrivateBroker,
    config: PublishConfig,
    client_id: str = "pub-test",
    drains: Callable[[], bool] | None = None,
) -> Iterator[Out]:
    """Store (with outbox), writer and publisher as the daemon wires them."""
    policy = OutboxPolicy(config.update_peak_factor, config.update_interval)
    store = AlertStore(url, busy_timeout_ms=5000, outbox=policy)
    store.open()
    store.migrate()
    publisher = make_publisher(store, broker, config, client_id, drains)
    writer = AlertWriter(store, flush_interval=0.02, on_commit=lambda _b: publisher.notify())
    writer.start()
    publisher.start()
    try:
        yield Out(store, writer, publisher)
    finally:
        writer.stop()
        publisher.stop(timeout=2.0)
        store.close()


def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def lifecycle(uid: str, device: str, t0: float, peaks: list[float]) -> list[Any]:
    """An alert's changes, one per anomalous window, then its close."""
    changes = [
        make_alert(
            uid, device=device, started_at=t0, updated_at=t0 + 4 * i, peak_score=p, windows=i + 2
        )
        for i, p in enumerate(peaks)
    ]
    end = t0 + 4 * (len(peaks) - 1)
    changes.append(
        make_alert(
            uid,
            device=device,
            started_at=t0,
            status=AlertStatus.CLOSED,
            updated_at=end,
            ended_at=end,
            peak_score=max(peaks),
            windows=len(peaks) + 1,
        )
    )
    return changes


# -- tests ----------------------------------------------------------------------------------


def test_events_state_and_availability(mqtt_broker: PrivateBroker, database_url: str) -> None:
    config = PublishConfig(prefix=prefix(), update_peak_factor=1.5, update_interval=0)
    p = config.prefix
    with consuming(mqtt_broker, f"{p}/#") as consumer:
        with alert_output(database_url, mqtt_broker, config) as out:
            assert out.publisher.wait_connected(10)
            # 2.0 -> new; 2.5 and 2.9 stay below 1.5x; 3.0 -> update; 3.1 no; close -> end
            for change in lifecycle("a-1", "p1", T0, [2.0, 2.5, 2.9, 3.0, 3.1]):
                out.write(change)
            wait_for(lambda: len(consumer.events()) == 3, 60, "three events")
            assert [m.payload for m in retained(mqtt_broker, f"{p}/status")] == [b"online"]
            assert out.publisher.publish_json("stats", {"scored": 12}, retain=True)
            wait_for(lambda: bool(consumer.on(f"{p}/stats")), 60, "the stats message")
        events = consumer.events()
        assert [(e["event"], e["seq"], e["uid"]) for e in events] == [
            ("new", 1, "a-1"),
            ("update", 2, "a-1"),
            ("end", 3, "a-1"),
        ]
        assert [e["peak_score"] for e in events] == [2.0, 3.0, 3.1]
        assert events[1]["reason"] == "peak"
        assert {m.topic for m in consumer.messages if "/alerts/" in m.topic} == {
            f"{p}/alerts/pump/p1"
        }
        assert [m.payload for m in consumer.on(f"{p}/state/pump/p1")] == [b"ON", b"ON", b"OFF"]
        assert json.loads(consumer.on(f"{p}/stats")[0].payload) == {"scored": 12}
    # A clean stop says offline itself; the retained state stays OFF.
    assert [m.payload for m in retained(mqtt_broker, f"{p}/status")] == [b"offline"]
    assert [m.payload for m in retained(mqtt_broker, f"{p}/state/pump/p1")] == [b"OFF"]


def test_home_assistant_discovery_is_retained(
    mqtt_broker: PrivateBroker, database_url: str
) -> None:
    discovery = prefix()
    config = PublishConfig(prefix=prefix(), ha_discovery=True, discovery_prefix=discovery)
    p = config.prefix
    # What an earlier run left: two devices, one of them alerting, its event unpublished.
    before = AlertStore(database_url, outbox=OutboxPolicy())
    before.open()
    before.migrate()
    progress = tuple(DeviceProgress("pump", d, T0, 10) for d in ("p1", "p2"))
    before.write([WriteBatch(alerts=(make_alert("a-2", device="p2"),), progress=progress)])
    before.close()
    with alert_output(database_url, mqtt_broker, config) as out:
        wait_for(lambda: out.pending() == 0 and out.publisher.published == 1, 60, "the event")
        # A device first seen after the announcement is announced with its first event.
        out.write(make_alert("a-3", device="p3"))
        wait_for(lambda: out.pending() == 0 and out.publisher.published == 2, 60, "the event")
        configs = retained(mqtt_broker, f"{discovery}/binary_sensor/#", count=3)
        states = retained(mqtt_broker, f"{p}/state/#", count=3)
        severities = retained(mqtt_broker, f"{p}/severity/#", count=3)
        sensor_configs = retained(mqtt_broker, f"{discovery}/sensor/#", count=6)
        buttons = retained(mqtt_broker, f"{discovery}/button/#", count=3)
    assert all(m.retain for m in configs + states + severities + sensor_configs + buttons)
    by_topic = {m.topic: m.json() for m in configs}
    node = p
    assert set(by_topic) == {
        f"{discovery}/binary_sensor/{node}/pump_{d}/config" for d in ("p1", "p2", "p3")
    }
    p2 = by_topic[f"{discovery}/binary_sensor/{node}/pump_p2/config"]
    assert p2["state_topic"] == f"{p}/state/pump/p2"
    assert (p2["payload_on"], p2["payload_off"]) == ("ON", "OFF")
    assert p2["device_class"] == "problem"
    assert p2["availability_topic"] == f"{p}/status"
    assert (p2["payload_available"], p2["payload_not_available"]) == ("online", "offline")
    assert p2["json_attributes_topic"] == f"{p}/alerts/pump/p2"
    assert p2["unique_id"] == f"{node}_pump_p2"
    assert p2["device"]["identifiers"] == [f"{node}_p2"]
    assert p2["device"]["name"] == "p2"
    assert {m.topic: m.payload for m in states} == {
        f"{p}/state/pump/p1": b"OFF",
        f"{p}/state/pump/p2": b"ON",
        f"{p}/state/pump/p3": b"ON",
    }
    assert {m.topic: m.payload for m in severities} == {
        f"{p}/severity/pump/p1": b"none",
        f"{p}/severity/pump/p2": b"info",
        f"{p}/severity/pump/p3": b"info",
    }
    # Per device also a score sensor, a severity sensor and an acknowledge button.
    sensors = {m.topic: m.json() for m in sensor_configs}
    assert set(sensors) == {
        f"{discovery}/sensor/{node}/pump_{d}_{what}/config"
        for d in ("p1", "p2", "p3")
        for what in ("score", "severity")
    }
    assert {m.topic for m in buttons} == {
        f"{discovery}/button/{node}/pump_{d}_ack/config" for d in ("p1", "p2", "p3")
    }
    for m in sensor_configs + buttons:
        if "_p2_" in m.topic:  # one device in Home Assistant, whatever the entity
            assert m.json()["device"] == p2["device"]


def _outbox(store: AlertStore) -> dict[tuple[str, int], dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(AlertOutboxRow.uid, AlertOutboxRow.seq, AlertOutboxRow.payload))
        return {(r.uid, r.seq): dict(r.payload) for r in rows}


def test_broker_outage_and_restart_deliver_every_event_exactly_once(
    private_broker: PrivateBroker, database_url: str
) -> None:
    """Alerts happen while the broker is down, and while the daemon is down with rows still
    unpublished; afterwards the consumer has every event, once per (uid, seq)."""
    config = PublishConfig(prefix=prefix(), update_peak_factor=1.2, update_interval=0)
    peaks = [2.0, 2.5, 3.1, 3.9, 4.9, 6.1]  # each 1.2x+ the last: new, 5 updates, end
    with consuming(private_broker, f"{config.prefix}/alerts/#", persistent=True) as consumer:
        with alert_output(database_url, private_broker, config) as out:
            assert out.publisher.wait_connected(10)
            for change in lifecycle("before-0", "p0", T0, peaks):
                out.write(change)
            wait_for(lambda: len(consumer.events()) == 7, 60, "events before the outage")

            private_broker.stop()
            wait_for(lambda: not out.publisher.connected, 60, "the publisher to notice")
            for n in range(4):  # alerts on four pumps while the broker is away
                for change in lifecycle(f"outage-{n}", f"p{n}", T0 + 1000, peaks):
                    out.write(change)
            wait_for(lambda: out.pending() == 28, 60, "the outage's events in the outbox")
            private_broker.start()
            wait_for(lambda: out.pending() == 0, 60, "the outbox drained after the outage")

            # The broker hangs while a burst of events is in flight, then dies (kill -9).
            proc = private_broker._proc
            assert proc is not None
            proc.send_signal(signal.SIGSTOP)
            for n in range(4):
                for change in lifecycle(f"inflight-{n}", f"p{n}", T0 + 1500, peaks):
                    out.write(change)
            wait_for(lambda: out.pending() == 28, 60, "the burst committed")
            time.sleep(0.5)  # the publisher sends it; the frozen broker acknowledges nothing
            assert out.publisher.connected
            assert out.publisher.published == 35
            proc.kill()
            proc.wait(5)
            private_broker.start()
            wait_for(lambda: out.pending() == 0, 60, "the outbox drained after the restart")

            # Now the daemon goes away while the broker is down and events are unpublished.
            private_broker.stop()
            wait_for(lambda: not out.publisher.connected, 60, "the publisher to notice")
            for change in lifecycle("restart-0", "p0", T0 + 2000, peaks):
                out.write(change)
            wait_for(lambda: out.pending() == 7, 60, "events in the outbox")
        private_broker.start()
        store = AlertStore(database_url)
        store.open()
        try:
            assert len(pending_events(store.engine, 1000)) == 7, "kept for the next start"
            publisher = make_publisher(store, private_broker, config, "pub-test")
            publisher.start()
            try:
                wait_for(lambda: not pending_events(store.engine, 1000), 60, "drained on start")
            finally:
                publisher.stop(timeout=2.0)
            outbox = _outbox(store)
        finally:
            store.close()
        wait_for(lambda: len({(e["uid"], e["seq"]) for e in consumer.events()}) >= 70, 60, "all")
        received = consumer.events()

    assert len(outbox) == 10 * 7
    unique = {(e["uid"], e["seq"]): e for e in received}
    assert set(unique) == set(outbox), "every event arrived, none missing, none extra"
    for key, event in unique.items():
        assert event == outbox[key]
    duplicates = len(received) - len(unique)
    print(f"\n{len(received)} messages, {len(unique)} events, {duplicates} duplicates")
    # Per alert, the events arrived in order: new, updates, end.
    for uid in {e["uid"] for e in received}:
        seqs = [e["seq"] for e in received if e["uid"] == uid]
        first_seen = list(dict.fromkeys(seqs))
        assert first_seen == sorted(first_seen), f"{uid}: out of order {seqs}"
        kinds = [unique[(uid, s)]["event"] for s in first_seen]
        assert kinds == ["new"] + ["update"] * 5 + ["end"]


def test_acknowledgement_from_the_cli_is_published(
    mqtt_broker: PrivateBroker, database_url: str
) -> None:
    config = PublishConfig(prefix=prefix())
    with (
        consuming(mqtt_broker, f"{config.prefix}/alerts/#") as consumer,
        alert_output(database_url, mqtt_broker, config) as out,
    ):
        out.write(make_alert("a-7"))
        wait_for(lambda: len(consumer.events()) == 1, 60, "the new event")
        [record] = out.store.list_alerts()
        cli = AlertStore(database_url)  # another process's store: no publisher in it
        cli.open()
        try:
            cli.acknowledge(record.id, note="pump swapped")
        finally:
            cli.close()
        # Nobody nudges the publisher: it finds the row on its own poll.
        wait_for(lambda: len(consumer.events()) == 2, 60, "the acknowledgement")
    new, ack = consumer.events()
    assert (new["event"], new["status"], new["id"]) == ("new", "open", record.id)
    assert (ack["event"], ack["seq"], ack["reason"]) == ("update", 2, "acknowledged")
    assert (ack["status"], ack["ack_note"]) == ("acknowledged", "pump swapped")


@contextmanager
def mosquitto_with_acl(workdir: Path, port: int, acl: str) -> Iterator[PrivateBroker]:
    """A Mosquitto whose ACL we write, on a given port (to restart it with another ACL)."""
    mosquitto = find_mosquitto()
    if mosquitto is None:
        pytest.skip("no mosquitto binary")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "acl").write_text(acl)
    conf = workdir / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", f"acl_file {workdir / 'acl'}"]
    if os.geteuid() == 0:
        lines.append("user root")  # else mosquitto drops to 'mosquitto' and cannot read
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(
        [mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    broker = PrivateBroker(prefer="mosquitto")
    broker._port, broker._kind = port, "mosquitto"  # only host/port/protocol are used
    try:
        wait_for(lambda: _port_open(port), 60, "mosquitto to listen")
        yield broker
    finally:
        proc.terminate()
        proc.wait(5)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_refused_events_are_kept_and_sent_once_allowed(tmp_path: Path) -> None:
    """A broker whose ACL forbids our alert topics refuses them in the PUBACK (MQTT 5):
    the rows stay unpublished and go out once the ACL allows them."""
    config = PublishConfig(prefix=prefix())
    p = config.prefix
    port = free_port()
    url = f"sqlite:///{tmp_path / 'sentinel.db'}"
    deny = f"topic readwrite {p}/status\ntopic readwrite {p}/state/#\n"
    with (
        mosquitto_with_acl(tmp_path / "deny", port, deny) as broker,
        alert_output(url, broker, config) as out,
    ):
        assert out.publisher.wait_connected(10)
        with capture_logs() as logs:
            out.write(make_alert("a-8"))
            wait_for(lambda: any(e["event"] == "publish_refused" for e in logs), 60, "refusal")
        assert out.pending() == 1
        assert out.publisher.published == 0
    allow = deny + f"topic readwrite {p}/alerts/#\n"
    with (
        mosquitto_with_acl(tmp_path / "allow", port, allow) as broker,
        consuming(broker, f"{p}/alerts/#") as consumer,
    ):
        store = AlertStore(url)
        store.open()
        publisher = make_publisher(store, broker, config, "pub-test")
        publisher.start()
        try:
            wait_for(lambda: len(consumer.events()) == 1, 60, "the event, once allowed")
            wait_for(lambda: not pending_events(store.engine, 10), 60, "the row marked")
        finally:
            publisher.stop(timeout=2.0)
            store.close()
    assert consumer.events()[0]["uid"] == "a-8"


def test_a_broker_certificate_from_another_ca_stops_the_publisher(
    tls_broker: tuple[PrivateBroker, BrokerPki], tmp_path: Path
) -> None:
    """The publisher has its own client: a certificate that cannot verify stops it too,
    named, instead of retrying forever."""
    broker, pki = tls_broker
    store = AlertStore(f"sqlite:///{tmp_path / 'sentinel.db'}")
    store.open()
    store.migrate()
    mqtt_config = MqttConfig.model_validate(
        {
            "host": BROKER_NAME,
            "port": broker.port,
            "client_id": "pub-bad-ca",
            "reconnect_min_delay": 1,
            "reconnect_max_delay": 1,
            "tls": {"enabled": True, "ca_file": str(pki.other_ca)},
        }
    )
    publisher = AlertPublisher(PublishConfig(prefix=prefix()), mqtt_config, store)
    publisher.start()
    try:
        wait_for(lambda: publisher.fatal is not None, 60, "the publisher to give up")
        assert publisher.fatal is not None
        assert str(pki.other_ca) in publisher.fatal
        assert f"{BROKER_NAME}:{broker.port}" in publisher.fatal
        assert not publisher.connected
    finally:
        publisher.stop(timeout=1.0)
        store.close()


def test_home_assistant_score_sensor_severity_and_acknowledge_button(
    mqtt_broker: PrivateBroker, database_url: str
) -> None:
    discovery = prefix()
    config = PublishConfig(prefix=prefix(), ha_discovery=True, discovery_prefix=discovery)
    p = config.prefix
    # Two open alerts from an earlier run, their events not published yet.
    before = AlertStore(database_url, outbox=OutboxPolicy())
    before.open()
    before.migrate()
    progress = tuple(DeviceProgress("pump", d, T0, 10) for d in ("p1", "p2"))
    alerts = (
        make_alert("a-1", device="p1", severity=Severity.WARNING),
        make_alert("a-2", device="p2"),
    )
    before.write([WriteBatch(alerts=alerts, progress=progress)])
    ids = {r.uid: r.id for r in before.list_alerts()}
    before.close()
    with pressing(mqtt_broker) as client:
        # A command left retained on the broker reaches the publisher when it subscribes:
        # acting on it would acknowledge again at every reconnect, so it is ignored.
        client.publish(f"{p}/command/pump/p2/ack", "ACK", qos=1, retain=True).wait_for_publish(5)
        try:
            with (
                consuming(mqtt_broker, f"{p}/alerts/#") as consumer,
                alert_output(database_url, mqtt_broker, config) as out,
            ):
                wait_for(lambda: len(consumer.events()) == 2, 60, "the two new events")
                severity = retained(mqtt_broker, f"{p}/severity/pump/p1")
                assert [m.payload for m in severity] == [b"warning"]
                # The score sensor: the committed minute, its ratio as the state.
                minute = int(T0) // 60 * 60
                out.publisher.observe_scores(
                    [
                        ScoreBucket("pump", "p1", minute, 10, 2, 3.0, 2.0, 1.5),
                        ScoreBucket("pump", "p1", minute, 5, 0, 1.0, 2.0, 0.5),  # later pass
                    ]
                )
                [score] = retained(mqtt_broker, f"{p}/score/pump/p1")
                assert score.json() == {
                    "ratio": 1.5,
                    "score": 3.0,
                    "threshold": 2.0,
                    "windows": 15,
                    "anomalous": 2,
                    "minute": datetime.fromtimestamp(minute, UTC).isoformat(),
                }
                topic = f"{discovery}/sensor/{p}/pump_p1_score/config"
                [sensor] = retained(mqtt_broker, topic)
                assert sensor.json()["state_topic"] == f"{p}/score/pump/p1"
                assert sensor.json()["value_template"] == "{{ value_json.ratio }}"

                # Pressing p1's button: Home Assistant publishes payload_press on its topic.
                topic = f"{discovery}/button/{p}/pump_p1_ack/config"
                [button] = retained(mqtt_broker, topic)
                command, press = button.json()["command_topic"], button.json()["payload_press"]
                assert command == f"{p}/command/pump/p1/ack"
                client.publish(command, press, qos=1).wait_for_publish(5)
                wait_for(lambda: len(consumer.events()) == 3, 60, "the acknowledgement's event")
                assert out.publisher.acknowledged == 1
                a1, a2 = out.store.get_alert(ids["a-1"]), out.store.get_alert(ids["a-2"])
        finally:
            client.publish(f"{p}/command/pump/p2/ack", b"", qos=1, retain=True).wait_for_publish(5)
    assert a1 is not None
    assert a2 is not None
    assert a1.status is AlertStatus.ACKNOWLEDGED
    assert a1.ack_note == "acknowledged in Home Assistant"
    assert a2.status is AlertStatus.OPEN  # the retained command acknowledged nothing
    ack = consumer.events()[-1]
    assert (ack["uid"], ack["event"], ack["reason"]) == ("a-1", "update", "acknowledged")
    assert [m.payload for m in retained(mqtt_broker, f"{p}/severity/pump/p1")] == [b"warning"]


@contextmanager
def pressing(broker: PrivateBroker) -> Iterator[Any]:
    """A client publishing as Home Assistant does when a button is pressed."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ha-{uuid.uuid4().hex[:8]}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def test_only_the_member_holding_the_publisher_lock_drains_a_shared_outbox(
    mqtt_broker: PrivateBroker, database_url: str
) -> None:
    """Two daemons on one database (issue #24, ``drains``): the one told it holds the
    cluster's publisher lock sends the outbox; when the lock moves, the other takes over
    from where the first stopped. Every event reaches the consumer once."""
    config = PublishConfig(prefix=prefix(), update_peak_factor=1.5, update_interval=0)
    holds = {"a": threading.Event(), "b": threading.Event()}
    holds["a"].set()
    with (
        consuming(mqtt_broker, f"{config.prefix}/alerts/#") as consumer,
        alert_output(database_url, mqtt_broker, config, "pub-a", holds["a"].is_set) as out,
    ):
        other = make_publisher(out.store, mqtt_broker, config, "pub-b", holds["b"].is_set)
        other.start()
        try:
            assert other.wait_connected(10)
            for change in lifecycle("c-1", "p1", T0, [2.0, 3.0]):
                out.write(change)
            wait_for(lambda: out.publisher.published == 3, 60, "the first alert's events")
            assert other.published == 0
            holds["a"].clear()  # the lock moves to the other member
            holds["b"].set()
            for change in lifecycle("c-2", "p2", T0, [2.0, 3.0]):
                out.write(change)
            wait_for(lambda: other.published == 3, 60, "the second alert's events")
            assert out.publisher.published == 3
            wait_for(lambda: len(consumer.events()) == 6, 60, "every event consumed")
        finally:
            other.stop(timeout=2.0)
    keys = [(e["uid"], e["seq"]) for e in consumer.events()]
    assert sorted(keys) == [("c-1", 1), ("c-1", 2), ("c-1", 3), ("c-2", 1), ("c-2", 2), ("c-2", 3)]
