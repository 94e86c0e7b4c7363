"""Re-baselining after a lasting level change, exceedance probabilities, drift-state snapshots."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sentinel.config import ThresholdConfig
from sentinel.judge.drift import LevelShiftWatch
from sentinel.judge.history import unpack
from sentinel.judge.threshold import ThresholdBank, _empirical_tail
from sentinel.records import Score, Window
from tests.judge.helpers import detail_number

STEP = 20.0  # seconds between windows


def score(value: float, t: float, device: str = "a") -> Score:
    window = Window("pump", device, t - STEP, t, np.zeros((2, 1), dtype=np.float32))
    return Score(window, value, (value,), "v1")


def config(method: str, **overrides: float) -> ThresholdConfig:
    data: dict[str, object] = {
        "method": method,
        "risk": 1e-3,
        "warmup": 500,
        "history": 1000,
        "rebaseline_after": 600,
    }
    return ThresholdConfig.model_validate({**data, **overrides})


HELD_BACK = tuple(float(v) for v in np.random.default_rng(9).lognormal(0.0, 0.3, 4000))


def bank_for(config: ThresholdConfig) -> ThresholdBank:
    """A bank whose stream's model was calibrated on ``HELD_BACK``."""
    bank = ThresholdBank(config)
    bank.set_model("pump", {"0.995": float(np.quantile(HELD_BACK, 0.995))}, HELD_BACK)
    return bank


def feed(bank: ThresholdBank, levels: list[float], seed: int = 0, t0: float = 0.0) -> list[bool]:
    rng = np.random.default_rng(seed)
    flags = []
    for k, level in enumerate(levels):
        value = float(rng.lognormal(0.0, 0.3)) * level
        flags.append(bank.judge(score(value, t0 + STEP * (k + 1))).is_anomaly)
    return flags


@pytest.mark.parametrize("method", ["quantile", "spot"])
def test_a_lasting_level_shift_rebaselines_within_the_configured_time(method: str) -> None:
    bank = bank_for(config(method))
    flags = feed(bank, [1.0] * 2000 + [5.0] * 2000)
    events = bank.drain_events()
    assert len(events) == 1
    event = events[0]
    assert event.kind == "threshold_rebaselined"
    assert event.detail["method"] == method
    shift_at = 2000 * STEP
    # Page-Hinkley fires some windows after the shift; the episode is back-dated to the
    # change itself, so the re-baseline comes rebaseline_after after the shift, not after
    # rebaseline_after plus the test's detection delay.
    assert 0 < detail_number(event, "change_detected_at") - shift_at <= 2 * STEP
    assert event.at - shift_at == pytest.approx(600, abs=2 * STEP)
    assert detail_number(event, "threshold_after") > 3 * detail_number(event, "threshold_before")
    after = np.array(flags[2000:])
    rebaselined_k = round((event.at - shift_at) / STEP)
    assert after[:rebaselined_k].mean() > 0.8  # the new level alerted until then ...
    assert after[rebaselined_k + 5 :].mean() < 0.01  # ... and is normal afterwards
    assert bank.drain_events() == []


@pytest.mark.parametrize("method", ["quantile", "spot"])
def test_short_faults_and_spikes_never_rebaseline(method: str) -> None:
    bank = bank_for(config(method))
    levels = [1.0] * 1500
    for start in range(200, 1500, 150):
        levels[start : start + 3] = [30.0] * 3  # spikes
    levels[1000:1020] = [6.0] * 20  # a 400 s fault, shorter than rebaseline_after
    flags = feed(bank, levels)
    assert bank.drain_events() == []
    assert all(flags[k] for k in range(1000, 1020))  # the fault stays anomalous throughout
    assert all(flags[k] for start in range(200, 1500, 150) for k in range(start, start + 3))


def test_rebaseline_can_be_disabled() -> None:
    bank = bank_for(config("spot", rebaseline_after=0))
    flags = feed(bank, [1.0] * 1000 + [5.0] * 1000)
    assert bank.drain_events() == []
    assert np.mean(flags[1000:]) > 0.95  # DSPOT's lock-out, which re-baselining ends


def test_anomalous_windows_never_update_the_threshold_outside_a_rebaseline() -> None:
    bank = bank_for(config("quantile", warmup=300, history=300, quantile=0.99, prior_windows=0))
    feed(bank, [1.0] * 400)
    before = bank.judge(score(1.0, 1e6)).threshold
    for k in range(20):  # 400 s of anomalies: under rebaseline_after
        assert bank.judge(score(50.0, 1e6 + STEP * (k + 1))).is_anomaly
    assert bank.judge(score(1.0, 1e6 + 500)).threshold == before


def test_exceedance_shrinks_with_the_score_for_both_methods() -> None:
    for method in ("quantile", "spot"):
        bank = bank_for(config(method))
        feed(bank, [1.0] * 600)
        probabilities = [
            bank.judge(score(v, 1e6 + i)).exceedance for i, v in enumerate([4.0, 8.0, 30.0])
        ]
        assert probabilities[0] > probabilities[1] > probabilities[2] > 0, method
        assert probabilities[0] < 1e-2, method
        assert bank.judge(score(1.0, 2e6)).exceedance == 1.0


def test_empirical_tail_is_a_fraction_inside_the_sample_and_extrapolates_beyond() -> None:
    sample = list(np.random.default_rng(1).lognormal(0.0, 0.3, 999))
    inside = _empirical_tail(sample, float(np.quantile(sample, 0.9)))
    assert inside == pytest.approx(0.1, abs=0.01)
    beyond = [_empirical_tail(sample, max(sample) * f) for f in (1.0, 1.5, 3.0)]
    assert beyond[0] <= 1 / 1000
    assert beyond[0] > beyond[1] > beyond[2] > 0
    assert _empirical_tail([], 5.0) == 1.0


def test_level_shift_watch_round_trips_through_json_exactly() -> None:
    rng = np.random.default_rng(2)
    values = list(rng.normal(0.0, 0.3, 500)) + list(rng.normal(2.0, 0.3, 40))
    original = LevelShiftWatch(0.1, 20.0, 600.0, 256)
    for k, v in enumerate(values[:520]):
        original.observe(STEP * k, float(v), v > 1.0)
    assert original.since is not None  # mid-episode: the interesting state
    data = json.loads(json.dumps(original.to_dict()))
    copy = LevelShiftWatch.from_dict(
        data, delta=0.1, threshold=20.0, rebaseline_after=600.0, keep=256
    )
    assert copy.to_dict() == original.to_dict()
    rest = [(STEP * k, float(v), v > 1.0) for k, v in enumerate(values[520:], start=520)]
    assert [original.observe(*x) for x in rest] == [copy.observe(*x) for x in rest]


def test_level_shift_watch_rejects_corrupt_state() -> None:
    with pytest.raises(ValueError, match="level-shift state"):
        LevelShiftWatch.from_dict(
            {"recent": []}, delta=0.1, threshold=20.0, rebaseline_after=1.0, keep=10
        )
    good = LevelShiftWatch(0.1, 20.0, 1.0, 10).to_dict()
    with pytest.raises(ValueError, match="not a number"):
        LevelShiftWatch.from_dict(
            {**good, "ph_mean": "x"}, delta=0.1, threshold=20.0, rebaseline_after=1.0, keep=10
        )


@pytest.mark.parametrize("method", ["quantile", "spot"])
def test_drift_state_survives_a_snapshot_restore_mid_episode(method: str) -> None:
    first = bank_for(config(method))
    feed(first, [1.0] * 1000 + [5.0] * 20, seed=4)  # a change found, not yet re-baselined
    saved = json.loads(json.dumps(first.snapshot("pump")))
    assert saved["a"]["watch"]["since"] is not None
    second = bank_for(config(method))
    second.restore("pump", saved)
    assert second.snapshot("pump") == saved
    # Both continue identically: the restarted one re-baselines at the same window.
    t0 = 1020 * STEP
    tail = [5.0] * 40
    assert feed(first, tail, seed=5, t0=t0) == feed(second, tail, seed=5, t0=t0)
    a, b = first.drain_events(), second.drain_events()
    assert len(a) == len(b) == 1
    assert a[0].at == b[0].at


def test_unreadable_drift_state_rewarms_the_watch_but_keeps_the_threshold() -> None:
    bank = bank_for(config("quantile"))
    feed(bank, [1.0] * 600)
    saved = bank.snapshot("pump")
    saved["a"]["watch"] = {"recent": "garbage"}
    restored = bank_for(config("quantile"))
    assert restored.restore("pump", saved) == 1
    snap = restored.snapshot("pump")
    assert snap["a"]["recent"] == saved["a"]["recent"]
    assert snap["a"]["watch"] is None


def test_old_snapshots_without_drift_state_still_restore() -> None:
    bank = bank_for(config("quantile"))
    assert bank.restore("pump", {"a": {"normal_seen": 3, "recent": [1.0, 1.1, 0.9]}}) == 1
    assert bank.snapshot("pump")["a"]["scale"] == 1.0
    assert math.isfinite(bank.judge(score(1.0, 1.0)).threshold)


def test_level_shift_watch_restores_a_snapshot_from_before_change_points_were_kept() -> None:
    watch = LevelShiftWatch(0.1, 20.0, 600.0, 256)
    for k, v in enumerate(np.random.default_rng(3).normal(0.0, 0.3, 200)):
        watch.observe(STEP * k, float(v), False)
    data = watch.to_dict()
    for key in ("marks", "low_since", "low_windows", "low_anomalous"):
        del data[key]
    for key in ("late_windows", "late_anomalous"):
        del data[key]
    old = LevelShiftWatch.from_dict(
        data, delta=0.1, threshold=20.0, rebaseline_after=600.0, keep=256
    )
    assert old.low_since is None
    assert len(old.marks) == 0
    assert list(old.recent) == list(watch.recent)
    # It goes on finding changes, back-dated from the windows it sees from now on.
    t0 = STEP * 200
    fired = [old.observe(t0 + STEP * k, 1.5, True) for k in range(1, 60)]
    assert any(fired)
    assert old.ended is not None
    assert old.ended[0] == pytest.approx(t0 + STEP, abs=STEP)


@pytest.mark.parametrize("method", ["quantile", "spot"])
def test_a_shift_soon_after_a_burst_still_rebaselines_on_time(method: str) -> None:
    # A short burst opens an episode that is mostly normal when the real shift arrives
    # 20 minutes later; the shift's own episode must replace it, not wait for it to lapse.
    bank = bank_for(config(method))
    levels = [1.0] * 2000 + [8.0] * 15 + [1.0] * 60 + [5.0] * 1000
    feed(bank, levels)
    events = bank.drain_events()
    assert len(events) == 1
    shift_at = 2075 * STEP
    change = detail_number(events[0], "change_detected_at")
    assert change - shift_at == pytest.approx(STEP, abs=STEP)
    assert events[0].at - shift_at == pytest.approx(600, abs=2 * STEP)


def test_a_fault_that_rebaselined_is_undone_when_it_ends_so_the_next_is_caught() -> None:
    # A fault long enough to re-baseline, then normal again: the old threshold comes back
    # after half of rebaseline_after under it, and the same fault later alerts again.
    bank = bank_for(config("quantile"))
    levels = [1.0] * 2000 + [5.0] * 60 + [1.0] * 100 + [5.0] * 20
    flags = feed(bank, levels)
    events = bank.drain_events()
    assert [e.kind for e in events] == ["threshold_rebaselined", "threshold_rebaseline_reverted"]
    reverted = events[1]
    back_at = 2060 * STEP
    # Every window under the old threshold from the return on, for half of 600 s.
    assert reverted.at - back_at == pytest.approx(300, abs=2 * STEP)
    # Back to the old threshold (give or take what the normal windows since taught it).
    assert detail_number(reverted, "threshold_after") == pytest.approx(
        detail_number(events[0], "threshold_before"), rel=0.01
    )
    assert np.mean(flags[2160:]) > 0.8  # the second fault alerts (under x5 it would not)


def test_a_new_level_that_stays_is_never_undone() -> None:
    bank = bank_for(config("quantile"))
    feed(bank, [1.0] * 2000 + [5.0] * 3000)
    assert [e.kind for e in bank.drain_events()] == ["threshold_rebaselined"]


@pytest.mark.parametrize("method", ["quantile", "spot"])
def test_one_rebaseline_moves_a_threshold_by_at_most_the_bound(method: str) -> None:
    # A x1000 change is absorbed in steps of at most rebaseline_max_factor, one every
    # rebaseline_after, never in one jump.
    bank = bank_for(config(method, rebaseline_max_factor=10))
    feed(bank, [1.0] * 2000 + [1000.0] * 200)
    events = bank.drain_events()
    assert len(events) >= 3
    for event in events:
        assert event.kind == "threshold_rebaselined"
        before = detail_number(event, "threshold_before")
        assert detail_number(event, "threshold_after") <= 10 * before * 1.0001


def test_an_undo_survives_a_snapshot_restore() -> None:
    first = bank_for(config("quantile"))
    feed(first, [1.0] * 2000 + [5.0] * 60 + [1.0] * 5)  # re-baselined, back for 5 windows
    assert [e.kind for e in first.drain_events()] == ["threshold_rebaselined"]
    saved = json.loads(json.dumps(first.snapshot("pump")))
    assert len(saved["a"]["prior"]) == 1
    second = bank_for(config("quantile"))
    second.restore("pump", saved)
    assert second.snapshot("pump") == saved
    t0 = 2065 * STEP
    tail = [1.0] * 20
    assert feed(first, tail, seed=5, t0=t0) == feed(second, tail, seed=5, t0=t0)
    a, b = first.drain_events(), second.drain_events()
    assert [e.kind for e in a] == [e.kind for e in b] == ["threshold_rebaseline_reverted"]
    assert a[0].at == b[0].at


def test_a_snapshot_with_its_floats_as_json_lists_restores_as_a_packed_one() -> None:
    """Snapshots written before the floats were packed (issue #23) hold them as JSON lists
    (and a watch's marks as [time, 0/1] pairs); they come back to the same state."""
    bank = bank_for(config("quantile"))
    feed(bank, [1.0] * 1000 + [5.0] * 20, seed=4)  # a change found: the watch holds marks
    packed = json.loads(json.dumps(bank.snapshot("pump")))
    watch = packed["a"]["watch"]
    assert watch["since"] is not None
    assert "float64" in watch["marks"]
    lists = json.loads(json.dumps(packed))
    lists["a"]["recent"] = unpack(packed["a"]["recent"]).tolist()
    lists["a"]["watch"]["recent"] = unpack(watch["recent"]).tolist()
    lists["a"]["watch"]["marks"] = [[t, int(a)] for t, a in unpack(watch["marks"], 2).tolist()]
    assert len(lists["a"]["recent"]) > 200
    assert len(lists["a"]["watch"]["marks"]) > 200
    restored = bank_for(config("quantile"))
    assert restored.restore("pump", lists) == 1
    assert restored.snapshot("pump") == packed
