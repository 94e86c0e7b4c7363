"""Retraining driven by the data's own timestamps, for replays and benchmarks.

The daemon's scheduler fires on the wall clock; a replay runs days of recorded data in
minutes. ``DataClockRetrainer`` asks the same trigger (``trigger_for``) for its fire times
in data time and, when the data passes one, runs the same job (``run_retrain``) with the
reservoir as of that moment and applies the outcome the same way (``apply_outcome``). Runs
missed in between coalesce into one, as in the daemon. The one difference: the run is
instant in data time, where the daemon keeps scoring with the old model while it trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from sentinel.config import SentinelConfig
from sentinel.model import Detector, ModelRegistry
from sentinel.records import Reading
from sentinel.retrain.job import RetrainOutcome, open_reservoir, run_retrain
from sentinel.retrain.reservoir import ReservoirTap
from sentinel.retrain.retrainer import Install, apply_outcome
from sentinel.retrain.scheduler import trigger_for

if TYPE_CHECKING:
    import torch

__all__ = ["DataClockRetrainer"]

log = structlog.get_logger(__name__)


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class DataClockRetrainer:
    """Owns a scratch state directory's reservoirs and registry (``config.state_dir``).

    ``device`` trains; ``numpy_scoring`` loads accepted models for NumPy scoring (as
    ``scoring_device`` says the daemon would). ``tap`` goes to the pipeline; call
    ``tick(ts, install)`` after every pass with the newest timestamp processed; ``close()``
    at the end.
    """

    def __init__(
        self,
        config: SentinelConfig,
        device: torch.device,
        start_ts: float,
        initial: Sequence[Detector] = (),
        *,
        numpy_scoring: bool = False,
    ) -> None:
        self._config = config
        self._device = device  # training's
        # What an accepted model is loaded on: NumPy where the daemon would score with it.
        self._scoring = None if numpy_scoring else device
        self.registry = ModelRegistry(config.models_dir)
        for detector in initial:
            self.registry.save(detector)
            self.registry.activate(detector.meta.stream, detector.version, reason="initial")
        self._reservoirs = {s.name: open_reservoir(config, s.name) for s in config.streams}
        self.tap = ReservoirTap(self._reservoirs)
        self._trigger = trigger_for(config.retrain, start=_dt(start_ts))
        first = self._trigger.get_next_fire_time(None, _dt(start_ts))
        self._next = float("inf") if first is None else first.timestamp()
        self.outcomes: list[tuple[float, RetrainOutcome]] = []

    @property
    def next_fire(self) -> float:
        """Data time of the next scheduled run (inf when the schedule has none left)."""
        return self._next

    def seed(self, readings: Sequence[Reading]) -> None:
        """Readings the initial model trained on: the daemon's reservoir would hold them."""
        self.tap.observe(readings, (), ())

    def tick(self, ts: float, install: Install) -> None:
        if ts < self._next:
            return
        fired = self._next
        while self._next <= ts:  # coalesce: several missed fire times make one run
            nxt = self._trigger.get_next_fire_time(_dt(self._next), _dt(ts))
            self._next = float("inf") if nxt is None else nxt.timestamp()
        for stream in self._config.streams:
            outcome = run_retrain(
                self._config, stream.name, reason="schedule", device=self._device, until=ts
            )
            apply_outcome(outcome, self.registry, self._config, self._scoring, install)
            self.outcomes.append((ts, outcome))
            log.info(
                "replay_retrain",
                stream=stream.name,
                fired_at=_dt(fired).isoformat(),
                data_ts=_dt(ts).isoformat(),
                status=outcome.status,
                reason=outcome.reason,
            )

    def close(self) -> None:
        self.tap.close()
