"""Cold start: collect a stream's first readings, train its first model off the hot path."""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import structlog

from sentinel.config import ColdStartConfig, SentinelConfig, StreamConfig
from sentinel.errors import SentinelError
from sentinel.model import Detector, Registry, detector_type, torch_device, training_options
from sentinel.model.numpy_lstm import for_scoring
from sentinel.progress import progress_reporter
from sentinel.records import Reading
from sentinel.timescale import (
    TimeScale,
    devices_to_cover,
    learn_interval,
    no_runs_error,
    stream_span,
)

if TYPE_CHECKING:
    import torch

__all__ = ["PROGRESS_STEPS", "ColdStartBuffer", "Trainer", "TrainingJob"]

log = structlog.get_logger(__name__)

PROGRESS_STEPS = 20  # cold_start_progress is logged at every 1/20 of the way


@dataclass
class ColdStartBuffer:
    """Readings of one stream, kept per device in time order, until ``rule`` says they are
    enough: ``cold_start.readings`` of them covering ``cold_start.span`` seconds of the
    stream's time (``covered``), or ``cold_start.max_readings`` whatever they cover.

    ``segments`` splits them into runs at gaps longer than ``max_gap`` for the same reason
    windows restart there: a training window across a gap teaches the model a jump that
    never happens. With ``max_gap`` None (auto) the gap is 60 readings of the interval
    learnt from what was collected (``sentinel.timescale``), so 5-minute data is split at
    5 hours, not refused at 60 s (issue #21).
    """

    stream: str
    rule: ColdStartConfig
    max_gap: float | None
    collected: int = 0
    logged: int = 0  # the last progress step logged, of PROGRESS_STEPS
    first_ts: float | None = None
    last_ts: float | None = None
    _times: dict[str, list[float]] = field(default_factory=dict)
    _values: dict[str, list[tuple[float, ...]]] = field(default_factory=dict)
    # devices whose own span reaches ``rule.span``, and ``covered`` as of the fleet's last
    # round (``add``: an exact quantile over a thousand devices a reading would cost more
    # than the reading; a device's span only grows, so a count decides ``ready`` exactly)
    _spanning: int = 0
    _covered: float = 0.0
    _covered_at: int = 0

    def add(self, reading: Reading) -> bool:
        """Keep a reading; True once the readings are enough to train on."""
        device, ts = reading.device, reading.ts
        # Each device's times only grow (the pipeline drops a reading not after its last),
        # so its span is its newest less its first.
        times = self._times.setdefault(device, [])
        before = times[-1] - times[0] if times else -math.inf
        times.append(ts)
        self._values.setdefault(device, []).append(reading.values)
        self.collected += 1
        self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        if before < self.rule.span <= ts - times[0]:
            self._spanning += 1
        if self.collected - self._covered_at >= len(self._times):
            self._covered, self._covered_at = self.covered, self.collected
        return self.rule.ready(self.collected, self._ruled_span())

    def _ruled_span(self) -> float:
        """``covered`` for the rule: the span itself once enough devices cover it, else
        the last round's figure, kept below the span whatever it says (a device joined
        since)."""
        span = self.rule.span
        if self._spanning >= devices_to_cover(len(self._times)):
            return span
        return min(self._covered, math.nextafter(span, 0.0))

    @property
    def covered(self) -> float:
        """Seconds of the stream's time the readings collected cover, each device's read
        off its own clock (``sentinel.timescale.stream_span``): a device whose clock is far
        behind the others does not end the wait for ``cold_start.span`` at once."""
        # list() copies the dict in one step: /healthz asks from another thread
        return stream_span(times[-1] - times[0] for times in list(self._times.values()))

    @property
    def progress(self) -> float:
        """How far the collection is, 0 to 1 (``ColdStartConfig.progress``), as of the
        fleet's last round (``add``)."""
        return self.rule.progress(self.collected, self._ruled_span())

    @property
    def interval(self) -> float | None:
        """The sampling interval learnt from the readings collected so far."""
        return learn_interval(np.asarray(ts) for ts in self._times.values())

    @property
    def gap(self) -> float:
        """``max_gap`` resolved in seconds for what was collected."""
        return TimeScale(self.interval).max_gap(self.max_gap)

    def segments(self, min_length: int) -> list[np.ndarray]:
        gap = self.gap
        out: list[np.ndarray] = []
        for device, times in self._times.items():
            values = np.asarray(self._values[device], dtype=np.float32)
            cuts = np.flatnonzero(np.diff(np.asarray(times)) > gap) + 1
            out.extend(run for run in np.split(values, cuts) if len(run) >= min_length)
        return out


@dataclass(frozen=True)
class TrainingJob:
    stream: StreamConfig
    segments: list[np.ndarray]
    first_ts: float | None
    last_ts: float | None
    interval: float | None = None  # learnt from the readings (sentinel.timescale)
    max_gap: float = 60.0  # seconds the segments were split at, for a refusal's message
    readings: int = 0  # how many were collected


class Trainer:
    """Trains models on its own thread, one job at a time, and hands them over.

    ``on_model(stream, detector)`` is called from the trainer thread once a model is saved
    and activated; ``on_failure(stream, reason)`` when a job could not produce one.
    """

    def __init__(
        self,
        config: SentinelConfig,
        registry: Registry,
        device: torch.device | None,
        *,
        on_model: Callable[[str, Detector], None],
        on_failure: Callable[[str, str], None],
    ) -> None:
        self._config = config
        self._registry = registry
        self._device = device
        self._on_model = on_model
        self._on_failure = on_failure
        self._jobs: queue.Queue[TrainingJob] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.busy = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sentinel-trainer", daemon=True)
        self._thread.start()

    def submit(self, job: TrainingJob) -> None:
        self._jobs.put(job)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()  # also cancels a training run between epochs
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            self.busy.set()
            try:
                self._train(job)
            except SentinelError as err:
                log.error("training_failed", stream=job.stream.name, error=str(err))
                self._on_failure(job.stream.name, str(err))
            except Exception as err:  # thread boundary: a bug must not kill the trainer
                log.exception("training_crashed", stream=job.stream.name)
                self._on_failure(job.stream.name, repr(err))
            finally:
                self.busy.clear()

    def _train(self, job: TrainingJob) -> None:
        stream = job.stream
        rows = sum(len(s) for s in job.segments)
        if not job.segments:
            raise no_runs_error(job.max_gap, self._config.windows.length, job.readings)
        log.info("training_started", stream=stream.name, rows=rows, segments=len(job.segments))
        progress = progress_reporter(stream.name, self._config.model.epochs)
        try:
            detector = detector_type(self._config.model.detector).train(
                job.segments,
                training_options(self._config, stream.name, job.interval),
                device=torch_device(self._device),
                first_ts=job.first_ts,
                last_ts=job.last_ts,
                progress=progress,
                stop=self._stop,
            )
        finally:
            progress.close()
        self._registry.save(detector)
        self._registry.activate(stream.name, detector.version)
        if self._device is None:  # scored as every later load of it will be: by NumPy
            detector = for_scoring(detector)
        log.info(
            "model_trained",
            stream=stream.name,
            version=detector.version,
            **{k: v for k, v in detector.meta.training.items() if k in ("val_loss", "seconds")},
        )
        self._on_model(stream.name, detector)
