"""Versioned model storage: ``<root>/<stream>/<version>/`` plus an ``ACTIVE`` pointer per stream.

Switching models is one atomic rename of the ``ACTIVE`` file, so a crash mid-switch leaves
either the old or the new version active, never neither.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from sentinel.atomic import fsync_dir, write_atomically
from sentinel.errors import ModelError
from sentinel.model.base import Detector
from sentinel.model.detector_types import load_detector

if TYPE_CHECKING:
    import torch

    from sentinel.config import SentinelConfig
    from sentinel.model.nats_registry import NatsRegistry

__all__ = [
    "ACTIVE_FILE",
    "HISTORY_FILE",
    "STATUS_FILE",
    "ModelRegistry",
    "Registry",
    "load_active_or_previous",
    "nats_registry",
    "open_registry",
]

log = structlog.get_logger(__name__)

ACTIVE_FILE = "ACTIVE"
HISTORY_FILE = "history.jsonl"  # one line per activation, oldest first: what rollback undoes
STATUS_FILE = "status.json"  # per version: accepted/rejected, why, metrics, parent, config hash
# Same alphabet as stream names in the config; also what new_version's versions use.
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _check_name(kind: str, value: str) -> str:
    # "." and ".." match the alphabet but would escape the registry directory.
    if not _NAME.match(value) or value in (".", ".."):
        raise ModelError(f"invalid {kind} name {value!r}")
    return value


class Registry(Protocol):
    """What the daemon, retraining, the CLI and the API ask of a model registry.

    Two implementations: :class:`ModelRegistry` (files, one daemon) and
    ``sentinel.model.nats_registry.NatsRegistry`` (NATS, shared by many daemons, issue #24),
    which keeps a ``ModelRegistry`` as its local cache. ``path`` is always a local
    directory: a shared registry fetches the version there first.
    """

    @property
    def root(self) -> Path: ...

    def path(self, stream: str, version: str) -> Path: ...

    def save(self, detector: Detector) -> Path: ...

    def publish(self, stream: str, version: str) -> None:
        """Share a version another process saved into ``root`` (a retraining child)."""

    def activate(self, stream: str, version: str, reason: str = "manual") -> None: ...

    def active_version(self, stream: str) -> str | None: ...

    def load_active(
        self, stream: str, device: torch.device | None, max_batch: int = 512
    ) -> Detector | None: ...

    def versions(self, stream: str) -> list[str]: ...

    def load_version(
        self, stream: str, version: str, device: torch.device | None, max_batch: int = 512
    ) -> Detector: ...

    def write_status(self, stream: str, version: str, status: dict[str, Any]) -> None: ...

    def status(self, stream: str, version: str) -> dict[str, Any]: ...

    def history(self, stream: str) -> list[dict[str, str]]: ...

    def previous_version(self, stream: str) -> str | None: ...

    def prune(self, stream: str, keep: int) -> list[str]: ...


class ModelRegistry:
    """Saves, lists and activates model versions of each stream under one root directory."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root)

    @property
    def root(self) -> Path:
        return self._root

    def _stream_dir(self, stream: str) -> Path:
        return self._root / _check_name("stream", stream)

    def path(self, stream: str, version: str) -> Path:
        return self._stream_dir(stream) / _check_name("version", version)

    def save(self, detector: Detector) -> Path:
        """Store a detector as a new version (not yet active); returns its directory."""
        path = self.path(detector.meta.stream, detector.version)
        if path.exists():
            raise ModelError(f"{path}: version already exists")
        detector.save(path)
        return path

    def publish(self, stream: str, version: str) -> None:
        """Nothing to do: every reader of this registry reads ``root`` itself."""

    def activate(self, stream: str, version: str, reason: str = "manual") -> None:
        """Make ``version`` the one :meth:`load_active` returns, atomically."""
        path = self.path(stream, version)
        if not path.is_dir():
            raise ModelError(f"{path}: no such model version of stream {stream!r}")
        active = path.parent / ACTIVE_FILE
        try:
            write_atomically(active, version + "\n")
        except OSError as err:
            raise ModelError(f"{active}: cannot write: {err}") from err
        self._append_history(stream, version, reason)
        log.info("model_activated", stream=stream, version=version, reason=reason)

    def active_version(self, stream: str) -> str | None:
        """The active version of ``stream``, or None when none was ever activated."""
        active = self._stream_dir(stream) / ACTIVE_FILE
        try:
            text = active.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as err:
            raise ModelError(f"{active}: cannot read: {err}") from err
        try:
            return _check_name("version", text)
        except ModelError as err:
            raise ModelError(f"{active}: {err}") from err

    def load_active(
        self, stream: str, device: torch.device | None, max_batch: int = 512
    ) -> Detector | None:
        """The active detector of ``stream``; None when none is active, ModelError if broken."""
        version = self.active_version(stream)
        if version is None:
            return None
        if not self.path(stream, version).is_dir():
            raise ModelError(
                f"{self._stream_dir(stream) / ACTIVE_FILE}: active version {version!r} "
                "does not exist"
            )
        return self.load_version(stream, version, device, max_batch)

    def versions(self, stream: str) -> list[str]:
        """Saved versions of ``stream``, oldest first."""
        directory = self._stream_dir(stream)
        if not directory.is_dir():
            return []
        found = [p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")]
        # Versions start with a UTC timestamp to the second; the directory's mtime orders
        # two versions saved within the same second.
        found.sort(key=lambda p: (p.name.split("-", 1)[0], p.stat().st_mtime_ns, p.name))
        return [p.name for p in found]

    # -- retraining: status records, activation history, rollback, pruning ----------------

    def load_version(
        self, stream: str, version: str, device: torch.device | None, max_batch: int = 512
    ) -> Detector:
        """One saved version, checked to be what its directory name says; ModelError if not."""
        path = self.path(stream, version)
        if not path.is_dir():
            raise ModelError(f"{path}: no such model version of stream {stream!r}")
        detector = load_detector(path, device, max_batch=max_batch)
        if detector.meta.stream != stream or detector.version != version:
            raise ModelError(
                f"{path}: holds model {detector.version!r} of stream "
                f"{detector.meta.stream!r}, not {version!r} of {stream!r}"
            )
        return detector

    def write_status(self, stream: str, version: str, status: dict[str, Any]) -> None:
        """Record how a version was judged (``status.json`` beside its weights), atomically."""
        path = self.path(stream, version) / STATUS_FILE
        try:
            write_atomically(path, json.dumps(status, indent=2, allow_nan=False) + "\n")
        except (OSError, ValueError) as err:
            raise ModelError(f"{path}: cannot write: {err}") from err

    def status(self, stream: str, version: str) -> dict[str, Any]:
        """A version's status record; {} for versions saved without one (e.g. `train`)."""
        path = self.path(stream, version) / STATUS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            return {"status": "unknown", "reason": f"unreadable {STATUS_FILE}: {err}"}
        return data if isinstance(data, dict) else {"status": "unknown"}

    def history(self, stream: str) -> list[dict[str, str]]:
        """Activations of ``stream``, oldest first (unreadable lines are skipped)."""
        path = self._stream_dir(stream) / HISTORY_FILE
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        except OSError as err:
            raise ModelError(f"{path}: cannot read: {err}") from err
        entries = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("version"), str):
                entries.append(entry)
        return entries

    def previous_version(self, stream: str) -> str | None:
        """The version that was active before the current one took over (rollback target).

        When ``ACTIVE`` itself is damaged (emptied, garbled or cut short, by hand or by a
        disk that lost its last write: issue #22) or names no saved version, the newest
        version the history says was activated and that still exists: what ``ACTIVE``
        named, or at worst its predecessor."""
        history = [e["version"] for e in self.history(stream)]
        try:
            current = self.active_version(stream)
            damaged = current is not None and not self.path(stream, current).is_dir()
        except ModelError:
            current, damaged = None, True
        if damaged:
            existing = [v for v in history if self.path(stream, v).is_dir()]
            return existing[-1] if existing else None
        # The last activation of the current version, then the latest other one before it.
        for i in range(len(history) - 1, -1, -1):
            if history[i] == current:
                for earlier in reversed(history[:i]):
                    if earlier != current and self.path(stream, earlier).is_dir():
                        return earlier
                return None
        return None

    def prune(self, stream: str, keep: int) -> list[str]:
        """Delete the oldest versions beyond ``keep``; the active one and its predecessor
        are never deleted. Returns what was deleted."""
        try:
            active = self.active_version(stream)
        except ModelError:  # an unreadable ACTIVE: previous_version names what it did
            active = None
        protected = {active, self.previous_version(stream)}
        versions = self.versions(stream)
        removed: list[str] = []
        for version in versions:
            if len(versions) - len(removed) <= keep:
                break
            if version in protected:
                continue
            shutil.rmtree(self.path(stream, version), ignore_errors=True)
            removed.append(version)
        if removed:
            log.info("models_pruned", stream=stream, removed=removed, kept=keep)
        return removed

    def _append_history(self, stream: str, version: str, reason: str) -> None:
        path = self._stream_dir(stream) / HISTORY_FILE
        entry = {
            "version": version,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "reason": reason,
        }
        try:
            created = not path.exists()
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
                f.flush()
                os.fsync(f.fileno())
            if created:  # the new file's name must survive a power cut too
                fsync_dir(path.parent)
        except OSError as err:
            # ACTIVE is already switched; only rollback loses a step, so do not fail.
            log.error("model_history_write_failed", path=str(path), error=str(err))


def load_active_or_previous(
    registry: Registry, stream: str, device: torch.device | None, max_batch: int
) -> Detector | None:
    """The active version; if it cannot be loaded (a corrupt or torn file, an unreadable
    ``ACTIVE``), the one active before it, which then becomes active again, with a warning
    naming both. None when nothing was ever activated; ModelError when neither loads."""
    try:
        return registry.load_active(stream, device, max_batch=max_batch)
    except ModelError as err:
        log.error("model_unusable", stream=stream, error=str(err))
        reason = str(err)
        previous = registry.previous_version(stream)
        if previous is None:
            raise
    try:
        detector = registry.load_version(stream, previous, device, max_batch=max_batch)
    except ModelError as err:
        log.error("model_unusable", stream=stream, version=previous, error=str(err))
        raise
    registry.activate(stream, previous, reason="active version could not be loaded")
    log.warning("model_fell_back", stream=stream, version=previous, because=reason)
    return detector


def open_registry(config: SentinelConfig, *, role: str) -> Registry:
    """The registry ``[registry] backend`` names. A NATS one is started: connected, or
    serving its cache while it keeps trying; the caller stops it. The NATS client is
    imported only for a NATS registry (issue #23, memory: ~2 MB a daemon on files does
    not need)."""
    if config.registry.backend == "files":
        return ModelRegistry(config.models_dir)
    from sentinel.model.nats_registry import NatsRegistry

    registry = NatsRegistry(config.registry, config.nats, config.models_dir, role=role)
    if not registry.start():
        log.warning(
            "registry_offline_using_cache", servers=config.nats.servers, cache=str(registry.root)
        )
        return registry
    for stream in config.streams:
        try:
            registry.share_cached(stream.name)
        except ModelError as err:  # not fatal: the stream starts as the registry has it
            log.warning("registry_share_failed", stream=stream.name, error=str(err))
    return registry


def nats_registry(registry: Registry) -> NatsRegistry | None:
    """``registry`` where it is a ``NatsRegistry``, else None, without importing the NATS
    client where no NATS registry was ever made (it cannot be one then)."""
    module = sys.modules.get("sentinel.model.nats_registry")
    if module is None:
        return None
    shared: type[NatsRegistry] = module.NatsRegistry
    return registry if isinstance(registry, shared) else None
