"""Registry for retraining: status records, rollback, pruning, corrupt versions refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sentinel.cli.main import main
from sentinel.config import SentinelConfig
from sentinel.errors import ModelError
from sentinel.model import (
    ModelRegistry,
)
from sentinel.model.lstm_detector import WEIGHTS_FILE
from sentinel.model.registry import load_active_or_previous
from sentinel.retrain.job import RetrainOutcome
from sentinel.retrain.retrainer import apply_outcome
from tests.retrain.helpers import FEATURES, make_config, make_detector, version, write_config

CPU = torch.device("cpu")


def saved(config: SentinelConfig, days: range) -> ModelRegistry:
    registry = ModelRegistry(config.models_dir)
    for day in days:
        registry.save(make_detector(version(day), seed=day))
    return registry


def corrupt(registry: ModelRegistry, v: str) -> None:
    weights = registry.path("pump", v) / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])


def test_rollback_returns_to_the_previous_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path / "state")
    registry = saved(config, range(1, 4))
    registry.activate("pump", version(1))
    registry.activate("pump", version(3))
    cfg = write_config(config, tmp_path / "s.toml")

    assert main(["models", "rollback", "--config", cfg]) == 0
    assert registry.active_version("pump") == version(1)
    assert "next start" in capsys.readouterr().out  # no daemon is running
    assert main(["models", "rollback", "--config", cfg]) == 0  # undoes the rollback
    assert registry.active_version("pump") == version(3)

    assert main(["models", "list", "--config", cfg, "--format", "json"]) == 0
    listing = capsys.readouterr().out
    assert '"role": "active"' in listing
    assert '"role": "previous"' in listing
    assert main(["models", "show", version(2), "--config", cfg]) == 0
    assert version(2) in capsys.readouterr().out


def test_models_show_is_readable_and_json_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path / "state")
    registry = saved(config, range(1, 3))
    registry.activate("pump", version(1))
    challenger = {"merit": 0.61, "detection": 0.8, "false_rate": 0.02, "auc": 0.9, "windows": 96}
    registry.write_status(
        "pump",
        version(2),
        {
            "status": "rejected",
            "reason": "merit 0.61 below the champion's 0.7",
            "trigger": "schedule",
            "decided": "2025-01-02T00:10:00+00:00",
            "parent": version(1),
            "data": {"first_ts": 1735689600, "last_ts": 1735776000, "train_rows": 4000},
            "metrics": {"challenger": challenger},
        },
    )
    cfg = write_config(config, tmp_path / "s.toml")

    assert main(["models", "show", version(2), "--config", cfg]) == 0
    lines = dict(
        line.split(None, 1) for line in capsys.readouterr().out.splitlines() if " " in line
    )
    assert lines["version"] == version(2)
    assert lines["status"] == "rejected: merit 0.61 below the champion's 0.7"
    assert lines["parent"] == version(1)
    assert lines["data"] == "2025-01-01 00:00 to 2025-01-02 00:00 UTC, 4000 rows trained on"
    assert lines["features"] == "a, b, c"
    assert lines["sampling"].startswith("not recorded")  # saved without an interval
    assert lines["challenger"].startswith("merit 0.61: detection 0.8, false rate 0.02")

    assert main(["models", "show", version(1), "--config", cfg]) == 0
    lines = dict(
        line.split(None, 1) for line in capsys.readouterr().out.splitlines() if " " in line
    )
    assert lines["version"] == f"{version(1)} (active)"
    assert lines["status"].startswith("trained")

    assert main(["models", "show", version(2), "--config", cfg, "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["version"], shown["active"]) == (version(2), False)
    assert shown["status"]["status"] == "rejected"
    assert shown["meta"]["features"] == FEATURES


def test_rollback_without_a_previous_version_fails(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state")
    saved(config, range(1, 2)).activate("pump", version(1))
    assert main(["models", "rollback", "--config", write_config(config, tmp_path / "s.toml")]) == 1


def test_pruning_keeps_the_active_version_and_its_predecessor(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state")
    registry = saved(config, range(1, 9))
    registry.activate("pump", version(2))
    registry.activate("pump", version(1))  # active 1, previous 2: the two oldest
    removed = registry.prune("pump", keep=4)
    assert removed == [version(d) for d in range(3, 7)]
    assert registry.versions("pump") == [version(d) for d in (1, 2, 7, 8)]


def test_a_corrupt_version_is_refused_and_the_previous_one_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path / "state")
    registry = saved(config, range(1, 3))
    registry.activate("pump", version(1))
    corrupt(registry, version(2))
    cfg = write_config(config, tmp_path / "s.toml")

    # By hand: refused before ACTIVE moves.
    assert main(["models", "activate", version(2), "--config", cfg]) == 1
    assert "not a readable safetensors file" in capsys.readouterr().err
    assert registry.active_version("pump") == version(1)

    # From a retraining run: marked rejected, nothing installed, the active one stays.
    installed: list[str] = []
    outcome = RetrainOutcome("pump", "accepted", "better", version(2), version(1))
    got = apply_outcome(
        outcome,
        registry,
        config,
        CPU,
        lambda s, d, seeds=None, shadow=False: installed.append(d.version),
    )
    assert got is None
    assert installed == []
    assert registry.active_version("pump") == version(1)
    assert registry.status("pump", version(2))["status"] == "rejected"

    # Corrupted after activation: at start the daemon falls back to the predecessor.
    registry.activate("pump", version(2), reason="test")
    detector = load_active_or_previous(registry, "pump", CPU, 64)
    assert detector is not None
    assert detector.version == version(1)
    assert registry.active_version("pump") == version(1)


def test_a_corrupt_version_without_predecessor_is_an_error(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state")
    registry = saved(config, range(1, 2))
    registry.activate("pump", version(1))
    corrupt(registry, version(1))
    with pytest.raises(ModelError):
        load_active_or_previous(registry, "pump", CPU, 64)
