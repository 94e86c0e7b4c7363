"""The daemon's start with state files a power cut (or a hand) damaged (issue #22): each
one is named in the log, and the daemon runs on the previous good model with fresh
thresholds instead of failing or starting cold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from structlog.testing import capture_logs

from sentinel.model import (
    Calibration,
    LstmAeDetector,
    LstmAeMeta,
    LstmAutoencoder,
    ModelRegistry,
    Scaler,
)
from sentinel.model.lstm_detector import WEIGHTS_FILE
from sentinel.model.registry import ACTIVE_FILE
from simulators.broker import PrivateBroker
from simulators.fleet import FEATURES
from tests.e2e_helpers import WINDOW, daemon_config, running_app

V1 = "20250101T000000Z-aaaaaa"
V2 = "20250102T000000Z-bbbbbb"


def _detector(version: str) -> LstmAeDetector:
    n = len(FEATURES)
    meta = LstmAeMeta(
        version=version,
        stream="pump",
        features=FEATURES,
        window=WINDOW,
        hidden_size=4,
        latent_size=2,
        num_layers=1,
        scaler=Scaler(mean=np.zeros(n, np.float32), scale=np.ones(n, np.float32)),
        calibration=Calibration(
            quantiles={"0.5": 0.1, "0.9": 0.2, "0.99": 0.3, "0.995": 0.35, "0.999": 0.4},
            max=0.5,
            feature_mean_errors=(0.1,) * n,
        ),
        created="2025-01-01T00:00:00+00:00",
    )
    return LstmAeDetector(meta, LstmAutoencoder(n, 4, 2, 1), torch.device("cpu"))


@pytest.mark.integration
@pytest.mark.parametrize(
    ("damaged", "used"),
    [
        (f"{V2}/{WEIGHTS_FILE}", V1),  # the active version's weights: its predecessor
        (ACTIVE_FILE, V2),  # the pointer: the version the history says it named
    ],
)
def test_torn_state_at_start_is_reported_and_survived(
    mqtt_broker: PrivateBroker, tmp_path: Path, damaged: str, used: str
) -> None:
    state = tmp_path / "state"
    registry = ModelRegistry(state / "models")
    for version in (V1, V2):
        registry.save(_detector(version))
        registry.activate("pump", version)
    path = registry.root / "pump" / damaged
    path.write_bytes(path.read_bytes()[:10])  # cut short, as a lost write leaves it
    (state / "thresholds.json").write_text('{"schema": 1, "streams": {"pu')

    config = daemon_config(state, mqtt_broker, database_url=f"sqlite:///{state / 'db.sqlite'}")
    with capture_logs() as logs, running_app(config) as running:
        assert running.app.pipeline is not None
        assert running.app.pipeline.model_versions() == {"pump": used}

    events = {e["event"]: e for e in logs}
    assert str(path) in events["model_unusable"]["error"]
    assert events["model_fell_back"]["log_level"] == "warning"
    assert events["model_fell_back"]["version"] == used
    assert events["threshold_snapshot_corrupt"]["path"] == str(state / "thresholds.json")
    assert registry.active_version("pump") == used
    assert running.result == [0]
