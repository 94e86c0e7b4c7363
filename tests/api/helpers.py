"""Alerts the API tests find in the database before the daemon starts."""

from __future__ import annotations

from sentinel.records import AlertStatus, Severity, WriteBatch
from sentinel.store import AlertStore
from tests.store.helpers import T0, make_alert

TOKEN = "s3cret-token-for-tests"


def seed_alerts(url: str) -> None:
    """Three alerts, newest first by start: p2 (closed, critical), p1 (open), p3 (open)."""
    store = AlertStore(url)
    store.open()
    try:
        store.migrate()
        store.write(
            [
                WriteBatch(
                    alerts=(
                        make_alert("a-1", device="p1", started_at=T0 + 100),
                        make_alert(
                            "a-2",
                            device="p2",
                            status=AlertStatus.CLOSED,
                            started_at=T0 + 200,
                            ended_at=T0 + 260,
                            severity=Severity.CRITICAL,
                        ),
                        make_alert("a-3", device="p3", started_at=T0),
                    )
                )
            ]
        )
    finally:
        store.close()
