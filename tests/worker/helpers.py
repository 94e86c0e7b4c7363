"""Shared by the worker's end-to-end check tests: one device's rows as deliveries, and the
alerts as first opened."""

from __future__ import annotations

import time

import numpy as np

from sentinel.records import Alert, Delivery, Reading

__all__ = ["deliveries", "opened"]


def deliveries(values: np.ndarray) -> list[Delivery]:
    """Rows of (T, F) ``values`` as device d1's readings on stream "pump", one a second."""
    return [
        Delivery(
            topic="p/d1",
            readings=(Reading("pump", "d1", float(t), tuple(float(v) for v in row)),),
            rejected=(),
            ack=None,
            received_at=time.time(),
        )
        for t, row in enumerate(values)
    ]


def opened(alerts: list[Alert]) -> list[Alert]:
    """Each alert as it was first seen (opened), in order."""
    first: dict[str, Alert] = {}
    for alert in alerts:
        first.setdefault(alert.uid, alert)
    return list(first.values())
