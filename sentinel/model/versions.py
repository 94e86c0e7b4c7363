"""The model registry as operators see it: versions with their role, status and training data,
one version in full, and switching the active one.

Shared by ``sentinel models ...`` (sentinel/cli/models.py) and the REST API
(sentinel/api/models.py) so that both list the same rows and switch versions the same way:
a version is loaded before it becomes active, so one that cannot be loaded never does.
Telling a running daemon is the caller's part (the CLI through the control socket, the API
in-process through the same handler).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sentinel.errors import ModelError
from sentinel.model.base import META_FILE
from sentinel.model.registry import Registry

__all__ = [
    "TrainedOn",
    "VersionRow",
    "read_meta",
    "switch_version",
    "trained_on",
    "version_rows",
]


@dataclass(frozen=True, slots=True)
class TrainedOn:
    """The data a version learnt from: epoch seconds of its first and last reading."""

    first_ts: float | None
    last_ts: float | None
    rows: int | None


@dataclass(frozen=True, slots=True)
class VersionRow:
    """One line of ``models list``."""

    stream: str
    version: str
    role: str  # "active", "previous" (the rollback target) or ""
    status: str  # the retraining verdict, or "trained" for `sentinel train`'s versions
    trained_on: TrainedOn
    merit: float | None
    parent: str | None


def read_meta(registry: Registry, stream: str, version: str) -> dict[str, Any]:
    """A version's meta.json as plain data (no weights loaded); ModelError if unreadable."""
    path = registry.path(stream, version) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"{path}: cannot read: {err}") from err
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: not a JSON object")
    return meta


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def trained_on(status: dict[str, Any], meta: dict[str, Any]) -> TrainedOn:
    """A retraining run records its data in its status, a version from ``sentinel train``
    (which has no status) only in its metadata."""
    data = status.get("data", {})
    training = meta.get("training", {})
    rows = data.get("train_rows", training.get("n_readings"))
    return TrainedOn(
        _number(data.get("first_ts", training.get("first_ts"))),
        _number(data.get("last_ts", training.get("last_ts"))),
        rows if isinstance(rows, int) and not isinstance(rows, bool) else None,
    )


def version_rows(registry: Registry, streams: list[str]) -> list[VersionRow]:
    """Every version of ``streams``, each stream's newest first."""
    rows = []
    for name in streams:
        active = registry.active_version(name)
        previous = registry.previous_version(name)
        for version in reversed(registry.versions(name)):
            status = registry.status(name, version)
            try:
                meta = read_meta(registry, name, version)
            except ModelError:
                meta = {}  # listed all the same; `models show` says what is wrong with it
            metrics = status.get("metrics", {}).get("challenger", {})
            role = "active" if version == active else "previous" if version == previous else ""
            parent = status.get("parent")
            rows.append(
                VersionRow(
                    stream=name,
                    version=version,
                    role=role,
                    status=str(status.get("status", "trained")),
                    trained_on=trained_on(status, meta),
                    merit=_number(metrics.get("merit")),
                    parent=parent if isinstance(parent, str) else None,
                )
            )
    return rows


def switch_version(registry: Registry, stream: str, version: str, reason: str) -> None:
    """Make ``version`` of ``stream`` active; loaded first, so ModelError leaves the active
    version as it was."""
    registry.load_version(stream, version, None)  # NumPy where it can: no torch for a check
    registry.activate(stream, version, reason=reason)
