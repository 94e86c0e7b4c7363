"""Route an MQTT topic to the stream whose topic pattern it matches.

A pattern is an MQTT topic filter with exactly one level written ``{device}``; that level
matches like ``+`` and captures the device name. ``+`` matches exactly one level and ``#``
(last level only) matches the rest, zero or more levels, as in MQTT 3.1.1 §4.7.1.
"""

from __future__ import annotations

from collections.abc import Sequence

from sentinel.config import StreamConfig

__all__ = ["TopicRouter"]

# Topics remembered before the cache starts over: room for a large fleet's devices.
CACHE_SIZE = 65_536

_PLUS = "+"
_HASH = "#"
_DEVICE = "{device}"


class _Route:
    """One stream's pattern, split once so matching never re-parses it."""

    __slots__ = ("device_index", "levels", "min_levels", "multi", "stream", "wild_first")

    def __init__(self, stream: StreamConfig) -> None:
        levels = stream.topic.split("/")
        self.stream = stream
        self.multi = levels[-1] == _HASH
        fixed = levels[:-1] if self.multi else levels
        self.device_index = fixed.index(_DEVICE)
        # Literal levels to compare; None for levels that match anything (+, {device}).
        self.levels: tuple[str | None, ...] = tuple(
            None if level in (_PLUS, _DEVICE) else level for level in fixed
        )
        self.min_levels = len(fixed)
        # MQTT §4.7.2: filters starting with a wildcard do not match topics starting with $.
        self.wild_first = levels[0] in (_PLUS, _HASH, _DEVICE)

    def match(self, levels: list[str], dollar: bool) -> str | None:
        n = len(levels)
        if n != self.min_levels and not (self.multi and n > self.min_levels):
            return None
        if dollar and self.wild_first:
            return None
        for want, got in zip(self.levels, levels, strict=False):
            if want is not None and want != got:
                return None
        device = levels[self.device_index]
        return device or None


class TopicRouter:
    """Find the stream a topic belongs to and the device it names.

    Streams are tried in configured order and the first match wins, so when two patterns
    overlap (``a/{device}/#`` and ``a/{device}/b``) put the more specific one first.
    A topic whose ``{device}`` level is empty (``a//b``) matches no stream.
    """

    __slots__ = ("_cache", "_routes")

    def __init__(self, streams: Sequence[StreamConfig]) -> None:
        self._routes = tuple(_Route(stream) for stream in streams)
        # A fleet sends the same few topics over and over; remembering answers saves the
        # split and the level comparisons. Dict operations are atomic under the GIL, so
        # concurrent callers at worst compute an answer twice.
        self._cache: dict[str, tuple[StreamConfig, str] | None] = {}

    def match(self, topic: str) -> tuple[StreamConfig, str] | None:
        """The stream for ``topic`` and the device captured by ``{device}``, or None."""
        try:
            return self._cache[topic]
        except KeyError:
            pass
        found = self._match(topic)
        if len(self._cache) >= CACHE_SIZE:  # rare; cheaper than LRU bookkeeping
            self._cache.clear()
        self._cache[topic] = found
        return found

    def _match(self, topic: str) -> tuple[StreamConfig, str] | None:
        levels = topic.split("/")
        dollar = topic.startswith("$")
        for route in self._routes:
            device = route.match(levels, dollar)
            if device is not None:
                return route.stream, device
        return None
