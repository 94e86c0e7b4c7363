"""Views for plain-SQL users: open_alerts, alerts_per_device_day, time_to_acknowledge.

The views mean the same on SQLite and PostgreSQL; only the date arithmetic differs, so each
dialect gets its own two expressions below (docs/SQL.md documents the columns):

- durations are seconds as floating point, rounded to the millisecond: SQLite's
  ``julianday()`` is a double of days (about 50 µs of resolution at today's dates), so both
  dialects round to 3 decimals and return the same number for the same row;
- ``day`` is the UTC calendar date of ``started_at`` as ISO text ``'YYYY-MM-DD'`` on both
  (SQLite has no DATE type, and text compares the same way on both).

Views are not in ``Base.metadata``: the reflection behind ``alembic check`` lists tables only,
so these add no drift.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = ("time_to_acknowledge", "alerts_per_device_day", "open_alerts")


def _seconds(dialect: str, start: str, end: str) -> str:
    """SQL for ``end - start`` in seconds, rounded to the millisecond, NULL if either is."""
    if dialect == "postgresql":
        # EXTRACT gives numeric (exact microseconds); back to double like SQLite's REAL.
        return (
            f"CAST(ROUND(CAST(EXTRACT(EPOCH FROM ({end} - {start})) AS NUMERIC), 3)"
            " AS DOUBLE PRECISION)"
        )
    return f"ROUND((julianday({end}) - julianday({start})) * 86400.0, 3)"


def _utc_day(dialect: str, column: str) -> str:
    """SQL for the UTC calendar date of a timestamp column as 'YYYY-MM-DD' text."""
    if dialect == "postgresql":
        # AT TIME ZONE 'UTC' so the session's TimeZone setting cannot move the day.
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    # SQLAlchemy stores SQLite datetimes as UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'.
    return f"date({column})"


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    op.execute(
        f"""
        CREATE VIEW open_alerts AS
        SELECT
            id,
            stream,
            device,
            status,
            started_at,
            updated_at,
            {_seconds(dialect, "started_at", "updated_at")} AS duration_seconds,
            peak_score,
            threshold,
            peak_score / NULLIF(threshold, 0) AS peak_over_threshold,
            model_version,
            acknowledged_at
        FROM alerts
        WHERE status IN ('open', 'acknowledged')
        """
    )
    op.execute(
        f"""
        CREATE VIEW alerts_per_device_day AS
        SELECT
            stream,
            device,
            {_utc_day(dialect, "started_at")} AS day,
            COUNT(*) AS alerts,
            SUM(windows) AS anomalous_windows,
            SUM({_seconds(dialect, "started_at", "COALESCE(ended_at, updated_at)")})
                AS total_alert_seconds
        FROM alerts
        GROUP BY stream, device, {_utc_day(dialect, "started_at")}
        """
    )
    op.execute(
        f"""
        CREATE VIEW time_to_acknowledge AS
        SELECT
            id,
            stream,
            device,
            started_at,
            acknowledged_at,
            {_seconds(dialect, "started_at", "acknowledged_at")} AS seconds_to_ack
        FROM alerts
        """
    )


def downgrade() -> None:
    for view in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
