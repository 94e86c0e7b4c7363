"""device_judge_state (migration 0006): a partition's devices' judge state, saved by one
daemon and loaded by the next owner of the partition, on SQLite and PostgreSQL."""

from __future__ import annotations

from sentinel.records import DeviceJudgeState
from sentinel.store import AlertStore
from sentinel.store.judge_state import load_judge_state, save_judge_state


def test_saved_rows_load_by_partition_and_a_save_replaces_them(store: AlertStore) -> None:
    rows = [
        DeviceJudgeState("pump", "a", "v1", {"devices": {"normal_seen": 3}}),
        DeviceJudgeState("pump", "b", "v1", {"spikes": {"seen": 7}}),
        DeviceJudgeState("fan", "a", "v2", {"recurring": [[1, 2]]}),
    ]
    partition_of = {"a": 0, "b": 1}
    assert save_judge_state(store, rows, partition_of) == 3
    assert sorted(load_judge_state(store, 0), key=lambda r: r.stream) == [rows[2], rows[0]]
    assert load_judge_state(store, 1) == [rows[1]]
    assert load_judge_state(store, 2) == []

    newer = DeviceJudgeState("pump", "b", "v2", {"spikes": {"seen": 9}})
    save_judge_state(store, [newer], partition_of)
    assert load_judge_state(store, 1) == [newer]
    assert save_judge_state(store, [], {}) == 0
