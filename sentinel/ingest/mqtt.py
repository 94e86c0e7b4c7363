"""The MQTT source: a paho-mqtt 2.x client with a persistent session and manual acks.

It is a ``Source`` (``sentinel.ingest.source``): its acks carry the packet id as the token
and the connection's epoch, since packet ids mean nothing on another connection.

Delivery guarantee: we subscribe at QoS 1 on a persistent session (``clean_session=False`` on
3.1.1, ``clean_start=False`` plus a session expiry on MQTT 5) and acknowledge a message only
after everything it carried has been committed to the database. A daemon killed at any point
therefore gets every unacknowledged message again from the broker; readings it had already
committed are recognised by their timestamps and skipped as duplicates.

Flow control: on MQTT 5 our Receive Maximum equals the ingest queue's size, so a broker that
honours it never has more unacknowledged messages in flight to us than the queue can hold.
Not every broker does (see ``Pipeline.offer``), so a full queue makes ``on_message`` wait
briefly instead of dropping: TCP backpressure, bounded to a third of the keep-alive, which
this source passes to its sink with every delivery.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
import structlog

from sentinel.config import MqttConfig, StreamConfig
from sentinel.ingest.parse import MessageParser
from sentinel.ingest.source import Sink, SourceStatus
from sentinel.mqtt import (
    FATAL_REFUSALS,
    connect_error,
    connect_session,
    fatal_connect_error,
    session_client,
)
from sentinel.records import Ack, Delivery, Rejected, RejectReason

__all__ = ["MqttSessionState", "MqttSource"]

log = structlog.get_logger(__name__)


class MqttSessionState:
    """What an MQTT source reports of its session, whichever process holds the client
    (``MqttSource`` here, ``ProcessMqttSource`` in a child): set by its callbacks, read by
    health, metrics and tests on their own threads."""

    def __init__(self) -> None:
        self._connected = threading.Event()
        self._subscribed = threading.Event()  # the broker confirmed every subscription
        self._fatal: str | None = None
        self._stopping = False
        self.connects = 0
        self.unacked_dropped = 0  # acks from a previous connection, deliberately not sent

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def fatal(self) -> str | None:
        return self._fatal

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def wait_subscribed(self, timeout: float) -> bool:
        """True once the broker confirmed our subscriptions on the current connection."""
        return self._subscribed.wait(timeout)

    def status(self) -> SourceStatus:
        return SourceStatus("mqtt", self.connected, self.connects)

    def _session_lost(self, reason: str) -> None:
        """The connection ended: logged where it was up, quietly when we are stopping."""
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._subscribed.clear()
        if was_connected:
            level = log.info if self._stopping else log.warning
            level("mqtt_disconnected", reason=reason)


class MqttSource(MqttSessionState):
    """Subscribes to every stream and hands parsed deliveries to ``sink``.

    ``sink`` is called on paho's network thread and may block it only briefly (a third of
    the keep-alive, so the connection survives); it returns False when it has no room, and
    the message is then left unacknowledged for the broker to resend.
    ``on_fatal`` is called once, from the network thread, when the broker refuses us for
    a reason retrying will not fix.
    """

    def __init__(
        self,
        config: MqttConfig,
        streams: list[StreamConfig],
        *,
        parser: MessageParser,
        sink: Sink,
        receive_maximum: int,
        on_fatal: Callable[[str], None],
        password: str | None = None,
    ) -> None:
        super().__init__()
        self._config = config
        self._streams = streams
        self._parser = parser
        self._sink = sink
        self._sink_timeout = config.keepalive / 3
        self._receive_maximum = max(1, min(receive_maximum, 65_535))
        self._on_fatal = on_fatal
        self._password = password
        self._client: mqtt.Client | None = None
        self._epoch = 0  # bumped on every successful connect; tags acks
        self._paused = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self._config
        client = session_client(cfg, self._password)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client
        log.info(
            "mqtt_connecting",
            host=cfg.host,
            port=cfg.port,
            client_id=cfg.client_id,
            protocol=cfg.protocol,
            tls=cfg.tls.enabled,
        )
        connect_session(client, cfg, self._receive_maximum)
        client.loop_start()

    def pause(self) -> None:
        """Stop taking messages in; those arriving now stay unacknowledged at the broker."""
        self._paused.set()

    def stop(self, timeout: float = 5.0) -> None:
        client = self._client
        if client is None:
            return
        self._paused.set()
        self._stopping = True
        # DISCONNECT is queued behind any acknowledgements still waiting to go out.
        client.disconnect()
        deadline = time.monotonic() + timeout
        while self._connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        client.loop_stop()
        self._client = None

    # -- acknowledgements -----------------------------------------------------------------

    def ack(self, acks: Iterable[Ack]) -> None:
        """Acknowledge committed messages that arrived on the current connection."""
        for ack in acks:
            client = self._client
            if client is None or ack.epoch != self._epoch:
                # The broker will resend it; our duplicate check will recognise it.
                self.unacked_dropped += 1
                continue
            client.ack(ack.token, 1)

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
                log.error("mqtt_refused_fatal", reason=name, host=self._config.host)
                self._stop_fatally(client, f"{FATAL_REFUSALS[name]} ({name})")
            else:
                log.warning("mqtt_refused", reason=name)
            return
        self._epoch += 1
        self.connects += 1
        self._connected.set()
        log.info(
            "mqtt_connected",
            session_present=bool(flags.session_present),
            epoch=self._epoch,
        )
        # Subscribing on every connect keeps subscriptions across broker restarts that lost
        # our session; with a kept session it is harmless.
        qos = int(self._config.qos)
        client.subscribe([(s.subscription, qos) for s in self._streams])

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        cfg = self._config
        err = connect_error()
        fatal = fatal_connect_error(cfg, err)
        if fatal is not None:
            log.error("mqtt_tls_failed_fatal", host=cfg.host, port=cfg.port, error=fatal)
            self._stop_fatally(client, fatal)
            return
        why = str(err) if err is not None else None  # e.g. connection refused
        log.warning("mqtt_connect_failed", host=cfg.host, port=cfg.port, error=why)

    def _stop_fatally(self, client: mqtt.Client, reason: str) -> None:
        self._fatal = reason
        client.disconnect()  # stops paho's reconnect loop
        self._on_fatal(reason)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: Any,
        properties: Any,
    ) -> None:
        self._session_lost(str(reason_code))

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[Any],
        properties: Any,
    ) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("mqtt_subscribe_refused", reasons=failed)
        else:
            self._subscribed.set()
            log.info("mqtt_subscribed", topics=[s.subscription for s in self._streams])

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._paused.is_set():
            return  # left unacknowledged: redelivered after we reconnect
        try:
            readings, rejected = self._parser.parse(message.topic, message.payload, time.time())
        except Exception as err:  # callback boundary: the parser should never raise
            log.exception("parser_crashed", topic=message.topic)
            readings, rejected = (
                [],
                [Rejected(RejectReason.UNPARSABLE, message.topic, f"parser error: {err!r}")],
            )
        ack = Ack(message.mid, self._epoch) if message.qos > 0 else None
        delivery = Delivery(
            topic=message.topic,
            readings=tuple(readings),
            rejected=tuple(rejected),
            ack=ack,
            received_at=time.time(),
        )
        if not self._sink(delivery, self._sink_timeout):
            # QoS 0 is gone; QoS 1 stays unacknowledged and the broker resends it after the
            # next reconnect. Either way the pipeline has been stuck for a long time.
            log.error("ingest_queue_full", topic=message.topic, qos=message.qos)
