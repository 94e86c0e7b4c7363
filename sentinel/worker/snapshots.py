"""``thresholds.json``: the worker's per-device thresholds and noise scales across a restart.

Written every ``snapshot_interval`` and when the worker stops, atomically, each stream's
thresholds tagged with the model version they were learnt on; at start they are taken back
only for the models still in use (a new model has its own score scale), while the spike
check's noise scales and remembered spikes, the score's remembered recurring
excursions (``recurring``) and the relation check's fits (``relations``), which belong to
the devices, are taken back whatever the model. The constant check's learnt values
(``constants``) belong to the model's training values, so they come back only for the same
model, as the thresholds do. A snapshot that cannot be read is set aside as
``thresholds.json.corrupt`` and reported, and the thresholds start afresh: never fatal.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import structlog

from sentinel.atomic import write_atomically
from sentinel.judge.constants import ConstantCheck
from sentinel.judge.recurring import RecurringExcursions
from sentinel.judge.relations import RelationCheck
from sentinel.judge.spikes import SpikeCheck
from sentinel.judge.threshold import ThresholdBank

__all__ = ["ThresholdSnapshots"]

log = structlog.get_logger(__name__)

_SCHEMA = 1


class ThresholdSnapshots:
    """Saves and restores the state of ``thresholds``, ``spikes``, ``constants``,
    ``recurring`` and ``relations`` at ``path``."""

    def __init__(
        self,
        path: Path,
        thresholds: ThresholdBank,
        spikes: SpikeCheck,
        constants: ConstantCheck | None = None,
        recurring: RecurringExcursions | None = None,
        relations: RelationCheck | None = None,
    ) -> None:
        self.path = path
        self._thresholds = thresholds
        self._spikes = spikes
        self._constants = constants
        self._recurring = recurring
        self._relations = relations

    def save(self, models: Mapping[str, str]) -> None:
        """Write the state of every stream in ``models`` (stream -> active model version)."""
        streams = {
            name: {
                "model_version": version,
                "devices": self._thresholds.snapshot(name),
                "spikes": self._spikes.snapshot(name),
                "constants": self._constants.snapshot(name) if self._constants else {},
                "recurring": self._recurring.snapshot(name) if self._recurring else {},
                "relations": self._relations.snapshot(name) if self._relations else {},
            }
            for name, version in models.items()
        }
        try:
            write_atomically(self.path, json.dumps({"schema": _SCHEMA, "streams": streams}))
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
            if data.get("schema") != _SCHEMA:
                raise ValueError(f"unknown schema {data.get('schema')!r}")
            for name, saved in data["streams"].items():
                if name not in models:
                    continue
                version, features = models[name]
                # Noise scales belong to the devices, not the model: kept across a swap.
                self._spikes.restore(name, saved.get("spikes", {}), features)
                if self._recurring is not None:  # so are recurring excursions (issue #21)
                    self._recurring.restore(name, saved.get("recurring", {}))
                if self._relations is not None:  # and the relations between their features
                    self._relations.restore(name, saved.get("relations", {}), features)
                if saved["model_version"] != version:
                    log.info(
                        "threshold_snapshot_stale",
                        stream=name,
                        saved_for=saved["model_version"],
                        model=version,
                    )
                    continue
                count = self._thresholds.restore(name, saved["devices"])
                learnt = 0
                if self._constants is not None:  # absent from snapshots before issue #21
                    learnt = self._constants.restore(name, saved.get("constants", {}), version)
                log.info("thresholds_restored", stream=name, devices=count, constants=learnt)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            aside = path.with_name(path.name + ".corrupt")
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            log.error(
                "threshold_snapshot_corrupt", path=str(path), moved_to=str(aside), error=str(err)
            )
