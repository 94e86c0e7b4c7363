"""``thresholds.json``: the worker's per-device thresholds and noise scales across a restart.

Written every ``snapshot_interval`` and when the worker stops, atomically, each stream's
thresholds tagged with the model version they were learnt on; at start they are taken back
only for the models still in use (a new model has its own score scale), while the spike
check's noise scales and remembered spikes, the score's remembered recurring
excursions (``recurring``), the relation check's fits (``relations``), the settled
levels after each command (``command_levels``), the shift check's spreads and limits
(``shifts``), the period check's blocks (``periods``) and the first reading time of each
device still learning after it joined (``joining``), which belong to the devices, are
taken back whatever the model. The
constant check's learnt values (``constants``) belong to the model's training values, so
they come back only for the same model, as the thresholds do. A snapshot that cannot be
read is set aside as ``thresholds.json.corrupt`` and reported, and the thresholds start
afresh: never fatal.

With ``[cluster]`` on, the same per-device data goes one row per device to the shared
database instead (``collect``, ``restore_devices``; sentinel.store.judge_state), so that
it moves with the device's partition to the next daemon that owns it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog

from sentinel.atomic import write_atomically
from sentinel.judge.command_levels import CommandLevelCheck
from sentinel.judge.constants import ConstantCheck
from sentinel.judge.periods import PeriodCheck
from sentinel.judge.recurring import RecurringExcursions
from sentinel.judge.relations import RelationCheck
from sentinel.judge.shifts import ShiftCheck
from sentinel.judge.spikes import SpikeCheck
from sentinel.judge.threshold import ThresholdBank
from sentinel.records import DeviceJudgeState
from sentinel.worker.joining import JoiningDevices

__all__ = ["SharedJudgeState", "ThresholdSnapshots"]

log = structlog.get_logger(__name__)

# 2: float histories packed (sentinel.judge.history.pack); 1, their JSON lists, still read.
# An older daemon refuses a 2 by name ("unknown schema") and learns its thresholds afresh.
_SCHEMA = 2
_READ = (1, 2)
# The parts of a stream's snapshot that are per device, keyed by device name.
_PARTS = (
    "devices",
    "spikes",
    "constants",
    "recurring",
    "relations",
    "command_levels",
    "shifts",
    "periods",
    "joining",
)


class SharedJudgeState(Protocol):
    """Where a cluster member keeps its devices' judge state (sentinel.cluster)."""

    def owns(self, device: str) -> bool:
        """Whether the device's partition is this daemon's now."""

    def save(self, rows: Sequence[DeviceJudgeState]) -> None:
        """Store the rows; raises StoreError when the database fails."""


class ThresholdSnapshots:
    """Saves and restores the state of ``thresholds``, ``spikes``, ``constants``,
    ``recurring``, ``relations``, ``command_levels``, ``shifts`` and ``periods`` at
    ``path``."""

    def __init__(
        self,
        path: Path,
        thresholds: ThresholdBank,
        spikes: SpikeCheck,
        constants: ConstantCheck | None = None,
        recurring: RecurringExcursions | None = None,
        relations: RelationCheck | None = None,
        command_levels: CommandLevelCheck | None = None,
        shifts: ShiftCheck | None = None,
        periods: PeriodCheck | None = None,
        joining: JoiningDevices | None = None,
    ) -> None:
        self.path = path
        self._joining = joining
        self._thresholds = thresholds
        self._spikes = spikes
        self._constants = constants
        self._recurring = recurring
        self._relations = relations
        self._command_levels = command_levels
        self._shifts = shifts
        self._periods = periods

    def _stream(self, name: str, version: str) -> dict[str, object]:
        return {
            "model_version": version,
            "devices": self._thresholds.snapshot(name),
            "spikes": self._spikes.snapshot(name),
            "constants": self._constants.snapshot(name) if self._constants else {},
            "recurring": self._recurring.snapshot(name) if self._recurring else {},
            "relations": self._relations.snapshot(name) if self._relations else {},
            "command_levels": (self._command_levels.snapshot(name) if self._command_levels else {}),
            "shifts": self._shifts.snapshot(name) if self._shifts else {},
            "periods": self._periods.snapshot(name) if self._periods else {},
            "joining": self._joining.snapshot(name) if self._joining else {},
        }

    def collect(
        self, models: Mapping[str, str], which: Callable[[str], bool]
    ) -> list[DeviceJudgeState]:
        """Per device that ``which`` selects, its part of each stream's snapshot."""
        rows = []
        for name, version in models.items():
            saved = self._stream(name, version)
            per_device: dict[str, dict[str, object]] = {}
            for part in _PARTS:
                data = saved[part]
                assert isinstance(data, dict)
                for device, value in data.items():
                    if which(device):
                        per_device.setdefault(device, {})[part] = value
            rows += [DeviceJudgeState(name, d, version, v) for d, v in per_device.items()]
        return rows

    def restore_devices(
        self, models: Mapping[str, tuple[str, int]], rows: Iterable[DeviceJudgeState]
    ) -> int:
        """Take back ``collect``'s rows for the streams in ``models``, as ``restore`` takes
        a file; returns how many devices. A malformed row is reported and skipped."""
        grouped: dict[tuple[str, str], dict[str, dict[str, object]]] = {}
        for row in rows:
            if row.stream not in models:
                continue
            parts = grouped.setdefault((row.stream, row.model_version), {p: {} for p in _PARTS})
            for part in _PARTS:
                if part in row.state:
                    parts[part][row.device] = row.state[part]
        count = 0
        for (name, version), parts in grouped.items():
            try:
                self._restore_stream(name, {"model_version": version, **parts}, models[name])
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                log.error("judge_state_corrupt", stream=name, error=str(err))
                continue
            count += len(set().union(*(p.keys() for p in parts.values())))
        return count

    def save(self, models: Mapping[str, str]) -> None:
        """Write the state of every stream in ``models`` (stream -> active model version)."""
        streams = {name: self._stream(name, version) for name, version in models.items()}
        try:
            # in pieces, a device's data at a time: at 1,000 devices the file is ~20 MB,
            # and one string of it (with the encoder's chunks) tens of MB more held at once
            write_atomically(self.path, _pieces({"schema": _SCHEMA, "streams": streams}, 4))
        except OSError as err:
            log.error("threshold_snapshot_failed", path=str(self.path), error=str(err))

    def restore(self, models: Mapping[str, tuple[str, int]]) -> None:
        """Take back what was saved for ``models`` (stream -> (active version, number of
        features)); streams not in it are left alone."""
        path = self.path
        if not path.exists():
            return
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("schema") not in _READ:
                raise ValueError(f"unknown schema {data.get('schema')!r}")
            for name, saved in data["streams"].items():
                if name in models:
                    self._restore_stream(name, saved, models[name])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            aside = path.with_name(path.name + ".corrupt")
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            log.error(
                "threshold_snapshot_corrupt", path=str(path), moved_to=str(aside), error=str(err)
            )

    def _restore_stream(self, name: str, saved: Mapping[str, Any], model: tuple[str, int]) -> None:
        """One stream's saved state; raises on a malformed one."""
        version, features = model
        # Noise scales belong to the devices, not the model: kept across a swap.
        self._spikes.restore(name, saved.get("spikes", {}), features)
        if self._recurring is not None:  # so are recurring excursions (issue #21)
            self._recurring.restore(name, saved.get("recurring", {}))
        if self._relations is not None:  # and the relations between their features
            self._relations.restore(name, saved.get("relations", {}), features)
        if self._command_levels is not None:  # and what their commands set (issue #21)
            self._command_levels.restore(name, saved.get("command_levels", {}))
        if self._shifts is not None:  # and how far their channels step alone (issue #21)
            self._shifts.restore(name, saved.get("shifts", {}), features)
        if self._periods is not None:  # and their recent periods (issue #21)
            self._periods.restore(name, saved.get("periods", {}), features)
        if self._joining is not None:  # and how long those that joined still learn
            self._joining.restore(name, saved.get("joining", {}))
        if saved["model_version"] != version:
            log.info(
                "threshold_snapshot_stale",
                stream=name,
                saved_for=saved["model_version"],
                model=version,
            )
            return
        count = self._thresholds.restore(name, saved["devices"])
        learnt = 0
        if self._constants is not None:  # absent from snapshots before issue #21
            learnt = self._constants.restore(name, saved.get("constants", {}), version)
        log.info("thresholds_restored", stream=name, devices=count, constants=learnt)


def _pieces(value: object, depth: int) -> Iterator[str]:
    """``json.dumps(value)`` in pieces: dicts ``depth`` levels down a key at a time, what
    lies below (a device's data: root, ``streams``, stream, part, device) by ``json.dumps``
    whole, which is C where the pure-Python ``iterencode`` is ~2.5x slower here."""
    if depth > 0 and isinstance(value, dict):
        yield "{"
        for i, (key, item) in enumerate(value.items()):
            yield f"{', ' if i else ''}{json.dumps(str(key))}: "
            yield from _pieces(item, depth - 1)
        yield "}"
    else:
        yield json.dumps(value)
