"""Alerts and progress rows the store tests write, and the queries docs/SQL.md documents."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

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


# -- the queries in docs/SQL.md ------------------------------------------------------------

SQL_DOC = Path(__file__).resolve().parents[2] / "docs" / "SQL.md"
_QUERY = re.compile(
    r"<!-- query: (?P<name>\w+) dialect=(?P<dialect>both|sqlite|postgresql) -->\n"
    r"```sql\n(?P<sql>.*?)```",
    re.DOTALL,
)
_SQLITE_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?$")


def _norm(value: Any) -> Any:
    """One Python value per meaning: SQLite's timestamp text and PostgreSQL's timestamptz
    both become aware UTC datetimes, PostgreSQL's numeric becomes float."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, str) and _SQLITE_TIMESTAMP.match(value):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    if isinstance(value, Decimal):
        return float(value)
    return value


def run_sql(store: AlertStore, sql: str) -> list[dict[str, Any]]:
    # Run the text as a user's client would: no bind-parameter parsing by SQLAlchemy.
    with store.engine.connect() as conn:
        result = conn.exec_driver_sql(sql.strip().rstrip(";"))
        return [{k: _norm(v) for k, v in row.items()} for row in result.mappings()]


def documented_queries(dialect: str) -> dict[str, str]:
    queries: dict[str, str] = {}
    for match in _QUERY.finditer(SQL_DOC.read_text(encoding="utf-8")):
        if match["dialect"] in ("both", dialect):
            assert match["name"] not in queries, f"query {match['name']} twice for {dialect}"
            queries[match["name"]] = match["sql"]
    return queries
