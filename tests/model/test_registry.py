from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sentinel.errors import ModelError
from sentinel.model import LstmAeDetector, LstmAutoencoder, ModelRegistry
from sentinel.model.base import META_FILE
from sentinel.model.lstm_detector import WEIGHTS_FILE
from tests.model.helpers import CPU, V1, V2, make_detector


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def test_constructor_does_no_io(tmp_path: Path) -> None:
    ModelRegistry(tmp_path / "models")
    assert not (tmp_path / "models").exists()


def test_nothing_saved_means_nothing_active(registry: ModelRegistry) -> None:
    assert registry.versions("pump") == []
    assert registry.active_version("pump") is None
    assert registry.load_active("pump", CPU) is None


def test_save_activate_load(registry: ModelRegistry) -> None:
    first = make_detector(V1, seed=1)
    second = make_detector(V2, seed=2)
    assert registry.save(second) == registry.root / "pump" / V2
    registry.save(first)
    assert registry.versions("pump") == [V1, V2]
    assert registry.active_version("pump") is None  # saving does not activate

    registry.activate("pump", V1)
    assert (registry.root / "pump" / "ACTIVE").read_text().strip() == V1
    loaded = registry.load_active("pump", CPU, max_batch=3)
    assert loaded is not None
    assert loaded.version == V1
    data = np.random.default_rng(0).normal(size=(5, 8, 2)).astype(np.float32)
    np.testing.assert_array_equal(loaded.score(data)[0], first.score(data)[0])

    registry.activate("pump", V2)
    assert registry.active_version("pump") == V2
    assert [p.name for p in (registry.root / "pump").iterdir() if p.name.startswith(".")] == []


def test_versions_saved_in_the_same_second_keep_their_order(registry: ModelRegistry) -> None:
    names = ["20250101T000000Z-ffffff", "20250101T000000Z-000000", "20250101T000000Z-888888"]
    for name in names:
        registry.save(make_detector(name))
    assert registry.versions("pump") == names


def test_streams_are_separate(registry: ModelRegistry) -> None:
    registry.save(make_detector(V1, stream="pump"))
    registry.save(make_detector(V2, stream="fan"))
    registry.activate("fan", V2)
    assert registry.versions("pump") == [V1]
    assert registry.active_version("pump") is None
    with pytest.raises(ModelError, match="no such model version"):
        registry.activate("pump", V2)


def test_saving_a_version_twice_fails(registry: ModelRegistry) -> None:
    registry.save(make_detector(V1))
    with pytest.raises(ModelError, match="already exists"):
        registry.save(make_detector(V1))


def test_activate_requires_the_version(registry: ModelRegistry) -> None:
    with pytest.raises(ModelError, match="no such model version"):
        registry.activate("pump", V1)
    assert registry.active_version("pump") is None


def test_active_pointing_to_missing_version_is_an_error(registry: ModelRegistry) -> None:
    (registry.root / "pump").mkdir(parents=True)
    (registry.root / "pump" / "ACTIVE").write_text(V1 + "\n")
    assert registry.active_version("pump") == V1
    with pytest.raises(ModelError, match="does not exist"):
        registry.load_active("pump", CPU)


def test_corrupt_active_version_is_an_error(registry: ModelRegistry) -> None:
    registry.save(make_detector(V1))
    registry.activate("pump", V1)
    (registry.root / "pump" / V1 / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(ModelError, match=WEIGHTS_FILE):
        registry.load_active("pump", CPU)


def test_model_in_the_wrong_place_is_an_error(registry: ModelRegistry) -> None:
    make_detector(V1).save(registry.root / "pump" / V2)
    registry.activate("pump", V2)
    with pytest.raises(ModelError, match="not '20250102T000000Z-000000' of 'pump'"):
        registry.load_active("pump", CPU)


@pytest.mark.parametrize("content", ["", "../../etc", ".."])
def test_garbage_active_file_is_an_error(registry: ModelRegistry, content: str) -> None:
    (registry.root / "pump").mkdir(parents=True)
    (registry.root / "pump" / "ACTIVE").write_text(content)
    with pytest.raises(ModelError, match="invalid version name"):
        registry.active_version("pump")


@pytest.mark.parametrize("stream", ["..", "a/b", ""])
def test_stream_names_cannot_escape_the_root(registry: ModelRegistry, stream: str) -> None:
    with pytest.raises(ModelError, match="invalid stream name"):
        registry.versions(stream)


def test_the_learnt_interval_is_saved_with_the_model(registry: ModelRegistry) -> None:
    """The sampling interval learnt at training scales the stream's auto time settings
    (sentinel.timescale), so it must survive a restart (issue #21)."""
    detector = make_detector(V1)
    assert isinstance(detector, LstmAeDetector)
    timed = LstmAeDetector(replace(detector.meta, interval=300.0), LstmAutoencoder(2, 4, 2, 1), CPU)
    registry.save(timed)
    loaded = registry.load_version("pump", V1, CPU)
    assert loaded.meta.interval == 300.0
    assert json.loads((registry.root / "pump" / V1 / META_FILE).read_text())["interval"] == 300.0


def test_a_model_saved_before_intervals_existed_still_loads(registry: ModelRegistry) -> None:
    registry.save(make_detector(V1))
    meta = registry.root / "pump" / V1 / META_FILE
    data = json.loads(meta.read_text())
    data.pop("interval", None)
    meta.write_text(json.dumps(data))
    loaded = registry.load_version("pump", V1, CPU)
    assert loaded.meta.interval is None  # it keeps the old scale: one reading per second


def test_a_bad_interval_is_refused(registry: ModelRegistry) -> None:
    registry.save(make_detector(V1))
    meta = registry.root / "pump" / V1 / META_FILE
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "interval": "5min"}))
    with pytest.raises(ModelError, match="interval"):
        registry.load_version("pump", V1, CPU)
