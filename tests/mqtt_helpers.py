"""An MQTT consumer of our own, as a client of the daemon's alert events would be."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from simulators.broker import PrivateBroker
from tests.e2e_helpers import wait_for


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Consumer:
    """Subscribes at QoS 1; ``persistent`` keeps its session (and queue) across outages."""

    broker: PrivateBroker
    topic: str
    persistent: bool = False
    messages: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"consumer-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self._client.reconnect_delay_set(1, 1)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def start(self) -> Consumer:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600 if self.persistent else 0
        self._client.connect(
            self.broker.host,
            self.broker.port,
            clean_start=not self.persistent,
            properties=props,
        )
        self._client.loop_start()
        assert self._subscribed.wait(60), "the consumer got no SUBACK"
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            found = [m for m in self.messages if "/alerts/" in m.topic]
        return [m.json() for m in found]


@contextmanager
def consuming(broker: PrivateBroker, topic: str, persistent: bool = False) -> Iterator[Consumer]:
    consumer = Consumer(broker, topic, persistent).start()
    try:
        yield consumer
    finally:
        consumer.stop()


def retained(broker: PrivateBroker, topic: str, count: int = 1) -> list[Received]:
    """What a newcomer gets on subscribing: the retained messages."""
    with consuming(broker, topic) as newcomer:
        wait_for(lambda: len(newcomer.messages) >= count, 5, f"retained messages on {topic}")
        time.sleep(0.2)  # a retained message beyond the expected count would show here
        return list(newcomer.messages)
