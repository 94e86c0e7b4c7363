"""Champion/challenger on real (small) models: contamination is caught, drift is not held."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sentinel.retrain.promotion import Metrics, build_eval_set, decide, evaluate
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
