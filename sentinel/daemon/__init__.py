"""The daemon's wiring and observability: the app, control socket, health, metrics, logs, reload."""

from __future__ import annotations

__all__: list[str] = []
