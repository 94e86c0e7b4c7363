"""Turn MQTT payloads into readings: route the topic, then let the stream's format parse.

The parser runs on the MQTT network thread, so it is built for speed and never raises:
every problem becomes a :class:`~sentinel.records.Rejected` with a reason and a short
detail. Each stream's :class:`~sentinel.ingest.formats.PayloadFormat` is built once in the
constructor; what payloads look like is the formats' business (``sentinel/ingest/formats/``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from math import inf
from typing import Final

import structlog

from sentinel.config import StreamConfig
from sentinel.ingest.formats import FORMATS, PayloadFormat, Problem
from sentinel.ingest.topics import TopicRouter
from sentinel.records import Reading, Rejected, RejectReason

__all__ = ["MessageParser"]

# The database column's size: a longer name would fail every write that carries it.
MAX_DEVICE_NAME = 128

log = structlog.get_logger(__name__)

HEAD_CHARS: Final = 200


def _head(payload: bytes | bytearray) -> str:
    # 200 characters take at most 800 UTF-8 bytes; a replacement character is one byte.
    return payload[: HEAD_CHARS * 4].decode("utf-8", errors="replace")[:HEAD_CHARS]


class MessageParser:
    """Parse one MQTT message into readings and rejections; never raises.

    Checks run in this order: payload size (before decoding), topic, device name, then the
    stream's format, which decodes the payload once (``sentinel/ingest/formats/``).

    A reading more than ``max_future_skew`` seconds ahead of ``received_at`` is
    FUTURE_TIMESTAMP: accepted, it would become its device's last timestamp and every
    genuine reading after it would be out of order (issue #19). The default, no limit, is
    for callers without a clock of their own to compare with.
    """

    __slots__ = ("_formats", "_max_bytes", "_max_skew", "_router")

    def __init__(
        self,
        streams: Sequence[StreamConfig],
        *,
        max_payload_bytes: int,
        max_future_skew: float = inf,
    ) -> None:
        self._router = TopicRouter(streams)
        self._max_bytes = max_payload_bytes
        self._max_skew = max_future_skew
        # Keyed by identity: the router hands back these same StreamConfig objects.
        self._formats: dict[int, PayloadFormat] = {id(s): FORMATS[s.format](s) for s in streams}

    def parse(
        self, topic: str, payload: bytes | bytearray, received_at: float
    ) -> tuple[list[Reading], list[Rejected]]:
        """Readings in ``payload`` (sorted by time for SenML) and what was rejected."""
        try:
            return self._parse(topic, payload, received_at)
        except Exception as err:  # network-thread boundary: a parser bug must not raise
            log.exception("parser_failed", topic=topic)
            detail = f"parser error: {type(err).__name__}"
            return [], [Rejected(RejectReason.UNPARSABLE, topic, detail, _head(payload))]

    def _parse(
        self, topic: str, payload: bytes | bytearray, received_at: float
    ) -> tuple[list[Reading], list[Rejected]]:
        size = len(payload)
        if size > self._max_bytes:
            detail = f"{size} bytes, limit {self._max_bytes}"
            return [], [Rejected(RejectReason.OVERSIZED, topic, detail, _head(payload))]
        route = self._router.match(topic)
        if route is None:
            detail = "topic matches no configured stream"
            return [], [Rejected(RejectReason.UNKNOWN_TOPIC, topic, detail, _head(payload))]
        stream, device = route
        if len(device) > MAX_DEVICE_NAME:
            detail = f"device name of {len(device)} characters, limit {MAX_DEVICE_NAME}"
            return [], [Rejected(RejectReason.BAD_DEVICE, topic, detail, _head(payload))]
        readings, problems = self._formats[id(stream)].parse(payload, device, received_at)
        horizon = received_at + self._max_skew
        for reading in readings:  # a loop, not any(): this runs for every message
            if reading.ts > horizon:
                problems.extend(self._future(r, received_at) for r in readings if r.ts > horizon)
                readings = [r for r in readings if r.ts <= horizon]
                break
        if not problems:
            return readings, []
        head = _head(payload)
        return readings, [Rejected(reason, topic, detail, head) for reason, detail in problems]

    def _future(self, reading: Reading, received_at: float) -> Problem:
        when = datetime.fromtimestamp(reading.ts, UTC).isoformat()
        return Problem(
            RejectReason.FUTURE_TIMESTAMP,
            f"timestamp {when} is {reading.ts - received_at:.0f} s ahead of the receiving "
            f"clock; the limit is ingest.max_future_skew = {self._max_skew:g} s",
        )
