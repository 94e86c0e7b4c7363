"""A sensor whose noise grows (issue #21), end to end: a real forecaster -- the default
detector -- trained on a telemetry channel that command channels move between levels
(``simulators.synthetic.telemetry_modes``), then the pipeline judging the rest of the series,
where the channel's noise grows five-fold for 80 readings. A command moves the channel with
one reading nothing announces, so single large errors set the score's normal tail; the noise
check judges each window's median step against the roughest window of training instead,
which a step does not move. One alert names the channel during the burst, and none of the
live series' command steps raises a noise hit."""

from __future__ import annotations

import numpy as np
import pytest

from sentinel.config import SentinelConfig
from sentinel.judge.alerts import alert_checks
from sentinel.model import LstmForecastDetector
from sentinel.model.noise import roughness
from sentinel.model.windowing import make_windows
from simulators.synthetic import telemetry_modes
from tests.fakes import Harness
from tests.worker.helpers import opened, process_rows, trained_forecaster

pytestmark = pytest.mark.slow  # trains a real model (once, in the module's fixture)

SERIES = telemetry_modes(seed=0)
FEATURES = list(SERIES.features)
VALUES = np.asarray(SERIES.values, dtype=np.float32)
# the labelled spans: the wrong level first, then the noise burst
_EDGES = np.flatnonzero(np.diff(np.r_[0, np.asarray(SERIES.labels, dtype=int), 0])).reshape(-1, 2)
BURST = range(int(_EDGES[1][0]), int(_EDGES[1][1]))


def config(enabled: bool = True) -> SentinelConfig:
    return SentinelConfig.model_validate(
        {
            "streams": [{"name": "pump", "topic": "p/{device}", "features": FEATURES}],
            "windows": {"length": 32, "hop": 4, "max_gap": 100},
            "model": {"hidden_size": 16, "epochs": 8, "train_stride": 2, "seed": 1},
            "noise": {"enabled": enabled},
        }
    )


def judged(enabled: bool, detector: LstmForecastDetector) -> tuple[Harness, list[int]]:
    """The whole series through a pipeline, synchronously, in passes of 64 readings (the
    device's own first windows warm its threshold); the newest reading of each window the
    noise check flagged."""
    h = Harness({"pump": detector}, config(enabled))
    rough: list[int] = []
    h.pipeline._observer = lambda verdict, alert: (
        rough.append(int(verdict.score.window.end_ts)) if verdict.noise is not None else None
    )
    process_rows(h, "pump", "p/d1", VALUES)
    return h, rough


@pytest.fixture(scope="module")
def detector() -> LstmForecastDetector:
    return trained_forecaster(config(), VALUES[: SERIES.train_rows])


def test_training_keeps_the_roughest_window_and_leaves_the_commands_out(
    detector: LstmForecastDetector,
) -> None:
    stats = detector.noise_stats()
    assert stats is not None
    train = VALUES[: SERIES.train_rows]
    expected = roughness(make_windows(train, 32, 1)).max(axis=0)
    assert stats.largest[0] == pytest.approx(float(expected[0]))
    # a command channel is 0 but for one reading in 40-200: every window's median step is
    # 0, so it is still, judged against a floor (0.001) that its pulses never reach: a
    # window's median step stays 0 unless most of its readings move
    assert stats.largest[1:] == (0.0, 0.0, 0.0)
    assert stats.still[1:] == pytest.approx((1e-3, 1e-3, 1e-3))
    assert stats.limits(2.0)[1:] == pytest.approx([2e-3, 2e-3, 2e-3])


def test_a_noisy_channel_alerts_naming_it_and_no_command_step_does(
    detector: LstmForecastDetector,
) -> None:
    on, noisy = judged(True, detector)
    assert noisy, "no window of the burst was rough enough"
    # rough windows hold burst readings: their newest reading is inside the burst or within
    # one window after it, never at a command step elsewhere
    assert all(BURST.start <= t < BURST.stop + 32 for t in noisy), noisy
    alerts = [a for a in opened(on.alerts) if "noise:value" in alert_checks(a)]
    assert len(alerts) == 1, [(a.started_at, alert_checks(a)) for a in opened(on.alerts)]
    alert = alerts[0]
    assert BURST.start <= alert.started_at < BURST.stop
    assert alert.reason is not None
    assert alert.reason.noise is not None
    name, ratio = alert.reason.noise
    assert name == "value"
    assert ratio > 2.0
    assert alert.top_features[0].feature == "value"

    off, none = judged(False, detector)
    assert none == []
    assert not [a for a in opened(off.alerts) if "noise" in alert_checks(a)]
