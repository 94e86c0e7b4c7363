"""Offline tools (replay, CSV reading, evaluation, report): the daemon never imports them."""

from __future__ import annotations

__all__: list[str] = []
