"""The per-reading spike check (sentinel.judge.spikes): residuals, noise scale, judgments, state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sentinel.config import SpikesConfig
from sentinel.judge.spikes import (
    SpikeCheck,
    SpikeHit,
    _DeviceNoise,
    _scale,
    _scale_reference,
    _tail_limits,
    hampel_residuals,
)
from simulators import synthetic

WINDOW, HOP = 16, 4


def windows(series: np.ndarray, hop: int = HOP) -> np.ndarray:
    """(N, F) readings as the stream's (B, WINDOW, F) windows, one every ``hop`` readings."""
    return np.stack([series[i : i + WINDOW] for i in range(0, len(series) - WINDOW + 1, hop)])


def noisy(n: int, seed: int = 0, sigma: float = 0.1) -> np.ndarray:
    """Two channels: a slow cycle with a trend, and a level; Gaussian noise of ``sigma``."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    cycle = 5 * np.sin(t / 40) + 0.01 * t
    level = np.full(n, 3.0)
    return np.column_stack([cycle, level]) + sigma * rng.standard_normal((n, 2))


def run(check: SpikeCheck, series: np.ndarray, hop: int = HOP) -> list[SpikeHit | None]:
    batch = windows(series, hop)
    return check.check("pump", ["p1"] * len(batch), batch)


def test_residuals_hand_computed() -> None:
    x = np.array([[1.0], [2.0], [9.0], [3.0], [4.0]])[None]  # one window, one feature
    judged, noise = hampel_residuals(x, 1)
    # medians of (1,2,9), (2,9,3), (9,3,4) -> 2, 3, 4; left out: (1,9), (2,3), (9,4) -> 5, 2.5, 6.5
    assert judged[0, :, 0].tolist() == [0.0, 6.0, -1.0]
    assert noise[0, :, 0].tolist() == [-3.0, 6.5, -3.5]


def test_a_step_leaves_no_residual_and_a_short_excursion_all_of_itself() -> None:
    step = np.array([0.0, 0.0, 0.0, 0.0, 5.0, 5.0, 5.0, 5.0])[None, :, None]
    judged, _ = hampel_residuals(step, 3)
    assert np.all(judged == 0.0)
    burst = np.array([0.0, 0.0, 0.0, 7.0, 7.0, 7.0, 0.0, 0.0, 0.0])[None, :, None]
    judged, _ = hampel_residuals(burst, 3)
    assert judged[0, 1, 0] == 7.0  # the middle reading of a 3-reading excursion


def test_a_spike_is_found_on_its_feature_and_nothing_else_is() -> None:
    series = noisy(3000)
    at = 2400
    series[at, 1] += 2.0  # 20 sigma on the level channel
    check = SpikeCheck(SpikesConfig(), HOP)
    hits = run(check, series)
    found = [(i, h) for i, h in enumerate(hits) if h is not None]
    assert found, "the spike was not found"
    for i, hit in found:
        assert hit.feature == 1
        assert i * HOP + WINDOW - 1 - hit.age == at  # the reading it points at
        assert 15 < hit.z < 25
        assert hit.exceedance < 1e-30
    # judged in every window where it has three readings on each side: (16 - 6) / 4
    assert 2 <= len(found) <= 3
    scale = check.scale("pump", "p1")
    assert scale is not None
    assert scale[1] == pytest.approx(0.1, rel=0.25)  # the level channel's noise
    assert scale[0] == pytest.approx(0.1, rel=0.25)  # the trend does not hide the cycle's


def test_spike_memory_is_made_only_for_features_that_spiked() -> None:
    """An empty deque per feature was ~620 bytes of every device (issue #23, memory): a
    feature's memory is made with its first spike."""
    series = noisy(3000)
    series[2400, 1] += 2.0
    check = SpikeCheck(SpikesConfig(), HOP)
    run(check, series)
    state = check._devices[("pump", "p1")]
    assert state.spikes[0] == ()
    assert len(state.spikes[1]) == 1
    assert check.normal_spikes("pump", "p1")[0] == []


def test_no_judgment_before_warmup() -> None:
    series = noisy(300)
    series[100, 0] += 5.0
    check = SpikeCheck(SpikesConfig(warmup=200), HOP)
    assert all(h is None for h in run(check, series))  # the spike came before warm-up ended
    assert check.scale("pump", "p1") is not None  # 288 readings learnt by the end


def test_spikes_do_not_teach_the_noise_scale() -> None:
    clean = noisy(2000, seed=1)
    # one identical pulse every 7 readings is a normal pulse to a device that remembers
    # its spikes; here the point is the noise scale alone
    check = SpikeCheck(SpikesConfig(history=1000, recurring=False), HOP)
    run(check, clean)
    before = check.scale("pump", "p1")
    spiky = noisy(2000, seed=2)
    spiky[::7, 1] += 3.0  # one reading in seven, far off
    hits = run(check, spiky)
    after = check.scale("pump", "p1")
    assert before is not None
    assert after is not None
    assert sum(h is not None for h in hits) > 0.5 * len(hits)
    assert after[1] < 1.5 * before[1]


def test_a_lasting_noise_increase_is_learnt_within_history() -> None:
    check = SpikeCheck(SpikesConfig(history=400, warmup=100), HOP)
    run(check, noisy(1000, sigma=0.05))
    louder = noisy(4000, seed=3, sigma=0.5)  # ten times the noise, for good
    hits = run(check, louder)
    per_window = len(louder) // HOP
    early = sum(h is not None for h in hits[: per_window // 4])
    late = sum(h is not None for h in hits[-per_window // 4 :])
    assert early > 0
    assert late == 0


def test_quantised_and_constant_channels() -> None:
    rng = np.random.default_rng(4)
    quantised = np.round(3 + 0.2 * rng.standard_normal(3000), 0)  # mostly 3, sometimes 2/4
    constant = np.full(3000, 7.0)
    series = np.column_stack([quantised, constant])
    check = SpikeCheck(SpikesConfig(), HOP)
    assert all(h is None for h in run(check, series))
    scale = check.scale("pump", "p1")
    assert scale is not None
    assert scale[0] >= 1.0  # one quantisation step is never a spike
    assert math.isnan(scale[1])  # a constant channel is not judged


def test_disabled_judges_nothing() -> None:
    series = noisy(3000)
    series[2400, 1] += 5.0
    check = SpikeCheck(SpikesConfig(enabled=False), HOP)
    assert all(h is None for h in run(check, series))


def test_short_windows_use_fewer_neighbours() -> None:
    series = noisy(2000)
    series[1500, 0] += 3.0
    check = SpikeCheck(SpikesConfig(neighbours=3), 1)
    batch = np.stack([series[i : i + 4] for i in range(len(series) - 3)])
    hits = check.check("pump", ["p1"] * len(batch), batch)
    assert any(h is not None and h.feature == 0 for h in hits)


def test_snapshot_round_trip_judges_at_once() -> None:
    check = SpikeCheck(SpikesConfig(), HOP)
    run(check, noisy(2000))
    saved = check.snapshot("pump")
    assert set(saved) == {"p1"}
    fresh = SpikeCheck(SpikesConfig(), HOP)
    assert fresh.restore("pump", saved, 2) == 1
    restored, learnt = fresh.scale("pump", "p1"), check.scale("pump", "p1")
    assert restored is not None
    assert learnt is not None
    np.testing.assert_allclose(restored, learnt)
    spike = noisy(40, seed=9)
    spike[20, 1] += 3.0
    batch = windows(spike)
    assert any(h is not None for h in fresh.check("pump", ["p1"] * len(batch), batch))


def test_a_malformed_snapshot_is_refused() -> None:
    check = SpikeCheck(SpikesConfig(), HOP)
    with pytest.raises(ValueError, match="does not fit"):
        check.restore("pump", {"p1": {"scale": [0.1], "seen": 5}}, 2)
    with pytest.raises(ValueError, match="does not fit"):
        check.restore("pump", {"p1": {"scale": [0.1, -1.0], "seen": 5}}, 2)
    with pytest.raises(KeyError):
        check.restore("pump", {"p1": {"seen": 5}}, 2)


def test_a_smaller_history_on_reload_keeps_the_newest_readings() -> None:
    check = SpikeCheck(SpikesConfig(history=1000), HOP)
    run(check, noisy(600, sigma=0.05))  # ~600 readings learnt at sigma 0.05
    run(check, noisy(200, seed=5, sigma=0.2))  # then ~200 at sigma 0.2
    state = check._devices[("pump", "p1")]
    newest = state.newest(100)
    check.reconfigure(SpikesConfig(history=100, warmup=50), HOP)
    assert state.filled == 100
    np.testing.assert_array_equal(state.ring, newest)
    # the next scale is measured on the louder, newest readings only
    run(check, noisy(200, seed=6, sigma=0.2))
    scale = check.scale("pump", "p1")
    assert scale is not None
    assert scale[1] == pytest.approx(0.2, rel=0.3)


def test_a_parked_device_keeps_its_noise_scale_and_judges_at_once_when_back() -> None:
    check = SpikeCheck(SpikesConfig(), HOP)
    run(check, noisy(2000))
    scale = check.scale("pump", "p1")
    assert scale is not None
    saved = check.snapshot("pump")
    assert check.park(()) == 1
    assert check._devices == {}
    assert check.snapshot("pump") == saved
    spike = noisy(40, seed=9)
    spike[20, 1] += 3.0
    batch = windows(spike)
    assert any(h is not None for h in check.check("pump", ["p1"] * len(batch), batch))
    back = check.scale("pump", "p1")
    assert back is not None
    np.testing.assert_allclose(back, scale)


# Issue #21, cause 6: recurring pulses, step-like channels.

PERIOD = 96  # a daily pulse at 15-minute sampling


def pulsed(n: int, seed: int = 11, size: float = 2.0, start: int = 300) -> np.ndarray:
    """``noisy`` with a one-reading pulse of ``size`` (20 sigma) on the level channel every
    ``PERIOD`` readings from ``start`` on."""
    series = noisy(n, seed=seed)
    series[start::PERIOD, 1] += size
    return series


def hit_readings(hits: list[SpikeHit | None], hop: int = HOP) -> set[int]:
    """The readings the hits point at."""
    return {i * hop + WINDOW - 1 - h.age for i, h in enumerate(hits) if h is not None}


def test_a_recurring_pulse_alerts_only_until_it_has_recurred() -> None:
    series = pulsed(3000)
    pulses = list(range(300, 3000 - 3, PERIOD))  # every one has 3 readings after it
    check = SpikeCheck(SpikesConfig(), HOP)
    flagged = hit_readings(run(check, series))
    assert flagged <= set(pulses)
    # the first recurring_count (3) are news; from then on the device has seen it recur
    assert flagged == set(pulses[:3])


def test_without_memory_every_pulse_alerts() -> None:
    series = pulsed(3000)
    check = SpikeCheck(SpikesConfig(recurring=False), HOP)
    assert hit_readings(run(check, series)) == set(range(300, 3000 - 3, PERIOD))


def test_a_spike_ten_times_the_normal_pulses_is_still_caught() -> None:
    series = pulsed(3000)
    at = 2500  # between two pulses
    series[at, 1] += 20.0
    check = SpikeCheck(SpikesConfig(), HOP)
    flagged = hit_readings(run(check, series))
    assert at in flagged
    assert flagged - {at} <= set(range(300, 700, PERIOD))  # the first pulses, nothing else
    # and it stays news: remembered once, it is not yet a normal spike of its size
    again = pulsed(400, seed=12, start=10_000)
    again[200, 1] += 20.0
    assert 200 in hit_readings(run(check, again))


def test_a_pulse_straddling_the_limit_is_learnt_from_its_near_misses() -> None:
    """A server's disk writes a minute (``wide_server``): an hourly cron job's 3-reading
    burst is 6-12 x the noise scale, so only now and then does one cross k. Remembered
    alone, the crossings were a few in 6,000 readings, never 3 within 1,000, and each one
    alerted (issue #21: at readings 3476 and 4317 of seed 1, before its disk-write storm at
    4600, and twice after). Its near misses are remembered too, and after its first bursts
    the cron is the device's normal."""
    series = synthetic.generate("wide_server", seed=1)
    writes = series.values[:4500, [series.features.index("disk_write")]]
    crons = np.flatnonzero(writes[:, 0] > 60)
    check = SpikeCheck(SpikesConfig(), HOP)
    assert hit_readings(run(check, writes)) <= set(range(int(crons[0]), 1000))
    # a burst three times the usual is still news
    at = int(crons[crons > 2000][0])
    writes[at : at + 3, 0] = 300.0
    assert hit_readings(run(SpikeCheck(SpikesConfig(), HOP), writes)) & {at, at + 1, at + 2}


def test_a_pulse_on_the_other_side_is_not_normal() -> None:
    series = pulsed(3000)
    at = 2500
    series[at, 1] -= 2.0  # a dip as deep as the pulses are high
    check = SpikeCheck(SpikesConfig(), HOP)
    assert at in hit_readings(run(check, series))


def test_rare_irregular_spikes_stay_spikes() -> None:
    # about one every 2,000 readings at uneven intervals: never 3 earlier ones within
    # recurring_within (1,000), and no period
    series = noisy(12_000, seed=13)
    spikes = [1000, 2900, 5300, 6900, 9500, 11_100]
    series[spikes, 1] += 2.0
    check = SpikeCheck(SpikesConfig(), HOP)
    assert hit_readings(run(check, series)) == set(spikes)


def test_a_rare_periodic_pulse_is_learnt_by_its_period() -> None:
    # an hourly pulse at 1 s sampling: 3,600 readings apart, beyond recurring_within
    series = noisy(20_000, seed=17)
    pulses = list(range(500, 20_000 - 3, 3600))
    series[pulses, 1] += 2.0
    check = SpikeCheck(SpikesConfig(), HOP)
    assert hit_readings(run(check, series)) == set(pulses[:3])
    # a pulse off its period is news again
    late = noisy(4000, seed=18)
    late[1000, 1] += 2.0
    assert 1000 in hit_readings(run(check, late))


def test_a_wide_pulse_counts_once_per_occurrence() -> None:
    # three readings wide: one burst per occurrence, so still three occurrences to learn
    series = noisy(3000, seed=14)
    starts = list(range(300, 3000 - WINDOW, PERIOD))
    for s in starts:
        series[s : s + 3, 1] += 2.0
    check = SpikeCheck(SpikesConfig(), HOP)
    flagged = hit_readings(run(check, series))
    assert {
        min(r for r in flagged if s <= r < s + 3) for s in starts if flagged & {s, s + 1, s + 2}
    } == set(starts[:3])


def test_memory_is_bounded_per_feature() -> None:
    series = pulsed(6000)
    check = SpikeCheck(SpikesConfig(recurring_memory=8, recurring_count=3), HOP)
    run(check, series)
    remembered = check.normal_spikes("pump", "p1")
    assert [len(past) for past in remembered] == [0, 8]
    # the newest eight pulses, 96 readings apart on the device's own count of readings
    at = [when for when, _ in remembered[1]]
    assert np.diff(at).tolist() == [PERIOD] * 7
    assert check._devices[("pump", "p1")].clock - at[-1] == 5997 - 5964  # the last pulse, 5964


def step_like(n: int, seed: int = 15) -> np.ndarray:
    """Two channels that move in steps and stay flat between them: a counter that steps by 1
    every ~50 readings, and a set point that steps by 1 to 8 units every ~50 readings, one
    new value in ten held for only 1 to 3 readings before the next step."""
    rng = np.random.default_rng(seed)
    counter = np.cumsum(rng.random(n) < 1 / 50).astype(np.float64)
    setpoint = np.empty(n)
    level, i = 20.0, 0
    while i < n:
        hold = int(rng.integers(1, 4)) if rng.random() < 0.1 else int(rng.geometric(1 / 50))
        setpoint[i : i + hold] = level
        level += float(rng.choice([-1, 1]) * rng.integers(1, 9))
        i += hold
    return np.column_stack([counter, setpoint])


@pytest.mark.parametrize("recurring", [False, True])
def test_a_step_like_channel_steps_without_spikes(recurring: bool) -> None:
    check = SpikeCheck(SpikesConfig(recurring=recurring), HOP)
    assert all(h is None for h in run(check, step_like(6000)))
    scale = check.scale("pump", "p1")
    assert scale is not None
    assert scale[1] >= 1.0  # at least a typical step, not the smallest one


def sawtooth(n: int, seed: int = 3) -> np.ndarray:
    """A server's memory as float32 readings of two decimals: it rises by exactly 0.02 a
    reading and drops back to ~40 every 180-300 readings (a garbage collection, normal)."""
    memory = synthetic.sawtooth(np.random.default_rng(seed), n, 0.02, (180, 300))
    return memory.round(2).astype(np.float32)[:, None]


def test_float_rounding_is_no_residual() -> None:
    ramp = sawtooth(40)[None, :30]  # no drop yet: an exact ramp, as float32
    judged, noise = hampel_residuals(ramp, 3)
    assert np.all(judged == 0.0)
    assert np.all(noise == 0.0)  # the median of two neighbours is the reading, to 1e-6


def test_a_fine_sensors_noise_on_a_large_value_is_noise_not_rounding() -> None:
    """A barometer's 0.05 Pa at 101,325 Pa is 5e-7 of its value, a few float32 units in
    the last place: it is the channel's noise scale, and a 1 Pa spike is caught."""
    rng = np.random.default_rng(5)
    series = (101_325.0 + 0.05 * rng.standard_normal(3000)).astype(np.float32)[:, None]
    at = 2500
    series[at, 0] += 1.0
    check = SpikeCheck(SpikesConfig(), HOP)
    assert hit_readings(run(check, series)) == {at}
    scale = check.scale("pump", "p1")
    assert scale is not None
    assert 0.03 < scale[0] < 0.1


def test_a_ramps_drops_are_no_spikes_and_a_spike_on_it_is() -> None:
    """Rounding counted as noise was the ramp's whole noise scale (~1e-14), and each
    collection's drop a spike at z ~ 1e12 (issue #21, server_metrics)."""
    check = SpikeCheck(SpikesConfig(), HOP)
    assert all(h is None for h in run(check, sawtooth(4000)))
    series = sawtooth(4000)
    at = int(np.flatnonzero(np.abs(np.diff(series[:, 0])) > 1)[-1]) + 60  # between drops
    series[at, 0] += 5.0
    check = SpikeCheck(SpikesConfig(), HOP)
    assert hit_readings(run(check, series)) == {at}


@pytest.mark.parametrize("feature", [0, 1])
def test_a_real_spike_on_a_step_like_channel_is_caught(feature: int) -> None:
    series = step_like(6000)
    at = 5000
    series[at, feature] += 200.0
    check = SpikeCheck(SpikesConfig(), HOP)
    hits = run(check, series)
    assert hit_readings(hits) == {at}
    assert all(h is None or h.feature == feature for h in hits)


def test_the_spike_memory_survives_a_snapshot_and_parking() -> None:
    check = SpikeCheck(SpikesConfig(), HOP)
    run(check, pulsed(1000))  # pulses at 300 .. 972: eight, learnt
    saved = check.snapshot("pump")
    assert saved["p1"]["clock"] > 0
    assert len(saved["p1"]["spikes"]) == 8
    assert json.loads(json.dumps(saved)) == saved  # plain JSON, as thresholds.json is
    # the next pulse, through a restarted check ...
    nxt = noisy(200, seed=16)
    nxt[100, 1] += 2.0
    fresh = SpikeCheck(SpikesConfig(), HOP)
    assert fresh.restore("pump", saved, 2) == 1
    assert all(h is None for h in run(fresh, nxt))
    # ... and through a parked device: still normal
    assert check.park(()) == 1
    assert all(h is None for h in run(check, nxt))
    # a snapshot written before the memory existed still loads (and remembers nothing)
    old = {"p1": {"scale": saved["p1"]["scale"], "seen": 5}}
    assert SpikeCheck(SpikesConfig(), HOP).restore("pump", old, 2) == 1
    with pytest.raises(ValueError, match="does not fit"):
        fresh.restore("pump", {"p1": {**saved["p1"], "spikes": [[1, 5, 2.0]]}}, 2)


def test_recurring_count_within_memory() -> None:
    with pytest.raises(ValueError, match="recurring_count"):
        SpikesConfig(recurring_count=10, recurring_memory=5)


def test_a_smaller_memory_on_reload_keeps_the_newest_spikes() -> None:
    check = SpikeCheck(SpikesConfig(), HOP)
    run(check, pulsed(3000))
    before = check.normal_spikes("pump", "p1")[1]
    check.reconfigure(SpikesConfig(recurring_memory=4, recurring_count=3), HOP)
    assert check.normal_spikes("pump", "p1")[1] == before[-4:]


@pytest.mark.parametrize("history", [10, 64, 65, 1000])
def test_residual_ring_grows_into_the_same_ring_a_full_one_would_be(history: int) -> None:
    """A device's residual ring starts small and doubles (issue #23, memory): after every
    add it holds the rows a ring allocated at full size holds, in the same places, so the
    noise scale is computed on the same array."""
    rng = np.random.default_rng(history)
    grown = _DeviceNoise.empty(history, 3, memory=8)
    full = _DeviceNoise(np.zeros((history, 3), dtype=np.float32), history)
    assert len(grown.ring) <= 64
    for _ in range(60):
        rows = rng.random((int(rng.integers(1, 40)), 3))
        grown.add(rows)
        full.add(rows)
        assert (grown.filled, grown.seen) == (full.filled, full.seen)
        np.testing.assert_array_equal(grown.ring[: grown.filled], full.ring[: full.filled])
        np.testing.assert_array_equal(grown.newest(history), full.newest(history))
    assert len(grown.ring) == history
    assert grown.head == full.head
    np.testing.assert_array_equal(grown.ring, full.ring)


@pytest.mark.parametrize("kind", ["noisy", "some zeros", "steps", "a zero column", "inf"])
def test_the_noise_scale_read_off_one_sort_equals_the_median_per_feature(kind: str) -> None:
    """The scale's medians from one sort (issue #23, speed) are np.median's, bit for bit,
    on odd and even counts, ties, zero columns and overflowed residuals."""
    rng = np.random.default_rng(sum(map(ord, kind)))
    for _ in range(300):
        n, f = int(rng.integers(1, 1001)), int(rng.integers(1, 8))
        x = np.abs(rng.standard_normal((n, f))).astype(np.float32)
        if kind == "some zeros":
            x[rng.random((n, f)) < rng.random()] = 0
        elif kind == "steps":
            x = (np.round(x * 3) / 3).astype(np.float32)
        elif kind == "a zero column":
            x[:, rng.integers(0, f)] = 0
        elif kind == "inf":
            x[rng.random((n, f)) < 0.01] = np.inf
        magnitudes = x.astype(np.float64)
        expected = _scale_reference(magnitudes)
        assert np.array_equal(_scale(magnitudes), expected, equal_nan=True)
        assert np.array_equal(_scale(x), expected, equal_nan=True)  # the ring's float32
    # and what the sort cannot read (never given by the check) goes to the reference
    odd = np.array([[1.0, -2.0], [np.nan, 3.0], [0.5, 0.0]])
    assert np.array_equal(_scale(odd), _scale_reference(odd), equal_nan=True)


def test_the_noise_of_the_newest_readings_alone_is_the_same_noise() -> None:
    """What the check learns from: the noise residuals of a window's last positions, asked
    for alone (issue #23, speed), are those of the whole window's, bit for bit."""
    rng = np.random.default_rng(5)
    values = rng.standard_normal((40, 32, 3)).astype(np.float32)
    values[:, 10:14, 1] = 7.0  # ties and a plateau
    judged, noise = hampel_residuals(values, 3)
    for newest in (1, 4, 26, 40):
        part_judged, part_noise = hampel_residuals(values, 3, newest=newest)
        assert np.array_equal(part_judged, judged)
        assert np.array_equal(part_noise, noise[:, -newest:])


def usual_readings(check: SpikeCheck, series: np.ndarray, hop: int = HOP) -> set[tuple[int, int]]:
    """The readings (and features) ``check`` reported as the device's known excursions."""
    batch = windows(series, hop)
    known: list[frozenset[tuple[int, int]]] = []
    check.check("pump", ["p1"] * len(batch), batch, usual=known)
    assert len(known) == len(batch)  # one set a window
    return {(i * hop + t, f) for i, found in enumerate(known) for t, f in found}


def test_the_pulses_the_device_knows_are_reported_as_usual_and_a_first_one_is_not() -> None:
    """What the pipeline vouches for a score by (``Verdict.usual``): the readings whose
    excursion the memory judged normal -- not the first ``recurring_count`` pulses, which
    are spikes, nor a reading larger than any pulse before it."""
    series = pulsed(3000)
    at = 2500  # between two pulses, ten times their size
    series[at, 1] += 20.0
    pulses = list(range(300, 3000 - 3, PERIOD))
    found = usual_readings(SpikeCheck(SpikesConfig(), HOP), series)
    assert {f for _, f in found} == {1}
    readings = {r for r, _ in found}
    assert readings == set(pulses[3:])
    assert at not in readings


def test_nothing_is_usual_without_the_memory() -> None:
    assert usual_readings(SpikeCheck(SpikesConfig(recurring=False), HOP), pulsed(3000)) == set()


def heavy(n: int, seed: int = 22) -> np.ndarray:
    """Two channels: Student-t noise of 2 degrees of freedom (an outlier of 10 scales every
    few hundred readings is normal: latencies, request counts) and Gaussian noise."""
    rng = np.random.default_rng(seed)
    return np.column_stack([10.0 + rng.standard_t(2, n), 3.0 + rng.standard_normal(n)])


def test_a_heavy_tailed_channel_learns_a_wider_limit_and_a_gaussian_one_keeps_k() -> None:
    check = SpikeCheck(SpikesConfig(), HOP)
    run(check, heavy(3000))
    state = check._devices[("pump", "p1")]
    assert state.limit is not None  # (below, above the median) x features
    assert state.limit[:, 0].max() > SpikesConfig().k
    np.testing.assert_array_equal(state.limit[:, 1], [SpikesConfig().k] * 2)


def test_outliers_as_large_as_the_tail_has_shown_are_no_spikes_and_far_larger_ones_are() -> None:
    series = heavy(6000)
    check = SpikeCheck(SpikesConfig(), HOP)
    flagged = hit_readings(run(check, series[:3000]))
    without = hit_readings(run(SpikeCheck(SpikesConfig(tail=False), HOP), series[:3000]))
    assert flagged < without  # the same channel: fewer of its outliers are spikes
    later = series[3000:].copy()
    at = 1500
    later[at, 0] = 10.0 + 500.0  # far beyond anything the channel has shown
    assert at in hit_readings(run(check, later))


def test_a_normal_pulse_train_does_not_hide_a_pulse_twice_its_size() -> None:
    """``simulators.synthetic.periodic_actuation``: a 4-reading pulse of ~10 noise sigmas
    every 120 readings is the channel's tail above its median, and widens its limit there;
    a spike twice its size is still one."""
    series = synthetic.generate("periodic_actuation", seed=0)
    labelled = {int(i) for i in np.flatnonzero(series.labels)}
    check = SpikeCheck(SpikesConfig(), HOP)
    assert labelled & hit_readings(run(check, series.values))
    limit = check._devices[("pump", "p1")].limit
    assert limit is not None
    assert limit[1, 0] > SpikesConfig().k  # the pulses are its tail above, and widened it
    assert limit[0, 0] == SpikesConfig().k  # nothing below


def test_a_burst_of_noise_is_one_episode_and_widens_nothing() -> None:
    """``simulators.synthetic.telemetry_modes``: the sensor's noise five-fold for 80
    readings goes past half of k many times, but in one episode: a fault's, not a tail."""
    series = noisy(3000, seed=5)
    series[2500:2580, 1] += 0.5 * np.random.default_rng(7).standard_normal(80)
    check = SpikeCheck(SpikesConfig(), HOP)
    run(check, series)
    assert check._devices[("pump", "p1")].limit is None  # k for every feature


def test_a_tail_never_reaches_past_what_the_device_showed_by_the_margin() -> None:
    """Three excursions of 6 scales, 200 readings apart: an exponential tail through them
    puts one in a million past 13 scales, but the device has shown 6 at most, and 1.5 x 6
    is under k: the limit stays k. A side that showed nothing keeps k too. Pulses of about
    one size (a pulse train's) keep the margin when they are larger."""
    cfg = SpikesConfig()
    state = _DeviceNoise.empty(cfg.history, 1, cfg.recurring_memory)
    state.set_scale(np.array([1.0]))
    for at in (100, 300, 500):
        state.log_tail(at, 0, 6.0)
    state.clock = 1000
    assert _tail_limits(state, cfg) is None  # k on both sides
    state = _DeviceNoise.empty(cfg.history, 1, cfg.recurring_memory)
    state.set_scale(np.array([1.0]))
    for at, z in zip((100, 250, 400, 550, 700, 850), (9.0, 9.2, 9.5, 9.3, 9.4, 9.1), strict=True):
        state.log_tail(at, 0, z)
    state.clock = 1000
    limit = _tail_limits(state, cfg)
    assert limit is not None
    assert limit[0, 0] == cfg.k
    assert cfg.k < limit[1, 0] <= 1.5 * 9.5  # 1.5 x 9.5 = 14.25 binds


def test_a_sample_spread_as_a_tail_reaches_further_than_a_pulse_train() -> None:
    """Excursions of 5.5 to 12 scales, spread as an exponential's excesses are (a
    database's latency, ``simulators.synthetic.wide_server``): the largest a thousand
    readings showed is a poor bound on the next, so the limit may pass 1.5 x 12 = 18
    (up to 3 x 12); the same six sizes all at 12, a pulse train's, stop at 18."""
    cfg = SpikesConfig()

    def limit_above(sizes: tuple[float, ...]) -> float:
        state = _DeviceNoise.empty(cfg.history, 1, cfg.recurring_memory)
        state.set_scale(np.array([1.0]))
        for at, z in zip((100, 250, 400, 550, 700, 850), sizes, strict=True):
            state.log_tail(at, 0, z)
        state.clock = 1000
        limit = _tail_limits(state, cfg)
        assert limit is not None
        return float(limit[1, 0])

    assert 1.5 * 12 < limit_above((5.5, 6.0, 7.0, 8.0, 9.5, 12.0)) <= 3 * 12
    assert limit_above((12.0,) * 6) == pytest.approx(1.5 * 12)


def test_a_reload_turning_tails_off_judges_by_k_at_once() -> None:
    check = SpikeCheck(SpikesConfig(), HOP)
    run(check, heavy(3000))
    assert check._devices[("pump", "p1")].limit is not None
    check.reconfigure(SpikesConfig(tail=False), HOP)
    assert check._devices[("pump", "p1")].limit is None
    check.reconfigure(SpikesConfig(), HOP)  # and back on: the log was kept
    assert check._devices[("pump", "p1")].limit is not None
