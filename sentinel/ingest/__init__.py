"""Ingest: route MQTT topics to streams and parse payloads into readings."""

from __future__ import annotations

from sentinel.ingest.parse import MessageParser
from sentinel.ingest.topics import TopicRouter

__all__ = ["MessageParser", "TopicRouter"]
