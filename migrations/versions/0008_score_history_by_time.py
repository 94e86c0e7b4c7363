"""Score history keyed by the minute first: (bucket, stream, device), and a device index.

Every commit upserts the current minute of each device it judged. Keyed by (stream,
device, bucket), each of those rows was the newest on a page of its device's own, so at
1,000 pumps with a day of history a commit rewrote some 40 pages, and the database wrote
2.1 MB/s where it wrote 0.4 with an empty table (docs/BENCHMARKS.md, "Score history keyed
by time"). Keyed by the minute first, the current minute's rows lie together at the end
of the table; ``ix_score_history_device`` (stream, device, bucket) serves a device's time
range and changes only when a device's minute is new. The key now serves the pruning, so
``ix_score_history_bucket`` goes.

SQLite cannot change a table's key: the table is copied, in key order, into a new one
(WITHOUT ROWID as before) inside the migration's transaction, and its views are made again
over it; about a second per million rows. PostgreSQL changes the constraint in place.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = "stream, device, bucket, windows, anomalous, max_score, threshold, max_ratio"


def _timestamp(dialect: str, epoch: str) -> str:
    """SQL for epoch seconds as a UTC timestamp (as 0005 made the views)."""
    if dialect == "postgresql":
        return f"to_timestamp({epoch})"
    return f"datetime({epoch}, 'unixepoch')"


def _views(dialect: str) -> None:
    """The views 0005 made, over the table of that name (SQLite drops them with it)."""
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


def _copy_sqlite(key: Sequence[str]) -> None:
    """Copy score_history into a table of the same columns keyed by ``key``."""
    for view in ("score_history_hourly", "score_history_minutes"):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.create_table(
        "score_history_new",
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("device", sa.String(length=128), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("windows", sa.Integer(), nullable=False),
        sa.Column("anomalous", sa.Integer(), nullable=False),
        sa.Column("max_score", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("max_ratio", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(*key, name="pk_score_history"),
        sqlite_with_rowid=False,
    )
    op.execute(
        f"INSERT INTO score_history_new ({COLUMNS}) "
        f"SELECT {COLUMNS} FROM score_history ORDER BY {', '.join(key)}"
    )
    op.drop_table("score_history")  # and its indexes
    op.rename_table("score_history_new", "score_history")


def _rekey(key: Sequence[str]) -> None:
    """Key score_history by ``key``: SQLite copies the table (its indexes go with the old
    one) and makes the views again; PostgreSQL swaps the constraint in place."""
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        _copy_sqlite(key)
        _views(dialect)
    else:
        op.drop_constraint("pk_score_history", "score_history", type_="primary")
        op.create_primary_key("pk_score_history", "score_history", list(key))


def upgrade() -> None:
    if op.get_context().dialect.name != "sqlite":  # SQLite's goes with the copied table
        op.drop_index("ix_score_history_bucket", table_name="score_history")
    _rekey(("bucket", "stream", "device"))
    op.create_index(
        "ix_score_history_device", "score_history", ["stream", "device", "bucket"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_score_history_device", table_name="score_history")
    _rekey(("stream", "device", "bucket"))
    op.create_index("ix_score_history_bucket", "score_history", ["bucket"], unique=False)
