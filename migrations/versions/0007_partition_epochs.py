"""Fencing epochs of cluster partitions, for a member whose database session was lost.

- ``partition_epochs``: per (group key, partition) a counter each new owner bumps when it
  takes the partition (after its advisory lock, before it reads), and the member that did.
  A writer transaction that commits a partition's readings first takes a share lock on the
  partition's row and checks the epoch is still the one its member acquired with, so a
  member that lost its ownership session cannot commit (and acknowledge) readings the new
  owner also counts (issue #24, docs/ARCHITECTURE.md *Scaling out*). Unused without
  ``[cluster]``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "partition_epochs",
        sa.Column("group_key", sa.BigInteger(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("member", sa.String(length=128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("group_key", "partition", name=op.f("pk_partition_epochs")),
    )


def downgrade() -> None:
    op.drop_table("partition_epochs")
