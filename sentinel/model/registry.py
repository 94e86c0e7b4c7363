"""Versioned model storage: ``<root>/<stream>/<version>/`` plus an ``ACTIVE`` pointer per stream.

Switching models is one atomic rename of the ``ACTIVE`` file, so a crash mid-switch leaves
either the old or the new version active, never neither.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import structlog
import torch

from sentinel.errors import ModelError
from sentinel.model.detector import Detector

__all__ = ["ACTIVE_FILE", "ModelRegistry"]

log = structlog.get_logger(__name__)

ACTIVE_FILE = "ACTIVE"
# Same alphabet as stream names in the config; also what train_detector's versions use.
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _check_name(kind: str, value: str) -> str:
    # "." and ".." match the alphabet but would escape the registry directory.
    if not _NAME.match(value) or value in (".", ".."):
        raise ModelError(f"invalid {kind} name {value!r}")
    return value


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

    def activate(self, stream: str, version: str) -> None:
        """Make ``version`` the one :meth:`load_active` returns, atomically."""
        path = self.path(stream, version)
        if not path.is_dir():
            raise ModelError(f"{path}: no such model version of stream {stream!r}")
        active = path.parent / ACTIVE_FILE
        tmp = path.parent / f".{ACTIVE_FILE}.tmp-{os.getpid()}"
        try:
            with tmp.open("w", encoding="utf-8") as f:
                f.write(version + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, active)
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise ModelError(f"{active}: cannot write: {err}") from err
        log.info("model_activated", stream=stream, version=version)

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
        self, stream: str, device: torch.device, max_batch: int = 512
    ) -> Detector | None:
        """The active detector of ``stream``; None when none is active, ModelError if broken."""
        version = self.active_version(stream)
        if version is None:
            return None
        path = self.path(stream, version)
        if not path.is_dir():
            raise ModelError(
                f"{path.parent / ACTIVE_FILE}: active version {version!r} does not exist"
            )
        detector = Detector.load(path, device, max_batch=max_batch)
        if detector.meta.stream != stream or detector.version != version:
            raise ModelError(
                f"{path}: holds model {detector.version!r} of stream "
                f"{detector.meta.stream!r}, not {version!r} of {stream!r}"
            )
        return detector

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
