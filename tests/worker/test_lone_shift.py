"""A pump's sensor offset, end to end (issue #21): a real forecaster -- the default detector
-- trained on a simulated pump read every 5 s, then the pipeline judging the rest, where the
vibration sensor reads 6 of its scales low for 40 readings. The forecaster follows the
offset after its first reading (its context holds the new level), and the pump's relations
are not yet learnt when it comes; what gives it away is that the vibration stepped while
every other channel held still (``sentinel.judge.shifts``). The pump's own load changes,
which step every channel together, raise no such hit."""

from __future__ import annotations

import numpy as np
import pytest

from sentinel.config import SentinelConfig
from sentinel.judge.alerts import alert_checks
from sentinel.model import LstmForecastDetector
from simulators.fleet import FEATURES, FleetSimulator
from tests.fakes import Harness
from tests.worker.helpers import opened, process_rows, trained_forecaster

pytestmark = pytest.mark.slow  # trains a real model (once, in the module's fixture)

TRAIN, TOTAL = 750, 1800
OFFSET = range(1400, 1440)
VIBRATION = FEATURES.index("vibration")


def _readings() -> np.ndarray:
    sim = FleetSimulator(1, seed=5, step=5.0, start_ts=0.0, anomaly_rate=0.0, day_length=3600.0)
    steps = sim.steps()
    rows = np.array(
        [[next(steps)[0].values[f] for f in FEATURES] for _ in range(TOTAL)], dtype=np.float32
    )
    rows[OFFSET.start : OFFSET.stop, VIBRATION] -= 6 * sim.scale("pump-000")["vibration"]
    return rows


VALUES = _readings()


def config(enabled: bool = True) -> SentinelConfig:
    return SentinelConfig.model_validate(
        {
            "streams": [{"name": "pump", "topic": "p/{device}", "features": list(FEATURES)}],
            "windows": {"length": 32, "hop": 4, "max_gap": 100},
            "model": {"hidden_size": 16, "epochs": 8, "train_stride": 2, "seed": 1},
            "shifts": {"enabled": enabled},
        }
    )


@pytest.fixture(scope="module")
def detector() -> LstmForecastDetector:
    return trained_forecaster(config(), VALUES[:TRAIN])  # outside the timeout


def alerts(detector: LstmForecastDetector, enabled: bool) -> list[tuple[float, str]]:
    h = Harness({"pump": detector}, config(enabled))
    process_rows(h, "pump", "p/d1", VALUES)
    return [(a.started_at, alert_checks(a)) for a in opened(h.alerts)]


def test_the_offset_is_a_shift_of_the_vibration_and_nothing_else_is(
    detector: LstmForecastDetector,
) -> None:
    found = alerts(detector, enabled=True)
    named = [(at, checks) for at, checks in found if "level:" in checks]
    assert named, found
    assert all("level:vibration" in checks for _, checks in named), found
    assert all(OFFSET.start <= at <= OFFSET.stop + 32 for at, _ in named), found


def test_without_the_check_no_alert_names_the_vibrations_level(
    detector: LstmForecastDetector,
) -> None:
    found = alerts(detector, enabled=False)
    assert not any("level:" in checks for _, checks in found), found
