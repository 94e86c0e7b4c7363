"""Per-device judge state in the database, for daemons that hand partitions to each other.

- ``device_judge_state``: per (stream, device) what the judge learnt of it (its threshold,
  noise scales, remembered spikes and excursions, learnt constants and relations: the
  per-device part of ``thresholds.json``), the model version it was learnt on, and the
  NATS partition the device is in. With ``[cluster]`` on, a daemon saves its partitions'
  devices here at the snapshot interval and when it hands a partition over; the next
  owner loads the partition's rows when it takes it (issue #24). Unused otherwise.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device_judge_state",
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("device", sa.String(length=128), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column(
            "state",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("stream", "device", name=op.f("pk_device_judge_state")),
    )
    op.create_index(
        "ix_device_judge_state_partition", "device_judge_state", ["partition"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_device_judge_state_partition", table_name="device_judge_state")
    op.drop_table("device_judge_state")
