"""Bounded disk use in the state directory: old model versions are pruned.

Every training run saves a new version (a few hundred KB: weights plus calibration scores),
so an edge box that retrains weekly would fill its disk over the years. We keep the newest
``keep`` versions of each stream -- the active one always, wherever it falls -- so a
rollback to a recent model stays possible, and delete the rest. Half-written versions that
a crash left behind (hidden ``.<version>.tmp-*`` directories) go too once they are an hour
old, so a save in progress by ``sentinel train`` is never touched.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import structlog

from sentinel.errors import ModelError
from sentinel.model import ModelRegistry

__all__ = ["prune_model_versions"]

log = structlog.get_logger(__name__)

_STALE_TMP_SECONDS = 3600.0


def prune_model_versions(registry: ModelRegistry, stream: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` versions of ``stream`` (never the active one).

    Returns the deleted versions. Errors are logged, never raised: pruning must not stop
    the daemon.
    """
    if keep < 1:
        raise ValueError("keep must be at least 1")
    try:
        versions = registry.versions(stream)
        active = registry.active_version(stream)
    except (ModelError, OSError) as err:
        log.error("model_prune_failed", stream=stream, error=str(err))
        return []
    newest = versions[-keep:]
    kept = set(newest)
    if active is not None and active not in kept:
        # An old version is active (a rollback): it takes the oldest of the newest slots.
        kept.add(active)
        if len(newest) == keep:
            kept.discard(newest[0])
    deleted = []
    for version in versions:
        if version in kept:
            continue
        try:
            shutil.rmtree(registry.path(stream, version))
        except OSError as err:
            log.error("model_prune_failed", stream=stream, version=version, error=str(err))
            continue
        deleted.append(version)
    _remove_stale_tmp(registry.root / stream)
    if deleted:
        log.info("model_versions_pruned", stream=stream, deleted=deleted, kept=sorted(kept))
    return deleted


def _remove_stale_tmp(directory: Path) -> None:
    if not directory.is_dir():
        return
    cutoff = time.time() - _STALE_TMP_SECONDS
    for path in directory.iterdir():
        if path.name.startswith(".") and ".tmp-" in path.name:
            try:
                if path.stat().st_mtime < cutoff:
                    if path.is_dir():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
                    log.info("model_tmp_removed", path=str(path))
            except OSError as err:
                log.warning("model_tmp_remove_failed", path=str(path), error=str(err))
