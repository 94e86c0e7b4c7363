"""Model versions are pruned to a bound, never the active one."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sentinel.model import ModelRegistry
from sentinel.retention import prune_model_versions
from tests.model.test_registry import make_detector


def saved(registry: ModelRegistry, count: int) -> list[str]:
    versions = [f"2025010{i}T000000Z-{i:06d}" for i in range(1, count + 1)]
    for i, version in enumerate(versions):
        registry.save(make_detector(version, seed=i))
    return versions


def test_keeps_the_newest_and_the_active(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    versions = saved(registry, 6)
    registry.activate("pump", versions[-1])
    deleted = prune_model_versions(registry, "pump", keep=3)
    assert deleted == versions[:3]
    assert registry.versions("pump") == versions[3:]
    assert registry.load_active("pump", make_detector("x").device) is not None


def test_an_old_active_version_survives_a_prune(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    versions = saved(registry, 5)
    registry.activate("pump", versions[0])  # rolled back
    prune_model_versions(registry, "pump", keep=2)
    assert registry.versions("pump") == [versions[0], versions[-1]]
    assert registry.active_version("pump") == versions[0]


def test_stale_half_written_versions_are_removed_fresh_ones_kept(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    saved(registry, 1)
    stale = registry.root / "pump" / ".20250101T000000Z-x.tmp-deadbeef"
    fresh = registry.root / "pump" / ".20250102T000000Z-y.tmp-cafebabe"
    for path in (stale, fresh):
        path.mkdir()
        (path / "weights.safetensors").write_bytes(b"partial")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    prune_model_versions(registry, "pump", keep=5)
    assert not stale.exists()
    assert fresh.exists(), "a save in progress must not be removed"


def test_nothing_saved_is_fine(tmp_path: Path) -> None:
    assert prune_model_versions(ModelRegistry(tmp_path / "models"), "pump", keep=1) == []
