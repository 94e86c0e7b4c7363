from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

import sentinel.judge.spot as spot_module
from sentinel.judge.spot import MIN_PEAKS, DSpot, Spot, SpotState, fit_gpd


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# -- GPD fit -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "scale"),
    [(0.3, 2.0), (0.0, 1.5), (-0.3, 1.0), (0.8, 0.5)],
    ids=["heavy", "exponential", "bounded", "very-heavy"],
)
def test_fit_gpd_recovers_known_parameters(shape: float, scale: float) -> None:
    y = stats.genpareto.rvs(shape, scale=scale, size=5000, random_state=rng(1))
    gamma, sigma = fit_gpd(y)
    assert gamma == pytest.approx(shape, abs=0.06)
    assert sigma == pytest.approx(scale, rel=0.06)
    # Same maximum as scipy's generic optimiser (it is the same likelihood).
    ref_shape, _, ref_scale = stats.genpareto.fit(y, floc=0)
    assert gamma == pytest.approx(ref_shape, abs=2e-3)
    assert sigma == pytest.approx(ref_scale, rel=2e-3)


def test_fit_gpd_with_a_hint_finds_the_same_root() -> None:
    y = stats.genpareto.rvs(0.2, scale=1.0, size=2000, random_state=rng(2))
    gamma, sigma = fit_gpd(y)
    hinted = fit_gpd(y, hint=1.1 * gamma / sigma)
    assert hinted == pytest.approx((gamma, sigma), rel=1e-8)


def test_fit_gpd_falls_back_to_moments_when_the_search_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(y: Any, hint: Any) -> Any:
        raise FloatingPointError("overflow")

    monkeypatch.setattr(spot_module, "_grimshaw", broken)
    y = stats.genpareto.rvs(0.1, scale=2.0, size=5000, random_state=rng(3))
    mean, var = float(np.mean(y)), float(np.var(y))
    gamma, sigma = fit_gpd(y)
    assert gamma == pytest.approx(0.5 * (1 - mean**2 / var))
    assert sigma == pytest.approx(0.5 * mean * (mean**2 / var + 1))
    assert gamma == pytest.approx(0.1, abs=0.1)


@pytest.mark.parametrize("bad", [[1.0], [1.0, -1.0, 2.0], [1.0, math.nan], [[1.0, 2.0]]])
def test_fit_gpd_rejects_bad_excesses(bad: Any) -> None:
    with pytest.raises(ValueError, match="excesses"):
        fit_gpd(bad)


# -- calibration and false-alarm rate -------------------------------------------------------


@pytest.mark.parametrize(
    "sample",
    [
        lambda g, n: g.exponential(1.0, n),
        lambda g, n: g.normal(0.0, 1.0, n),
        lambda g, n: g.standard_t(5, n),
    ],
    ids=["exponential", "gaussian", "student-t"],
)
def test_threshold_is_exceeded_at_about_rate_q_on_fresh_data(sample: Any) -> None:
    g = rng(4)
    spot = Spot(q=1e-3, level=0.98)
    spot.fit(sample(g, 50_000))  # 1000 peaks
    fresh = sample(g, 1_000_000)
    rate = float(np.mean(fresh > spot.threshold))
    assert 0.5e-3 < rate < 2e-3


def test_streaming_alarm_count_matches_q_times_observations() -> None:
    g = rng(5)
    spot = Spot(q=1e-3, level=0.98)
    spot.fit(g.exponential(1.0, 10_000))
    labels = [spot.step(x) for x in g.exponential(1.0, 50_000)]
    assert 25 <= labels.count("anomaly") <= 100  # expected q * n = 50
    assert labels.count("peak") == pytest.approx(0.02 * 50_000, rel=0.15)


def test_fit_with_too_few_peaks_raises_a_clear_error() -> None:
    spot = Spot(level=0.98)
    with pytest.raises(ValueError, match=f"at least {MIN_PEAKS}"):
        spot.fit(rng().normal(size=200))  # 0.02 * 200 = 4 excesses
    with pytest.raises(ValueError, match=f"at least {MIN_PEAKS}"):
        spot.fit(np.ones(10_000))  # nothing lies strictly above the quantile


@pytest.mark.parametrize(
    "kwargs",
    [{"q": 0.0}, {"q": 0.05, "level": 0.98}, {"level": 1.0}, {"max_peaks": MIN_PEAKS - 1}],
)
def test_bad_parameters_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        Spot(**kwargs)


def test_using_an_unfitted_spot_or_a_non_finite_value_fails() -> None:
    with pytest.raises(RuntimeError, match="fit"):
        Spot().step(1.0)
    spot = Spot()
    spot.fit(rng().normal(size=5000))
    with pytest.raises(ValueError, match="non-finite"):
        spot.step(math.nan)


# -- streaming updates ----------------------------------------------------------------------


def fitted(seed: int = 6, **kwargs: Any) -> Spot:
    spot = Spot(q=1e-3, **kwargs)
    spot.fit(rng(seed).exponential(1.0, 5000))
    return spot


def test_anomalies_never_update_the_state() -> None:
    spot = fitted()
    before = spot.state()
    for value in (spot.threshold + 1e-9, 1e6, 1e300):
        assert spot.step(value) == "anomaly"
    assert spot.state() == before


def test_peaks_add_an_excess_and_refit() -> None:
    spot = fitted()
    before = spot.state()
    t, z = spot.init_threshold, spot.threshold
    value = (t + z) / 2
    assert spot.step(value) == "peak"
    after = spot.state()
    assert after.peaks == [*before.peaks, pytest.approx(value - t)]
    assert (after.n, after.n_peaks) == (before.n + 1, before.n_peaks + 1)
    assert (after.gamma, after.sigma) != (before.gamma, before.sigma)


def test_normal_values_only_count() -> None:
    spot = fitted()
    before = spot.state()
    assert spot.step(spot.init_threshold - 0.1) == "normal"
    after = spot.state()
    assert after.n == before.n + 1
    assert (after.peaks, after.n_peaks, after.gamma) == (before.peaks, before.n_peaks, before.gamma)
    assert spot.threshold > before.init_threshold


def test_peaks_are_bounded_to_the_most_recent() -> None:
    spot = fitted(max_peaks=20)
    assert len(spot.state().peaks) == 20
    t, z = spot.init_threshold, spot.threshold
    values = np.linspace(t + 0.01, t + 0.5 * (z - t), 30)
    assert [spot.step(v) for v in values] == ["peak"] * 30
    state = spot.state()
    assert state.peaks == pytest.approx(list(values[-20:] - t))
    assert state.n_peaks == 100 + 30  # 0.02 * 5000 at calibration, then 30


# -- persistence ----------------------------------------------------------------------------


def run(spot: Spot, values: np.ndarray) -> list[tuple[str, float]]:
    return [(spot.step(v), spot.threshold) for v in values]


@pytest.mark.parametrize("kind", ["spot", "dspot"])
def test_state_round_trips_and_a_resumed_detector_continues_identically(kind: str) -> None:
    g = rng(7)
    # max_peaks=50 so the run drops old peaks and crosses several full-search boundaries.
    original = Spot(q=1e-3, max_peaks=50) if kind == "spot" else DSpot(q=1e-3, max_peaks=50)
    original.fit(g.standard_t(4, 5000))
    run(original, g.standard_t(4, 3000))
    state = original.state()
    restored_state = SpotState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored_state == state
    resumed = type(original).from_state(restored_state)
    rest = g.standard_t(4, 5000)
    rest[::997] = 50.0  # a few anomalies too
    assert run(resumed, rest) == run(original, rest)
    assert resumed.state() == original.state()


def test_from_state_refuses_the_other_kind() -> None:
    dspot = DSpot()
    dspot.fit(rng().normal(size=2000))
    with pytest.raises(ValueError, match="DSpot"):
        Spot.from_state(dspot.state())
    with pytest.raises(ValueError, match="plain Spot"):
        DSpot.from_state(fitted().state())


def corrupt(change: dict[str, Any] | None = None, drop: str | None = None) -> dict[str, Any]:
    data = fitted().state().to_dict()
    data.update(change or {})
    if drop:
        del data[drop]
    return data


@pytest.mark.parametrize(
    "data",
    [
        corrupt(drop="peaks"),
        corrupt({"schema": 99}),
        corrupt({"n": "100"}),
        corrupt({"n": True}),
        corrupt({"n": 5}),  # fewer observations than peaks
        corrupt({"peaks": [1.0, -2.0] * 10}),
        corrupt({"peaks": [1.0] * 3}),
        corrupt({"gamma": math.nan}),
        corrupt({"sigma": -1.0}),
        corrupt({"q": 0.5}),
        corrupt({"window": [1.0, 2.0]}),  # a window without a depth
        corrupt({"depth": 3, "window": [1.0]}),
        ["not", "a", "dict"],
    ],
)
def test_a_corrupt_dict_raises_value_error(data: Any) -> None:
    with pytest.raises(ValueError, match="SPOT state"):
        SpotState.from_dict(data)


# -- drift ----------------------------------------------------------------------------------


def test_dspot_follows_slow_drift_but_flags_a_spike_on_it() -> None:
    g = rng(8)
    n = 20_000
    stream = 0.01 * np.arange(n) + g.normal(0.0, 1.0, n)  # 200 sigma of drift
    spike_at = 15_000
    stream[spike_at] += 10.0

    dspot = DSpot(q=1e-4, depth=100)
    dspot.fit(stream[:5000])
    labels = [dspot.step(x) for x in stream[5000:]]
    flagged = [i + 5000 for i, label in enumerate(labels) if label == "anomaly"]
    assert spike_at in flagged
    # q * n = 1.5 false alarms expected; a GPD fitted on 100 Gaussian peaks and extrapolated
    # 200x further into the tail is loose (its shape comes out negative), so allow a few more.
    assert len(flagged) <= 10

    spot = Spot(q=1e-4)
    spot.fit(stream[:5000])
    assert sum(spot.step(x) == "anomaly" for x in stream[5000:]) > 10_000


def test_dspot_needs_more_than_depth_values() -> None:
    with pytest.raises(ValueError, match="depth"):
        DSpot(depth=100).fit(np.zeros(100))
    with pytest.raises(ValueError, match="depth"):
        DSpot(depth=0)
