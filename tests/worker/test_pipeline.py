"""Pipeline worker logic with a fake detector (the real model is exercised end to end)."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

from sentinel.config import SentinelConfig
from sentinel.judge.alerts import alert_checks
from sentinel.judge.history import unpack
from sentinel.model.stuck import RunStats
from sentinel.records import AlertStatus, DeviceProgress, WriteBatch
from sentinel.worker.coldstart import TrainingJob
from sentinel.worker.pipeline import Pipeline
from tests.fakes import FEATURES, FakeDetector, Harness, delivery, make_config


def test_duplicates_and_out_of_order_readings_are_counted_and_skipped() -> None:
    h = Harness({"pump": FakeDetector()})
    h.run([delivery("a", 1, 0), delivery("a", 2, 0), delivery("a", 2, 0), delivery("a", 1.5, 0)])
    assert h.pipeline.stats.readings == 2
    counts = h.pipeline.rejections.as_dict()
    assert counts == {"duplicate": 1, "out_of_order": 1}
    progress = {p.device: p for b in h.batches for p in b.progress}
    assert progress["a"].readings == 2
    assert progress["a"].last_ts == 2


def test_a_device_whose_clock_went_back_is_named_once_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("sentinel.worker.pipeline.time.monotonic", lambda: clock[0])
    h = Harness({"pump": FakeDetector()})
    h.pipeline.process([delivery("a", 1_700_000_000.0 + t, 0.1) for t in range(10)])
    with capture_logs() as logs:
        # its RTC lost power: every reading since is from 2000, for two minutes
        for second in range(120):
            clock[0] += 1.0
            h.pipeline.process([delivery("a", 946_684_800.0 + second, 0.1)])
        # a restart's redelivery of a pass already taken is over in a second: not named
        h.pipeline.process([delivery("b", 5.0 + t, 0.1) for t in range(10)])
        h.pipeline.process([delivery("b", 5.0 + t, 0.1) for t in range(10)] * 20)
    named = [e for e in logs if e["event"] == "device_clock_behind"]
    assert [(e["device"], e["seconds"]) for e in named] == [("a", 60.0)]
    assert named[0]["log_level"] == "warning"
    assert named[0]["behind_s"] == 1_700_000_009.0 - 946_684_860.0
    assert "sentinel devices reset pump a" in named[0]["fix"]
    # its clock set right: taken again, and a later episode is named again
    h.pipeline.process([delivery("a", 1_700_000_100.0, 0.1)])
    assert h.pipeline.stats.readings == 10 + 10 + 1
    with capture_logs() as logs:
        for second in range(61):
            clock[0] += 1.0
            h.pipeline.process([delivery("a", 1_600_000_000.0 + second, 0.1)])
    assert [e["device"] for e in logs if e["event"] == "device_clock_behind"] == ["a"]


def test_every_ack_is_passed_on_once_in_arrival_order() -> None:
    h = Harness({"pump": FakeDetector()})
    h.run([delivery("a", t, 0, mid=t + 1) for t in range(50)] + [delivery("a", 60, 0)])
    acks = [a.token for b in h.batches for a in b.acks]
    assert acks == list(range(1, 51))


def test_restart_continues_from_committed_progress() -> None:
    stored = {("pump", "a"): DeviceProgress("pump", "a", 10.0, 10)}
    h = Harness(
        {"pump": FakeDetector()},
        recall=lambda stream, devices: {k: p for k, p in stored.items() if k[1] in devices},
    )
    h.run([delivery("a", 9, 0), delivery("a", 10, 0), delivery("a", 11, 0)])
    assert h.pipeline.rejections.as_dict() == {"duplicate": 1, "out_of_order": 1}
    last = [p for b in h.batches for p in b.progress][-1]
    assert last.readings == 11


def test_anomalous_windows_raise_one_alert_that_closes() -> None:
    h = Harness({"pump": FakeDetector()})
    values = [0.1] * 8 + [9.0] + [0.1] * 12
    h.run([delivery("a", float(t), v) for t, v in enumerate(values)])
    assert h.alerts, "the spike raised no alert"
    assert {a.uid for a in h.alerts} == {h.alerts[0].uid}
    assert h.alerts[0].status is AlertStatus.OPEN
    assert h.alerts[-1].status is AlertStatus.CLOSED
    assert h.alerts[-1].top_features[0].feature == "x"
    assert h.pipeline.stats.alerts_opened == 1
    assert h.pipeline.stats.alerts_closed == 1


def test_cold_start_collects_then_requests_training_and_scores_after_install() -> None:
    h = Harness({"pump": None})
    installed = threading.Event()

    def train_then_install(job: TrainingJob) -> None:
        h.jobs.append(job)
        h.pipeline.install_model("pump", FakeDetector())
        installed.set()

    h.pipeline._request_training = train_then_install
    first = [delivery("a", float(t), 0.1) for t in range(64)]
    h.run(first, until=installed.is_set)
    assert len(h.jobs) == 1
    job = h.jobs[0]
    assert sum(len(s) for s in job.segments) == 64
    assert job.segments[0].shape == (64, 2)
    assert h.pipeline.stats.scored == 0
    assert h.pipeline.stats.windows_unscored > 0
    # Scoring begins once the worker has applied the swap.
    h.pipeline._stopping.clear()
    h.run([delivery("a", float(t), 0.1) for t in range(64, 74)])
    assert h.pipeline.has_model("pump")
    assert h.pipeline.stats.scored == 10


class OverflowDetector(FakeDetector):
    """What an overflowing model returns: non-finite scores and feature errors."""

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, errors = super().score(windows)
        return np.full_like(scores, np.nan), np.full_like(errors, np.inf)


def test_non_finite_scores_become_finite_anomalies() -> None:
    h = Harness({"pump": OverflowDetector()})
    h.run([delivery("a", float(t), 0.1) for t in range(8)])
    assert h.alerts, "an overflowing window is as anomalous as it gets"
    for alert in h.alerts:
        assert np.isfinite(alert.peak_score)
        assert all(np.isfinite(c.share) for c in alert.top_features)


def snapshotting(config: SentinelConfig, snapshot: Path) -> Pipeline:
    """A pipeline with a fake model that keeps its thresholds in ``snapshot``."""
    return Pipeline(
        config,
        sink=lambda b: None,
        request_training=lambda j: None,
        models={"pump": FakeDetector()},
        snapshot_path=snapshot,
    )


def test_thresholds_survive_a_restart_through_the_snapshot(tmp_path: Path) -> None:
    snapshot = tmp_path / "thresholds.json"
    config = make_config(threshold={"warmup": 200, "history": 500, "quantile": 0.99})
    first = snapshotting(config, snapshot)
    first.start()
    for t in range(300):
        assert first.offer(delivery("a", float(t), 0.1 + 0.001 * (t % 7)))
    first.stop()
    saved = json.loads(snapshot.read_text())
    devices = saved["streams"]["pump"]["devices"]
    assert saved["streams"]["pump"]["model_version"] == "fake-1"
    assert devices["a"]["normal_seen"] > 200

    second = snapshotting(config, snapshot)
    assert second._thresholds.snapshot("pump") == devices
    # The devices' noise scales for the spike check come back too.
    spikes = saved["streams"]["pump"]["spikes"]
    assert set(spikes) == {"a"}
    assert spikes["a"]["seen"] > 200
    assert second._spikes.snapshot("pump") == spikes


def test_the_snapshot_is_saved_every_snapshot_interval_while_running(tmp_path: Path) -> None:
    """``snapshot_interval`` (default 5 minutes: a save at 1,000 devices is ~22 MB, every
    minute 31 GB a day on an SD card) sets how often the worker saves what the devices
    have learnt; the stop saves it too."""
    assert make_config().snapshot_interval == 300.0
    idle = snapshotting(make_config(), tmp_path / "idle.json")
    fast = snapshotting(make_config(snapshot_interval=1.0), tmp_path / "fast.json")
    idle.start()
    fast.start()
    try:
        for t in range(50):
            assert idle.offer(delivery("a", float(t), 0.1))
            assert fast.offer(delivery("a", float(t), 0.1))
        wait_for((tmp_path / "fast.json").exists, "a save while running", timeout=120)
        # both ran as long: the default's first save is 5 minutes away
        assert not (tmp_path / "idle.json").exists()
    finally:
        fast.stop()
        idle.stop()
    assert (tmp_path / "idle.json").exists()  # saved at the stop


def test_remembered_spikes_survive_a_restart_through_the_snapshot(tmp_path: Path) -> None:
    """Issue #21: a device's normal pulses stay known across a restart."""
    snapshot = tmp_path / "thresholds.json"
    config = make_config()
    first = snapshotting(config, snapshot)
    first.start()
    for t in range(700):
        pulse = 0.5 if t >= 250 and t % 50 == 0 else 0.0  # far past the noise, under 1.5
        assert first.offer(delivery("a", float(t), 0.1 + 0.001 * (t % 7) + pulse))
    first.stop()
    spikes = json.loads(snapshot.read_text())["streams"]["pump"]["spikes"]
    remembered = spikes["a"]["spikes"]
    assert len(remembered) == 9  # t = 250, 300, ..., 650, all on feature 0
    assert {feature for _, feature, _ in remembered} == {0}
    second = snapshotting(config, snapshot)
    assert second._spikes.snapshot("pump") == spikes


def test_a_full_disk_keeps_the_last_snapshot_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #19: a failed snapshot left a 0-byte .thresholds.json.tmp behind."""
    snapshot = tmp_path / "thresholds.json"
    config = make_config()
    first = snapshotting(config, snapshot)
    first.start()
    for t in range(100):
        assert first.offer(delivery("a", float(t), 0.1))
    first.stop()
    saved = snapshot.read_text()

    second = snapshotting(config, snapshot)
    second.start()
    for t in range(100, 200):
        assert second.offer(delivery("a", float(t), 0.1))

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)  # what a full disk does to the snapshot
    with capture_logs() as logs:
        second.stop()  # saves the thresholds
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["threshold_snapshot_failed"]
    assert snapshot.read_text() == saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thresholds.json"]


@pytest.mark.parametrize("keep", [0.0, 0.5], ids=["empty", "torn"])
def test_a_damaged_snapshot_is_reported_and_the_thresholds_start_fresh(
    tmp_path: Path, keep: float
) -> None:
    """Issue #22: a thresholds.json cut short (by hand, or a disk that lost its last
    write) is named in the log, set aside, and never stops the start."""
    snapshot = tmp_path / "thresholds.json"
    config = make_config()
    first = snapshotting(config, snapshot)
    first.start()
    for t in range(100):
        assert first.offer(delivery("a", float(t), 0.1))
    first.stop()
    whole = snapshot.read_bytes()
    snapshot.write_bytes(whole[: int(len(whole) * keep)])

    with capture_logs() as logs:
        second = snapshotting(config, snapshot)
    [corrupt] = [e for e in logs if e["event"] == "threshold_snapshot_corrupt"]
    assert corrupt["path"] == str(snapshot)
    assert second._thresholds.snapshot("pump") == {}  # fresh, learnt again
    assert not snapshot.exists()
    assert (tmp_path / "thresholds.json.corrupt").read_bytes() == whole[: int(len(whole) * keep)]


def test_a_spike_the_model_misses_opens_an_alert_that_says_so() -> None:
    h = Harness({"pump": FakeDetector()})
    rng = np.random.default_rng(0)
    values = list(0.1 + 0.01 * rng.standard_normal(400))  # learnt: noise about 0.01
    values[300] += 0.5  # 50 x the noise, but far below the fake model's threshold of 1.5
    h.run([delivery("a", float(t), v) for t, v in enumerate(values)])
    opened = [a for a in h.alerts if a.status is AlertStatus.OPEN]
    assert len({a.uid for a in h.alerts}) == 1, "one alert, for the spike only"
    # judged once a newer reading arrived, the alert starts at the spiking reading itself
    # (its evidence, sentinel.judge.evidence), not at the window that showed it
    assert opened[0].started_at == 300.0
    assert opened[0].top_features[0].feature == "x"
    assert opened[0].reason is not None
    assert opened[0].reason.spike is not None
    feature, z = opened[0].reason.spike
    assert feature == "x"
    assert z > 10
    assert opened[0].severity.value == "critical"
    assert h.pipeline.stats.anomalous >= 1


class LevelledDetector(FakeDetector):
    """The fake model, plus levels: a window's mean of x in units of 0.01 from 0.1."""

    def levels(self, windows: np.ndarray) -> np.ndarray:
        z = np.zeros((len(windows), len(FEATURES)))
        z[:, 0] = np.abs(windows[:, :, 0].mean(axis=1) - 0.1) / 0.01
        return z


def test_a_level_shift_the_model_misses_opens_an_alert_only_where_levels_are_on() -> None:
    rng = np.random.default_rng(0)
    values = list(0.1 + 0.001 * rng.standard_normal(300))
    values[200:240] = [v + 0.2 for v in values[200:240]]  # 20 of its sds, far below 1.5
    stream = [delivery("a", float(t), v) for t, v in enumerate(values)]

    off = Harness({"pump": LevelledDetector()})
    off.run(stream)
    assert off.alerts == []

    on = Harness({"pump": LevelledDetector()}, make_config(levels={"enabled": True, "k": 8}))
    on.run(stream)
    opened = [a for a in on.alerts if a.status is AlertStatus.OPEN]
    assert len({a.uid for a in on.alerts}) == 1, "one alert, for the shift"
    assert 200.0 <= opened[0].started_at <= 204.0
    assert opened[0].reason is not None
    assert opened[0].reason.level is not None
    feature, z = opened[0].reason.level
    assert (feature, opened[0].top_features[0].feature) == ("x", "x")
    assert z > 8
    assert opened[0].reason.spike is None
    assert on.alerts[-1].status is AlertStatus.CLOSED


class FrozenAwareDetector(FakeDetector):
    """The fake model, plus training's longest runs: x never repeated a value more than
    twice; y (always 0 here) was constant, the constant check's."""

    def run_stats(self) -> RunStats:
        return RunStats(longest=(2, 0))


def test_a_frozen_channel_the_model_misses_alerts_only_where_the_stuck_check_is_on() -> None:
    rng = np.random.default_rng(0)
    values = list(0.1 + 0.001 * rng.standard_normal(300))
    values[200:240] = [values[199]] * 40  # x holds its last value for 40 readings
    stream = [delivery("a", float(t), v) for t, v in enumerate(values)]
    stuck = {"min_run": 3, "factor": 2.0}  # limit 4: the fake model's whole window

    off = Harness({"pump": FrozenAwareDetector()}, make_config(stuck={**stuck, "enabled": False}))
    off.run(stream)
    assert off.alerts == [], "the score alone never sees a frozen channel"

    on = Harness({"pump": FrozenAwareDetector()}, make_config(stuck=stuck))
    on.run(stream)
    opened = [a for a in on.alerts if a.status is AlertStatus.OPEN]
    assert len({a.uid for a in on.alerts}) == 1, "one alert, for the frozen run"
    # The run counts the held reading 199 itself: 4 identical readings once 202 arrives;
    # the alert starts where the value first repeated (its evidence, sentinel.judge.evidence).
    assert opened[0].started_at == 200.0
    assert opened[0].reason is not None
    assert opened[0].reason.stuck == ("x", 4, 4)
    assert opened[0].top_features[0].feature == "x"
    assert alert_checks(opened[0]) == "stuck:x"
    # It closes once x moves again, ending with its evidence: the last frozen reading.
    assert on.alerts[-1].status is AlertStatus.CLOSED
    assert on.alerts[-1].ended_at == 239.0


def test_a_corrupt_snapshot_is_set_aside_and_thresholds_start_afresh(tmp_path: Path) -> None:
    snapshot = tmp_path / "thresholds.json"
    snapshot.write_text(
        '{"schema": 1, "streams": {"pump": {"model_version": "fake-1", '
        '"devices": {"a": {"normal_seen": 5, "recent": ["x"]}}}}}'
    )
    pipeline = snapshotting(make_config(), snapshot)
    assert pipeline._thresholds.snapshot("pump") == {}
    assert not snapshot.exists()
    assert (tmp_path / "thresholds.json.corrupt").exists()


def test_a_schema_1_snapshot_with_lists_restores_and_schema_2_is_written(tmp_path: Path) -> None:
    """Issue #23: the float histories are packed since schema 2; a file of the version
    before (schema 1, JSON lists) is still taken back, and rewritten packed."""
    snapshot = tmp_path / "thresholds.json"
    snapshot.write_text(
        '{"schema": 1, "streams": {"pump": {"model_version": "fake-1", '
        '"devices": {"a": {"normal_seen": 3, "recent": [0.5, 0.25, 0.125]}}}}}'
    )
    pipeline = snapshotting(make_config(), snapshot)
    restored = pipeline._thresholds.snapshot("pump")["a"]
    assert unpack(restored["recent"]).tolist() == [0.5, 0.25, 0.125]
    pipeline.start()
    pipeline.stop()  # saves
    saved = json.loads(snapshot.read_text())
    assert saved["schema"] == 2
    assert set(saved["streams"]["pump"]["devices"]["a"]["recent"]) == {"float32"}
    snapshot.write_text(snapshot.read_text().replace('"schema": 2', '"schema": 3', 1))
    assert snapshotting(make_config(), snapshot)._thresholds.snapshot("pump") == {}
    assert (tmp_path / "thresholds.json.corrupt").exists()  # a newer format: set aside


def test_a_snapshot_for_another_model_is_not_restored(tmp_path: Path) -> None:
    snapshot = tmp_path / "thresholds.json"
    snapshot.write_text(
        '{"schema": 1, "streams": {"pump": {"model_version": "old-model", '
        '"devices": {"a": {"normal_seen": 5, "recent": [1.0]}}}}}'
    )
    pipeline = snapshotting(make_config(), snapshot)
    assert pipeline._thresholds.snapshot("pump") == {}
    assert snapshot.exists()  # stale, not corrupt: left in place


# -- devices in memory (issue #19) ----------------------------------------------------------


class FakeStore:
    """The store's device_state, as the writer would leave it after each batch."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Any] = {}
        self.recalls: list[tuple[str, set[str]]] = []

    def recall(self, stream: str, devices: Any) -> dict[tuple[str, str], Any]:
        self.recalls.append((stream, set(devices)))
        return {k: p for k, p in self.rows.items() if k[0] == stream and k[1] in devices}

    def sink(self, batch: WriteBatch) -> None:
        for p in batch.progress:
            self.rows[(p.stream, p.device)] = p


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_new_device_beyond_max_devices_is_refused_counted_and_acknowledged() -> None:
    config = make_config(
        streams=[{"name": "pump", "topic": "p/{device}", "features": FEATURES, "max_devices": 2}]
    )
    h = Harness({"pump": FakeDetector()}, config)
    h.run(
        [
            delivery("a", 1, 0.1, mid=1),
            delivery("b", 1, 0.1, mid=2),
            delivery("c", 1, 0.1, mid=3),  # the third device: refused
            delivery("a", 2, 0.1, mid=4),  # the held ones keep working
            delivery("c", 2, 0.1, mid=5),
        ]
    )
    assert h.pipeline.rejections.as_dict() == {"device_limit": 2}
    assert [a.token for b in h.batches for a in b.acks] == [1, 2, 3, 4, 5]
    progress = {p.device: p.readings for b in h.batches for p in b.progress}
    assert progress == {"a": 2, "b": 1}
    assert h.pipeline.devices_held() == {"pump": 2}


def test_an_idle_device_leaves_memory_and_returns_with_its_stored_state() -> None:
    store = FakeStore()
    config = make_config(
        windows={"length": 4, "hop": 1, "max_gap": 0.2}, ingest={"device_idle": 0.2}
    )
    pipeline = Pipeline(
        config,
        sink=store.sink,
        request_training=lambda job: None,
        models={"pump": FakeDetector()},
        recall=store.recall,
    )
    pipeline.start()
    try:
        for t in range(20):  # 10 ms apart: within max_gap, so windows are scored
            assert pipeline.offer(delivery("a", t / 100, 0.1))
        wait_for(
            lambda: (
                store.rows.get(("pump", "a")) is not None
                and store.rows[("pump", "a")].readings == 20
            ),
            "a's readings",
        )
        wait_for(lambda: pipeline.devices_held() == {"pump": 0}, "a's eviction")
        assert pipeline.stats.evicted == 1
        assert pipeline._streams["pump"].windows.devices == 0
        assert pipeline._thresholds.snapshot("pump")["a"]["normal_seen"] > 0  # parked
        # Back: its last timestamp came from the store, so a redelivery is a duplicate, and
        # its count goes on.
        assert pipeline.offer(delivery("a", 0.19, 0.1))
        assert pipeline.offer(delivery("a", 0.20, 0.1))
        wait_for(lambda: store.rows[("pump", "a")].readings == 21, "a's return")
    finally:
        pipeline.stop()
    assert pipeline.rejections.as_dict() == {"duplicate": 1}
    assert ("pump", {"a"}) in store.recalls


def test_a_device_with_an_open_alert_stays_in_memory() -> None:
    config = make_config(
        windows={"length": 4, "hop": 1, "max_gap": 0.2}, ingest={"device_idle": 0.2}
    )
    h = Harness({"pump": FakeDetector()}, config)
    h.pipeline.start()
    try:
        for t in range(8):
            assert h.pipeline.offer(delivery("alerting", t / 100, 9.0))  # anomalous: opens
        for t in range(8):
            assert h.pipeline.offer(delivery("quiet", t / 100, 0.1))
        wait_for(lambda: h.pipeline.stats.evicted == 1, "the quiet device's eviction")
    finally:
        h.pipeline.stop()
    assert h.pipeline.devices_held() == {"pump": 1}
    assert h.alerts
    assert h.alerts[-1].status is AlertStatus.OPEN
    assert ("pump", "alerting") in h.pipeline._devices


def test_a_reset_device_takes_its_next_reading_before_the_store_forgot_it() -> None:
    """The writer deletes the stored row in order, but perhaps after the next pass: the
    worker must not recall the stale far-future last_ts in between."""
    store = FakeStore()
    store.rows[("pump", "a")] = DeviceProgress("pump", "a", 253_402_214_400.0, 9)
    batches: list[WriteBatch] = []

    def sink(batch: WriteBatch) -> None:
        batches.append(batch)
        store.sink(batch)  # progress only: the stale row stays

    pipeline = Pipeline(
        make_config(),
        sink=sink,
        request_training=lambda job: None,
        models={"pump": FakeDetector()},
        recall=store.recall,
    )
    pipeline.start()
    try:
        assert pipeline.offer(delivery("a", 100.0, 0.1))
        wait_for(lambda: pipeline.rejections.as_dict() == {"out_of_order": 1}, "a blinded")
        assert pipeline.reset_devices("pump", ["a", "b"], note="bad ts") == ["a"]
        assert pipeline.offer(delivery("a", 101.0, 0.1))
        wait_for(lambda: store.rows[("pump", "a")].last_ts == 101.0, "a's reading taken")
    finally:
        pipeline.stop()
    resets = [r for b in batches for r in b.resets]
    assert [(r.stream, r.device, r.note) for r in resets] == [
        ("pump", "a", "bad ts"),
        ("pump", "b", "bad ts"),
    ]
    assert store.rows[("pump", "a")].readings == 1
    assert len(store.recalls) == 1  # only before the reset


def test_device_idle_is_never_shorter_than_the_window_gap() -> None:
    """A config from before ingest.device_idle with a longer windows.max_gap still loads,
    and a device is kept while its partial window could still be completed."""
    config = make_config(windows={"length": 4, "hop": 1, "max_gap": 7200})
    assert config.ingest.device_idle < 7200
    assert Harness({"pump": FakeDetector()}, config).pipeline._idle_after() == 7200
    off = make_config(ingest={"device_idle": 0})
    assert Harness({"pump": FakeDetector()}, off).pipeline._idle_after() == 0


def lingering(config: SentinelConfig, passes: list[tuple[int | None, ...]]) -> Pipeline:
    """A worker whose sink records each pass's acknowledged message ids."""
    return Pipeline(
        config,
        sink=lambda batch: (
            passes.append(tuple(ack.token for ack in batch.acks)) if batch.acks else None
        ),
        request_training=lambda job: None,
        models={"pump": FakeDetector()},
    )


def test_a_pass_holding_few_deliveries_waits_for_more() -> None:
    """Devices that publish at their own moments hand the worker one delivery at a time,
    and a pass costs about as much for one as for dozens: holding fewer than 8, a pass
    waits up to ``ingest.linger`` for more (issue #23). With a linger no busy box outlasts,
    8 deliveries offered one at a time, each once the worker has taken the one before, are
    judged in one pass, in order (without the linger the first is a pass of its own)."""
    passes: list[tuple[int | None, ...]] = []
    p = lingering(make_config(ingest={"linger": 60.0}), passes)
    p.start()
    try:
        for i in range(8):
            assert p.offer(delivery("a", float(i), 0.1, mid=i + 1))
            wait_for(lambda: p.depth == 0, "the worker to take the delivery", timeout=120)
        wait_for(lambda: len(passes) > 0, "the first pass", timeout=120)
    finally:
        p.stop()
    assert passes[0] == tuple(range(1, 9))


def test_a_stop_ends_the_wait_and_judges_what_the_pass_holds() -> None:
    """A stop does not wait out the linger: the delivery the worker holds is judged and
    passed on, and the worker ends well within ``stop``'s own timeout."""
    passes: list[tuple[int | None, ...]] = []
    p = lingering(make_config(ingest={"linger": 60.0}), passes)
    p.start()
    assert p.offer(delivery("a", 0.0, 0.1, mid=7))
    p.stop(timeout=30.0)
    assert not p.alive
    assert passes == [(7,)]
