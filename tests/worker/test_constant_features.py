"""A feature constant in training that later switches (issue #21, cause 4), end to end: a real
LSTM-AE trained where the flag never moved, then the pipeline judging a flag that switches
and stays switched. Before: the flag's error ratio to its ~0 training error kept every
window anomalous, one alert for the rest of the file. Now: one alert naming the flag, which
closes, and the model still finds a fault on the other channel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sentinel.config import SentinelConfig
from sentinel.judge.alerts import alert_checks
from sentinel.model import LstmAeDetector, TrainOptions, train_detector
from sentinel.records import AlertStatus
from tests.fakes import Harness
from tests.worker.helpers import deliveries, opened, small_config

pytestmark = pytest.mark.slow  # trains a real model (once, in the module's fixture)

FEATURES = ["a", "flag"]
SWITCH, FAULT = 300, 700  # readings: the flag goes 0 -> 1 and stays; a on offset for 40


def signal(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    a = np.sin(2 * np.pi * t / 25) + rng.normal(0, 0.05, n)
    return np.column_stack([a, np.zeros(n)]).astype(np.float32)


def config() -> SentinelConfig:
    return small_config(FEATURES)


@pytest.fixture(scope="module")
def detector() -> LstmAeDetector:
    cfg = config()
    options = TrainOptions("pump", tuple(FEATURES), cfg.windows.length, cfg.model)
    return train_detector([signal(600, 0)], options, device=torch.device("cpu"))


def test_the_model_holds_a_constant_feature_and_leaves_it_out_of_its_score(
    detector: LstmAeDetector, tmp_path: Path
) -> None:
    assert detector.meta.constant_features == {"flag": 0.0}
    assert detector.constant_values() == {1: 0.0}
    windows = np.stack([signal(400, 5)[i : i + 16] for i in range(0, 384, 4)])
    switched = windows.copy()
    switched[:, :, 1] = 1.0
    normal, normal_errors = detector.score(windows)
    after, errors = detector.score(switched)
    # The model sees the flag at its training value: nothing changes, on any channel.
    np.testing.assert_allclose(after, normal, rtol=1e-5)
    np.testing.assert_allclose(errors, normal_errors, rtol=1e-5)
    assert float(after.max()) < 10 * detector.calibration.quantiles["0.999"]
    detector.save(tmp_path / "m")
    loaded = LstmAeDetector.load(tmp_path / "m", torch.device("cpu"))
    assert loaded.meta.constant_features == {"flag": 0.0}
    np.testing.assert_allclose(loaded.score(switched)[0], after, rtol=1e-6)


def test_a_flag_that_switches_and_stays_alerts_once_naming_it(
    detector: LstmAeDetector,
) -> None:
    values = signal(1000, 7)
    values[SWITCH:, 1] = 1.0
    values[FAULT : FAULT + 40, 0] += 3.0
    h = Harness({"pump": detector}, config())
    h.run(deliveries(values), until=lambda: h.pipeline.stats.readings == len(values))
    assert h.pipeline.stats.readings == len(values)
    alerts = opened(h.alerts)
    flag = [a for a in alerts if SWITCH <= a.started_at < SWITCH + 16]
    assert len(flag) == 1, [(a.started_at, alert_checks(a)) for a in alerts]
    assert "constant:flag" in alert_checks(flag[0])
    assert flag[0].top_features[0].feature == "flag"
    assert flag[0].reason is not None
    assert flag[0].reason.constant == ("flag", 1.0, 0.0)
    # ... and closes within a bounded number of readings, long before the fault.
    ended = [a for a in h.alerts if a.uid == flag[0].uid and a.status is AlertStatus.CLOSED]
    assert ended, "the flag's alert never closed"
    assert ended[-1].ended_at is not None
    assert ended[-1].ended_at < SWITCH + 100
    assert not [a for a in alerts if SWITCH + 16 <= a.started_at < FAULT], "normal again"
    # The model still judges the other channel: the fault on a is found.
    fault = [a for a in alerts if FAULT <= a.started_at < FAULT + 40]
    assert len(fault) == 1
    assert fault[0].top_features[0].feature == "a"
    assert "constant" not in alert_checks(fault[0])
    audit = [e for b in h.batches for e in b.audit]
    assert [e.kind for e in audit] == ["constant_value_learnt"]


PULSES = (150, 300, 450, 550, 850)  # a command sent as one-reading pulses, never in training


def pulsed_run(detector: LstmAeDetector, accept_returns: int) -> tuple[list[int], Harness]:
    """The flag pulsed at ``PULSES`` and the fault on a: the pulses whose alert names the
    flag."""
    values = signal(1000, 7)
    values[list(PULSES), 1] = 1.0
    values[FAULT : FAULT + 40, 0] += 3.0
    cfg = config()
    cfg = cfg.model_copy(
        update={"constants": cfg.constants.model_copy(update={"accept_returns": accept_returns})}
    )
    h = Harness({"pump": detector}, cfg)
    h.run(deliveries(values), until=lambda: h.pipeline.stats.readings == len(values))
    assert h.pipeline.stats.readings == len(values)
    alerts = opened(h.alerts)
    fault = [a for a in alerts if FAULT <= a.started_at < FAULT + 40]
    assert len(fault) == 1
    assert fault[0].top_features[0].feature == "a"
    named = [a for a in alerts if "constant:flag" in alert_checks(a)]
    return sorted(p for p in PULSES for a in named if p <= a.started_at < p + 16), h


def test_a_command_pulsed_now_and_then_alerts_at_its_first_pulses_only(
    detector: LstmAeDetector,
) -> None:
    """Spacecraft telemetry comes with command channels that are 0 but for one-reading
    pulses, and training need not hold every command (issue #21: SMAP/MSL-like data). Each
    pulse of a command never seen in training alerted, the whole file long."""
    before, _ = pulsed_run(detector, 0)
    assert before == list(PULSES)
    after, h = pulsed_run(detector, 2)
    assert after == list(PULSES[:2])
    audit = [e for b in h.batches for e in b.audit if e.kind == "constant_value_learnt"]
    assert [(e.detail["value"], e.detail["returns"]) for e in audit] == [(1.0, 2)]
