"""The detector registry: what ``model.detector`` picks, and what a saved model says it is."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
import torch

from sentinel.cli.main import main
from sentinel.config import ModelConfig
from sentinel.errors import ModelError
from sentinel.model import (
    DETECTORS,
    LstmAeDetector,
    ModelRegistry,
    ZScoreDetector,
    daemon_refusal,
    detector_type,
    load_detector,
)
from sentinel.model.base import META_FILE
from tests.model.helpers import V1, make_detector, train

CPU = torch.device("cpu")


def test_the_configs_choices_are_the_registrys_keys() -> None:
    annotation = ModelConfig.model_fields["detector"].annotation
    assert set(typing.get_args(annotation)) == set(DETECTORS)
    assert ModelConfig().detector in DETECTORS


def test_every_detector_is_registered_under_its_own_key() -> None:
    assert all(cls.type_key == key for key, cls in DETECTORS.items())
    assert detector_type("lstm_ae") is LstmAeDetector
    with pytest.raises(ModelError, match="unknown detector 'forest'"):
        detector_type("forest")


def test_a_model_saved_before_the_detector_key_loads_as_an_lstm_ae(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    path = registry.save(make_detector(V1))
    meta = json.loads((path / META_FILE).read_text())
    assert meta["detector"] == "lstm_ae"
    del meta["detector"]  # as every model was written before the key existed
    (path / META_FILE).write_text(json.dumps(meta))
    loaded = registry.load_version("pump", V1, CPU)
    assert isinstance(loaded, LstmAeDetector)
    assert loaded.meta == make_detector(V1).meta


def test_a_model_of_an_unknown_detector_is_refused_by_name(tmp_path: Path) -> None:
    path = ModelRegistry(tmp_path).save(make_detector(V1))
    meta = json.loads((path / META_FILE).read_text())
    (path / META_FILE).write_text(json.dumps({**meta, "detector": "forest"}))
    with pytest.raises(ModelError, match="detector 'forest' is not one this Sentinel knows"):
        load_detector(path, CPU)


def test_a_model_is_loaded_only_by_its_own_detector(tmp_path: Path) -> None:
    path = ModelRegistry(tmp_path).save(make_detector(V1))
    with pytest.raises(ModelError, match="holds a 'lstm_ae' model, not 'zscore'"):
        ZScoreDetector.load(path, CPU)


def test_the_registry_keeps_and_activates_a_baseline_like_any_model(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    zscore = train("zscore")
    registry.save(zscore)
    registry.activate("pump", zscore.version)
    loaded = registry.load_active("pump", CPU)
    assert isinstance(loaded, ZScoreDetector)
    assert loaded.meta == zscore.meta


def test_the_daemon_asks_the_registry_what_it_can_run() -> None:
    assert daemon_refusal("lstm_ae") is None
    assert daemon_refusal("lstm_forecast") is None
    assert daemon_refusal("lstm_ensemble") is None
    assert daemon_refusal("zscore") is None
    refusal = daemon_refusal("hst")
    assert refusal is not None
    assert "'hst' cannot run in the daemon" in refusal
    assert "lstm_ae, lstm_forecast, lstm_ensemble, zscore" in refusal


def test_check_config_refuses_a_detector_the_daemon_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sentinel.toml"
    streams = '[[streams]]\nname = "pump"\ntopic = "p/{device}"\nfeatures = ["flow"]\n'
    path.write_text(f'[model]\ndetector = "hst"\n{streams}')
    assert main(["check-config", str(path)]) == 1
    assert "cannot run in the daemon" in capsys.readouterr().err
    path.write_text(f'[model]\ndetector = "zscore"\n{streams}')
    assert main(["check-config", str(path)]) == 0
    path.write_text(f'[model]\ndetector = "lstm_forecast"\n{streams}')
    assert main(["check-config", str(path)]) == 0


def test_train_refuses_a_detector_it_could_not_save_before_reading_any_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "sentinel.toml"
    config.write_text(
        f'state_dir = "{tmp_path}"\n[model]\ndetector = "hst"\n'
        '[[streams]]\nname = "pump"\ntopic = "p/{device}"\nfeatures = ["a", "b"]\n'
    )
    missing = tmp_path / "never-read.csv"
    assert main(["train", "--config", str(config), "--csv", str(missing)]) == 2
    assert "'hst' cannot run in the daemon" in capsys.readouterr().err


def test_models_export_of_a_detector_without_export_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "sentinel.toml"
    config.write_text(
        f'state_dir = "{tmp_path}"\n[model]\ndetector = "zscore"\n'
        '[[streams]]\nname = "pump"\ntopic = "p/{device}"\nfeatures = ["a", "b"]\n'
    )
    zscore = train("zscore")
    ModelRegistry(tmp_path / "models").save(zscore)
    argv = ["models", "export", zscore.version, "--format", "onnx", "--config", str(config)]
    assert main(argv) == 1
    assert "a zscore model cannot be exported as onnx" in capsys.readouterr().err
