"""The shift check (sentinel.judge.shifts): one feature stepping while the others hold still."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sentinel.config import ShiftsConfig, SpikesConfig, ThresholdConfig
from sentinel.judge.shifts import ShiftCheck, step_statistics
from sentinel.judge.spikes import SpikeCheck
from sentinel.judge.threshold import ThresholdBank
from sentinel.records import LevelHit, Window
from sentinel.worker.snapshots import ThresholdSnapshots

LENGTH, HOP = 32, 4


def _plant(n: int, seed: int = 0, switch_every: int = 60) -> np.ndarray:
    """(n, 3) readings of a device whose three channels follow one load, which switches
    level every ``switch_every`` readings (a step every channel takes together), plus noise."""
    rng = np.random.default_rng(seed)
    load = np.repeat(rng.uniform(0.5, 1.0, size=n // switch_every + 1), switch_every)[:n]
    gains = np.array([40.0, 6.0, 20.0])
    values: np.ndarray = load[:, None] * gains + rng.normal(0.0, 0.2, size=(n, 3))
    return values


def _windows(values: np.ndarray, device: str = "p1") -> list[Window]:
    out = []
    for end in range(LENGTH, len(values) + 1, HOP):
        chunk = values[end - LENGTH : end]
        out.append(Window("pump", device, float(end - LENGTH), float(end - 1), chunk))
    return out


def _run(
    check: ShiftCheck, values: np.ndarray, warm: int, device: str = "p1"
) -> list[tuple[float, LevelHit]]:
    """Feed ``values`` window by window; the first ``warm`` readings as the warm start.
    Returns (newest reading, hit) of every hit after it."""
    found = []
    for window in _windows(values, device):
        stacked = window.values[None, :, :]
        is_warm = window.end_ts < warm
        hits, stats = check.check("pump", [window], stacked, judge=not is_warm)
        check.learn("pump", [window], stats, [hits[0] is None], hits, warm=is_warm)
        if hits[0] is not None and not is_warm:
            found.append((window.end_ts, hits[0]))
    return found


def test_the_statistic_is_the_difference_of_the_two_spans_means() -> None:
    values = np.zeros((32, 2))
    values[24:, 1] = 5.0  # a step 8 readings before the window's end
    stats = step_statistics(values, 8, 4)
    assert stats.shape == (4, 2)
    np.testing.assert_allclose(stats[:, 0], 0.0)
    # newest reading: the 8 newest all stepped, the 8 before none
    np.testing.assert_allclose(stats[-1, 1], 5.0)
    np.testing.assert_allclose(stats[-2, 1], 5.0 * 7 / 8)


def test_a_short_window_gives_no_statistic() -> None:
    assert step_statistics(np.zeros((10, 2)), 8, 4).shape == (0, 2)


def test_one_channel_offset_alone_is_a_shift_and_named() -> None:
    values = _plant(3000)
    # the pressure sensor offset by 15 of its noise deviations between two load switches
    values[2420:2450, 1] += 3.0
    found = _run(ShiftCheck(ShiftsConfig(), HOP), values, warm=1500)
    assert found, "the lone offset went unseen"
    assert {hit.feature for _, hit in found} == {1}
    assert all(2420 <= at <= 2450 + LENGTH for at, _ in found)
    # the hits date themselves to the step they saw: the first to the offset's first
    # reading, the first after its end to its end (a window holding a step among its
    # oldest span readings dates it a few readings late, within the offset)
    dated = [(at, at - hit.age) for at, hit in found if hit.age is not None]
    assert dated[0][1] == 2420
    assert next(d for at, d in dated if at > 2450) == 2450
    assert all(2420 <= d <= 2450 + 4 for _, d in dated)


def test_load_changes_the_channels_take_together_are_not_shifts() -> None:
    # every 60 readings all three channels step by up to 20 of their noise deviations
    found = _run(ShiftCheck(ShiftsConfig(), HOP), _plant(6000, seed=1), warm=1500)
    assert found == []


def test_a_channel_that_steps_alone_in_normal_life_learns_its_own_limit() -> None:
    values = _plant(6000, seed=2)
    # a set point on channel 0 steps alone by 2.0 every 200 readings, in warm-up and after
    for start in range(130, 6000, 400):  # never at a load switch
        values[start : start + 200, 0] += 2.0
    check = ShiftCheck(ShiftsConfig(), HOP)
    assert _run(check, values[:5000], warm=3000) == []
    limit = check.limit("pump", "p1")
    assert limit is not None
    assert limit[0] > ShiftsConfig().k
    # twice its usual step, alone, is still a shift
    values[5420:5450, 0] += 4.0
    fresh = ShiftCheck(ShiftsConfig(), HOP)
    found = _run(fresh, values, warm=3000)
    assert [hit.feature for _, hit in found]
    assert all(hit.feature == 0 for _, hit in found)
    assert all(5420 <= at <= 5450 + LENGTH for at, _ in found)


def test_nothing_is_judged_before_warmup_readings_are_learnt() -> None:
    values = _plant(1000, seed=3)
    values[220:250, 2] += 3.0
    cfg = ShiftsConfig(warmup=256)
    assert _run(ShiftCheck(cfg, HOP), values[:300], warm=0) == []


def test_a_stream_of_one_feature_is_not_judged() -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(0.0, 0.2, size=(3000, 1))
    values[2400:2460, 0] += 3.0
    assert _run(ShiftCheck(ShiftsConfig(), HOP), values, warm=1500) == []


def test_the_readings_leading_up_to_a_shift_are_not_learnt() -> None:
    """A step's statistic rises over ``span`` readings; the windows before it is judged
    whole are normal, and learning them would raise the limit it is judged against."""
    values = _plant(3000, seed=5)
    values[2420:2450, 1] += 2.0
    check = ShiftCheck(ShiftsConfig(), HOP)
    found = _run(check, values[:2800], warm=1500)
    assert found  # the shift was judged, and the windows after it learnt for 350 readings
    limit = check.limit("pump", "p1")
    assert limit is not None
    # learnt at once, its rising edge's windows made it 11.7
    assert limit[1] == ShiftsConfig().k


def test_snapshot_and_restore_keep_a_device_judged() -> None:
    values = _plant(3000, seed=6)
    check = ShiftCheck(ShiftsConfig(), HOP)
    _run(check, values[:2000], warm=2000)
    saved = check.snapshot("pump")
    assert set(saved) == {"p1"}
    restored = ShiftCheck(ShiftsConfig(), HOP)
    assert restored.restore("pump", saved, 3) == 1
    scale, original = restored.scale("pump", "p1"), check.scale("pump", "p1")
    assert scale is not None
    assert original is not None
    np.testing.assert_allclose(scale, original)
    shifted = values[2000:2400].copy()
    shifted[220:250, 1] += 3.0
    found = _run(restored, shifted, warm=0)
    assert found
    assert all(hit.feature == 1 for _, hit in found)


def test_a_malformed_snapshot_is_refused() -> None:
    check = ShiftCheck(ShiftsConfig(), HOP)
    bad = {"p1": {"learnt": 300, "scale": [1.0, -1.0, 1.0], "limit": [8.0] * 3}}
    with pytest.raises(ValueError, match="bad scale or limit"):
        check.restore("pump", bad, 3)


def test_thresholds_json_carries_the_shift_state_across_a_restart(tmp_path: Path) -> None:
    values = _plant(3000, seed=7)
    check = ShiftCheck(ShiftsConfig(), HOP)
    _run(check, values[:2000], warm=2000)
    path = tmp_path / "thresholds.json"
    before = ThresholdSnapshots(
        path, ThresholdBank(ThresholdConfig()), SpikeCheck(SpikesConfig(), HOP), shifts=check
    )
    before.save({"pump": "v1"})
    assert "p1" in json.loads(path.read_text())["streams"]["pump"]["shifts"]
    restarted = ShiftCheck(ShiftsConfig(), HOP)
    after = ThresholdSnapshots(
        path, ThresholdBank(ThresholdConfig()), SpikeCheck(SpikesConfig(), HOP), shifts=restarted
    )
    after.restore({"pump": ("v2", 3)})  # another model: the spreads are the device's
    shifted = values[2000:2400].copy()
    shifted[245:275, 0] += 8.0  # between two load switches
    found = _run(restarted, shifted, warm=0)
    assert found
    assert {hit.feature for _, hit in found} == {0}


def _commanded(n: int, seed: int) -> np.ndarray:
    """(n, 3): channel 0 a command (0, or 1 for one reading when sent), channel 1 the level
    it sets (a new one at each send), channel 2 a quiet neighbour."""
    rng = np.random.default_rng(seed)
    values = np.zeros((n, 3))
    level = 0.0
    for t in range(n):
        if t % 150 == 75:
            values[t, 0] = 1.0
            level = float(rng.choice([-3.0, 0.0, 3.0]))
        values[t, 1] = level
    return values + np.column_stack([np.zeros(n), rng.normal(0.0, 0.2, size=(n, 2))])


def test_a_step_right_after_a_command_is_its_response() -> None:
    values = _commanded(4000, seed=8)
    values[:2000, 1] = values[:2000, 1] * 0.1  # training saw the commands move it little
    values[3015:3045, 2] += 3.0  # the neighbour's sensor offset, between two sends
    found = _run(ShiftCheck(ShiftsConfig(), HOP), values, warm=2000)
    assert found  # not told which channel commands: its steps are lone
    check = ShiftCheck(ShiftsConfig(), HOP)
    quiet = []
    for window in _windows(values):
        stacked = window.values[None, :, :]
        warm = window.end_ts < 2000
        hits, stats = check.check("pump", [window], stacked, drivers=[0], judge=not warm)
        check.learn("pump", [window], stats, [hits[0] is None], hits, warm=warm)
        if hits[0] is not None and not warm:
            quiet.append((window.end_ts, hits[0].feature))
    # the neighbour offset between two sends is still a shift, and only it
    assert quiet
    assert all(3015 <= at <= 3045 + LENGTH and feature == 2 for at, feature in quiet)


def test_the_warm_starts_steps_are_learnt_not_judged() -> None:
    """The warm start's windows are the model's training rows: a lone step among them is
    normal (its window must teach the device's threshold), and it sets the limit."""
    values = _plant(3000, seed=9)
    values[1020:1050, 1] += 3.0  # a step the training rows held
    check = ShiftCheck(ShiftsConfig(), HOP)
    for window in _windows(values[:1500]):
        hits, stats = check.check("pump", [window], window.values[None], judge=False)
        assert hits == [None]
        check.learn("pump", [window], stats, [True], hits, warm=True)
    limit = check.limit("pump", "p1")
    assert limit is not None
    assert limit[1] > 20  # 1.5 x the step's ~22 spreads


def test_a_lagging_channels_step_after_the_others_moved_is_a_response() -> None:
    """A five-minute load average follows the load a few readings late, so its step comes
    when the others have already moved: alone at its own reading, a response to theirs.
    Here the load's live steps are twice any training held, so neither the spread nor
    the learnt limit covers the lagging channel's."""
    values = _plant(6000, seed=10)
    values[3000:] = values[3000:] * 2.0 - values[:3000].mean(axis=0)
    lagged = np.r_[np.full(10, values[0, 0]), values[:-10, 0]]  # channel 0, 10 readings late
    values[:, 2] = lagged / 2.0
    found = _run(ShiftCheck(ShiftsConfig(), HOP), values, warm=3000)
    assert found == []


def test_windows_shorter_than_two_spans_are_left_alone() -> None:
    check = ShiftCheck(ShiftsConfig(span=8), HOP)
    rng = np.random.default_rng(11)
    for length in (8, 15):
        values = rng.normal(size=(length, 3)).astype(np.float32)
        window = Window("pump", "p1", 0.0, float(length - 1), values)
        hits, stats = check.check("pump", [window], window.values[None])
        assert hits == [None]
        assert stats[0].shape == (0, 3)
        check.learn("pump", [window], stats, [True], hits)
    assert check.scale("pump", "p1") is None
