"""Fencing epochs: a member that lost its ownership session commits nothing of its
partitions once a new owner has taken them (issue #24).

The advisory lock (sentinel.cluster.ownership) says who should read a partition, but when
the server ends a member's session first, the member learns it only at its next look, and
its writer may still commit (and acknowledge) readings the new owner also counts. The fence
is PostgreSQL's own row lock: a new owner bumps the partition's row in ``partition_epochs``
(its own committed transaction, after the advisory lock, before it reads), and every writer
transaction that commits a partition's readings first takes ``FOR SHARE`` on the rows of
the partitions it touches and checks they still hold the epochs this member acquired with.
The bump waits for an old writer transaction in flight (which commits first; the new owner
reads the devices' progress after its bump), or the old transaction sees the new epoch and
rolls back, and the writer drops that partition's part unacknowledged: JetStream
redelivers it to the new owner. One small query per transaction; none without a cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import structlog
from sqlalchemy import Connection, bindparam, text

from sentinel.ingest.subjects import device_partition

__all__ = ["PartitionFence"]

log = structlog.get_logger(__name__)

_BUMP = text(
    "INSERT INTO partition_epochs (group_key, partition, epoch, member, updated_at) "
    "VALUES (:key, :partition, 1, :member, now()) "
    "ON CONFLICT (group_key, partition) DO UPDATE SET "
    "epoch = partition_epochs.epoch + 1, member = excluded.member, "
    "updated_at = excluded.updated_at "
    "RETURNING epoch"
)
_CHECK = text(
    "SELECT partition, epoch FROM partition_epochs "
    "WHERE group_key = :key AND partition IN :partitions FOR SHARE"
).bindparams(bindparam("partitions", expanding=True))


class PartitionFence:
    """The epochs this member acquired its partitions with; thread-safe.

    ``acquire`` runs on the ownership thread (its session), ``check`` inside the writer's
    transactions (sentinel.store.AlertStore.write), ``forget`` once a partition is given
    back or dropped.
    """

    def __init__(self, key: int, partitions: int, member: str) -> None:
        self._key = key
        self._partitions = partitions
        self._member = member
        self._epochs: dict[int, int] = {}
        self._lock = threading.Lock()
        self.fenced = 0  # partitions' parts of write transactions dropped, for stats

    def partition_of(self, device: str) -> int:
        return device_partition(device, self._partitions)

    def acquire(self, conn: Connection, partition: int) -> int:
        """Bump the partition's epoch and remember it; ``conn`` autocommits, so the bump
        is committed when this returns (it waits for writers holding the row's share lock)."""
        epoch = int(
            conn.execute(
                _BUMP, {"key": self._key, "partition": partition, "member": self._member}
            ).scalar_one()
        )
        with self._lock:
            self._epochs[partition] = epoch
        log.info("cluster_epoch", partition=partition, epoch=epoch)
        return epoch

    def forget(self, partition: int) -> None:
        with self._lock:
            self._epochs.pop(partition, None)

    def epochs(self) -> dict[int, int]:
        with self._lock:
            return dict(self._epochs)

    def check(self, conn: Connection, devices: Iterable[str]) -> frozenset[int]:
        """The partitions of ``devices`` this member may no longer commit (another took
        them, or this member holds no epoch of them), after share-locking their rows in
        the transaction ``conn`` is in: one query for all of them."""
        wanted = {self.partition_of(d) for d in devices}
        if not wanted:
            return frozenset()
        mine = self.epochs()
        rows = conn.execute(_CHECK, {"key": self._key, "partitions": sorted(wanted)}).all()
        current = {int(r.partition): int(r.epoch) for r in rows}
        stale = frozenset(p for p in wanted if p not in mine or current.get(p) != mine[p])
        if stale:
            with self._lock:
                self.fenced += len(stale)
            log.warning(
                "cluster_fenced",
                partitions=sorted(stale),
                held={p: mine.get(p) for p in sorted(stale)},
                current={p: current.get(p) for p in sorted(stale)},
            )
        return stale
