from __future__ import annotations

import itertools

import numpy as np
import pytest

from sentinel.config import ThresholdConfig
from sentinel.judge.threshold import (
    NORMAL_SCORE,
    ThresholdBank,
    _empirical_tail,
    calibration_threshold,
)
from tests.judge.helpers import score, with_model


def test_calibration_threshold_takes_the_nearest_quantile() -> None:
    quantiles = {"0.99": 2.0, "0.995": 3.0, "0.999": 5.0}
    config = ThresholdConfig(quantile=0.995, multiplier=1.5, warmup=1000)
    assert calibration_threshold(quantiles, config) == pytest.approx(4.5)
    config = ThresholdConfig(quantile=0.998, multiplier=1.0, warmup=1000)
    assert calibration_threshold(quantiles, config) == pytest.approx(5.0)


def test_a_calibration_under_the_normal_error_still_puts_the_threshold_above_it() -> None:
    # Held-back windows that all scored under 1 (every feature under its floored normal
    # error: a noise-free level forecast exactly) would put the threshold under the error
    # the model counts as normal, and every window at a level it forecast less exactly
    # would alert for as long as the level held (issue #21, stepped_telemetry at 30 %).
    quantiles = {"0.99": 0.29, "0.995": 0.29, "0.999": 0.29}
    config = ThresholdConfig(quantile=0.995, multiplier=1.5, warmup=1000)
    assert calibration_threshold(quantiles, config) == pytest.approx(NORMAL_SCORE * 1.5)


def test_warmup_uses_the_fallback_then_the_device_quantile() -> None:
    bank = with_model(
        ThresholdBank(
            ThresholdConfig(quantile=0.99, multiplier=2.0, warmup=500, history=500, prior_windows=0)
        ),
        10.0,
    )
    rng = np.random.default_rng(0)
    verdicts = [bank.judge(score(float(v))) for v in rng.uniform(0, 1, 500)]
    assert all(v.threshold == 10.0 for v in verdicts)
    after = bank.judge(score(0.5))
    assert 1.5 < after.threshold <= 2.0  # 0.99-quantile of U(0,1) times 2
    assert not after.is_anomaly
    assert bank.judge(score(5.0)).is_anomaly


def test_anomalous_scores_never_raise_the_threshold() -> None:
    bank = with_model(
        ThresholdBank(
            ThresholdConfig(quantile=0.9, multiplier=1.0, warmup=10, history=50, prior_windows=0)
        ),
        100.0,
    )
    for _ in range(20):
        bank.judge(score(1.0))
    before = bank.judge(score(1.0)).threshold
    for _ in range(200):
        assert bank.judge(score(50.0)).is_anomaly
    assert bank.judge(score(1.0)).threshold == before


def test_devices_and_streams_are_independent_and_resettable() -> None:
    bank = with_model(
        ThresholdBank(
            ThresholdConfig(quantile=0.9, multiplier=1.0, warmup=10, history=50, prior_windows=0)
        ),
        100.0,
    )
    for _ in range(20):
        bank.judge(score(1.0, "a"))
    assert bank.judge(score(1.0, "a")).threshold == pytest.approx(1.0)
    assert bank.judge(score(1.0, "b")).threshold == 100.0
    bank.reset_stream("pump")
    assert bank.judge(score(1.0, "a")).threshold == 100.0


def test_warmup_too_short_for_the_quantile_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="at least 200"):
        ThresholdConfig(quantile=0.995, warmup=100)


def spot_config(**overrides: float) -> ThresholdConfig:
    return ThresholdConfig.model_validate(
        {"method": "spot", "risk": 1e-3, "spot_level": 0.9, "spot_depth": 50, **overrides}
    )


def test_spot_is_fitted_on_the_models_held_back_scores_and_flags_outliers() -> None:
    rng = np.random.default_rng(3)
    held_back = tuple(float(v) for v in rng.lognormal(0.0, 0.3, 4000))
    bank = with_model(ThresholdBank(spot_config()), 99.0, held_back)
    normal = [bank.judge(score(float(v))) for v in rng.lognormal(0, 0.3, 2000)]
    false_alarm_rate = np.mean([v.is_anomaly for v in normal])
    assert false_alarm_rate < 5e-3  # risk 1e-3: within a few times of it
    assert normal[0].threshold != 99.0  # the quantile fallback is not in use
    assert bank.judge(score(20.0)).is_anomaly


def test_spot_follows_slow_multiplicative_drift_but_not_a_jump() -> None:
    rng = np.random.default_rng(4)
    held_back = tuple(float(v) for v in rng.lognormal(0.0, 0.2, 4000))
    bank = with_model(ThresholdBank(spot_config()), 99.0, held_back)
    # The score level doubles slowly over 3000 windows: drift, not a fault.
    drift = [
        bank.judge(score(float(v) * 2 ** (k / 3000)))
        for k, v in enumerate(rng.lognormal(0.0, 0.2, 3000))
    ]
    assert np.mean([v.is_anomaly for v in drift]) < 0.01
    assert bank.judge(score(2.0 * 6.0)).is_anomaly  # 6x above the drifted level


def test_spot_falls_back_to_the_quantile_method_without_enough_held_back_scores() -> None:
    bank = with_model(ThresholdBank(spot_config()), 7.0, (1.0, 1.1, 0.9))
    verdict = bank.judge(score(1.0))
    assert verdict.threshold == 7.0  # the calibration fallback of the quantile method


def test_risk_must_fit_inside_the_fitted_tail() -> None:
    with pytest.raises(ValueError, match="risk must be below"):
        spot_config(risk=0.2, spot_level=0.9)


@pytest.mark.parametrize("kind", ["spike", "level"])
def test_a_spiked_or_levelled_window_is_anomalous_and_teaches_the_threshold_nothing(
    kind: str,
) -> None:
    from sentinel.records import LevelHit, SpikeHit

    hit = SpikeHit(feature=0, z=12.0, age=3) if kind == "spike" else LevelHit(feature=1, z=9.0)
    for method in ("quantile", "spot"):
        cfg = ThresholdConfig(method=method, quantile=0.9, multiplier=1.0, warmup=10, history=50)
        calibration = tuple(float(v) for v in np.random.default_rng(1).gamma(2.0, 1.0, 500))
        bank = with_model(ThresholdBank(cfg), 100.0, calibration)
        for _ in range(20):
            bank.judge(score(1.0))
        # The level-shift watch sees every window's score; what the threshold learnt must not.
        learnt = ("normal_seen", "recent", "spot", "scale")
        before = {k: bank.snapshot("pump")["a"][k] for k in learnt}
        if isinstance(hit, SpikeHit):
            verdict = bank.judge(score(0.5), spike=hit)
        else:
            verdict = bank.judge(score(0.5), level=hit)
        assert verdict.is_anomaly
        assert getattr(verdict, kind) == hit
        assert verdict.exceedance == pytest.approx(hit.exceedance)
        assert verdict.threshold > 0.5
        assert {k: bank.snapshot("pump")["a"][k] for k in learnt} == before, method


def test_without_adapt_a_device_learns_during_warmup_then_keeps_its_threshold() -> None:
    rng = np.random.default_rng(5)
    thresholds = {}
    for adapt in (True, False):
        bank = with_model(
            ThresholdBank(
                ThresholdConfig(
                    quantile=0.99,
                    multiplier=1.0,
                    warmup=200,
                    history=200,
                    adapt=adapt,
                    prior_windows=0,
                )
            ),
            10.0,
        )
        for v in rng.uniform(0, 1, 200):
            bank.judge(score(float(v)))
        warm = bank.judge(score(0.5)).threshold
        assert 0.9 < warm <= 1.0  # the 0.99 quantile of U(0, 1): learnt during warm-up
        # Normal windows creep upwards, each under the current threshold.
        for k in range(400):
            bank.judge(score(0.5 + 0.4 * k / 400))
        thresholds[adapt] = (warm, bank.judge(score(0.5)).threshold)
    assert thresholds[False][1] == thresholds[False][0]  # kept until the next model
    assert thresholds[True][1] < thresholds[True][0]  # followed the narrower recent spread


def test_without_adapt_a_seeded_device_keeps_the_seeded_threshold() -> None:
    bank = with_model(
        ThresholdBank(
            ThresholdConfig(
                quantile=0.99, multiplier=1.5, warmup=200, history=200, adapt=False, prior_windows=0
            )
        ),
        10.0,
    )
    seeds = [float(v) for v in np.linspace(0.0, 1.0, 200)]
    assert bank.restore("pump", {"a": {"recent": seeds, "normal_seen": len(seeds)}}) == 1
    seeded = bank.judge(score(0.1)).threshold
    assert seeded == pytest.approx(1.5 * np.quantile(seeds, 0.99), rel=0.02)
    for _ in range(300):
        assert not bank.judge(score(1.4)).is_anomaly  # normal, just higher
    assert bank.judge(score(0.1)).threshold == seeded
    bank.reset_stream("pump")  # a new model: learnt afresh
    assert bank.judge(score(0.1)).threshold == 10.0


def test_without_adapt_spot_keeps_its_fitted_threshold() -> None:
    rng = np.random.default_rng(6)
    held_back = tuple(float(v) for v in rng.lognormal(0.0, 0.2, 4000))
    bank = with_model(ThresholdBank(spot_config(adapt=False)), 99.0, held_back)
    first = bank.judge(score(1.0)).threshold
    drift = [
        bank.judge(score(float(v) * 2 ** (k / 3000)))
        for k, v in enumerate(rng.lognormal(0.0, 0.2, 3000))
    ]
    assert drift[-1].threshold == first
    assert np.mean([v.is_anomaly for v in drift[-500:]]) > 0.5  # the drift is not followed


def test_a_parked_device_comes_back_with_the_threshold_it_had() -> None:
    bank = with_model(
        ThresholdBank(
            ThresholdConfig(quantile=0.9, multiplier=1.0, warmup=10, history=50, prior_windows=0)
        ),
        100.0,
    )
    rng = np.random.default_rng(5)
    for v in rng.uniform(0, 1, 40):
        bank.judge(score(float(v), "a"))
        bank.judge(score(float(v), "b"))
    before = bank.snapshot("pump")
    assert bank.park({("pump", "b")}) == 1
    assert set(bank._devices) == {("pump", "b")}
    assert bank.snapshot("pump") == before  # still saved with the others
    live = with_model(ThresholdBank(bank.config), 100.0)
    live.restore("pump", {"a": before["a"]})
    for value in (0.5, 0.95, 3.0):
        back, kept = (b.judge(score(value, "a")) for b in (bank, live))
        assert (back.threshold, back.is_anomaly, back.state) == (
            kept.threshold,
            kept.is_anomaly,
            kept.state,
        )
        assert back.state is not None
        assert back.state.warm
    assert ("pump", "a") in bank._devices


def test_a_parked_device_is_forgotten_with_its_stream() -> None:
    bank = with_model(
        ThresholdBank(
            ThresholdConfig(quantile=0.9, multiplier=1.0, warmup=10, history=50, prior_windows=0)
        ),
        100.0,
    )
    for _ in range(20):
        bank.judge(score(1.0, "a"))
    bank.park(())
    bank.reset_stream("pump")
    assert bank.snapshot("pump") == {}
    assert bank.judge(score(1.0, "a")).threshold == 100.0


def test_a_device_uses_its_own_scores_after_hundreds_of_normal_windows() -> None:
    """Issue #21, cause 2: with the defaults a device used the model's calibration
    threshold for its first 2,000 normal windows (8,000 readings at hop 4), so on most
    series it never used its own. Now it shares the threshold from 200 windows on, by
    shrinkage towards the calibration threshold: never a hard jump to a noisy quantile."""
    config = ThresholdConfig()
    bank = with_model(ThresholdBank(config), 10.0)
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, 1000)
    thresholds = [bank.judge(score(float(v))).threshold for v in scores]
    assert thresholds[: config.warmup] == [10.0] * config.warmup
    own = float(np.quantile(scores[:200], config.quantile)) * config.multiplier  # ~1.5
    # At 200 normal windows, halfway between the calibration threshold and its own.
    assert thresholds[config.warmup] == pytest.approx((10.0 + own) / 2, rel=0.02)
    later = bank.judge(score(0.5))
    assert later.state is not None
    assert later.state.warm
    # 1,000 windows: five sixths its own (the quantile of U(0, 1) x 1.5 is ~1.5).
    assert later.threshold == pytest.approx((1000 * 1.5 + 200 * 10.0) / 1200, rel=0.02)
    # It only ever falls towards its own level, never below it.
    assert min(thresholds) > 1.4
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(thresholds))


def test_describe_reports_the_threshold_the_next_window_meets_and_learns_nothing() -> None:
    """The REST API's view of a device (sentinel/api/devices.py)."""
    bank = with_model(
        ThresholdBank(
            ThresholdConfig(quantile=0.9, multiplier=1.0, warmup=10, history=50, prior_windows=0)
        ),
        100.0,
    )
    assert bank.describe("pump", "a") is None  # never judged a window
    bank.judge(score(1.0, "a"))
    cold = bank.describe("pump", "a")
    assert cold is not None
    assert (cold.method, cold.value, cold.history, cold.warm) == ("quantile", 100.0, 1, False)
    for _ in range(20):
        bank.judge(score(1.0, "a"))
    warm = bank.describe("pump", "a")
    assert warm is not None
    assert bank.describe("pump", "a") == warm  # asking twice changes nothing
    assert warm.warm
    assert warm.value == bank.judge(score(1.0, "a")).threshold
    assert bank.describe("fan", "a") is None  # no model on that stream


def test_exceedance_from_the_kept_sorted_scores_equals_a_fresh_sort() -> None:
    """The exceedance of an anomalous window reads a device's normal scores as its history
    keeps them sorted (issue #23, speed and memory): it equals the empirical tail of a fresh
    sort, for many devices, warm and warming, with normal windows in between."""
    rng = np.random.default_rng(4)
    bank = with_model(
        ThresholdBank(
            ThresholdConfig(quantile=0.9, multiplier=1.0, warmup=20, history=64, prior_windows=0)
        ),
        3.0,
        held_back=rng.uniform(0, 4, 200).tolist(),
    )
    held_back = bank._models["pump"].scores
    devices = [f"d{i}" for i in range(80)]
    checked = 0
    for _ in range(3000):
        device = devices[int(rng.integers(len(devices)))]
        value = float(rng.choice([rng.uniform(0, 1), rng.uniform(3, 9)]))
        state = bank._devices.get(("pump", device))
        warm = state is not None and bank._warm(state)
        sample = state.recent.values() if state is not None and warm else held_back
        verdict = bank.judge(score(value, device))
        if verdict.is_anomaly:
            assert verdict.exceedance == _empirical_tail(sample, value)
            checked += 1
    assert checked > 500
