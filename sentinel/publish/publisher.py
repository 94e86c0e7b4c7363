"""The alert publisher: drains the outbox to MQTT, at least once, in order.

The writer records every alert event in the ``alert_outbox`` table in the same transaction
as the alert change (``sentinel/store/outbox.py``). This component, with its own paho
client, sends the unpublished rows in the order they were written and marks a row published
only once the broker acknowledged (PUBACK) both of its messages:

* the event, JSON, on ``<prefix>/alerts/<stream>/<device>`` (not retained);
* the device's state, ``ON`` or ``OFF``, retained, on ``<prefix>/state/<stream>/<device>``.

While the broker is away nothing is lost: paho keeps the messages in flight and resends them
when it reconnects, and rows not yet acknowledged are sent again after a restart of the
daemon. A message may therefore arrive twice; ``(uid, seq)`` in the payload identifies it.

Availability: ``<prefix>/status`` is ``online`` (retained) while we are connected; the broker
publishes our Last Will ``offline`` (retained) when the connection dies, and we publish it
ourselves on a clean stop. With ``ha_discovery`` the publisher also announces Home
Assistant entities per stream and device (docs/MQTT.md): the alert binary_sensor; a score
sensor, fed every few seconds from the committed score history (``observe_scores``); a
severity sensor, published with each outbox row; and an acknowledge button, whose command
topic this client subscribes to and answers with ``AlertStore.acknowledge``, the code path
of ``sentinel alerts ack`` (issue #25).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from sqlalchemy.exc import SQLAlchemyError

from sentinel.config import MqttConfig, PublishConfig
from sentinel.errors import StoreError
from sentinel.mqtt import (
    FATAL_REFUSALS,
    apply_connection_settings,
    connect_error,
    fatal_connect_error,
)
from sentinel.publish.ha_discovery import (
    ACK_PAYLOAD,
    OFFLINE,
    ONLINE,
    SEVERITY_NONE,
    ack_topic_filter,
    discovery_messages,
    discovery_topic,
    parse_ack_topic,
    score_topic,
    severity_topic,
)
from sentinel.records import AlertStatus, ScoreBucket
from sentinel.store import AlertStore
from sentinel.store.outbox import (
    OutboxEvent,
    mark_published,
    pending_events,
    prune_published,
)

__all__ = ["AlertPublisher"]

log = structlog.get_logger(__name__)

_BATCH = 200  # outbox rows per pass
_POLL = 1.0  # seconds between looks at the outbox when nobody nudged us
_ACK_SLICE = 0.2  # seconds; waits for PUBACKs re-check stop() this often
_RETRY = 5.0  # seconds after a failure (database error, refused PUBLISH)
_PRUNE_EVERY = 3600.0
_DISCOVERY_REFRESH = 60.0  # seconds between looks for devices not announced yet
_SCORE_EVERY = 10.0  # least seconds between publications of the devices' latest scores
_ACK_NOTE = "acknowledged in Home Assistant"


class AlertPublisher:
    """Publishes outbox rows, availability and discovery; ``start()`` / ``stop()``."""

    def __init__(
        self,
        config: PublishConfig,
        mqtt_config: MqttConfig,
        store: AlertStore,
        *,
        password: str | None = None,
        poll_interval: float = _POLL,
        score_interval: float = _SCORE_EVERY,
        drains: Callable[[], bool] | None = None,
    ) -> None:
        # drains: with several daemons on one database, whether this one drains the
        # shared outbox now (it holds the cluster's publisher lock, sentinel.cluster):
        # one publisher keeps each alert's events in order and sent once.
        self._drains = drains
        self._config = config
        self._mqtt = mqtt_config
        self._store = store
        self._password = password
        self._poll = poll_interval
        self._score_interval = score_interval
        self._client: mqtt.Client | None = None
        self._thread: threading.Thread | None = None
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._announce_all = threading.Event()  # (re)announce every device: connect, HA birth
        self._stopping = threading.Event()
        self._deadline = 0.0  # monotonic; set by stop()
        self._failed: dict[int, str] = {}  # mid -> refused PUBACK's reason (MQTT 5)
        self._announced: set[tuple[str, str]] = set()
        # Per device its latest minute of scores, until published (bounded by the devices).
        self._scores: dict[tuple[str, str], ScoreBucket] = {}
        self._scores_lock = threading.Lock()
        # (stream, device) whose button was pressed; filled on paho's thread, never blocks.
        self._acks: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self.acknowledged = 0  # alerts acknowledged from Home Assistant
        self._fatal: str | None = None
        self.published = 0  # outbox rows acknowledged by the broker and marked
        self.connects = 0

    # -- topics ---------------------------------------------------------------------------

    @property
    def status_topic(self) -> str:
        return f"{self._config.prefix}/status"

    def event_topic(self, stream: str, device: str) -> str:
        return f"{self._config.prefix}/alerts/{stream}/{device}"

    def state_topic(self, stream: str, device: str) -> str:
        return f"{self._config.prefix}/state/{stream}/{device}"

    def discovery_topic(self, stream: str, device: str, entity: str = "") -> str:
        return discovery_topic(
            self._config.discovery_prefix, self._config.prefix, stream, device, entity
        )

    def score_topic(self, stream: str, device: str) -> str:
        return score_topic(self._config.prefix, stream, device)

    def severity_topic(self, stream: str, device: str) -> str:
        return severity_topic(self._config.prefix, stream, device)

    @property
    def client_id(self) -> str:
        # Distinct from the ingest client's id, or the broker would drop one for the other.
        return f"{self._mqtt.client_id}-pub"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("AlertPublisher can only be started once")
        cfg = self._mqtt
        v5 = cfg.protocol == "5"
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            # No broker session needed: paho itself keeps unacknowledged messages and resends
            # them after a reconnect; the outbox covers a restart of the daemon.
            clean_session=None if v5 else True,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        )
        apply_connection_settings(client, cfg, self._password)
        client.max_queued_messages_set(0)  # unlimited: never drop while the broker is away
        client.will_set(self.status_topic, OFFLINE, qos=self._config.qos, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._client = client
        log.info(
            "publisher_connecting",
            host=cfg.host,
            port=cfg.port,
            client_id=self.client_id,
            prefix=self._config.prefix,
            ha_discovery=self._config.ha_discovery,
        )
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive)
        client.loop_start()
        self._thread = threading.Thread(target=self._run, name="sentinel-publisher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is pending (for up to ``timeout``), say ``offline``, disconnect."""
        thread, client = self._thread, self._client
        if thread is None or client is None or self._stopping.is_set():
            return
        self._deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        thread.join(timeout + 1.0)
        if thread.is_alive():
            log.error("publisher_stop_timeout", timeout=timeout)
        if self._connected.is_set():
            info = client.publish(self.status_topic, OFFLINE, qos=self._config.qos, retain=True)
            self._wait(info, time.monotonic() + 2.0)
        client.disconnect()  # a clean DISCONNECT: the broker discards the Last Will
        client.loop_stop()
        log.info("publisher_stopped", published=self.published)

    def notify(self) -> None:
        """New rows may have been committed: look at the outbox now."""
        self._wake.set()

    def observe_scores(self, buckets: Iterable[ScoreBucket]) -> None:
        """Committed score history (the writer's thread): kept per device, the minute's
        buckets merged, for the score sensors' next publication. A no-op without
        ``ha_discovery``."""
        if not self._config.ha_discovery:
            return
        with self._scores_lock:
            for b in buckets:
                key = (b.stream, b.device)
                kept = self._scores.get(key)
                if kept is None or b.start > kept.start:
                    self._scores[key] = b
                elif b.start == kept.start:
                    self._scores[key] = kept.merged(b)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def fatal(self) -> str | None:
        return self._fatal

    def publish_json(self, subtopic: str, payload: Any, retain: bool = False) -> bool:
        """Publish ``payload`` as JSON on ``<prefix>/<subtopic>``, outside the outbox.

        For periodic information (e.g. stats) that the next period replaces: queued at
        the configured QoS and resent across a reconnect, but not kept across a restart.
        False when the publisher is not running or paho refused the message.
        """
        client = self._client
        if client is None or self._stopping.is_set():
            return False
        subtopic = subtopic.strip("/")
        if not subtopic or any(c in subtopic for c in "+#"):
            raise ValueError(f"not a topic: {subtopic!r}")
        info = client.publish(
            f"{self._config.prefix}/{subtopic}",
            json.dumps(payload, allow_nan=False),
            qos=self._config.qos,
            retain=retain,
        )
        return info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)

    # -- the publishing thread ------------------------------------------------------------

    def _run(self) -> None:
        next_prune = time.monotonic()
        next_refresh = time.monotonic() + _DISCOVERY_REFRESH
        next_scores = time.monotonic()
        try:
            while True:
                self._wake.clear()
                stopping = self._stopping.is_set()
                if stopping and (time.monotonic() >= self._deadline or not self.connected):
                    return
                busy = False
                try:
                    self._acknowledge_pressed()
                except (SQLAlchemyError, StoreError) as err:
                    log.warning("publisher_database_error", error=str(err), retry_in=_RETRY)
                    self._pause(_RETRY)
                    continue
                if self.connected:
                    # The first scores go out at once, then at most every score_interval.
                    due = self._config.ha_discovery and time.monotonic() >= next_scores
                    if due and self._publish_scores():
                        next_scores = time.monotonic() + self._score_interval
                    try:
                        if self._config.ha_discovery and (
                            self._announce_all.is_set() or time.monotonic() >= next_refresh
                        ):
                            self._announce(everything=self._announce_all.is_set())
                            next_refresh = time.monotonic() + _DISCOVERY_REFRESH
                        busy = self._drain()
                    except (SQLAlchemyError, StoreError) as err:
                        log.warning("publisher_database_error", error=str(err), retry_in=_RETRY)
                        self._pause(_RETRY)
                        continue
                if stopping and not busy:
                    if self._config.ha_discovery and self.connected:
                        self._publish_scores()  # the latest, before we say offline
                    return  # everything sent
                if time.monotonic() >= next_prune and not stopping:
                    self._prune()
                    next_prune = time.monotonic() + _PRUNE_EVERY
                if not busy:
                    self._wake.wait(self._poll)
        except Exception:  # thread boundary: log, never die silently
            log.exception("publisher_crashed")

    def _pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping.is_set() and time.monotonic() < end:
            self._wake.wait(min(_ACK_SLICE, end - time.monotonic()))

    def _drain(self) -> bool:
        """Publish one batch of outbox rows, wait for the broker, mark them; True if any."""
        client = self._client
        assert client is not None
        if self._drains is not None and not self._drains():
            return False
        rows = pending_events(self._store.engine, _BATCH)
        if not rows:
            return False
        sent: list[tuple[OutboxEvent, list[mqtt.MQTTMessageInfo]]] = []
        for row in rows:
            if self._config.ha_discovery and (row.stream, row.device) not in self._announced:
                self._announce_device(row.stream, row.device, None)
            state = "OFF" if row.event == "end" else "ON"
            infos = [
                self._send(self.event_topic(row.stream, row.device), json.dumps(row.payload)),
                self._send(self.state_topic(row.stream, row.device), state, retain=True),
            ]
            if self._config.ha_discovery:
                severity = (
                    SEVERITY_NONE
                    if row.event == "end"
                    else str(row.payload.get("severity", "info"))
                )
                topic = self.severity_topic(row.stream, row.device)
                infos.append(self._send(topic, severity, retain=True))
            sent.append((row, infos))
        done: list[int] = []
        refused: list[OutboxEvent] = []
        reasons: set[str] = set()
        for row, infos in sent:
            deadline = self._deadline if self._stopping.is_set() else None
            if not all(self._wait(info, deadline) for info in infos):
                break  # stopping with the broker away: the rest stays for the next start
            failed = {r for info in infos if (r := self._failed.pop(info.mid, None))}
            if failed:
                refused.append(row)
                reasons |= failed
            else:
                done.append(row.id)
        mark_published(self._store.engine, done, datetime.now(UTC))
        self.published += len(done)
        log.debug("outbox_published", rows=len(done), refused=len(refused))
        if refused:
            # E.g. an ACL that forbids our topics (MQTT 5 says so in the PUBACK; a 3.1.1
            # broker drops the message silently and we cannot tell). Kept, and retried.
            log.error(
                "publish_refused",
                rows=len(refused),
                first_uid=refused[0].uid,
                reasons=sorted(reasons),
                retry_in=_RETRY,
            )
            self._pause(_RETRY)
        return len(done) > 0

    def _send(self, topic: str, payload: str, retain: bool = False) -> mqtt.MQTTMessageInfo:
        client = self._client
        assert client is not None
        info = client.publish(topic, payload, qos=self._config.qos, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            # The connection dropped just now; paho queued the message and sends it on the
            # next connect. (wait_for_publish would raise on the stale return code.)
            info.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        return info

    def _wait(self, info: mqtt.MQTTMessageInfo, deadline: float | None) -> bool:
        """Wait for the broker's acknowledgement; False if ``deadline`` passed first."""
        while True:
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                log.error("publish_failed", rc=str(info.rc))
                return False
            info.wait_for_publish(_ACK_SLICE)
            if info.is_published():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if deadline is None and self._stopping.is_set():
                deadline = self._deadline

    def _prune(self) -> None:
        if self._drains is not None and not self._drains():
            return
        before = datetime.now(UTC) - timedelta(seconds=self._config.retention)
        try:
            pruned = prune_published(self._store.engine, before)
        except (SQLAlchemyError, StoreError) as err:
            log.warning("outbox_prune_failed", error=str(err))
            return
        if pruned:
            log.info("outbox_pruned", rows=pruned, before=before.isoformat())

    # -- Home Assistant discovery ---------------------------------------------------------

    def _announce(self, *, everything: bool) -> None:
        self._announce_all.clear()
        if everything:
            self._announced.clear()
        active: dict[tuple[str, str], str] = {}
        for a in self._store.open_alerts():
            if a.status is not AlertStatus.CLOSED:
                active[(a.stream, a.device)] = a.severity.value
        devices = set(self._store.device_progress()) | set(active)
        new = sorted(devices - self._announced)
        for stream, device in new:
            self._announce_device(stream, device, active.get((stream, device), SEVERITY_NONE))
        if new:
            log.info("ha_discovery_announced", devices=len(new))

    def _announce_device(self, stream: str, device: str, severity: str | None) -> None:
        """Retained discovery configs, and the current state when known: ``severity`` is
        the open alert's, ``SEVERITY_NONE`` without one, None when not known here."""
        cfg = self._config
        for topic, config in discovery_messages(
            cfg.discovery_prefix, cfg.prefix, cfg.qos, stream, device, cfg.ha_ack
        ):
            self._send(topic, json.dumps(config), retain=True)
        if severity is not None:
            alerting = severity != SEVERITY_NONE
            self._send(self.state_topic(stream, device), "ON" if alerting else "OFF", retain=True)
            self._send(self.severity_topic(stream, device), severity, retain=True)
        self._announced.add((stream, device))

    def _publish_scores(self) -> int:
        """Each device's latest minute on its score topic (retained: Home Assistant shows
        it after its own restart), then forget them until they change; returns how many."""
        with self._scores_lock:
            scores, self._scores = self._scores, {}
        for (stream, device), b in sorted(scores.items()):
            payload = {
                "ratio": round(b.max_ratio, 4),
                "score": b.max_score,
                "threshold": b.threshold,
                "windows": b.windows,
                "anomalous": b.anomalous,
                "minute": datetime.fromtimestamp(b.start, UTC).isoformat(),
            }
            self._send(self.score_topic(stream, device), json.dumps(payload), retain=True)
        return len(scores)

    def _acknowledge_pressed(self) -> None:
        """Acknowledge the open alerts of every device whose button was pressed, through
        ``AlertStore.acknowledge`` like ``sentinel alerts ack`` (its outbox row says so)."""
        while True:
            try:
                stream, device = self._acks.get_nowait()
            except queue.Empty:
                return
            try:
                alerts = self._store.list_alerts(stream=stream, device=device, status="open")
                for alert in alerts:
                    self._store.acknowledge(alert.id, note=_ACK_NOTE)
            except (SQLAlchemyError, StoreError):
                self._acks.put((stream, device))  # tried again after the pause
                raise
            except KeyError:  # deleted meanwhile: nothing left to acknowledge
                alerts = []
            self.acknowledged += len(alerts)
            log.info(
                "ha_acknowledged",
                stream=stream,
                device=device,
                alerts=[a.id for a in alerts],
            )
            if alerts:
                self._wake.set()  # their acknowledgement is in the outbox now

    # -- paho callbacks (network thread: never block) -------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: Any,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            name = reason_code.getName()
            if name in FATAL_REFUSALS:
                self._fatal = name
                log.error("publisher_refused_fatal", reason=name, host=self._mqtt.host)
                client.disconnect()  # stops paho's reconnect loop
            else:
                log.warning("publisher_refused", reason=name)
            return
        self.connects += 1
        client.publish(self.status_topic, ONLINE, qos=self._config.qos, retain=True)
        if self._config.ha_discovery:
            # Home Assistant's birth message: re-announce when it (re)starts.
            client.subscribe(f"{self._config.discovery_prefix}/status", qos=1)
            if self._config.ha_ack:
                client.subscribe(ack_topic_filter(self._config.prefix), qos=1)
            self._announce_all.set()
        self._connected.set()
        self._wake.set()
        log.info("publisher_connected", status_topic=self.status_topic)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        fatal = fatal_connect_error(self._mqtt, connect_error())
        if fatal is not None:
            self._fatal = fatal
            log.error("publisher_tls_failed_fatal", host=self._mqtt.host, error=fatal)
            client.disconnect()  # stops paho's reconnect loop

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if self._connected.is_set():
            level = log.info if self._stopping.is_set() else log.warning
            level("publisher_disconnected", reason=str(reason_code))
        self._connected.clear()

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        # Called before paho marks the message published, so _drain sees this first.
        if getattr(reason_code, "is_failure", False):
            self._failed[mid] = str(reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == f"{self._config.discovery_prefix}/status":
            if message.payload == ONLINE.encode():
                self._announce_all.set()
                self._wake.set()
            return
        target = parse_ack_topic(self._config.prefix, message.topic)
        if target is None or not self._config.ha_ack:
            return
        # A retained command would acknowledge again at every reconnect: only live presses.
        if message.retain or message.payload != ACK_PAYLOAD.encode():
            log.warning(
                "ha_command_ignored",
                topic=message.topic,
                payload=bytes(message.payload[:64]).decode("utf-8", "replace"),
                retained=bool(message.retain),
            )
            return
        self._acks.put(target)
        self._wake.set()
