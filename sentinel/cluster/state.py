"""The judge state of a cluster member's devices, kept in the shared database.

The pipeline saves through this (``sentinel.worker.snapshots.SharedJudgeState``) at the
snapshot interval, only for devices whose partition this daemon owns at that moment: a
partition given away must not have its new owner's state overwritten by the old one's.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from sentinel.ingest.subjects import device_partition
from sentinel.records import DeviceJudgeState
from sentinel.store import AlertStore
from sentinel.store.judge_state import save_judge_state

__all__ = ["ClusterJudgeState"]


class ClusterJudgeState:
    """``owned`` returns the partitions this daemon holds now (read on the worker's thread)."""

    def __init__(
        self, store: AlertStore, partitions: int, owned: Callable[[], Collection[int]]
    ) -> None:
        self._store = store
        self._partitions = partitions
        self._owned = owned

    def owns(self, device: str) -> bool:
        return device_partition(device, self._partitions) in self._owned()

    def save(self, rows: Sequence[DeviceJudgeState]) -> None:
        partition_of = {r.device: device_partition(r.device, self._partitions) for r in rows}
        save_judge_state(self._store, rows, partition_of)
