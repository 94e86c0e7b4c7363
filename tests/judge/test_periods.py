"""The period check: a feature's newest period unlike every earlier one (a daily schedule
that did not run), judged against training's library and the device's own earlier periods."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from sentinel.config import PeriodsConfig, SpikesConfig, ThresholdConfig
from sentinel.judge.evidence import evidence
from sentinel.judge.periods import PeriodCheck
from sentinel.judge.spikes import SpikeCheck
from sentinel.judge.threshold import ThresholdBank
from sentinel.model.periods import PeriodStats
from sentinel.records import AlertReason, PeriodHit, Score, ThresholdState, Verdict, Window
from sentinel.worker.snapshots import ThresholdSnapshots
from tests.fakes import FakeDetector

DAY = 96  # readings a "day", one a second
HOP, LENGTH = 4, 32


def schedule(days: int, missed: tuple[int, ...] = (), seed: int = 0) -> np.ndarray:
    """(days x DAY, 2): a fan on from about a quarter to about three quarters of each day
    (x), and a noisy channel with no cycle (y); on the ``missed`` days the fan never starts."""
    rng = np.random.default_rng(seed)
    fan = []
    for day in range(days):
        values = 0.4 + rng.normal(0.0, 0.05, DAY)
        if day not in missed:
            start, stop = 24 + rng.integers(-2, 3), 72 + rng.integers(-2, 3)
            values[start:stop] = 18.0 + rng.normal(0.0, 0.3, stop - start)
        fan.append(values)
    return np.column_stack([np.concatenate(fan), rng.normal(0.0, 1.0, days * DAY)])


class CyclingDetector(FakeDetector):
    """The fake model (features x and y) with the periods of its training data."""

    def __init__(self, train: np.ndarray, version: str = "fake-1") -> None:
        super().__init__(version)
        self._stats = PeriodStats.fit([train], LENGTH)
        self._meta.training["n_readings"] = len(train)

    def period_stats(self) -> PeriodStats | None:
        return self._stats


def windows(values: np.ndarray, first: int, last: int, device: str = "d") -> list[Window]:
    """The windows of ``values`` (a reading a second from 0) whose newest reading is in
    [first, last), every ``HOP`` readings."""
    out = []
    for end in range(first + HOP, last + 1, HOP):
        times = np.arange(end - LENGTH, end, dtype=np.float64)
        out.append(
            Window("s", device, times[0], times[-1], values[end - LENGTH : end], times.copy())
        )
    return out


def judged(
    check: PeriodCheck, detector: FakeDetector, values: np.ndarray, train: int
) -> dict[int, PeriodHit]:
    """The training rows taken in unjudged (the warm start), then every later window:
    the hits by their window's newest reading."""
    check.check("s", detector, windows(values, LENGTH - HOP, train), judge=False)
    live = windows(values, train, len(values))
    hits = check.check("s", detector, live)
    return {int(w.end_ts): h for w, h in zip(live, hits, strict=True) if h is not None}


def test_a_day_the_fan_never_started_is_found_within_the_hour_and_no_other_day_is() -> None:
    values = schedule(12, missed=(9,))
    train = 7 * DAY
    detector = CyclingDetector(values[:train])
    stats = detector.period_stats()
    assert stats is not None
    (fan,) = stats.features  # the noisy channel has no cycle
    assert fan.feature == 0
    assert fan.period == DAY
    hits = judged(PeriodCheck(PeriodsConfig()), detector, values, train)
    assert hits, "the missed day was not found"
    should_start = 9 * DAY + 24
    assert should_start <= min(hits) <= should_start + 12  # within a few blocks of 2
    # flagged while the day differs from every earlier one at its hour, and an eighth of
    # a day after: not all night, and not the next morning (the fan's start differs from
    # the missed day, not from the days before it)
    assert max(hits) <= 9 * DAY + 72 + 3 + DAY // 8 + 2 * fan.block
    assert all(9 * DAY <= at < 10 * DAY for at in hits)
    assert all(hit.feature == 0 and hit.ratio > 1.5 for hit in hits.values())


def test_the_evidence_is_the_newest_block_that_differed() -> None:
    values = schedule(12, missed=(9,))
    train = 7 * DAY
    detector = CyclingDetector(values[:train])
    hits = judged(PeriodCheck(PeriodsConfig()), detector, values, train)
    late = max(hits)
    hit = hits[late]
    assert hit.age is not None
    # the window's evidence is the end of the fan's usual run, not the window's newest
    newest_differing = late - hit.age
    assert 9 * DAY + 60 <= newest_differing <= 9 * DAY + 76
    (window,) = windows(values, late + 1 - HOP, late + 1)  # its newest reading is ``late``
    state = ThresholdState("quantile", 1.0, 100, None, True)
    score = Score(window, 0.1, (0.1, 0.1), "fake-1")
    verdict = Verdict(score, 1.0, True, 1e-3, state, period=hit)
    first, last = evidence(verdict, None)
    assert first == last == float(newest_differing)


def test_normal_days_and_a_later_start_within_the_days_spread_raise_nothing() -> None:
    values = schedule(14, seed=3)
    train = 7 * DAY
    detector = CyclingDetector(values[:train])
    assert judged(PeriodCheck(PeriodsConfig()), detector, values, train) == {}


def test_readings_that_never_came_are_no_discord() -> None:
    values = schedule(12, seed=4)
    train = 7 * DAY
    detector = CyclingDetector(values[:train])
    check = PeriodCheck(PeriodsConfig())
    check.check("s", detector, windows(values, LENGTH - HOP, train), judge=False)
    # ten readings of day 8 never arrive: the windows after the gap start past it
    gap = range(8 * DAY + 40, 8 * DAY + 50)
    live = [
        w
        for w in windows(values, train, len(values))
        if not any(int(w.time_of(-i)) in gap for i in range(1, HOP + 1))
    ]
    assert all(hit is None for hit in check.check("s", detector, live))


def test_the_warm_start_is_never_judged_and_a_device_with_no_day_of_its_own_waits() -> None:
    values = schedule(12, missed=(2,))
    detector = CyclingDetector(schedule(7, seed=9))
    check = PeriodCheck(PeriodsConfig())
    # the missed day among the warm start's rows: memory, no hits
    hits = check.check("s", detector, windows(values, LENGTH - HOP, 4 * DAY), judge=False)
    assert hits == [None] * len(hits)
    # a second device's first readings hold no period yet: not judged
    fresh = check.check("s", detector, windows(values, LENGTH - HOP, DAY // 2, device="e"))
    assert fresh == [None] * len(fresh)


def test_off_a_model_without_periods_and_when_disabled_nothing_is_judged() -> None:
    values = schedule(12, missed=(9,))
    train = 7 * DAY
    detector = CyclingDetector(values[:train])
    assert judged(PeriodCheck(PeriodsConfig(enabled=False)), detector, values, train) == {}
    assert judged(PeriodCheck(PeriodsConfig()), FakeDetector(), values, train) == {}


def test_a_model_swap_keeps_the_devices_days_and_park_frees_them() -> None:
    values = schedule(12, missed=(9,))
    train = 7 * DAY
    check = PeriodCheck(PeriodsConfig())
    check.check("s", CyclingDetector(values[:train]), windows(values, LENGTH - HOP, 8 * DAY))
    # a new model of the same block size: the device's blocks carry over, so the missed
    # day is judged at once against them
    retrained = CyclingDetector(values[: 8 * DAY], version="fake-2")
    live = windows(values, 8 * DAY, 10 * DAY)
    hits = check.check("s", retrained, live)
    assert any(h is not None for h in hits)
    assert check.park({("s", "other")}) == 1
    assert check.park(set()) == 0


def test_training_with_fewer_than_three_periods_or_a_short_cycle_keeps_no_period() -> None:
    assert PeriodStats.fit([schedule(2)], LENGTH).features == ()
    t = np.arange(2000, dtype=np.float64)
    short = np.column_stack([np.sin(2 * np.pi * t / 20), np.cos(2 * np.pi * t / 20)])
    assert PeriodStats.fit([short], LENGTH).features == ()  # a cycle inside every window


def test_an_alerts_reason_keeps_the_period_hit() -> None:
    state = ThresholdState("quantile", 1.0, 2000, None, True)
    reason = AlertReason(state, 1e-4, "abc", period=("fan", 6.25))
    data = reason.to_dict()
    assert data["period_feature"] == "fan"
    assert data["period_ratio"] == 6.25
    assert AlertReason.from_dict(data).period == ("fan", 6.25)
    assert AlertReason.from_dict(AlertReason(state, 1e-4, "abc").to_dict()).period is None


@pytest.mark.parametrize("factor", [1.0, 0.5])
def test_a_factor_that_would_flag_training_itself_is_refused(factor: float) -> None:
    with pytest.raises(ValueError, match="greater than 1"):
        PeriodsConfig(factor=factor)


def test_a_restart_keeps_the_devices_periods() -> None:
    """The memory saved with the thresholds (``snapshot``, JSON) and taken back by a fresh
    check judges the missed day as the check that never stopped did; without it the
    device would hold no period of its own until a day later."""
    values = schedule(12, missed=(9,))
    train = 7 * DAY
    detector = CyclingDetector(values[:train])
    before = windows(values, LENGTH - HOP, 8 * DAY + 40)
    after = windows(values, 8 * DAY + 40, len(values))
    steady = PeriodCheck(PeriodsConfig())
    steady.check("s", detector, before)
    expected = steady.check("s", detector, after)
    first = PeriodCheck(PeriodsConfig())
    first.check("s", detector, before)
    saved = json.loads(json.dumps(first.snapshot("s")))
    assert set(saved) == {"d"}
    again = PeriodCheck(PeriodsConfig())
    assert again.restore("s", saved, n_features=2) == 1
    restored = again.check("s", detector, after)
    # the same windows, features and evidence; ratios within float32's rounding of blocks
    assert [h and (h.feature, h.age) for h in restored] == [
        h and (h.feature, h.age) for h in expected
    ]
    assert [h.ratio for h in restored if h] == pytest.approx([h.ratio for h in expected if h])
    assert any(hit is not None for hit in expected)


def test_a_parked_device_keeps_its_periods_and_a_malformed_memory_is_refused() -> None:
    values = schedule(12, missed=(9,))
    train = 7 * DAY
    detector = CyclingDetector(values[:train])
    check = PeriodCheck(PeriodsConfig())
    check.check("s", detector, windows(values, LENGTH - HOP, 9 * DAY))
    assert check.park(set()) == 1
    assert set(check.snapshot("s")) == {"d"}  # parked, still saved
    hits = check.check("s", detector, windows(values, 9 * DAY, 10 * DAY))
    assert any(hit is not None for hit in hits)  # judged at once on its return
    saved = check.snapshot("s")
    with pytest.raises(ValueError, match="does not fit"):
        PeriodCheck(PeriodsConfig()).restore("s", saved, n_features=0)
    saved["d"]["features"]["0"]["blocks"] = "not base64!"
    with pytest.raises(ValueError, match="base64"):
        PeriodCheck(PeriodsConfig()).restore("s", saved, n_features=2)


def test_blocks_saved_bare_before_packed_floats_restore_and_missing_ones_stay_missing() -> None:
    """The blocks are saved as ``sentinel.judge.history.pack``'s float32 data, NaN where a
    block's readings never came; thresholds.json files written before that hold the bare
    base64 of the same bytes and restore the same. An infinite block is refused."""
    values = schedule(12, missed=(9,))
    values[8 * DAY + 60 : 8 * DAY + 90] = np.nan  # a gap: blocks with no readings
    detector = CyclingDetector(values[: 7 * DAY])
    check = PeriodCheck(PeriodsConfig())
    check.check("s", detector, windows(values, LENGTH - HOP, 9 * DAY))
    saved = json.loads(json.dumps(check.snapshot("s")))
    packed = saved["d"]["features"]["0"]["blocks"]
    assert set(packed) == {"float32"}
    bare = json.loads(json.dumps(saved))
    bare["d"]["features"]["0"]["blocks"] = packed["float32"]
    rings = []
    for data in (saved, bare):
        again = PeriodCheck(PeriodsConfig())
        assert again.restore("s", data, n_features=2) == 1
        again.check("s", detector, windows(values, 9 * DAY, 9 * DAY + HOP))
        feature = again._devices[("s", "d")].features[0]
        rings.append(feature.ring[len(feature.ring) - feature.filled :])
    assert np.array_equal(rings[0], rings[1], equal_nan=True)
    assert np.isnan(rings[0]).any()  # the gap's blocks, still missing
    blocks = np.frombuffer(base64.b64decode(packed["float32"]), dtype="<f4").copy()
    blocks[-1] = np.inf
    saved["d"]["features"]["0"]["blocks"] = {"float32": base64.b64encode(blocks.tobytes()).decode()}
    with pytest.raises(ValueError, match="non-finite"):
        PeriodCheck(PeriodsConfig()).restore("s", saved, n_features=2)


def test_thresholds_json_carries_the_period_memory_across_a_restart(tmp_path: Path) -> None:
    values = schedule(12, missed=(9,))
    train = 7 * DAY
    detector = CyclingDetector(values[:train])
    check = PeriodCheck(PeriodsConfig())
    check.check("s", detector, windows(values, LENGTH - HOP, 9 * DAY))
    path = tmp_path / "thresholds.json"
    spikes = SpikeCheck(SpikesConfig(), HOP)
    before = ThresholdSnapshots(path, ThresholdBank(ThresholdConfig()), spikes, periods=check)
    before.save({"s": "fake-1"})
    assert "d" in json.loads(path.read_text())["streams"]["s"]["periods"]
    restarted = PeriodCheck(PeriodsConfig())
    after = ThresholdSnapshots(path, ThresholdBank(ThresholdConfig()), spikes, periods=restarted)
    after.restore({"s": ("fake-1", 2)})
    hits = restarted.check("s", detector, windows(values, 9 * DAY, 10 * DAY))
    assert any(hit is not None for hit in hits)


def weekdays(days: int, late: int | None = None, seed: int = 0) -> np.ndarray:
    """(days x DAY, 1): the fan of ``schedule`` idle on days 5 and 6 of every week; on day
    ``late`` it stops a sixth of a day later than usual."""
    rng = np.random.default_rng(seed)
    fan = []
    for day in range(days):
        values = 0.4 + rng.normal(0.0, 0.05, DAY)
        if day % 7 < 5:
            start, stop = 24 + rng.integers(-2, 3), 72 + rng.integers(-2, 3)
            stop += DAY // 6 if day == late else 0
            values[start:stop] = 18.0 + rng.normal(0.0, 0.3, stop - start)
        fan.append(values)
    return np.concatenate(fan)[:, None]


def test_a_schedule_idle_at_weekends_is_judged_against_its_own_weekends() -> None:
    """Trained on two weeks, the first weekend has only weekdays before it; read from it,
    the reference was a whole day's difference and a weekday's evening run four hours
    late went unseen. Read from queries a week in, it is found, and a normal third week
    raises nothing."""
    train = 14 * DAY
    normal = weekdays(21)
    detector = CyclingDetector(normal[:train])
    stats = detector.period_stats()
    assert stats is not None
    (fan,) = stats.features
    assert fan.reference < 6.0  # a whole day's difference is ~12
    assert judged(PeriodCheck(PeriodsConfig()), detector, normal, train) == {}
    late = weekdays(21, late=16)
    hits = judged(PeriodCheck(PeriodsConfig()), CyclingDetector(late[:train]), late, train)
    assert hits
    assert all(16 * DAY + 72 <= at <= 17 * DAY + DAY // 4 for at in hits)
