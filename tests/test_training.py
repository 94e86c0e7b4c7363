"""Every path that trains a model builds it from the config the same way (issue #19)."""

from __future__ import annotations

import csv
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from structlog.testing import capture_logs

from sentinel.cli.main import main
from sentinel.config import SentinelConfig
from sentinel.model import Detector, LstmMeta, ModelRegistry
from sentinel.records import Reading
from sentinel.retrain.job import open_reservoir, run_retrain
from sentinel.worker.coldstart import Trainer, TrainingJob
from tests.retrain.helpers import make_config, normal, write_config

CPU = torch.device("cpu")
ROWS = 1500


def relative_config(state: Path, **retrain: Any) -> SentinelConfig:
    """The retraining tests' small model, with a relative feature and a score_steps: what
    a path that builds its own training arguments would be the first to lose."""
    data = make_config(state, **retrain).model_dump(mode="json", exclude_none=True)
    data["streams"][0]["features"] = ["a", "b", {"name": "c", "level": "relative"}]
    data["model"]["score_steps"] = 4
    data["model"]["seed"] = 3
    return SentinelConfig.model_validate(data)


def lstm_meta(detector: Detector) -> LstmMeta:
    """The config asks for the default detector, an LSTM one (the forecaster), whose meta
    has the sizes."""
    assert isinstance(detector.meta, LstmMeta), type(detector)
    return detector.meta


def shaped_by_config(meta: LstmMeta) -> dict[str, Any]:
    return {
        "stream": meta.stream,
        "features": meta.features,
        "window": meta.window,
        "detector": meta.detector,
        "sizes": (meta.hidden_size, meta.num_layers),
        "relative_features": meta.relative_features,
        "score_steps": meta.score_steps,
        "seed": meta.training["seed"],
    }


def trained_by_cli(tmp_path: Path, data: np.ndarray) -> LstmMeta:
    config = relative_config(tmp_path / "cli")
    path = tmp_path / "normal.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ts", "a", "b", "c"])
        writer.writerows([i, *map(float, row)] for i, row in enumerate(data))
    toml = write_config(config, tmp_path / "cli.toml")
    assert main(["train", "--config", toml, "--csv", str(path), "--timestamp-column", "ts"]) == 0
    detector = ModelRegistry(config.models_dir).load_active("pump", CPU)
    assert detector is not None
    return lstm_meta(detector)


def trained_by_retraining(tmp_path: Path, data: np.ndarray) -> LstmMeta:
    config = relative_config(tmp_path / "retrain")
    reservoir = open_reservoir(config, "pump")
    reservoir.add(
        [Reading("pump", "d1", float(i), tuple(map(float, r))) for i, r in enumerate(data)]
    )
    reservoir.close()
    outcome = run_retrain(config, "pump", reason="cold_start", device=CPU, cold_start=True)
    assert outcome.status == "accepted", outcome.reason
    assert outcome.version is not None
    registry = ModelRegistry(config.models_dir)
    return lstm_meta(registry.load_version("pump", outcome.version, CPU))


def trained_by_cold_start(tmp_path: Path, data: np.ndarray) -> LstmMeta:
    """The in-memory cold start (``retrain.enabled = false``), on the trainer thread."""
    config = relative_config(tmp_path / "cold", enabled=False)
    models: list[Detector] = []
    failures: list[str] = []
    done = threading.Event()

    def on_model(stream: str, detector: Detector) -> None:
        models.append(detector)
        done.set()

    def on_failure(stream: str, reason: str) -> None:
        failures.append(reason)
        done.set()

    trainer = Trainer(
        config, ModelRegistry(config.models_dir), CPU, on_model=on_model, on_failure=on_failure
    )
    trainer.start()
    try:
        trainer.submit(TrainingJob(config.stream("pump"), [data], 0.0, ROWS - 1.0))
        assert done.wait(600), "the trainer never answered"
    finally:
        trainer.stop()
    assert not failures
    return lstm_meta(models[0])


def test_the_daemon_trains_what_sentinel_train_trains(tmp_path: Path) -> None:
    data = normal(ROWS)
    by_cli = shaped_by_config(trained_by_cli(tmp_path, data))
    assert by_cli["relative_features"] == ("c",)
    assert by_cli["score_steps"] == 4
    assert by_cli["seed"] == 3
    assert shaped_by_config(trained_by_retraining(tmp_path, data)) == by_cli
    assert shaped_by_config(trained_by_cold_start(tmp_path, data)) == by_cli


def test_every_path_warns_of_a_feature_constant_in_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A feature that never moved in training makes any later change score 10^3-10^8
    times training's errors; whoever trains is told which feature, and its value."""
    data = normal(ROWS)
    data[:, 1] = 2.5  # b: a valve that stayed shut all through the recording
    trained_by_cli(tmp_path, data)
    out = capsys.readouterr().out
    assert "feature b of stream pump is constant in the training data (2.5)" in out
    with capture_logs() as logs:  # after the CLI, which configures logging its own way
        trained_by_retraining(tmp_path, data)
        trained_by_cold_start(tmp_path, data)
    warned = [e for e in logs if e["event"] == "training_feature_constant"]
    assert [(e["log_level"], e["stream"], e["feature"], e["value"]) for e in warned] == [
        ("warning", "pump", "b", 2.5)
    ] * 2


def test_a_file_without_times_trains_at_the_interval_given(tmp_path: Path) -> None:
    """`sentinel train --interval`: numbered samples train a model that knows their sampling
    interval, which scales every time setting the daemon derives from it; without it the
    model learns none."""
    config = relative_config(tmp_path / "cli")
    path = tmp_path / "samples.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "c"])
        writer.writerows(map(float, row) for row in normal(ROWS))
    toml = write_config(config, tmp_path / "cli.toml")
    registry = ModelRegistry(config.models_dir)
    assert main(["train", "--config", toml, "--csv", str(path), "--interval", "5"]) == 0
    detector = registry.load_active("pump", CPU)
    assert detector is not None
    assert detector.meta.interval == 5.0  # under the config's max_gap of 10 s
    assert main(["train", "--config", toml, "--csv", str(path)]) == 0
    detector = registry.load_active("pump", CPU)
    assert detector is not None
    assert detector.meta.interval is None
