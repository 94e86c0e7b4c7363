"""A subscriber that collects what the simulators publish, for their integration tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulators.broker import PrivateBroker


class Collected(list[mqtt.MQTTMessage]):
    def wait_for(self, count: int, timeout: float) -> None:
        """Poll until ``count`` messages arrived or ``timeout`` passed (no sleep-and-hope)."""
        deadline = time.monotonic() + timeout
        while len(self) < count and time.monotonic() < deadline:
            time.sleep(0.02)


@contextmanager
def collecting(broker: PrivateBroker, topic: str = "plant/+/pump") -> Iterator[Collected]:
    """Subscribe at QoS 1, wait for the SUBACK, yield the growing list of messages."""
    received = Collected()
    subscribed = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.on_message = lambda _c, _u, msg: received.append(msg)
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    try:
        assert subscribed.wait(60), "the test subscriber got no SUBACK"
        yield received
    finally:
        sub.disconnect()
        sub.loop_stop()
