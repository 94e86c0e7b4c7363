"""Publishing alert events on MQTT from the outbox, with Home Assistant discovery."""

from __future__ import annotations

__all__: list[str] = []
