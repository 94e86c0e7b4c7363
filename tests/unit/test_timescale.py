"""Time settings in readings (issue #21, causes 1 and 5): the learnt interval, the auto
values, and every component that resolves them for its stream."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from sentinel.config import (
    AlertsConfig,
    ColdStartConfig,
    SentinelConfig,
    ThresholdConfig,
    WindowConfig,
)
from sentinel.errors import DataError
from sentinel.judge.alerts import AlertTracker
from sentinel.judge.threshold import ThresholdBank
from sentinel.offline.csvdata import RecordedData
from sentinel.records import Alert, Reading, Score, Verdict, Window
from sentinel.retrain.reservoir import _INTERVAL_EVERY, Reservoir
from sentinel.timescale import TimeScale, learn_interval
from sentinel.worker.coldstart import ColdStartBuffer
from sentinel.worker.windows import WindowAssembler

FIVE_MIN = 300.0
FEATURES: dict[str, tuple[str, ...]] = {"pump": ("flow",)}


def test_auto_at_one_reading_per_second_is_the_old_default_in_seconds() -> None:
    """At 1 Hz (and for models without an interval) the old defaults in seconds, except
    re-baselining: 512 readings (docs/BENCHMARKS.md, "The forecaster as the default;
    re-baselining after 512 readings")."""
    config = SentinelConfig.model_validate(
        {"streams": [{"name": "pump", "topic": "p/{device}", "features": ["flow"]}]}
    )
    for scale in (TimeScale(1.0), TimeScale(None)):
        assert scale.max_gap(config.windows.max_gap) == 60.0
        assert scale.rebaseline_after(config.threshold.rebaseline_after) == 512.0
        assert scale.cooldown(config.alerts.cooldown) == 64.0
        assert scale.exclusion_margin(config.retrain.exclusion_margin) == 120.0


def test_auto_scales_with_the_interval_and_explicit_seconds_win() -> None:
    scale = TimeScale(FIVE_MIN)
    assert scale.max_gap(None) == 60 * FIVE_MIN
    assert scale.rebaseline_after(None) == 512 * FIVE_MIN
    assert scale.cooldown(None) == 64 * FIVE_MIN  # 64 readings: 5 h 20 min
    assert scale.exclusion_margin(None) == 120 * FIVE_MIN
    assert scale.max_gap(45.0) == 45.0
    assert scale.rebaseline_after(0.0) == 0.0  # 0 still disables re-baselining
    assert TimeScale(60.0).cooldown(None) == 64 * 60.0


def test_auto_cooldown_stops_at_a_day() -> None:
    """64 readings at 1 h would be 2.7 days of reopening one alert (issue #21, cause 7)."""
    assert TimeScale(1800.0).cooldown(None) == 86_400.0  # 64 readings are 32 h
    assert TimeScale(3600.0).cooldown(None) == 86_400.0
    assert TimeScale(3600.0).cooldown(7 * 86_400.0) == 7 * 86_400.0  # explicit: no cap


def test_learnt_interval_is_the_median_step_and_ignores_gaps() -> None:
    ts = np.r_[0.0, 300.0, 86_400.0 + np.arange(0, 30_000, 300.0)]  # a day's gap early on
    assert learn_interval([ts]) == FIVE_MIN
    # two devices, each in time order; a repeated timestamp is not a step
    assert learn_interval([np.arange(0, 600, 60.0), np.array([5.0, 5.0, 65.0])]) == 60.0
    assert learn_interval([np.array([1.0])]) is None
    assert learn_interval([]) is None


def test_cold_start_learns_the_interval_and_splits_five_minute_data_at_its_gaps() -> None:
    # An hour of span (the default) binds nothing here: 400 readings are 33 hours.
    buffer = ColdStartBuffer("pump", ColdStartConfig(readings=400), max_gap=None)
    times = np.r_[np.arange(0, 10) * FIVE_MIN, 1e6 + np.arange(390) * FIVE_MIN]
    done = [buffer.add(Reading("pump", "d", float(t), (float(i),))) for i, t in enumerate(times)]
    assert done[-1]
    assert not any(done[:-1])
    assert buffer.interval == FIVE_MIN
    assert buffer.gap == 60 * FIVE_MIN
    # the 10 readings before the gap are too few for a window: trained around, not refused
    assert [len(s) for s in buffer.segments(min_length=32)] == [390]


def test_cold_start_with_an_explicit_max_gap_splits_there() -> None:
    buffer = ColdStartBuffer("pump", ColdStartConfig(readings=100), max_gap=60.0)
    for i in range(100):
        buffer.add(Reading("pump", "d", i * FIVE_MIN, (float(i),)))
    assert buffer.gap == 60.0
    assert buffer.segments(min_length=4) == []


def test_window_restarts_only_at_a_gap_long_for_the_models_interval() -> None:
    auto = WindowAssembler("pump", 1, WindowConfig(length=4, hop=1), interval=FIVE_MIN)
    emitted = [auto.add(Reading("pump", "d", i * FIVE_MIN, (0.0,))) for i in range(6)]
    assert sum(w is not None for w in emitted) == 3
    assert auto.gap_resets == 0
    auto.add(Reading("pump", "d", 5 * FIVE_MIN + 61 * FIVE_MIN, (0.0,)))
    assert auto.gap_resets == 1

    explicit = WindowAssembler(
        "pump", 1, WindowConfig(length=4, hop=1, max_gap=60), interval=FIVE_MIN
    )
    for i in range(3):
        explicit.add(Reading("pump", "d", i * FIVE_MIN, (0.0,)))
    assert explicit.gap_resets == 2


def _verdict(t: float, anomalous: bool, step: float = FIVE_MIN) -> Verdict:
    window = Window("pump", "a", t - 3 * step, t, np.zeros((4, 1), dtype=np.float32))
    return Verdict(Score(window, 5.0 if anomalous else 0.5, (0.1,), "v1"), 2.5, anomalous)


def _alerts(
    tracker: AlertTracker, pattern: str, start: float, step: float = FIVE_MIN
) -> list[Alert]:
    changes = []
    for i, c in enumerate(pattern):
        change = tracker.observe(_verdict(start + i * step, c == "x", step), (0.1,))
        if change is not None:
            changes.append(change)
    return changes


def test_cooldown_at_five_minute_sampling_is_counted_in_readings() -> None:
    """Main's 300 s was one reading at 5 minutes: a fault that flaps once an hour opened a
    new alert every time. 50 readings later it is the same alert, reopened; past 64
    readings (5 h 20 min) it is a new one."""
    tracker = AlertTracker(AlertsConfig(open_after=1, close_after=2), FEATURES)
    tracker.intervals["pump"] = FIVE_MIN
    assert tracker.cooldown("pump") == 64 * FIVE_MIN
    first = _alerts(tracker, "x..", start=0.0)
    again = _alerts(tracker, "x..", start=50 * FIVE_MIN)  # 50 readings after it ended
    assert again
    assert again[0].uid == first[0].uid
    later = _alerts(tracker, "x..", start=150 * FIVE_MIN)  # past 64 readings: a new one
    assert later
    assert later[0].uid != first[0].uid
    assert tracker.busy(("pump", "a"), 200 * FIVE_MIN)
    assert not tracker.busy(("pump", "a"), 300 * FIVE_MIN)


def test_the_same_fault_hours_later_at_one_a_minute_is_a_new_alert() -> None:
    """300 readings were 5 h at one reading a minute: on the simulated fleet a second
    fault of the same channel 2-4 h after the first reopened the first alert, its onset
    lost (4 of 16 missed faults, seed 11). Two hours later it now opens its own alert,
    starting at its own onset."""
    minute = 60.0
    tracker = AlertTracker(AlertsConfig(open_after=1, close_after=2), FEATURES)
    tracker.intervals["pump"] = minute
    first = _alerts(tracker, "xxx..", start=0.0, step=minute)
    second = _alerts(tracker, "xx..", start=2 * 3600.0, step=minute)
    assert second
    assert second[0].uid != first[0].uid
    assert second[0].started_at == 2 * 3600.0


def test_explicit_cooldown_wins_over_the_interval() -> None:
    tracker = AlertTracker(AlertsConfig(open_after=1, close_after=2, cooldown=300), FEATURES)
    tracker.intervals["pump"] = FIVE_MIN
    first = _alerts(tracker, "x..", start=0.0)
    again = _alerts(tracker, "x", start=200 * FIVE_MIN)
    assert again
    assert again[0].uid != first[0].uid


def test_rebaseline_after_follows_the_models_interval() -> None:
    bank = ThresholdBank(ThresholdConfig())
    assert bank.rebaseline_after("pump") == 512.0  # no model yet: 1 s a reading
    bank.set_model("pump", {"0.995": 1.0}, (), interval=FIVE_MIN)
    assert bank.rebaseline_after("pump") == 512 * FIVE_MIN
    bank.set_model("pump", {"0.995": 1.0}, ())  # a model saved before intervals existed
    assert bank.rebaseline_after("pump") == 512.0
    explicit = ThresholdBank(ThresholdConfig(rebaseline_after=600))
    explicit.set_model("pump", {"0.995": 1.0}, (), interval=FIVE_MIN)
    assert explicit.rebaseline_after("pump") == 600.0


def test_reservoir_margin_and_gap_follow_the_data(tmp_path: Path) -> None:
    reservoir = Reservoir(tmp_path / "r.sqlite", 1, max_rows=10_000, max_age=1e12, margin=None)
    reservoir.open()
    try:
        window = Window("pump", "a", 0.0, 3 * FIVE_MIN, np.zeros((4, 1), dtype=np.float32))
        [(_, start, end)] = reservoir.excluded_spans([window], [])
        assert (start, end) == (-120 * FIVE_MIN, 123 * FIVE_MIN)
        reservoir.add([Reading("pump", "a", i * FIVE_MIN, (float(i),)) for i in range(200)])
        data = reservoir.clean_data(window=16, max_gap=None, holdout_fraction=0.2)
        assert data.interval == FIVE_MIN
        assert data.rows == 200  # one run: 5-minute steps are no gap
    finally:
        reservoir.close()


def test_recorded_data_refusal_names_max_gap() -> None:
    ts = np.arange(100) * FIVE_MIN
    values = np.zeros((100, 1), dtype=np.float32)
    assert len(RecordedData(values, ts, ("flow",), None).training_segments(32)) == 1
    with pytest.raises(DataError, match=r"windows\.max_gap \(=60 s\).*32 readings"):
        RecordedData(values, ts, ("flow",), 60.0).training_segments(32)


def test_reservoir_age_auto_keeps_enough_hourly_readings_to_train() -> None:
    assert TimeScale(1.0).reservoir_age(None) == 14 * 86_400.0  # fast streams: 14 days
    assert TimeScale(60.0).reservoir_age(None) == 14 * 86_400.0
    assert TimeScale(3600.0).reservoir_age(None) == 10_000 * 3600.0
    assert TimeScale(3600.0).reservoir_age(7200.0) == 7200.0  # seconds in the config win


def test_reservoir_prunes_hourly_readings_by_their_own_interval(tmp_path: Path) -> None:
    """One hourly meter: 14 days are 336 readings, fewer than a cold start needs; with the
    auto age the reservoir keeps 3,500 hourly readings, and prunes by age beyond 10,000."""
    hour = 3600.0
    reservoir = Reservoir(tmp_path / "r.sqlite", 1, max_rows=100_000, max_age=None, margin=None)
    reservoir.open()
    try:
        reservoir.add([Reading("pump", "a", i * hour, (float(i),)) for i in range(3_500)])
        reservoir.prune()
        assert reservoir.count == 3_500
        reservoir.add([Reading("pump", "a", i * hour, (float(i),)) for i in range(3_500, 10_500)])
        reservoir.prune()
        assert reservoir.count == 10_001  # the newest 10,000 hours and the reading at the edge
    finally:
        reservoir.close()
    fixed = Reservoir(
        tmp_path / "f.sqlite", 1, max_rows=100_000, max_age=14 * 86_400.0, margin=None
    )
    fixed.open()
    try:
        fixed.add([Reading("pump", "a", i * hour, (float(i),)) for i in range(3_500)])
        fixed.prune()
        assert fixed.count == 14 * 24 + 1  # what the old default kept: no cold start ever
    finally:
        fixed.close()


def test_reservoir_relearns_its_interval_every_few_prunes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The auto age's interval is read off the newest readings once in ``_INTERVAL_EVERY``
    prunes, not at every one (a 5,000-row read every 2,000 inserts: issue #23), and a
    stream whose sampling changed is pruned by its new interval within that many."""
    learnt: list[float | None] = []
    learn = Reservoir._learn_stored_interval

    def counted(self: Reservoir, conn: sqlite3.Connection) -> float | None:
        learnt.append(learn(self, conn))
        return learnt[-1]

    monkeypatch.setattr(Reservoir, "_learn_stored_interval", counted)
    reservoir = Reservoir(tmp_path / "r.sqlite", 1, max_rows=100_000, max_age=None, margin=None)
    reservoir.open()
    try:
        # Every second for a while: the 14 days of a fast stream keep everything.
        reservoir.add([Reading("pump", "a", float(i), (0.0,)) for i in range(1_000)])
        for _ in range(_INTERVAL_EVERY):
            reservoir.prune()
        assert learnt == [pytest.approx(1.0)]
        assert reservoir.count == 1_000
        # Then hourly, long enough for the sample to hold nothing else: the next learning
        # finds the hourly interval, and the age becomes 10,000 hours.
        start = 1_000.0
        reservoir.add([Reading("pump", "a", start + i * 3600.0, (0.0,)) for i in range(6_000)])
        reservoir.prune()
        assert learnt == [pytest.approx(1.0), pytest.approx(3600.0)]
        assert reservoir.count == 7_000  # 10,000 hours reach back past the first reading
    finally:
        reservoir.close()
