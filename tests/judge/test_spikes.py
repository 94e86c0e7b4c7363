"""The per-reading spike check (sentinel.judge.spikes): residuals, noise scale, judgments, state."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sentinel.config import SpikesConfig
from sentinel.judge.spikes import SpikeCheck, SpikeHit, hampel_residuals

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


def test_no_judgment_before_warmup() -> None:
    series = noisy(300)
    series[100, 0] += 5.0
    check = SpikeCheck(SpikesConfig(warmup=200), HOP)
    assert all(h is None for h in run(check, series))  # the spike came before warm-up ended
    assert check.scale("pump", "p1") is not None  # 288 readings learnt by the end


def test_spikes_do_not_teach_the_noise_scale() -> None:
    clean = noisy(2000, seed=1)
    check = SpikeCheck(SpikesConfig(history=1000), HOP)
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
