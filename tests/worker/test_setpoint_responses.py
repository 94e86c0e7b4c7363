"""A temperature that follows its set point with a lag, end to end (issue #21): a real
forecaster -- the default detector -- trained on 600 readings of
``simulators.synthetic.setpoint_steps``, which hold two set point steps, then the pipeline
judging the rest, where the set point steps among four values and the heater fails once
(the temperature holds 3 degrees under the set point for 150 readings).

The forecaster, having seen two steps, predicts the lag after the others badly, and its
windows there are anomalous; before, two of those runs opened false alerts. They are the
channel's response to a change of a stepped input (``Verdict.response``) and open nothing;
the heater's fault, which begins on a flat set point, is the one alert."""

from __future__ import annotations

import numpy as np
import pytest

from sentinel.config import SentinelConfig
from sentinel.judge.alerts import alert_checks
from sentinel.model import LstmForecastDetector
from simulators.synthetic import setpoint_steps
from tests.fakes import Harness
from tests.worker.helpers import opened, process_rows, trained_forecaster

pytestmark = pytest.mark.slow  # trains a real model

SERIES = setpoint_steps(seed=2, quick=True)
FEATURES = list(SERIES.features)
VALUES = np.asarray(SERIES.values, dtype=np.float32)
TRAIN = 600
FAULT = range(*(int(i) for i in np.flatnonzero(np.diff(np.r_[0, SERIES.labels, 0]))))


def config() -> SentinelConfig:
    return SentinelConfig.model_validate(
        {
            "streams": [{"name": "hvac", "topic": "h/{device}", "features": FEATURES}],
            "windows": {"length": 32, "hop": 4, "max_gap": 100},
            "model": {"hidden_size": 16, "epochs": 8, "train_stride": 2, "seed": 1},
        }
    )


@pytest.fixture(scope="module")
def detector() -> LstmForecastDetector:
    return trained_forecaster(config(), VALUES[:TRAIN])  # outside the per-test timeout


def test_the_lag_after_a_set_point_step_opens_nothing_and_the_fault_alerts(
    detector: LstmForecastDetector,
) -> None:
    assert detector.meta.stepped_features == ("setpoint",)
    steps = np.flatnonzero(np.diff(VALUES[:, 0])) + 1
    live_steps = [int(s) for s in steps if TRAIN <= s < FAULT.start]
    assert len(steps[steps < TRAIN]) == 2
    assert len(live_steps) >= 3
    h = Harness({"hvac": detector}, config())
    process_rows(h, "hvac", "h/d1", VALUES)
    # the lags were anomalous: windows within a minute of the steps were judged so
    buckets = [b for batch in h.batches for b in batch.history]
    after_steps = [
        b.anomalous for b in buckets if any(s - 60 < b.start < s + 60 for s in live_steps)
    ]
    assert sum(after_steps) > 0
    found = [(a.started_at, alert_checks(a)) for a in opened(h.alerts)]
    live = [a for a in opened(h.alerts) if a.started_at >= TRAIN]
    assert len(live) == 1, found
    assert live[0].started_at in FAULT, found
