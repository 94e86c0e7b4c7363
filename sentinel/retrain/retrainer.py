"""The retraining component: runs training jobs off the hot path and swaps the results in.

Requests come from the scheduler, the control socket and the cold start (a stream with no
model whose reservoir holds ``cold_start.readings`` covering ``cold_start.span`` of its
time, or ``cold_start.max_readings``). They are served one at a time, each in a child
process (``spawn``) with its own torch threads and a higher niceness, so the
pipeline worker keeps its core and its GIL: a training epoch in a thread of the daemon
would hold the GIL for long stretches and delay scoring. A stream already queued or
training is not queued twice.

An accepted version is loaded here first -- a file that cannot be loaded is refused and
the running model kept -- then activated and handed to the pipeline, which swaps it in
between two passes.

With a shared registry (issue #24) a run first takes the stream's ``lease``
(``sentinel.retrain.lease``), renews it while the child trains and once more before it
activates; a daemon that cannot take it skips the run, and the version the holder publishes
reaches it through the registry (``sentinel.daemon.follow``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from sentinel.config import SentinelConfig
from sentinel.errors import ModelError
from sentinel.model import Detector, Registry
from sentinel.retrain.job import (
    RetrainOutcome,
    holdout_scores,
    open_reservoir,
    reservoir_rule,
    run_retrain,
    threshold_seeds,
)
from sentinel.retrain.scheduler import schedule_period

if TYPE_CHECKING:
    import torch

    from sentinel.retrain.lease import Lease

__all__ = ["Install", "Request", "Retrainer", "apply_outcome", "join_or_reap", "reservoir_rule"]

log = structlog.get_logger(__name__)

# seconds a finished training child is waited for before a thread of its own reaps it
_EXIT_WAIT = 5.0
_COLD_START_RETRY = 60.0  # seconds after a failed cold-start run before it is tried again
_COLD_START_STEPS = 20  # cold_start_progress is logged at every 1/20 of the way


class Install(Protocol):
    """Hands a model to the pipeline (``Pipeline.install_model``)."""

    def __call__(
        self,
        stream: str,
        detector: Detector,
        seeds: Mapping[str, Sequence[float]] | None = None,
        shadow: bool = False,
    ) -> None: ...


@dataclass(frozen=True)
class Request:
    stream: str
    reason: str  # schedule | manual | cold_start


def apply_outcome(
    outcome: RetrainOutcome,
    registry: Registry,
    config: SentinelConfig,
    device: torch.device | None,
    install: Install,
) -> Detector | None:
    """Load, activate and install an accepted version; a version that cannot be loaded is
    marked rejected and the running model stays."""
    if outcome.status != "accepted" or outcome.version is None:
        return None
    try:
        detector = registry.load_version(
            outcome.stream, outcome.version, device, max_batch=config.model.score_batch_max
        )
        registry.activate(outcome.stream, outcome.version, reason=f"retrain: {outcome.reason}")
    except ModelError as err:
        log.error("retrain_version_refused", stream=outcome.stream, error=str(err))
        status = registry.status(outcome.stream, outcome.version)
        status.update(status="rejected", reason=f"cannot be loaded: {err}")
        with contextlib.suppress(ModelError):
            registry.write_status(outcome.stream, outcome.version, status)
        return None
    install(outcome.stream, detector, outcome.seeds, shadow=True)
    registry.prune(outcome.stream, config.retrain.keep_versions)
    return detector


def _child(config: SentinelConfig, request: Request, cold: bool, conn: Connection) -> None:
    """The training process: lower priority, its own torch threads, one job, one answer."""
    from sentinel.logs import configure_logging

    configure_logging(config.logging.level, config.logging.format)
    os.nice(config.retrain.nice)
    import torch  # here, not at the top: the daemon's own process never loads it

    torch.set_num_threads(config.retrain.torch_threads)
    from sentinel.model import resolve_device

    try:
        outcome = run_retrain(
            config,
            request.stream,
            reason=request.reason,
            device=resolve_device(config.model.device),
            cold_start=cold,
        )
    except Exception as err:  # process boundary: report, never hang the parent
        log.exception("retrain_crashed", stream=request.stream)
        outcome = RetrainOutcome(request.stream, "failed", repr(err))
    conn.send(outcome)
    conn.close()


class Retrainer:
    """``request()`` from any thread; ``start()``/``stop()``.

    ``has_model(stream)`` says whether the pipeline scores the stream (else a full
    reservoir triggers the cold-start run); ``reservoir_count(stream)`` how many readings
    the reservoir holds and ``reservoir_span(stream)`` how many seconds of the stream's time
    they cover (``cold_start.span``); ``install(stream, detector)`` hands a model to the pipeline;
    ``on_finished(stream, result, trigger)``, when given, hears of every run that ended
    (``result``: activated, or the run's status; the daemon counts them in /metrics);
    ``lease``, when given, must be held for a run (a registry shared by several daemons).

    A stream this retrainer has handed a model to counts as having one from then on: the
    pipeline's worker swaps it in only between two passes, and asking ``has_model`` in the
    meantime started a second, larger cold-start run (issue #19).
    """

    def __init__(
        self,
        config: SentinelConfig,
        registry: Registry,
        device: torch.device | None,
        *,
        has_model: Callable[[str], bool],
        reservoir_count: Callable[[str], int],
        reservoir_span: Callable[[str], float],
        install: Install,
        on_finished: Callable[[str, str, str], None] | None = None,
        lease: Lease | None = None,
    ) -> None:
        self._config = config
        self._lease = lease
        self._renew_at = 0.0  # monotonic time of the lease's next renewal during a run
        self._registry = registry
        self._device = device
        self._has_model = has_model
        self._count = reservoir_count
        self._span = reservoir_span
        self._install = install
        self._on_finished = on_finished
        self._requests: queue.Queue[Request] = queue.Queue()
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: Any = None
        self._cold_retry_at: dict[str, float] = {}
        self._handed: set[str] = set()  # streams this retrainer has handed a model to
        self._cold_logged: dict[str, int] = {}  # per stream: the last 5% step logged
        self.outcomes: list[RetrainOutcome] = []  # most recent last; for status and tests
        self.idle = threading.Event()
        self.idle.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sentinel-retrainer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        process = self._process
        if process is not None and process.is_alive():
            log.info("retrain_cancelled", pid=process.pid)
            process.terminate()
        if self._thread is not None:
            self._thread.join(timeout)

    def request(self, stream: str, reason: str) -> bool:
        """Queue a run of ``stream``; False when one is already queued or running."""
        self._config.stream(stream)  # KeyError for an unknown stream
        with self._lock:
            if stream in self._pending:
                return False
            self._pending.add(stream)
            self.idle.clear()
        self._requests.put(Request(stream, reason))
        log.info("retrain_requested", stream=stream, reason=reason)
        return True

    def pending(self) -> list[str]:
        with self._lock:
            return sorted(self._pending)

    def reload(self, stream: str, version: str | None = None, shadow: bool = False) -> str:
        """Install the registry's active version of ``stream`` (after `models activate` or
        `rollback`), or ``version`` (one another daemon activated, with ``shadow`` when its
        retraining did); raises ModelError, leaving the running model, when it cannot load."""
        if version is None:
            version = self._registry.active_version(stream)
        if version is None:
            raise ModelError(f"stream {stream!r} has no active version")
        detector = self._registry.load_version(
            stream, version, self._device, max_batch=self._config.model.score_batch_max
        )
        seeds = self._reservoir_seeds(stream, detector)
        self._install(stream, detector, seeds, shadow=shadow)
        self._handed_over(stream)
        log.info(
            "model_reload_requested",
            stream=stream,
            version=version,
            seeded_devices=len(seeds) if seeds else 0,
        )
        return version

    def _reservoir_seeds(self, stream: str, detector: Detector) -> dict[str, list[float]] | None:
        """Thresholds for a model swapped in by hand, as a retraining run gives its own: the
        model's scores on the reservoir's clean windows, per device. Without them every
        device would fall back to the model's calibration threshold for a whole warm-up.
        None (and a warning) when the reservoir cannot give any."""
        try:
            reservoir = open_reservoir(self._config, stream, readonly=True)
            try:
                data = reservoir.clean_data(
                    window=self._config.windows.length,
                    max_gap=self._config.windows.max_gap,
                    holdout_fraction=self._config.retrain.holdout_fraction,
                )
            finally:
                reservoir.close()
            held_back = holdout_scores(detector, data.runs, self._config)
            return threshold_seeds(detector, held_back, self._config)
        except (OSError, sqlite3.Error, ValueError, ModelError) as err:
            log.warning("threshold_seeds_unavailable", stream=stream, error=str(err))
            return None

    def _handed_over(self, stream: str) -> None:
        with self._lock:
            self._handed.add(stream)

    def _scored(self, stream: str) -> bool:
        """Whether ``stream`` has a model: the pipeline scores it, or one handed to it
        waits for the worker's next swap."""
        with self._lock:
            if stream in self._handed:
                return True
        return self._has_model(stream)

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._check_cold_start()
            try:
                request = self._requests.get(timeout=1.0)
            except queue.Empty:
                continue
            try:
                self._serve(request)
            except Exception:  # thread boundary: one bad run must not stop retraining
                log.exception("retrain_crashed", stream=request.stream)
            finally:
                with self._lock:
                    self._pending.discard(request.stream)
                    if not self._pending:
                        self.idle.set()

    def _check_cold_start(self) -> None:
        now = time.monotonic()
        for stream in self._config.streams:
            name = stream.name
            if self._scored(name) or self._cold_retry_at.get(name, 0.0) > now:
                continue
            rule = reservoir_rule(self._config)
            count, covered = self._count(name), self._span(name)
            progress = rule.progress(count, covered)
            # Progress in 5% steps, so that a cold start is not an hour of silence.
            step = int(progress * _COLD_START_STEPS)
            if step > self._cold_logged.get(name, 0) and progress < 1.0:
                self._cold_logged[name] = step
                log.info(
                    "cold_start_progress",
                    stream=name,
                    collected=count,
                    target=rule.readings,
                    covered=round(covered, 1),
                    span=rule.span,
                    progress=round(progress, 2),
                )
            if progress >= 1.0:
                self._cold_retry_at[name] = now + _COLD_START_RETRY
                log.info("cold_start_collected", stream=name, readings=count)
                if (short := rule.short_of_span(covered)) is not None:
                    log.warning("cold_start_span_short", stream=name, hint=short)
                self.request(name, "cold_start")

    def _serve(self, request: Request) -> None:
        cold = not self._scored(request.stream)
        lease = self._lease
        if lease is not None and not lease.acquire(request.stream):
            # Another daemon trains this stream; its version reaches us via the registry.
            log.info("retrain_skipped_lease_held", stream=request.stream, reason=request.reason)
            if cold:
                self._cold_retry_at[request.stream] = time.monotonic() + _COLD_START_RETRY
            return
        try:
            if (
                lease is not None
                and request.reason == "schedule"
                and self._ran_lately(lease, request)
            ):
                return
            if lease is not None and cold and self._registry.active_version(request.stream):
                # Published by the daemon that held the lease before us: swap, not train.
                log.info("retrain_skipped_version_published", stream=request.stream)
                self._cold_retry_at[request.stream] = time.monotonic() + _COLD_START_RETRY
                return
            self._train(request, cold)
        finally:
            if lease is not None:
                lease.release(request.stream)

    def _ran_lately(self, lease: Lease, request: Request) -> bool:
        """A scheduled run another daemon already did this period (each daemon keeps its
        own schedule): skip it."""
        last = lease.last_run(request.stream)
        period = schedule_period(self._config.retrain)
        if last is None or time.time() - last >= period / 2:
            return False
        log.info(
            "retrain_skipped_ran_lately",
            stream=request.stream,
            seconds_ago=round(time.time() - last, 1),
            period=period,
        )
        return True

    def _train(self, request: Request, cold: bool) -> None:
        started = time.monotonic()
        outcome = self._in_child(request, cold)
        if outcome is None:
            return
        if self._lease is not None:
            self._lease.record_run(request.stream, outcome.status)
        self.outcomes.append(outcome)
        del self.outcomes[:-100]
        if self._lease is not None and not self._lease.renew(request.stream):
            # Expired while we trained (NATS out of reach longer than the TTL): whoever
            # holds it now may be training too; only the holder publishes.
            log.warning("retrain_discarded_lease_lost", stream=request.stream)
            return
        if outcome.version is not None and outcome.status != "accepted":
            # A rejected challenger is listed on every daemon, with its verdict.
            with contextlib.suppress(ModelError):
                self._registry.publish(request.stream, outcome.version)
        detector = apply_outcome(outcome, self._registry, self._config, self._device, self._install)
        if detector is not None:
            self._handed_over(request.stream)
        elif cold:
            # The guard counts from the failure: a run longer than it would otherwise be
            # followed at once by the next.
            self._cold_retry_at[request.stream] = time.monotonic() + _COLD_START_RETRY
        result = "activated" if detector is not None else outcome.status
        if self._on_finished is not None:
            self._on_finished(request.stream, result, "cold_start" if cold else request.reason)
        log.info(
            "retrain_finished",
            stream=request.stream,
            status=outcome.status,
            version=outcome.version,
            installed=detector is not None,
            seconds=round(time.monotonic() - started, 1),
        )

    def _in_child(self, request: Request, cold: bool) -> RetrainOutcome | None:
        ctx = multiprocessing.get_context("spawn")
        receive, send = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=_child,
            args=(self._config, request, cold, send),
            name=f"sentinel-train-{request.stream}",
            daemon=True,
        )
        self._process = process
        process.start()
        send.close()
        self._renew_at = time.monotonic() + (self._lease.renew_every if self._lease else 0.0)
        try:
            while not self._stop.is_set():
                if not self._lease_kept(request.stream):
                    log.warning("retrain_abandoned_lease_lost", stream=request.stream)
                    process.terminate()
                    return None
                if receive.poll(0.5):
                    try:
                        outcome: RetrainOutcome = receive.recv()
                    except EOFError:
                        break
                    return outcome
                if not process.is_alive():
                    break
            if self._stop.is_set():
                return None
            log.error("retrain_process_died", stream=request.stream, exitcode=process.exitcode)
            return RetrainOutcome(request.stream, "failed", f"exit code {process.exitcode}")
        finally:
            receive.close()
            # The child may take seconds to exit (torch's teardown); the lease must not
            # lapse meanwhile, the outcome still needs it.
            join_or_reap(process, _EXIT_WAIT, lambda: self._lease_kept(request.stream))
            self._process = None

    def _lease_kept(self, stream: str) -> bool:
        """Renew the lease when a renewal is due; False once it is lost."""
        lease = self._lease
        if lease is None or time.monotonic() < self._renew_at:
            return True
        self._renew_at = time.monotonic() + lease.renew_every
        return lease.renew(stream)


def join_or_reap(process: Any, wait: float, tick: Callable[[], object]) -> None:
    """Join a training child for up to ``wait`` seconds, calling ``tick`` about every half
    second meanwhile (the lease's renewal); a child still exiting after that is joined by a
    daemon thread of its own. Without it a child slower to exit than ``wait`` (torch's
    teardown on a loaded box) stayed a zombie until the next run started, which on a daemon
    that retrains daily is most of its life (``[python] <defunct>`` in ``ps``)."""
    deadline = time.monotonic() + wait
    while process.is_alive() and time.monotonic() < deadline:
        process.join(min(0.5, max(deadline - time.monotonic(), 0.0)))
        tick()
    if process.is_alive():
        log.info("retrain_process_exiting", pid=process.pid)
        threading.Thread(target=process.join, name="sentinel-train-reaper", daemon=True).start()
