"""A sensor that freezes (issue #21), end to end: a real forecaster -- the default detector --
trained on a noisy, quantised channel, then the pipeline judging a channel that holds its last
value. The forecaster predicts each reading from the ones before, so a frozen channel is
predicted at least as well as a live one: without the stuck check nothing alerts. With it, one
alert names the channel, from its limit (training's longest run x factor) on, and closes
when the channel moves again."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sentinel.config import SentinelConfig
from sentinel.judge.alerts import alert_checks
from sentinel.model import LstmForecastDetector, TrainOptions
from sentinel.model.stuck import longest_run
from tests.fakes import Harness
from tests.worker.helpers import deliveries, opened

pytestmark = pytest.mark.slow  # trains a real model (once, in the module's fixture)

FEATURES = ["flow", "current", "flag"]
FREEZE, HELD = 500, 60  # readings: flow holds its value from FREEZE - 1 for HELD readings


def signal(n: int, seed: int) -> np.ndarray:
    """flow: a mean-reverting walk in steps of 0.01; current follows it in steps of 0.1,
    coarse for its noise, so it repeats itself far more often; flag: constant 0."""
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    for t in range(1, n):
        x[t] = 0.9 * x[t - 1] + 0.1 * rng.standard_normal()
    flow = np.round(10 + x + 0.05 * rng.standard_normal(n), 2)
    current = np.round(2 + 0.5 * x + 0.02 * rng.standard_normal(n), 1)
    return np.column_stack([flow, current, np.zeros(n)]).astype(np.float32)


def config(enabled: bool = True) -> SentinelConfig:
    return SentinelConfig.model_validate(
        {
            "streams": [{"name": "pump", "topic": "p/{device}", "features": FEATURES}],
            "windows": {"length": 32, "hop": 4, "max_gap": 100},
            "model": {"hidden_size": 16, "epochs": 8, "train_stride": 2, "seed": 1},
            "stuck": {"enabled": enabled},
        }
    )


@pytest.fixture(scope="module")
def detector() -> LstmForecastDetector:
    cfg = config()
    options = TrainOptions("pump", tuple(FEATURES), cfg.windows.length, cfg.model)
    trained = LstmForecastDetector.train(
        [signal(500, 0), signal(300, 1)], options, device=torch.device("cpu")
    )
    assert isinstance(trained, LstmForecastDetector)
    return trained


def test_training_keeps_each_features_longest_run_within_a_segment(
    detector: LstmForecastDetector,
) -> None:
    stats = detector.run_stats()
    assert stats is not None
    runs = [max(longest_run(s[:, f]) for s in (signal(500, 0), signal(300, 1))) for f in (0, 1)]
    assert stats.longest == (*runs, 0), "flag is constant in training: the constant check's"
    flow, current = runs
    assert flow <= 3 < current, "the coarse channel repeats itself longer"
    limits = stats.limits(min_run=8, factor=3.0).tolist()
    assert limits == [max(8, 3 * flow), 3 * current, 0]
    assert limits[1] > 32, "longer than a window: current is not judged"


def test_a_frozen_channel_alerts_once_naming_it_only_with_the_stuck_check(
    detector: LstmForecastDetector,
) -> None:
    values = signal(800, 7)
    values[FREEZE : FREEZE + HELD, 0] = values[FREEZE - 1, 0]
    frozen = range(FREEZE, FREEZE + HELD)

    off = Harness({"pump": detector}, config(enabled=False))
    off.run(deliveries(values), until=lambda: off.pipeline.stats.readings == len(values))
    assert off.pipeline.stats.readings == len(values)
    missed = [a for a in opened(off.alerts) if a.started_at in frozen]
    assert missed == [], "the forecaster alone sees the frozen channel"

    on = Harness({"pump": detector}, config())
    on.run(deliveries(values), until=lambda: on.pipeline.stats.readings == len(values))
    alerts = [a for a in opened(on.alerts) if a.started_at in frozen]
    assert len(alerts) == 1, [(a.started_at, alert_checks(a)) for a in opened(on.alerts)]
    alert = alerts[0]
    assert "stuck:flow" in alert_checks(alert)
    assert alert.reason is not None
    assert alert.reason.stuck is not None
    name, run, limit = alert.reason.stuck
    stats = detector.run_stats()
    assert stats is not None
    assert (name, limit) == ("flow", max(8, 3 * stats.longest[0]))
    # Opened once the run (counting the held reading) reaches its limit; the alert starts
    # where the value first repeated (its evidence, sentinel.judge.evidence).
    assert alert.started_at == FREEZE
    assert run >= limit
    closed = [a for a in on.alerts if a.uid == alert.uid and a.ended_at is not None]
    assert closed, "the alert never closed"
    assert closed[-1].ended_at is not None
    assert closed[-1].ended_at <= FREEZE + HELD + 4
