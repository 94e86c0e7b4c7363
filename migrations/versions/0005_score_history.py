"""Score history: per device and minute, windows, anomalous windows, max score, threshold.

- ``score_history``: written by the daemon with the readings behind it (issue #25), keyed by
  (stream, device, bucket) where ``bucket`` is the minute's first second in epoch seconds;
  WITHOUT ROWID on SQLite, so its key is stored once.
- Views (docs/SQL.md): ``score_history_minutes`` (the minute as a UTC timestamp) and
  ``score_history_hourly`` (rolled up per hour, for charts over weeks). On SQLite the
  timestamp is text ``'YYYY-MM-DD HH:MM:SS'``, on PostgreSQL a ``timestamptz``; both compare
  in time order.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = ("score_history_hourly", "score_history_minutes")


def _timestamp(dialect: str, epoch: str) -> str:
    """SQL for epoch seconds as a UTC timestamp (text on SQLite, like its other times)."""
    if dialect == "postgresql":
        return f"to_timestamp({epoch})"
    return f"datetime({epoch}, 'unixepoch')"


def upgrade() -> None:
    op.create_table(
        "score_history",
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("device", sa.String(length=128), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("windows", sa.Integer(), nullable=False),
        sa.Column("anomalous", sa.Integer(), nullable=False),
        sa.Column("max_score", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("max_ratio", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("stream", "device", "bucket", name=op.f("pk_score_history")),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_score_history_bucket", "score_history", ["bucket"], unique=False)
    dialect = op.get_context().dialect.name
    op.execute(
        f"""
        CREATE VIEW score_history_minutes AS
        SELECT
            stream,
            device,
            {_timestamp(dialect, "bucket")} AS minute,
            windows,
            anomalous,
            max_score,
            threshold,
            max_ratio
        FROM score_history
        """
    )
    hour = "(bucket - bucket % 3600)"
    op.execute(
        f"""
        CREATE VIEW score_history_hourly AS
        SELECT
            stream,
            device,
            {_timestamp(dialect, hour)} AS hour,
            SUM(windows) AS windows,
            SUM(anomalous) AS anomalous,
            MAX(max_score) AS max_score,
            MAX(max_ratio) AS max_ratio,
            COUNT(*) AS minutes
        FROM score_history
        GROUP BY stream, device, {hour}
        """
    )


def downgrade() -> None:
    for view in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.drop_index("ix_score_history_bucket", table_name="score_history")
    op.drop_table("score_history")
