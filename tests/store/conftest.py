"""Database fixtures: every store test runs on SQLite and, when a URL is given, PostgreSQL.

PostgreSQL tests need ``SENTINEL_TEST_POSTGRES_URL`` (an account allowed to create
databases, e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/test``) and are skipped
without it; each test gets a fresh ``sentinel_test_<random>`` database from the
``postgres_url`` fixture in ``tests/conftest.py``, dropped afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel.records import (
    Alert,
    AlertReason,
    AlertStatus,
    DeviceProgress,
    FeatureContribution,
    Severity,
)
from sentinel.store import AlertStore

T0 = 1_700_000_000.0  # epoch seconds; quarter seconds below are exact in floats and datetimes


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        # A directory that does not exist yet: open() must create it.
        return f"sqlite:///{tmp_path / 'state' / 'sentinel.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[AlertStore]:
    """An open store whose schema was built by the migrations."""
    alert_store = AlertStore(db_url, busy_timeout_ms=1000)
    alert_store.open()
    alert_store.migrate()
    try:
        yield alert_store
    finally:
        alert_store.close()


def make_alert(
    uid: str = "a-1",
    *,
    stream: str = "pump",
    device: str = "p1",
    status: AlertStatus = AlertStatus.OPEN,
    started_at: float = T0,
    updated_at: float | None = None,
    ended_at: float | None = None,
    peak_score: float = 2.5,
    threshold: float = 1.0,
    windows: int = 2,
    top_features: tuple[FeatureContribution, ...] = (
        FeatureContribution("current", 0.75),
        FeatureContribution("vibration", 0.25),
    ),
    model_version: str = "pump-v1",
    severity: Severity = Severity.INFO,
    reason: AlertReason | None = None,
) -> Alert:
    return Alert(
        uid=uid,
        stream=stream,
        device=device,
        status=status,
        started_at=started_at,
        updated_at=started_at if updated_at is None else updated_at,
        ended_at=ended_at,
        peak_score=peak_score,
        threshold=threshold,
        top_features=top_features,
        model_version=model_version,
        windows=windows,
        severity=severity,
        reason=reason,
    )


def make_progress(
    device: str = "p1", last_ts: float = T0, readings: int = 1, stream: str = "pump"
) -> DeviceProgress:
    return DeviceProgress(stream=stream, device=device, last_ts=last_ts, readings=readings)
