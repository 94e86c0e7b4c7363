"""The source protocol: where deliveries come from, and where their acknowledgements go.

A source holds a connection to something that delivers messages at least once (an MQTT
broker; NATS JetStream is next, issue #24), hands each message, parsed, to a ``Sink`` on its
own thread, and acknowledges it once everything it carried is committed. The app, health
and metrics speak only to this protocol, so a new source is one module beside
``sentinel.ingest.mqtt`` (the shape of Frigate's ``comms/base_communicator.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sentinel.records import Ack, Delivery

__all__ = ["Sink", "Source", "SourceStatus"]

Sink = Callable[[Delivery, float], bool]
"""Where a source puts a delivery: ``sink(delivery, timeout)`` may block the source's thread
up to ``timeout`` seconds for room, which only the source can size (MQTT: well under the
keep-alive). False when there was none: the message stays unacknowledged, to come again."""


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """What health and metrics report about a source, read on their own threads."""

    name: str  # "mqtt": names the source's health check and metrics
    connected: bool
    connects: int  # successful connections since start


@runtime_checkable
class Source(Protocol):
    """A connection that delivers messages at least once and takes acknowledgements back.

    Its constructor does no I/O and takes the ``Sink``; each ``Delivery.ack`` it makes is
    an ``Ack`` that only it interprets.
    """

    def start(self) -> None:
        """Connect and take messages in; reconnects on its own until stopped."""

    def pause(self) -> None:
        """Take no more messages in; those arriving stay unacknowledged, to come again."""

    def stop(self, timeout: float = 5.0) -> None:
        """Send the acknowledgements already given, then disconnect, within ``timeout``."""

    @property
    def connected(self) -> bool:
        """True while connected (a refused connection is not one)."""

    def wait_subscribed(self, timeout: float) -> bool:
        """True once messages flow on the current connection, False after ``timeout``."""

    def ack(self, acks: Iterable[Ack]) -> None:
        """Acknowledge committed messages, given in the order they arrived. Acks from an
        earlier connection are dropped where they could name another message: the message
        comes again and is recognised as a duplicate."""

    def status(self) -> SourceStatus:
        """Connection state and counters, for health and metrics."""
