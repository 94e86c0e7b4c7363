"""A telemetry channel held at the levels its commands set, end to end (issue #21): a real
forecaster -- the default detector -- trained on the first half of
``simulators.synthetic.telemetry_modes``, then the pipeline judging the whole series, where
after one command the channel settles 0.6 away from that command's level (another
command's normal level, or between two) and later turns five times noisier.

Every reading of the wrong level is one the channel normally holds, its steps and noise are
normal, and no window remembers which command came last: before the command-level check
(``sentinel.judge.command_levels``) only the noise fault alerted. Now the wrong level is a
broken relation of the channel to its command (``relation:value``), from its settled
readings to the next command, and nothing else alerts."""

from __future__ import annotations

import numpy as np
import pytest

from sentinel.config import SentinelConfig
from sentinel.judge.alerts import alert_checks
from sentinel.model import LstmForecastDetector
from simulators.synthetic import telemetry_modes
from tests.fakes import Harness
from tests.worker.helpers import opened, process_rows, trained_forecaster

pytestmark = pytest.mark.slow  # trains a real model

SERIES = telemetry_modes(seed=0, quick=True)
FEATURES = list(SERIES.features)
VALUES = np.asarray(SERIES.values, dtype=np.float32)
EDGES = np.flatnonzero(np.diff(np.r_[0, SERIES.labels, 0]))
WRONG, NOISY = range(EDGES[0], EDGES[1]), range(EDGES[2], EDGES[3])


def config(**command_levels: object) -> SentinelConfig:
    return SentinelConfig.model_validate(
        {
            "streams": [{"name": "sat", "topic": "s/{device}", "features": FEATURES}],
            "windows": {"length": 32, "hop": 4, "max_gap": 100},
            "model": {"hidden_size": 16, "epochs": 8, "train_stride": 2, "seed": 1},
            "command_levels": command_levels,
        }
    )


@pytest.fixture(scope="module")
def detector() -> LstmForecastDetector:
    return trained_forecaster(config(), VALUES[: SERIES.train_rows])  # outside the timeout


def alerts(detector: LstmForecastDetector, **command_levels: object) -> list[tuple[float, str]]:
    h = Harness({"sat": detector}, config(**command_levels))
    process_rows(h, "sat", "s/d1", VALUES)
    return [(a.started_at, alert_checks(a)) for a in opened(h.alerts)]


def test_a_channel_settled_at_the_wrong_level_alerts_and_nothing_else_does(
    detector: LstmForecastDetector,
) -> None:
    assert detector.pulse_indices() == (1, 2, 3)  # the three command channels
    found = alerts(detector)
    assert len(found) == 2, found
    (wrong_at, wrong_checks), (noisy_at, noisy_checks) = found
    assert wrong_at in WRONG, found
    assert wrong_checks == "relation:value"
    assert noisy_at in NOISY, found
    assert noisy_checks.startswith("noise:value")


def test_without_the_check_the_wrong_level_goes_unseen(detector: LstmForecastDetector) -> None:
    found = alerts(detector, enabled=False)
    assert [at for at, _ in found if at in WRONG] == [], found
    assert any(at in NOISY for at, _ in found), found
