"""DeviceTable: which devices the worker holds, their cap, and recalling the others."""

from __future__ import annotations

import threading
from collections.abc import Collection

import pytest

from sentinel.errors import StoreError
from sentinel.records import DeviceProgress, Reading
from sentinel.worker.devices import Abandoned, DeviceTable


def reading(device: str, stream: str = "pump") -> Reading:
    return Reading(stream, device, 1.0, (0.0,))


def test_admits_up_to_each_streams_limit_and_frees_a_slot_on_removal() -> None:
    table = DeviceTable({"pump": 2, "fan": 1}, None, threading.Event())
    assert table.admit(("pump", "a"), None, 0.0) is not None
    assert table.admit(("pump", "b"), None, 0.0) is not None
    assert table.admit(("pump", "c"), None, 0.0) is None
    assert table.admit(("fan", "a"), None, 0.0) is not None  # limits are per stream
    assert table.held() == {"pump": 2, "fan": 1}
    table.remove(("pump", "a"))
    table.remove(("pump", "a"))  # twice: counted once
    assert table.held() == {"pump": 1, "fan": 1}
    assert table.admit(("pump", "c"), None, 0.0) is not None


def test_a_recalled_device_continues_from_its_stored_progress() -> None:
    stored = DeviceProgress("pump", "a", 50.0, 7)
    asked: list[tuple[str, set[str]]] = []

    def recall(stream: str, devices: Collection[str]) -> dict[tuple[str, str], DeviceProgress]:
        asked.append((stream, set(devices)))
        return {("pump", "a"): stored} if stream == "pump" else {}

    table = DeviceTable({"pump": 5, "fan": 5}, recall, threading.Event())
    table.admit(("pump", "held"), None, 0.0)
    found = table.recall([reading("a"), reading("a"), reading("held"), reading("x", "fan")])
    assert sorted(asked) == [("fan", {"x"}), ("pump", {"a"})]  # held ones are not asked for
    state = table.admit(("pump", "a"), found.get(("pump", "a")), 3.0)
    assert state is not None
    assert (state.last_ts, state.readings, state.seen) == (50.0, 7, 3.0)
    assert table.progress(("pump", "a")) == stored
    full = DeviceTable({"pump": 1}, recall, threading.Event())
    full.admit(("pump", "held"), None, 0.0)
    asked.clear()
    assert full.recall([reading("new")]) == {}
    assert asked == []  # a stream at its limit admits nobody in this pass: nothing to ask


def test_recall_retries_while_the_store_fails_and_gives_up_only_when_stopping() -> None:
    failures = [StoreError("database is locked")] * 2
    stopping = threading.Event()

    def recall(stream: str, devices: object) -> dict[tuple[str, str], DeviceProgress]:
        if failures:
            raise failures.pop()
        return {}

    table = DeviceTable({"pump": 5}, recall, stopping)
    assert table.recall([reading("a")]) == {}
    assert failures == []
    assert (table.recall_errors, table.recall_error) == (2, None)  # counted; cleared

    def broken(stream: str, devices: object) -> dict[tuple[str, str], DeviceProgress]:
        raise StoreError("connection refused")

    stopping.set()
    table = DeviceTable({"pump": 5}, broken, stopping)
    with pytest.raises(Abandoned):
        table.recall([reading("a")])
    assert table.recall_error == "connection refused"


def test_idle_lists_the_devices_silent_for_long_enough() -> None:
    table = DeviceTable({"pump": 5}, None, threading.Event())
    table.admit(("pump", "old"), None, 0.0)
    table.admit(("pump", "new"), None, 0.0)
    table.seen([("pump", "new")], 9.0)  # its pass took until 9.0
    assert table.idle(10.0, 5.0) == [("pump", "old")]
