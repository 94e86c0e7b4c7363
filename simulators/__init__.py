"""Simulated sensor fleets, CSV replay and a private MQTT broker for tests and the demo."""

from __future__ import annotations

__all__ = ["broker", "fleet", "replay", "synthetic"]
