"""Champion/challenger on real (small) models: contamination is caught, drift is not held."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sentinel.config import ThresholdConfig
from sentinel.judge.threshold import calibration_threshold, settled_threshold
from sentinel.retrain.promotion import (
    EvalSet,
    Metrics,
    build_eval_set,
    decide,
    evaluate,
)
from tests.retrain.helpers import contaminate, make_config, normal, train


def test_a_challenger_trained_on_contaminated_data_is_rejected(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    champion = train(config, [normal(2000, seed=1)])
    challenger = train(config, [contaminate(normal(2000, seed=2), fraction=0.4)])
    held_back = build_eval_set([normal(800, seed=3, start=3000)], 16, 4.0)

    ours = evaluate(challenger, held_back, config)
    theirs = evaluate(champion, held_back, config)
    decision = decide(ours, theirs, tolerance=0.02)

    assert theirs.detection > 0.5  # the clean model sees most injected anomalies ...
    assert ours.detection < theirs.detection - 0.1  # ... the contaminated one misses them
    assert not decision.accepted
    assert "below the active model's" in decision.reason


def test_a_challenger_trained_on_fresh_data_replaces_a_drifted_champion(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    champion = train(config, [normal(2000, seed=1)])
    # The process has since moved: same shape, a different level.
    challenger = train(config, [normal(2000, seed=2, shift=1.5)])
    held_back = build_eval_set([normal(800, seed=3, start=3000, shift=1.5)], 16, 4.0)

    ours = evaluate(challenger, held_back, config)
    theirs = evaluate(champion, held_back, config)

    assert theirs.false_rate > 0.5  # the old model calls the new normal anomalous
    assert ours.false_rate < 0.05
    assert decide(ours, theirs, tolerance=0.02).accepted


def test_a_drifted_champion_is_judged_at_the_threshold_it_would_settle_at(
    tmp_path: Path,
) -> None:
    """The held-back windows are ones the champion judged normal, so it shows no false
    alarms there by selection; at its calibration threshold, now low among the recent
    scores, it would also "detect" injected windows that are merely drifted ones."""
    config = make_config(tmp_path)
    champion = train(config, [normal(2000, seed=1)])
    challenger = train(config, [normal(2000, seed=2, shift=0.5)])
    recent = build_eval_set([normal(800, seed=3, start=3000, shift=0.5)], 16, 4.0)
    start = calibration_threshold(champion.meta.calibration.quantiles, config.threshold)
    scores, _ = champion.score(recent.clean)
    kept = scores <= start  # what the reservoir keeps: windows the champion found normal
    assert 0.05 < kept.mean() < 0.5
    held_back = EvalSet(
        recent.clean[kept],
        recent.injected[kept],
        tuple(k for k, keep in zip(recent.kinds, kept, strict=True) if keep),
    )

    theirs = evaluate(champion, held_back, config)
    ours = evaluate(challenger, held_back, config)

    assert theirs.false_rate == 0.0  # by selection
    assert theirs.settled > 1.2 * theirs.threshold  # the recent normal scores sit higher
    injected, _ = champion.score(held_back.injected)
    assert theirs.detection == pytest.approx(float(np.mean(injected > theirs.settled)))
    assert theirs.detection < float(np.mean(injected > theirs.threshold))
    assert ours.settled < 1.1 * ours.threshold  # the fresh model fits the recent windows
    assert ours.auc > theirs.auc
    assert decide(ours, theirs, tolerance=0.02).accepted


def _config(quantile: float, multiplier: float) -> ThresholdConfig:
    return ThresholdConfig(quantile=quantile, multiplier=multiplier)


def test_the_settled_threshold_learns_only_from_scores_below_it() -> None:
    # 990 windows at 1.0 and 10 at 10.0: the 99.5th percentile of all of them is 10.0, but a
    # device starting at 1.2 flags the ten and learns from the rest: 1.5 x 1.0.
    clean = np.array([1.0] * 990 + [10.0] * 10)
    assert float(np.quantile(clean, 0.995)) * 1.5 == pytest.approx(15.0)
    assert settled_threshold(clean, 1.2, _config(0.995, 1.5)) == pytest.approx(1.5)
    # Never below where it starts.
    assert settled_threshold(clean, 2.0, _config(0.995, 1.5)) == pytest.approx(2.0)
    # Non-finite scores (a model that failed on a window) teach nothing; no scores, no move.
    with_nan = np.concatenate([clean, [np.inf, np.nan]])
    assert settled_threshold(with_nan, 1.2, _config(0.995, 1.5)) == pytest.approx(1.5)
    assert settled_threshold(np.array([]), 1.2, _config(0.995, 1.5)) == 1.2


def test_the_settled_threshold_climbs_through_a_heavy_tail() -> None:
    # Scores 1..100, quantile 0.9, multiplier 1.5, starting at 10: below 10 the 0.9 quantile
    # is 9.1, so 13.65; below that 11.8, so 17.7; ... each round lets more in, until every
    # score is below it: 1.5 x 90.1 (the 0.9 quantile of all), where it stays.
    clean = np.arange(1.0, 101.0)
    assert settled_threshold(clean, 10.0, _config(0.9, 1.5)) == pytest.approx(1.5 * 90.1)


def test_decision_rules() -> None:
    def m(false_rate: float, detection: float) -> Metrics:
        return Metrics(1.0, false_rate, detection, detection - false_rate, 0.9, 2000)

    assert decide(m(0.0, 0.5), None, 0.02).accepted
    assert decide(m(0.01, 0.80), m(0.01, 0.81), 0.02).accepted  # within tolerance
    assert not decide(m(0.01, 0.70), m(0.01, 0.80), 0.02).accepted  # misses more
    # The same gap on 50 windows is within sampling noise: not a reason to keep a model.
    few = Metrics(1.0, 0.01, 0.70, 0.69, 0.9, 50)
    assert decide(few, Metrics(1.0, 0.01, 0.80, 0.79, 0.9, 50), 0.02).accepted
    # Separates worse at any threshold.
    worse = Metrics(1.0, 0.01, 0.80, 0.79, 0.70, 2000)
    assert not decide(worse, m(0.01, 0.80), 0.02).accepted
    # Flags more of both: merit holds, but the false-alarm rate rose beyond tolerance.
    assert not decide(m(0.10, 0.95), m(0.01, 0.85), 0.02).accepted
    assert not decide(Metrics(1.0, 0.0, 0.0, 0.0, 0.5, 0), m(0.0, 0.5), 0.02).accepted


def test_eval_set_injects_one_anomaly_per_window() -> None:
    data = build_eval_set([normal(400)], 16, 4.0, seed=0)
    assert data.clean.shape == data.injected.shape == (97, 16, 3)
    changed = np.abs(data.injected - data.clean).max(axis=1) > 1e-6  # (B, F)
    assert np.all(changed.sum(axis=1) == 1)
    assert set(data.kinds) == {"spike", "offset", "ramp", "noise"}
