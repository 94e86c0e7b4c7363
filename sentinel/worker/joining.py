"""Devices that joined a stream after its model, while they learn (issue #21).

A stream's first devices are learnt for ``cold_start.span`` of its time before the model
judges them (the cold start, then the warm start). A device the store has nothing of that
joins later learns for as long: the pipeline judges its windows with alerts suppressed
until one ends ``span`` after its first reading. Each such device's first reading time is
kept here, per stream, and saved with the judge's state (``thresholds.json``, or the
shared database with ``[cluster]``), so a restart or a partition's move does not end its
learning early.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["JoiningDevices"]


class JoiningDevices:
    """Per stream, each learning device's first reading time (epoch seconds)."""

    def __init__(self) -> None:
        self._first: dict[str, dict[str, float]] = {}

    def begin(self, stream: str, device: str, ts: float) -> None:
        self._first.setdefault(stream, {})[device] = ts

    def first(self, stream: str, device: str) -> float | None:
        """The device's first reading time while it learns; None once it is judged."""
        return self._first.get(stream, {}).get(device)

    def end(self, stream: str, device: str) -> None:
        self._first.get(stream, {}).pop(device, None)

    def any(self, stream: str) -> bool:
        return bool(self._first.get(stream))

    def count(self, stream: str) -> int:
        """How many of the stream's devices learn now; safe from other threads."""
        return len(self._first.get(stream, ()))

    def snapshot(self, stream: str) -> dict[str, float]:
        return dict(self._first.get(stream, {}))

    def restore(self, stream: str, saved: Mapping[str, Any]) -> None:
        """Take back ``snapshot``'s devices (added to those held); raises on a malformed one."""
        self._first.setdefault(stream, {}).update({str(d): float(t) for d, t in saved.items()})
