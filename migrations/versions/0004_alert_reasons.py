"""Alert severity, reasons and operator resolution; the audit_events table.

- ``alerts.severity`` ('info' | 'warning' | 'critical', existing rows 'info'),
  ``alerts.reason`` (JSON: threshold state at opening and the config hash),
  ``alerts.resolved_at`` and ``alerts.resolve_note``; status may now be 'resolved'.
- ``audit_events``: threshold re-baselines and operator resolutions.

SQLite cannot alter a CHECK constraint, so batch mode rebuilds ``alerts``; the views of
revision 0002 name that table and SQLite refuses to rename a table under a view, so they are
dropped first and created again afterwards from 0002's own definitions (they select named
columns, so they mean the same after this revision: ``open_alerts`` still lists only 'open'
and 'acknowledged', and a resolved alert counts in ``alerts_per_device_day`` like a closed
one).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STATUSES = "status IN ('open', 'acknowledged', 'closed')"
_NEW_STATUSES = "status IN ('open', 'acknowledged', 'closed', 'resolved')"
_SEVERITIES = "severity IN ('info', 'warning', 'critical')"
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _views() -> ModuleType:
    """Revision 0002, whose upgrade()/downgrade() create and drop the views."""
    path = Path(__file__).with_name("0002_alert_views.py")
    spec = importlib.util.spec_from_file_location("_sentinel_0002_views", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    views = _views()
    views.downgrade()
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("severity", sa.String(length=16), server_default="info", nullable=False)
        )
        batch_op.add_column(sa.Column("reason", _JSON, nullable=True))
        batch_op.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("resolve_note", sa.Text(), nullable=True))
        batch_op.drop_constraint(op.f("ck_alerts_status"), type_="check")
        batch_op.create_check_constraint(op.f("ck_alerts_status"), _NEW_STATUSES)
        batch_op.create_check_constraint(op.f("ck_alerts_severity"), _SEVERITIES)
    op.create_table(
        "audit_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("device", sa.String(length=128), nullable=False),
        sa.Column("detail", _JSON, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_audit_events_stream_device_at", ["stream", "device", "at"], unique=False
        )
    views.upgrade()


def downgrade() -> None:
    views = _views()
    views.downgrade()
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_stream_device_at")
    op.drop_table("audit_events")
    # A resolved alert was closed by a person; before 0004 that is just closed.
    op.execute("UPDATE alerts SET status = 'closed' WHERE status = 'resolved'")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_alerts_severity"), type_="check")
        batch_op.drop_constraint(op.f("ck_alerts_status"), type_="check")
        batch_op.create_check_constraint(op.f("ck_alerts_status"), _OLD_STATUSES)
        batch_op.drop_column("resolve_note")
        batch_op.drop_column("resolved_at")
        batch_op.drop_column("reason")
        batch_op.drop_column("severity")
    views.upgrade()
