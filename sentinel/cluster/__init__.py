"""Several daemons sharing one fleet: partition ownership on the shared PostgreSQL."""

from __future__ import annotations

from sentinel.cluster.ownership import PartitionOwnership, owners

__all__ = ["PartitionOwnership", "owners"]
