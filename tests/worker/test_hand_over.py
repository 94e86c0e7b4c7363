"""A partition handed between two pipelines (issue #24, HandOver): the giver saves what its
judge learnt of the partition's devices and lets them go, so their next reading is recalled
from the store; the taker restores that state before it reads the partition."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from sentinel.judge.history import unpack
from sentinel.records import DeviceJudgeState, DeviceProgress
from sentinel.worker.pipeline import Pipeline
from tests.e2e_helpers import wait_for
from tests.fakes import FakeDetector, delivery, make_config


class MemoryJudgeState:
    """A SharedJudgeState in a dict; ``owned`` devices are this pipeline's partition's."""

    def __init__(self, rows: dict[tuple[str, str], DeviceJudgeState], owned: set[str]) -> None:
        self.rows = rows
        self.owned = owned

    def owns(self, device: str) -> bool:
        return device in self.owned

    def save(self, rows: Sequence[DeviceJudgeState]) -> None:
        self.rows.update(((r.stream, r.device), r) for r in rows)


def pipeline(shared: MemoryJudgeState, recalls: list[Collection[str]], tmp: Path) -> Pipeline:
    def recall(stream: str, devices: Collection[str]) -> Mapping[tuple[str, str], DeviceProgress]:
        recalls.append(sorted(devices))
        return {}

    return Pipeline(
        make_config(threshold={"warmup": 200, "history": 500, "quantile": 0.99}),
        sink=lambda batch: None,
        request_training=lambda job: None,
        models={"pump": FakeDetector()},
        recall=recall,
        snapshot_path=tmp / "thresholds.json",  # not written: the shared state is used
        shared_state=shared,
    )


def test_judge_state_moves_with_the_partition(tmp_path: Path) -> None:
    rows: dict[tuple[str, str], DeviceJudgeState] = {}
    giver_recalls: list[Collection[str]] = []
    giver = pipeline(MemoryJudgeState(rows, {"a", "b"}), giver_recalls, tmp_path)
    giver.start()
    try:
        for t in range(300):
            for device in ("a", "b"):
                assert giver.offer(delivery(device, float(t), 0.1 + 0.001 * (t % 7)), 5.0)
        wait_for(lambda: giver.stats.readings == 600, 30, "every reading judged")
        before = giver._thresholds.snapshot("pump")["a"]

        # "a"'s partition goes: its state is saved, and the giver lets it go.
        assert giver.hand_over(lambda d: d == "a", save=True, timeout=30) == 1
        assert set(rows) == {("pump", "a")}  # only what was handed over
        assert rows[("pump", "a")].model_version == "fake-1"
        views = giver.describe_devices([("pump", "a"), ("pump", "b")], timeout=30)
        assert views is not None
        assert not views[("pump", "a")].held
        assert views[("pump", "b")].held
    finally:
        giver.stop()
    assert not (tmp_path / "thresholds.json").exists()

    taker_recalls: list[Collection[str]] = []
    taker = pipeline(MemoryJudgeState({}, {"a"}), taker_recalls, tmp_path)
    taker.start()
    try:
        taker.hand_over(lambda d: d == "a", judge=rows.values(), timeout=30)
        assert taker.offer(delivery("a", 500.0, 0.1), 5.0)
        wait_for(lambda: taker.stats.readings == 1, 30, "the reading judged")
        views = taker.describe_devices([("pump", "a")], timeout=30)
        assert views is not None
        assert views[("pump", "a")].held
    finally:
        taker.stop()
    # Its progress was looked up in the store, and its threshold is the giver's.
    assert ["a"] in taker_recalls
    after = taker._thresholds.snapshot("pump")["a"]
    assert after["normal_seen"] >= before["normal_seen"]
    learnt = unpack(before["recent"])
    assert (unpack(after["recent"])[: len(learnt)] == learnt).all()
