"""The pipeline worker: deliveries in, windows scored in batches, alert changes out.

One worker thread owns all per-device state (order checks, windows, thresholds, alert
grouping), so none of it needs locks. The MQTT network thread only parses and enqueues;
scoring and everything after it happen here; the database writer commits on its own thread
and only then are the messages acknowledged to the broker. Other threads change the
worker's state only through commands (``sentinel.worker.commands``), which it runs between
two passes.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import structlog

from sentinel.config import SentinelConfig, StreamConfig, config_hash
from sentinel.errors import SentinelError, StoreError
from sentinel.judge.alerts import AlertTracker, alert_checks
from sentinel.judge.command_levels import CommandLevelCheck
from sentinel.judge.constants import ConstantCheck
from sentinel.judge.evidence import evidence, score_feature
from sentinel.judge.levels import LevelCheck
from sentinel.judge.noise import NoiseCheck, directed_roughness
from sentinel.judge.periods import PeriodCheck
from sentinel.judge.recurring import RecurringExcursions
from sentinel.judge.relations import RelationCheck, Relations
from sentinel.judge.shifts import ShiftCheck
from sentinel.judge.spikes import SpikeCheck
from sentinel.judge.stuck import StuckCheck
from sentinel.judge.threshold import ThresholdBank
from sentinel.model import Detector
from sentinel.records import (
    Ack,
    Alert,
    AlertStatus,
    AuditEvent,
    Delivery,
    DeviceJudgeState,
    DeviceReset,
    Reading,
    Rejected,
    RejectReason,
    Score,
    ScoreBucket,
    Verdict,
    Window,
    WriteBatch,
)
from sentinel.worker.coldstart import PROGRESS_STEPS, ColdStartBuffer, TrainingJob
from sentinel.worker.commands import (
    AlertsResolved,
    Command,
    DescribeDevices,
    DevicesReply,
    DeviceView,
    HandOver,
    HandOverReply,
    InstallModel,
    Reconfigure,
    ResetDevices,
    ResetReply,
    TrainingFailed,
    WarmUp,
)
from sentinel.worker.devices import Abandoned, DeviceState, DeviceTable, Recall
from sentinel.worker.history import HistoryBuckets
from sentinel.worker.joining import JoiningDevices
from sentinel.worker.shadow import Shadow
from sentinel.worker.snapshots import SharedJudgeState, ThresholdSnapshots
from sentinel.worker.stats import PipelineStats, RejectionLog
from sentinel.worker.warmup import WarmTail
from sentinel.worker.windows import WindowAssembler

__all__ = ["Pipeline", "PipelineTap"]

log = structlog.get_logger(__name__)
_stdlib_log = logging.getLogger(__name__)  # what structlog's filter_by_level asks

_DRAIN_MAX = 256  # deliveries handled per pass: bounds latency and the size of a commit
# A pass that holds fewer deliveries than this waits up to ``ingest.linger`` for more,
# looking again every _LINGER_STEP seconds (not woken by each delivery: at a trickle a
# wake-up per message would cost what the linger saves).
_LINGER_FILL = 8
_LINGER_STEP = 0.005
_SCORE_CAP = 1e30  # stands in for a non-finite score
# Seconds of the daemon's clock a device's readings must all be at or before its last
# before ``device_clock_behind`` is logged: far longer than a redelivery after a restart.
CLOCK_STALE_AFTER = 60.0


class PipelineTap(Protocol):
    """Sees every pass's accepted readings, anomalous windows, alert changes and audit
    events (the retraining reservoir). Called on the worker thread; must be quick."""

    def observe(
        self,
        readings: Sequence[Reading],
        flagged: Sequence[Window],
        alerts: Sequence[Alert],
        audit: Sequence[AuditEvent] = (),
    ) -> None: ...

    def latest(self, stream: str, per_device: int) -> Sequence[Reading]:
        """Each device's newest ``per_device`` readings of ``stream`` that it has kept,
        every device's in time order (from before this start too)."""
        ...

    def first_seen(self, stream: str) -> Mapping[str, float]:
        """Each device's oldest reading time of ``stream`` that it keeps (from before this
        start too)."""
        ...

    def tick(self) -> None:
        """Called while the worker is idle: store what it has held long enough."""
        ...


@dataclass
class _Stream:
    config: StreamConfig
    windows: WindowAssembler
    detector: Detector | None = None
    baseline: tuple[float, ...] = ()
    cold_start: ColdStartBuffer | None = None
    shadow: Shadow | None = None  # a promoted model scoring beside the active one
    # While the stream has no model: each device's latest readings, judged once it has
    # one so the device starts warm (sentinel.worker.warmup)
    tail: WarmTail | None = None
    # Devices warmed on readings from before a model (they were learnt with it)
    warmed: set[str] = field(default_factory=set)


class Pipeline:
    """Turns deliveries into committed alert changes and device progress.

    ``sink`` receives one ``WriteBatch`` per pass (the writer's ``submit``; it may block,
    which is the backpressure that keeps memory bounded). ``request_training`` is called
    with a job when a stream without a model has collected enough readings.
    ``observer``, when given, sees every verdict with the alert change it caused (replay
    records them per row). ``process`` runs one pass synchronously, without the thread:
    that is how replay drives this same code with a file's own timestamps.

    Devices are held in memory only while they talk (``sentinel.worker.devices``): one that is
    not held is looked up with ``recall`` (the daemon passes the store's), at most
    ``max_devices`` per stream are held, and one silent for ``ingest.device_idle`` leaves
    memory unless an alert keeps it. With ``recall``, a device it has nothing of that joins
    a stream with a model learns for ``cold_start.span`` first (``_joined``); without one
    (replay, a harness) nothing tells a new device from a known one, and none waits.
    """

    def __init__(
        self,
        config: SentinelConfig,
        *,
        sink: Callable[[WriteBatch], None],
        request_training: Callable[[TrainingJob], None],
        models: dict[str, Detector | None],
        recall: Recall | None = None,
        open_alerts: Iterable[Alert] = (),
        observer: Callable[[Verdict, Alert | None], None] | None = None,
        snapshot_path: Path | None = None,
        snapshot_interval: float | None = None,
        tap: PipelineTap | None = None,
        cold_start_buffer: bool = True,
        shared_state: SharedJudgeState | None = None,
    ) -> None:
        # shared_state: with [cluster] on, where the judge state goes instead of the file.
        self._shared_state = shared_state
        # tap: see PipelineTap. cold_start_buffer=False: a stream without a model only
        # waits for one (the retrainer trains it from the on-disk reservoir) instead of
        # collecting in memory and calling request_training.
        self._tap = tap
        self._cold_start_buffer = cold_start_buffer
        self._accepted: list[Reading] = []
        self._flagged: list[Window] = []
        # Each pass's live verdicts per device and minute: the score_history table (with
        # history.enabled) and the per-device metrics (on_history).
        self._history = HistoryBuckets()
        self._record_history = config.history.enabled
        self._config = config
        self._observer = observer
        # snapshot_interval: the config's unless given (the tests' worker saves faster)
        every = config.snapshot_interval if snapshot_interval is None else snapshot_interval
        self._snapshot_interval = every
        self._next_snapshot = time.monotonic() + every
        self._sink = sink
        self._request_training = request_training
        self._inbox: queue.Queue[Delivery] = queue.Queue(maxsize=config.ingest.queue_size)
        self._linger = config.ingest.linger
        # What other threads ask of the worker, in the order they asked (commands.py).
        self._commands: queue.Queue[Command] = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = PipelineStats()
        self.rejections = RejectionLog(interval=config.ingest.log_interval)
        self.queue_full = 0  # counted on the network thread, the only writer
        # Called with (stream, windows, seconds) after each batched forward pass (metrics).
        self.on_scored: Callable[[str, int, float], None] | None = None
        # Called with each pass's per-device minute buckets (per-device metrics); quick.
        self.on_history: Callable[[Sequence[ScoreBucket]], None] | None = None
        # Monotonic time of the worker's latest pass: the watchdog's proof it is not stuck.
        self.heartbeat = time.monotonic()
        self._thresholds = ThresholdBank(config.threshold)
        self._spikes = SpikeCheck(config.spikes, config.windows.hop)
        self._levels = LevelCheck(config.levels)
        self._stuck = StuckCheck(config.stuck)
        self._noise = NoiseCheck(config.noise)
        self._periods = PeriodCheck(config.periods)
        self._relations = RelationCheck(config.relations, config.windows.hop)
        self._shifts = ShiftCheck(config.shifts, config.windows.hop)
        self._constants = ConstantCheck(config.constants, config.windows.hop)
        self._command_levels = CommandLevelCheck(config.command_levels, config.windows.hop)
        self._recurring = RecurringExcursions(config.threshold)
        # Devices that joined a stream with a model, while they learn (_joined, _learnt)
        self._joining = JoiningDevices()
        self._snapshots = (
            ThresholdSnapshots(
                snapshot_path,
                self._thresholds,
                self._spikes,
                self._constants,
                self._recurring,
                self._relations,
                self._command_levels,
                self._shifts,
                self._periods,
                self._joining,
            )
            if snapshot_path is not None
            else None
        )
        # Computed once: every alert records which configuration judged it.
        self.config_hash = config_hash(config)
        # Per device, the uid of its last closed alert: an open change of that uid is a
        # reopening (alerts.cooldown), worth a log line of its own.
        self._last_closed: dict[tuple[str, str], str] = {}
        self._alerts = AlertTracker(
            config.alerts,
            {s.name: s.feature_names for s in config.streams},
            config_hash=self.config_hash,
        )
        self._alerts.restore(open_alerts)
        self._devices = DeviceTable(
            {s.name: s.max_devices for s in config.streams}, recall, self._stopping
        )
        self._knows_devices = recall is not None  # whether a device can be new (_joined)
        self._next_sweep = time.monotonic()
        self._streams: dict[str, _Stream] = {}
        for stream in config.streams:
            runtime = _Stream(
                config=stream,
                windows=WindowAssembler(stream.name, len(stream.features), config.windows),
            )
            self._streams[stream.name] = runtime
            detector = models.get(stream.name)
            if detector is not None:
                self._install(runtime, detector)
            else:
                self._begin_cold_start(runtime)
        self._restore_thresholds()

    # -- called from other threads ------------------------------------------------------

    def offer(self, delivery: Delivery, timeout: float | None = None) -> bool:
        """Enqueue a delivery (the source's sink). False when there was no room.

        A delivery with nothing to acknowledge (MQTT QoS 0) never waits. One that will be
        acknowledged waits up to ``timeout`` for room (None: as long as it takes), which the
        source sizes because it alone knows how long its thread may stand still: a broker's
        flow control cannot be relied on to keep the queue from filling (docs/ARCHITECTURE.md,
        *Delivery guarantee*). Waiting on the source's thread stops it reading the socket,
        which is TCP backpressure; the MQTT source keeps the wait well under the keep-alive
        so the connection survives it.
        """
        try:
            if delivery.ack is None:
                self._inbox.put_nowait(delivery)
            else:
                self._inbox.put(delivery, timeout=timeout)
        except queue.Full:
            self.queue_full += 1
            return False
        return True

    def install_model(
        self,
        stream: str,
        detector: Detector,
        seeds: Mapping[str, Sequence[float]] | None = None,
        shadow: bool = False,
    ) -> None:
        """Swap in a new model; applied by the worker between two passes, so no window is
        dropped or scored twice. ``seeds``: per device, the new model's scores on its
        recent normal windows, oldest first; they recalibrate the device's threshold to the
        new score scale at the swap instead of a warm-up on the calibration threshold.
        ``shadow`` (a scheduled promotion): where a model is active and
        ``retrain.shadow`` > 0, the new one first scores beside it for that long
        (``sentinel.worker.shadow``) and takes over after."""
        self._commands.put(InstallModel(stream, detector, seeds or {}, shadow))

    def warm_up(self, stream: str, readings: Sequence[Reading]) -> None:
        """Judge ``readings`` (one or more devices, each in time order, just before what
        comes next) with alerts suppressed, so those devices' thresholds, spike memory and
        constant check start warm; applied by the worker between two passes. Replay hands
        its training rows here; the daemon warms a stream's devices from their readings
        before its first model by itself (``sentinel.worker.warmup``). Needs the stream's
        model installed first; without one the readings are dropped."""
        self._commands.put(WarmUp(stream, tuple(readings)))

    def alerts_resolved(self, uids: Iterable[str]) -> None:
        """Alerts an operator resolved (reported by the writer): the worker closes them
        between two passes, and their cooldown begins."""
        self._commands.put(AlertsResolved(tuple(uids)))

    def reset_devices(
        self, stream: str, devices: Sequence[str], note: str | None = None, timeout: float = 10.0
    ) -> list[str]:
        """An operator's reset (``sentinel devices reset``), applied by the worker between
        two passes: the devices' last timestamp and count are forgotten, so their next
        reading is taken, and the writer deletes their stored progress in order with the
        progress around it (``DeviceReset``). Their partial windows go too; thresholds
        and alerts stay. Returns those of ``devices`` the worker held."""
        self._config.stream(stream)  # KeyError names it
        reply = ResetReply()
        self._commands.put(ResetDevices(stream, tuple(devices), note, reply))
        if not reply.done.wait(timeout):
            raise SentinelError(
                f"the pipeline worker did not take the reset within {timeout:g} s: it is "
                "blocked (is the database down? see /healthz); the reset stays queued"
            )
        if reply.error is not None:
            raise SentinelError(f"the reset was not committed: {reply.error}")
        return reply.held

    def describe_devices(
        self, keys: Sequence[tuple[str, str]], timeout: float = 2.0
    ) -> dict[tuple[str, str], DeviceView] | None:
        """The worker's live state of each (stream, device) in ``keys``: whether it is held
        and the threshold its next window meets. Asked of the worker, which alone owns that
        state, between two passes; None when it does not answer within ``timeout`` (it
        is blocked, e.g. on a writer that cannot commit)."""
        if not self.alive:
            return None
        reply = DevicesReply()
        self._commands.put(DescribeDevices(tuple(keys), reply))
        return reply.views if reply.done.wait(timeout) else None

    def hand_over(
        self,
        belongs: Callable[[str], bool],
        *,
        alerts: Iterable[Alert] = (),
        judge: Iterable[DeviceJudgeState] = (),
        save: bool = False,
        timeout: float = 10.0,
    ) -> int | None:
        """A partition moves to or from this daemon (``HandOver``): returns how many devices
        the worker let go of, None if it did not answer within ``timeout``."""
        reply = HandOverReply()
        self._commands.put(HandOver(belongs, tuple(alerts), tuple(judge), save, reply))
        return reply.devices if reply.done.wait(timeout) else None

    def training_failed(self, stream: str) -> None:
        """A cold-start training run failed: collect afresh and try again."""
        self._commands.put(TrainingFailed(stream))

    @property
    def depth(self) -> int:
        return self._inbox.qsize()

    def devices_held(self) -> dict[str, int]:
        """Per stream, the devices in memory now (each stream's cap is max_devices)."""
        return self._devices.held()

    @property
    def recall_errors(self) -> int:
        """Failed reads of devices' stored progress (each retried while the worker waits)."""
        return self._devices.recall_errors

    @property
    def recall_error(self) -> str | None:
        """The latest failed read of stored progress, None once one succeeded again."""
        return self._devices.recall_error

    def learning_devices(self) -> dict[str, int]:
        """Per stream, the devices learning now: judged with alerts suppressed until
        ``cold_start.span`` after their first reading (``_joined``, ``_learn_the_span``).
        Read from other threads."""
        return {name: self._joining.count(name) for name in self._streams}

    def open_alerts(self) -> dict[str, int]:
        """Per stream, the alerts open now (acknowledged ones included)."""
        return self._alerts.open_by_stream()

    def has_model(self, stream: str) -> bool:
        return self._streams[stream].detector is not None

    def cold_start_collected(self, stream: str) -> tuple[int, float] | None:
        """The in-memory cold start's readings so far and the seconds of the stream's time
        they cover; None where the stream collects none (it has a model, or waits for the
        retrainer's). Read from other threads: one reference to the buffer, then its
        counters."""
        buffer = self._streams[stream].cold_start
        return None if buffer is None else (buffer.collected, buffer.covered)

    def model_versions(self) -> dict[str, str | None]:
        """Each stream's active model version (None while it has no model)."""
        return {
            name: (rt.detector.version if rt.detector is not None else None)
            for name, rt in list(self._streams.items())
        }

    def reconfigure(self, config: SentinelConfig) -> None:
        """Take the live keys of a reloaded config (thresholds, alert rules, rejection log
        interval); applied by the worker between two passes, like a model swap."""
        self._commands.put(Reconfigure(config))

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sentinel-pipeline", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish everything already queued, then stop. Call after ingest has paused."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("pipeline_stop_timeout", queued=self.depth)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the worker -----------------------------------------------------------------------

    def _take_waiting(self, batch: list[Delivery]) -> None:
        """Add what waits in the inbox to ``batch``, up to ``_DRAIN_MAX`` in all."""
        while len(batch) < _DRAIN_MAX:
            try:
                batch.append(self._inbox.get_nowait())
            except queue.Empty:
                return

    def _linger_for(self, batch: list[Delivery], deadline: float) -> None:
        """Wait until ``deadline`` (monotonic) for ``batch`` to fill to ``_LINGER_FILL``,
        taking what comes meanwhile. A pass costs about the same whether it holds one
        delivery or a few dozen (the model's call and each check's set-up): a fleet whose
        devices publish at their own moments, not in one burst a second, otherwise hands
        the worker one delivery a pass at a low rate, and it pays that cost per reading
        (issue #23; docs/BENCHMARKS.md, "Passes of one message")."""
        while len(batch) < _LINGER_FILL and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, _LINGER_STEP))
            self._take_waiting(batch)

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._save_thresholds()  # at shutdown too: a restart resumes where this left off

    def _loop(self) -> None:
        while True:
            self.heartbeat = time.monotonic()
            self._run_commands()
            if self._snapshots is not None and time.monotonic() >= self._next_snapshot:
                self._next_snapshot = time.monotonic() + self._snapshot_interval
                self._save_thresholds()
            idle = self._idle_after()
            if idle > 0 and time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + min(idle / 2, 60.0)
                self._evict_idle(idle)
            try:
                first = self._inbox.get(timeout=0.1)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                if self._tap is not None:
                    try:
                        self._tap.tick()
                    except Exception:  # the reservoir is best effort, as after a pass
                        log.exception("pipeline_tap_failed", readings=0)
                continue
            batch = [first]
            self._take_waiting(batch)
            if len(batch) < _LINGER_FILL and self._linger > 0:
                self._linger_for(batch, time.monotonic() + self._linger)
            try:
                self._sink(self.process(batch))
            except Abandoned:
                log.warning("pipeline_pass_abandoned", deliveries=len(batch))
                return
            except Exception:  # thread boundary: one bad batch must not stop the daemon
                # Acknowledge anyway: a message that crashes us would otherwise come back
                # after every restart. The log names how much was lost.
                self.stats.batch_errors += 1
                log.exception("pipeline_batch_failed", deliveries=len(batch))
                self._history.drain()  # goes with the progress it would have come with
                acks = tuple(d.ack for d in batch if d.ack is not None)
                self._sink(WriteBatch(acks=acks))

    def process(self, deliveries: list[Delivery]) -> WriteBatch:
        """One pass over deliveries, in order: what the worker thread does per batch.
        Commands queued before it are applied first."""
        self._run_commands()
        recalled = self._devices.recall(r for d in deliveries for r in d.readings)
        now = time.monotonic()
        windows: dict[str, list[Window]] = defaultdict(list)
        present: set[tuple[str, str]] = set()  # held devices with a reading in this pass
        touched: set[tuple[str, str]] = set()  # those of them with an accepted one
        acks: list[Ack] = []
        for delivery in deliveries:
            self.stats.messages += 1
            for rejected in delivery.rejected:
                self.rejections.record(rejected)
            for reading in delivery.readings:
                key = (reading.stream, reading.device)
                state = self._devices.get(key)
                if state is None:
                    known = recalled.get(key)
                    state = self._devices.admit(key, known, now)
                    if state is None:
                        self._refuse(key, delivery.topic)
                        continue
                    if known is None and self._knows_devices:
                        self._joined(reading)
                present.add(key)
                if reading.ts <= state.last_ts:
                    self._not_after(reading, state, delivery.topic, now)
                    continue
                state.stale_since = 0.0
                state.last_ts = reading.ts
                state.readings += 1
                touched.add(key)
                self.stats.readings += 1
                if self._tap is not None:
                    self._accepted.append(reading)
                runtime = self._streams[reading.stream]
                if runtime.cold_start is not None:
                    self._collect(runtime, reading)
                if runtime.tail is not None:
                    runtime.tail.add(reading)
                window = runtime.windows.add(reading)
                if window is not None:
                    windows[reading.stream].append(window)
            if delivery.ack is not None:
                acks.append(delivery.ack)
        alerts: list[Alert] = []
        for stream, stream_windows in windows.items():
            alerts.extend(self._score(self._streams[stream], stream_windows))
        audit = (
            *self._thresholds.drain_events(),
            *self._constants.drain_events(),
            *self._relations.drain_events(),
        )
        if self._tap is not None:
            try:
                self._tap.observe(self._accepted, self._flagged, alerts, audit)
            except Exception:  # the reservoir is best effort: never lose the alerts for it
                log.exception("pipeline_tap_failed", readings=len(self._accepted))
            finally:
                self._accepted, self._flagged = [], []
        self._devices.seen(present, time.monotonic())
        progress = tuple(self._devices.progress(key) for key in touched)
        history = self._history.drain()
        if history and self.on_history is not None:
            self.on_history(history)
        return WriteBatch(
            alerts=tuple(alerts),
            progress=progress,
            acks=tuple(acks),
            audit=audit,
            history=history if self._record_history else (),
        )

    # -- commands (sentinel.worker.commands), run on the worker between two passes --------

    def _run_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command.run(self)

    def _alerts_resolved(self, uids: tuple[str, ...]) -> None:
        closed = self._alerts.resolved(uids)
        if closed:
            log.info("alerts_resolved_by_operator", closed=closed)

    def _describe_devices(self, keys: tuple[tuple[str, str], ...], reply: DevicesReply) -> None:
        for stream, device in keys:
            held = (stream, device) in self._devices
            threshold = self._thresholds.describe(stream, device) if held else None
            reply.views[(stream, device)] = DeviceView(stream, device, held, threshold)

    def _reset_devices(
        self, stream: str, devices: tuple[str, ...], note: str | None, reply: ResetReply
    ) -> None:
        now, wall = time.monotonic(), time.time()
        resets: list[DeviceReset] = []
        for device in devices:
            if self._devices.reset((stream, device), now):
                reply.held.append(device)
            self._streams[stream].windows.reset(device)
            resets.append(DeviceReset(stream, device, wall, note))
        log.info(
            "devices_reset", stream=stream, devices=len(devices), held=len(reply.held), note=note
        )
        try:
            self._sink(WriteBatch(resets=tuple(resets)))
        except Exception as err:  # thread boundary: the writer has stopped
            log.exception("devices_reset_failed", devices=len(resets))
            reply.error = f"{type(err).__name__}: {err}"
        finally:
            reply.done.set()

    # -- devices in memory -----------------------------------------------------------------

    def _idle_after(self) -> float:
        """Seconds of silence after which a device leaves memory; 0: never. Not before
        windows.max_gap, until which its partial window could still be completed."""
        idle = self._config.ingest.device_idle
        gap = max(rt.windows.max_gap for rt in self._streams.values())
        return max(idle, gap) if idle > 0 else 0.0

    def _refuse(self, key: tuple[str, str], topic: str) -> None:
        cap = self._devices.limits[key[0]]
        detail = (
            f"stream {key[0]!r} already holds max_devices = {cap} devices; device {key[1]!r} "
            "is refused until one goes idle (raise max_devices for a larger fleet)"
        )
        self.rejections.record(Rejected(RejectReason.DEVICE_LIMIT, topic, detail))

    def _hand_over(self, command: HandOver) -> None:
        belongs = command.belongs
        if command.save:
            self._save_thresholds(belongs)
        held = self._devices.keys()
        gone = [key for key in held if belongs(key[1])]
        for key in gone:
            self._devices.remove(key)
            self._streams[key[0]].windows.reset(key[1])
            self._last_closed.pop(key, None)
        self._park()
        self._alerts.drop(lambda key: belongs(key[1]))
        self._alerts.restore(command.alerts)
        restored = 0
        if command.judge and self._snapshots is not None:
            restored = self._snapshots.restore_devices(self._model_shapes(), command.judge)
        command.reply.devices = len(gone)
        log.info(
            "devices_handed_over",
            devices=len(gone),
            alerts=len(command.alerts),
            judge_restored=restored,
        )

    def _park(self) -> int:
        """Park what the devices no longer held learnt (thresholds, noise scales)."""
        held = self._devices.keys()
        parked = self._thresholds.park(held)
        self._spikes.park(held)
        self._periods.park(held)
        self._relations.park(held)
        self._shifts.park(held)
        self._command_levels.park(held)
        self._recurring.park(held)
        return parked

    def _evict_idle(self, idle: float) -> None:
        """Free the devices silent for ``idle`` seconds that no alert keeps, and park what
        they learnt (thresholds, noise scales) until they return."""
        wall = time.time()
        gone = [
            key
            for key in self._devices.idle(time.monotonic(), idle)
            if not self._alerts.busy(key, wall)
        ]
        for key in gone:
            self._devices.remove(key)
            self._streams[key[0]].windows.reset(key[1])
            self._last_closed.pop(key, None)
        # Also what a restart restored for devices that have not come back since.
        parked = self._park()
        held = self._devices.keys()
        self._alerts.forget(held, wall)
        if gone or parked:
            self.stats.evicted += len(gone)
            log.info(
                "devices_evicted",
                devices=len(gone),
                thresholds_parked=parked,
                held=len(held),
                idle_s=idle,
            )

    def _not_after(self, reading: Reading, state: DeviceState, topic: str, now: float) -> None:
        """A reading at or before its device's last: dropped and counted. A device whose
        every reading has been so for ``CLOCK_STALE_AFTER`` seconds has a clock that went
        back or stopped (a dead RTC battery, a reboot before NTP): nothing of it is judged
        until its clock passes the last reading taken, which may be never, so say so once,
        with the fix. A redelivery after a restart is over in seconds."""
        reason = (
            RejectReason.DUPLICATE if reading.ts == state.last_ts else RejectReason.OUT_OF_ORDER
        )
        self.rejections.record(
            Rejected(
                reason=reason,
                topic=topic,
                detail=f"ts {reading.ts} not after last {state.last_ts}",
            )
        )
        if state.stale_since == 0.0:
            state.stale_since, state.stale_logged = now, False
        elif not state.stale_logged and now - state.stale_since >= CLOCK_STALE_AFTER:
            state.stale_logged = True
            log.warning(
                "device_clock_behind",
                stream=reading.stream,
                device=reading.device,
                last_ts=state.last_ts,
                ts=reading.ts,
                behind_s=round(state.last_ts - reading.ts, 3),
                seconds=round(now - state.stale_since, 1),
                effect="its readings are dropped (out_of_order, duplicate) until its clock "
                "passes last_ts: nothing of it is judged",
                fix=f"set the device's clock, or take its readings from now on: sentinel "
                f"devices reset {reading.stream} {reading.device}",
            )

    def _joined(self, reading: Reading) -> None:
        """A device the store has nothing of: one that joins a stream which already has its
        model, and was not warmed with it, learns for its first ``cold_start.span`` seconds
        before its alerts count."""
        runtime = self._streams[reading.stream]
        span = self._config.cold_start.span
        if span > 0 and runtime.detector is not None and reading.device not in runtime.warmed:
            self._joining.begin(reading.stream, reading.device, reading.ts)
            log.info(
                "device_learning",
                stream=reading.stream,
                device=reading.device,
                until=reading.ts + span,
            )

    def _learnt(self, runtime: _Stream, windows: list[Window]) -> list[Window]:
        """Judge the windows of devices still in their first ``cold_start.span`` as the warm
        start judges (learnt, no alert, nothing recorded); the rest are returned."""
        span = self._config.cold_start.span
        learning: list[Window] = []
        rest: list[Window] = []
        for window in windows:
            first = self._joining.first(window.stream, window.device)
            if first is None:
                rest.append(window)
            elif window.end_ts < first + span:
                learning.append(window)
            else:
                self._joining.end(window.stream, window.device)
                log.info("device_learnt", stream=window.stream, device=window.device)
                rest.append(window)
        if learning:
            self._judge(runtime, learning, live=False)
            self.stats.learning_windows += len(learning)
        return rest

    def _score(self, runtime: _Stream, windows: list[Window]) -> list[Alert]:
        self.stats.windows += len(windows)
        if runtime.detector is None:
            self.stats.windows_unscored += len(windows)
            return []
        if self._joining.any(runtime.config.name):
            windows = self._learnt(runtime, windows)
            if not windows:
                return []
        verdicts = self._judge(runtime, windows)
        changes: list[Alert] = []
        history = self._history
        for verdict in verdicts:
            history.add(verdict)
            if verdict.recurring:
                self.stats.recurring += 1
            if verdict.relation is not None:
                self.stats.relation_broken += 1
            if verdict.is_anomaly:
                self.stats.anomalous += 1
                if self._tap is not None:
                    self._flagged.append(verdict.score.window)
            alert = self._alerts.observe(verdict, runtime.baseline)
            if alert is not None:
                changes.append(alert)
                self._log_alert(alert, verdict.score.value)
            if self._observer is not None:
                self._observer(verdict, alert)
        if runtime.shadow is not None:
            try:
                runtime.shadow.observe(verdicts)
            except Exception as err:  # noqa: BLE001 - a failing challenger must not stop scoring
                log.error(
                    "model_shadow_failed",
                    stream=runtime.config.name,
                    version=runtime.shadow.detector.version,
                    error=str(err),
                )
                runtime.shadow = None
            else:
                if runtime.shadow.due:
                    self._end_shadow(runtime)
        return changes

    def _judge(self, runtime: _Stream, windows: list[Window], live: bool = True) -> list[Verdict]:
        """Score one stream's windows with its model and judge them: the spike, level,
        constant, stuck, noise, period and relation checks, then each device's threshold, which
        learns from the normal ones.
        Everything a verdict depends on, and nothing after it (alerts, the observer):
        live windows and warm-up windows (``_warm``) go through this same code."""
        detector = runtime.detector
        assert detector is not None
        started = time.perf_counter()
        stacked = np.stack([w.values for w in windows])
        values, feature_errors = detector.score(stacked)
        # Finite readings can still overflow float32 in the model. Such a window is as
        # anomalous as it gets, and NaN must never reach the database (NOT NULL columns,
        # JSONB) where the writer would retry it forever.
        values = np.nan_to_num(values, nan=_SCORE_CAP, posinf=_SCORE_CAP, neginf=0.0)
        feature_errors = np.nan_to_num(
            feature_errors, nan=_SCORE_CAP, posinf=_SCORE_CAP, neginf=0.0
        )
        if live:  # the scoring metrics count live windows; _warm counts its own
            elapsed = time.perf_counter() - started
            self.stats.score_seconds += elapsed
            if self.on_scored is not None:
                self.on_scored(runtime.config.name, len(windows), elapsed)
            self.stats.scored += len(windows)
        fits = self._relations.fits(detector, windows)
        spiking = self._spikes.config
        usual: list[frozenset[tuple[int, int]]] | None = (
            [] if spiking.vouch and spiking.recurring else None
        )
        spikes = self._spikes.check(
            runtime.config.name,
            [w.device for w in windows],
            stacked,
            fits,
            self._relations.config.reach,
            usual,
        )
        levels = self._levels.check(detector, stacked)
        constants = self._constants.check(detector, windows)
        stuck = self._stuck.check(detector, stacked)
        noise = self._noise.check(detector, stacked)
        periods = self._periods.check(
            runtime.config.name, detector, windows, live, runtime.windows.max_gap
        )
        relations = self._relations.check(
            detector, windows, stacked, self._thresholds.rebaseline_after(runtime.config.name)
        )
        commands = command_channels(detector, self._config.constants.sibling_pulses)
        # A feature constant in training that moves is a set point or command the training
        # never moved: the channels that step after it are following it too.
        drivers = sorted(
            {
                *commands,
                *detector.pulse_indices(),
                *detector.stepped_indices(),
                *detector.constant_values(),
            }
        )
        shifts, steps = self._shifts.check(runtime.config.name, windows, stacked, drivers, live)
        settled, held = self._command_levels.check(
            runtime.config.name,
            [w.device for w in windows],
            stacked,
            sorted({*commands, *detector.pulse_indices()}),
        )
        verdicts: list[Verdict] = []
        # Python floats for the whole batch in two C calls, not one float() per number
        value_list, error_rows = values.tolist(), feature_errors.tolist()
        version = detector.version
        for i, window in enumerate(windows):
            score = Score(
                window=window,
                value=value_list[i],
                feature_errors=tuple(error_rows[i]),
                model_version=version,
            )
            relation, off = relations[i], settled[i]
            if off is not None and (relation is None or off.z > relation.z):
                relation = off
            level, shift = levels[i], shifts[i]
            if shift is not None and (level is None or shift.z > level.z):
                level = shift
            verdict = self._thresholds.judge(
                score, spikes[i], level, constants[i], stuck[i], relation, noise[i], periods[i]
            )
            verdicts.append(self._recurring.judge(verdict, warm=not live))
        # The warm start's windows are the model's training rows: learnt whatever their
        # verdicts (a device whose training never showed one of its loads would otherwise
        # judge every window at it broken and learn none).
        learnt = [not (live and v.is_anomaly) for v in verdicts]
        self._relations.learn(detector, windows, stacked, learnt, relations)
        self._shifts.learn(runtime.config.name, windows, steps, learnt, shifts, warm=not live)
        inputs = response_inputs(detector, commands)
        echo = min(spiking.neighbours, (stacked.shape[1] - 1) // 2)  # the check's own
        return self._with_evidence(
            detector, stacked, verdicts, fits, commands, inputs, held, usual or (), echo
        )

    @staticmethod
    def _with_evidence(
        detector: Detector,
        stacked: np.ndarray,
        verdicts: list[Verdict],
        fits: Sequence[Relations | None],
        commands: Sequence[int] = (),
        inputs: Sequence[int] = (),
        held: Sequence[tuple[int, ...]] = (),
        usual: Sequence[frozenset[tuple[int, int]]] = (),
        echo: int = 0,
    ) -> list[Verdict]:
        """``verdicts`` with each anomalous one's evidence (``sentinel.judge.evidence``)
        and whether that evidence is one reading the channels took together
        (``Verdict.joint``; ``fits``: each window's device's relations, ``RelationCheck.fits``;
        ``commands``: ``command_channels``), and whether it is a response to a change of
        one of ``inputs`` (``Verdict.response``, ``_responding``) or, where the feature
        that made the score is among the window's ``held`` ones (at the level its last
        command's sends set: ``CommandLevelCheck.check``), to that command; and whether
        its evidence is one reading the spike check remembers as the device's normal
        excursion, with at most ``echo`` readings after it (``Verdict.usual``; ``usual``:
        each window's such readings, ``SpikeCheck.check``). The per-reading errors are
        computed for the windows above their threshold only."""
        over = [i for i, v in enumerate(verdicts) if v.is_anomaly and v.score.value > v.threshold]
        ratios = detector.step_ratios(stacked[over]) if over else None
        by_window = dict(zip(over, ratios, strict=True)) if ratios is not None else {}
        out = []
        for i, v in enumerate(verdicts):
            if v.is_anomaly:
                first, last = evidence(v, by_window.get(i))
                joint = known = False
                if i in by_window and v.by_score_alone:
                    at = _index_of(v.score.window, first)
                    to = _index_of(v.score.window, last)
                    fit = fits[i]
                    feature = score_feature(by_window[i])
                    joint = (first == last and _commanded(stacked[i], at, commands)) or (
                        fit is not None
                        and (
                            fit.moved_together(stacked[i], at, feature, to)
                            or fit.ramped_together(stacked[i], at, feature, to)
                        )
                    )
                    known = i < len(usual) and (at, feature) in usual[i] and to - at <= echo
                response = (
                    i in by_window
                    and (v.by_score_alone or directed_roughness(v))
                    and (
                        _responding(stacked[i], by_window[i], v.threshold, inputs)
                        or (i < len(held) and score_feature(by_window[i]) in held[i])
                    )
                ) or (
                    # the noise check alone on a channel moving one way as an input
                    # changed: the channel settling, its score still normal
                    i not in by_window
                    and directed_roughness(v)
                    and _first_change(stacked[i], inputs) is not None
                )
                v = replace(v, evidence=(first, last), joint=joint, response=response, usual=known)
            out.append(v)
        return out

    def _warm(self, runtime: _Stream, device: str, readings: Sequence[Reading]) -> None:
        """Judge a device's readings from before its stream's model with alerts suppressed
        (``sentinel.worker.warmup``): its windows restart from them, and each window goes
        through ``_judge`` -- threshold, spike memory and constant check learn as from any
        window, an anomalous-looking one teaching the threshold nothing -- but no alert,
        observer, reservoir flag or shadow sees it. The window assembler ends holding the
        newest of them, so the live windows that follow continue without a seam."""
        if runtime.detector is None or not readings:
            return
        runtime.warmed.add(device)
        runtime.windows.reset(device)
        windows = [w for r in readings if (w := runtime.windows.add(r)) is not None]
        if not windows:
            return
        self._judge(runtime, windows, live=False)
        self.stats.warm_windows += len(windows)

    def _log_alert(self, alert: Alert, score: float) -> None:
        key = (alert.stream, alert.device)
        if alert.status is AlertStatus.CLOSED:
            self._last_closed[key] = alert.uid
            self.stats.alerts_closed += 1
            log.info(
                "alert_closed",
                stream=alert.stream,
                device=alert.device,
                uid=alert.uid,
                at=alert.ended_at,
                windows=alert.windows,
                peak=round(alert.peak_score, 4),
                duration_s=round((alert.ended_at or alert.updated_at) - alert.started_at, 1),
            )
        elif self._last_closed.get(key) == alert.uid or (
            alert.windows == self._config.alerts.open_after
        ):
            reopened = self._last_closed.pop(key, None) == alert.uid
            if reopened:
                self.stats.alerts_reopened += 1
            else:
                self.stats.alerts_opened += 1
            log.info(
                "alert_reopened" if reopened else "alert_opened",
                stream=alert.stream,
                device=alert.device,
                uid=alert.uid,
                at=alert.updated_at if reopened else alert.started_at,
                score=round(score, 4),
                threshold=round(alert.threshold, 4),
                features=",".join(f"{c.feature}:{c.share:.0%}" for c in alert.top_features),
                checks=alert_checks(alert),
            )
        elif _stdlib_log.isEnabledFor(logging.DEBUG):
            # Every window of an open alert: structlog's proxy binds a logger per call
            # before the level filter drops it, a few µs the stdlib's cached check saves.
            log.debug("alert_updated", device=alert.device, uid=alert.uid, windows=alert.windows)

    # -- threshold snapshots --------------------------------------------------------------

    def _save_thresholds(self, which: Callable[[str], bool] | None = None) -> None:
        """To the file; in a cluster, the devices of this daemon's partitions (or those
        ``which`` selects) to the shared database instead."""
        if self._snapshots is None:
            return
        versions = {
            name: rt.detector.version
            for name, rt in self._streams.items()
            if rt.detector is not None
        }
        shared = self._shared_state
        if shared is None:
            self._snapshots.save(versions)
            return
        try:
            shared.save(self._snapshots.collect(versions, which or shared.owns))
        except StoreError as err:  # re-learnt if lost: never worth stopping the worker
            log.error("judge_state_save_failed", error=str(err))

    def _model_shapes(self) -> dict[str, tuple[str, int]]:
        return {
            name: (rt.detector.version, len(rt.config.features))
            for name, rt in self._streams.items()
            if rt.detector is not None
        }

    def _restore_thresholds(self) -> None:
        # In a cluster each partition brings its devices' state when it is taken.
        if self._snapshots is not None and self._shared_state is None:
            self._snapshots.restore(self._model_shapes())

    # -- models ---------------------------------------------------------------------------

    def _install_model(
        self,
        stream: str,
        detector: Detector,
        seeds: Mapping[str, Sequence[float]],
        shadow: bool,
    ) -> None:
        runtime = self._streams[stream]
        runtime.shadow = None  # any newer model supersedes one still in its shadow period
        period = self._config.retrain.shadow
        if (
            shadow
            and period > 0
            and runtime.detector is not None
            and self._config.threshold.method == "quantile"
            and self._fits(runtime, detector)
        ):
            runtime.shadow = Shadow(detector, period, self._config.threshold.history, seeds)
            log.info(
                "model_shadowing",
                stream=stream,
                version=detector.version,
                active=runtime.detector.version,
                seconds=period,
            )
            return
        self._swap(runtime, detector, seeds)

    def _training_failed(self, stream: str) -> None:
        runtime = self._streams[stream]
        runtime.shadow = None
        self._begin_cold_start(runtime)

    def _end_shadow(self, runtime: _Stream) -> None:
        shadow, runtime.shadow = runtime.shadow, None
        assert shadow is not None
        log.info(
            "model_shadow_ended",
            stream=runtime.config.name,
            version=shadow.detector.version,
            windows=shadow.windows,
            devices=len(shadow.live),
        )
        self._swap(runtime, shadow.detector, shadow.threshold_seeds())

    def _swap(
        self,
        runtime: _Stream,
        detector: Detector,
        seeds: Mapping[str, Sequence[float]],
    ) -> None:
        stream = runtime.config.name
        self._install(runtime, detector)
        # A new model has its own score scale: thresholds learned on the old one are void.
        self._thresholds.reset_stream(stream)
        tail = runtime.tail
        if tail is not None and runtime.detector is not None:
            # The stream's first model: a device warmed below from its kept readings learns
            # its threshold from them at the live hop. The seeds are the same model's scores
            # on the newest of those readings, in sample and at hop 1: taken as well, those
            # readings would count several times over, and the device's threshold would
            # pass for warm on windows it judges once (replay warms without seeds too).
            length = self._config.windows.length
            warmed = {d for d in tail.devices if tail.count(d) >= length}
            seeds = {device: s for device, s in seeds.items() if device not in warmed}
        if seeds and self._config.threshold.method == "quantile":
            self._seed_thresholds(stream, seeds)
        log.info("model_installed", stream=stream, version=detector.version)
        if runtime.detector is not None and tail is not None:
            # The stream's first model: its devices start warm on what they sent before it.
            runtime.tail = None
            before = self.stats.warm_windows
            for device in tail.devices:
                self._warm(runtime, device, tail.readings(device))
            log.info(
                "devices_warmed",
                stream=stream,
                devices=len(tail.devices),
                windows=self.stats.warm_windows - before,
                warm_readings=tail.size,
            )
            self._learn_the_span(runtime, tail)

    def _learn_the_span(self, runtime: _Stream, tail: WarmTail) -> None:
        """The stream's first model arrived before some devices had sent ``cold_start.span``
        of readings: a fleet so large that ``cold_start.max_readings`` ended the cold start
        early (1,000 pumps read every second: 200 s each), or a device that joined during
        it. Each such device goes on learning, as one that joins after the model does
        (``_joined``), until ``span`` after its first reading: its windows judged with
        alerts suppressed, so its threshold, spike memory and relations learn the plant's
        hour before they alert although the model learnt less of it: most of what a short
        cold start costs (docs/BENCHMARKS.md, "A large fleet's devices learn the hour")."""
        span = self._config.cold_start.span
        if span <= 0:
            return
        stream = runtime.config.name
        short = 0
        until = -math.inf
        for device in tail.devices:
            seen = tail.span(device)
            if seen is None or seen[1] - seen[0] >= span:
                continue
            self._joining.begin(stream, device, seen[0])
            short += 1
            until = max(until, seen[0] + span)
        if short:
            log.info(
                "devices_learning_span",
                stream=stream,
                devices=short,
                span=span,
                until=until,
            )

    def _warm_up(self, stream: str, readings: Sequence[Reading]) -> None:
        runtime = self._streams[stream]
        if runtime.detector is None:
            log.warning("warm_up_without_model", stream=stream, readings=len(readings))
            return
        keep = self._config.cold_start.warm_readings
        if keep <= 0:
            return
        by_device: dict[str, list[Reading]] = defaultdict(list)
        for reading in readings:
            by_device[reading.device].append(reading)
        before = self.stats.warm_windows
        for device, own in by_device.items():
            self._warm(runtime, device, own[-keep:])
        log.info(
            "devices_warmed",
            stream=stream,
            devices=len(by_device),
            windows=self.stats.warm_windows - before,
            warm_readings=keep,
        )

    def _seed_thresholds(self, stream: str, seeds: Mapping[str, Sequence[float]]) -> None:
        try:
            devices = self._thresholds.restore(
                stream,
                {d: {"recent": list(s), "normal_seen": len(s)} for d, s in seeds.items()},
            )
        except ValueError as err:
            log.error("threshold_seed_rejected", stream=stream, error=str(err))
            return
        log.info("thresholds_recalibrated", stream=stream, devices=devices)

    def _fits(self, runtime: _Stream, detector: Detector) -> bool:
        return (
            tuple(detector.features) == runtime.config.feature_names
            and detector.window == self._config.windows.length
        )

    def _install(self, runtime: _Stream, detector: Detector) -> None:
        stream = runtime.config
        if tuple(detector.features) != stream.feature_names:
            log.error(
                "model_features_mismatch",
                stream=stream.name,
                model=list(detector.features),
                config=list(stream.feature_names),
            )
            self._begin_cold_start(runtime)
            return
        if detector.window != self._config.windows.length:
            log.error(
                "model_window_mismatch",
                stream=stream.name,
                model=detector.window,
                config=self._config.windows.length,
            )
            self._begin_cold_start(runtime)
            return
        calibration = detector.meta.calibration
        # The model's learnt sampling interval scales the stream's auto time settings.
        interval = detector.meta.interval
        self._thresholds.set_model(stream.name, calibration.quantiles, calibration.scores, interval)
        self._alerts.intervals[stream.name] = interval
        runtime.windows.set_interval(interval)
        # An alert's contributions leave out the features the score leaves out: a set
        # point's step is no evidence against it (sentinel.model.train.stepped_features).
        unscored = set(getattr(detector.meta, "unscored_indices", ()))
        runtime.baseline = tuple(
            math.inf if i in unscored else error
            for i, error in enumerate(calibration.feature_mean_errors)
        )
        runtime.detector = detector
        runtime.cold_start = None

    def _begin_cold_start(self, runtime: _Stream) -> None:
        runtime.detector = None
        warm = self._config.cold_start.warm_readings
        if runtime.tail is None and warm > 0:
            tail = runtime.tail = WarmTail(runtime.config.name, warm, len(runtime.config.features))
            # What the tap kept from before (a restart during a cold start that trains from
            # the reservoir): the devices warm up on their readings from before it too.
            if self._tap is not None:
                width = len(runtime.config.features)
                kept = self._tap.latest(runtime.config.name, warm)
                for reading in kept:
                    if len(reading.values) == width:
                        tail.add(reading)
                # from when each device's readings begin, not its newest kept: a device
                # has learnt the span since (_learn_the_span)
                for device, ts in self._tap.first_seen(runtime.config.name).items():
                    tail.began(device, ts)
                if kept:
                    log.info("warm_tail_recalled", stream=runtime.config.name, readings=len(kept))
        if not self._cold_start_buffer:
            runtime.cold_start = None
            log.info("cold_start_waiting_for_model", stream=runtime.config.name)
            return
        rule = self._config.cold_start
        runtime.cold_start = ColdStartBuffer(
            stream=runtime.config.name, rule=rule, max_gap=self._config.windows.max_gap
        )
        log.info(
            "cold_start_collecting",
            stream=runtime.config.name,
            target=rule.readings,
            span=rule.span,
            max_readings=max(rule.readings, rule.max_readings),
        )

    def _collect(self, runtime: _Stream, reading: Reading) -> None:
        buffer = runtime.cold_start
        assert buffer is not None
        if buffer.add(reading):
            self._launch_training(runtime)
        elif (step := int(buffer.progress * PROGRESS_STEPS)) > buffer.logged:
            buffer.logged = step
            log.info(
                "cold_start_progress",
                stream=buffer.stream,
                collected=buffer.collected,
                target=buffer.rule.readings,
                covered=round(buffer.covered, 1),
                span=buffer.rule.span,
                progress=round(buffer.progress, 2),
            )

    def _launch_training(self, runtime: _Stream) -> None:
        buffer = runtime.cold_start
        assert buffer is not None
        runtime.cold_start = None  # stop collecting; scoring starts when the model arrives
        segments = buffer.segments(min_length=self._config.windows.length)
        interval = buffer.interval
        log.info(
            "cold_start_collected",
            stream=runtime.config.name,
            readings=buffer.collected,
            interval=interval,
        )
        if (short := buffer.rule.short_of_span(buffer.covered)) is not None:
            log.warning("cold_start_span_short", stream=runtime.config.name, hint=short)
        self._request_training(
            TrainingJob(
                runtime.config,
                segments,
                buffer.first_ts,
                buffer.last_ts,
                interval=interval,
                max_gap=buffer.gap,
                readings=buffer.collected,
            )
        )

    # -- live reconfiguration (SIGHUP) ----------------------------------------------------

    def _reconfigure(self, config: SentinelConfig) -> None:
        self._thresholds.reconfigure(config.threshold)
        self._alerts.reconfigure(config.alerts)
        self._spikes.reconfigure(config.spikes, config.windows.hop)
        self._levels.reconfigure(config.levels)
        self._stuck.reconfigure(config.stuck)
        self._noise.reconfigure(config.noise)
        self._periods.reconfigure(config.periods)
        self._relations.reconfigure(config.relations, config.windows.hop)
        self._shifts.reconfigure(config.shifts, config.windows.hop)
        self._constants.reconfigure(config.constants, config.windows.hop)
        self._command_levels.reconfigure(config.command_levels, config.windows.hop)
        self._recurring.reconfigure(config.threshold)
        self.rejections.interval = config.ingest.log_interval
        self._config = config
        # Alerts record the hash of the config in force (their reason's config_hash).
        self.config_hash = self._alerts.config_hash = config_hash(config)
        log.info(
            "config_applied",
            threshold=config.threshold.model_dump(),
            alerts=config.alerts.model_dump(),
            spikes=config.spikes.model_dump(),
            levels=config.levels.model_dump(),
            stuck=config.stuck.model_dump(),
            noise=config.noise.model_dump(),
            periods=config.periods.model_dump(),
        )


def response_inputs(detector: Detector, commands: Sequence[int]) -> tuple[int, ...]:
    """The inputs whose change a channel's lagged error may be the response to
    (``_responding``): the commands (``command_channels``), the stepped features (set
    points, modes), but not the counters among them (``Detector.counter_indices``: a disk's
    used space ticking up), whose ticks nothing follows; and the features constant in
    training (``Detector.constant_values``), set points and commands the training never
    moved -- their first departure is the constant check's alert, and a channel settling
    after it is no second one (``simulators.synthetic.setpoint_steps`` trained on 15 %,
    its set point constant in training)."""
    counters = set(detector.counter_indices())
    stepped = (k for k in detector.stepped_indices() if k not in counters)
    return tuple(sorted({*commands, *stepped, *detector.constant_values()}))


def command_channels(detector: Detector, siblings: bool = True) -> tuple[int, ...]:
    """The inputs whose change at a reading makes a scored channel's step at it a
    commanded one (``_commanded``): the detector's commanding features
    (``Detector.command_indices``) and, with ``siblings`` (``[constants] sibling_pulses``),
    every feature constant in training at a value its pulse trains rest at.

    The second are commands the training data happened not to send, beside ones it did
    (one-hot command channels, as spacecraft telemetry comes): the constant check already
    reads their pulses as their siblings' (``sentinel.judge.constants``), but the channel
    they move stepped at each pulse where no learnt command changed, so every later use of
    such a command alerted again (``simulators.synthetic.stepped_telemetry`` trained on
    30 %: all six of seed 0's false alerts, at one command's pulses). Only where the
    detector learnt commands, and only at their rest value: a flag constant elsewhere
    changes no step's reading."""
    commands = detector.command_indices()
    if not siblings or not commands:
        return commands
    shapes = detector.pulse_shapes()
    rests = {rest for rest, _ in shapes}
    extra = [
        index
        for index, value in sorted(detector.constant_values().items())
        if index not in commands and any(math.isclose(value, r) for r in rests)
    ]
    return (*commands, *extra)


def _commanded(readings: np.ndarray, at: int, commands: Sequence[int]) -> bool:
    """Whether one of the ``commands`` (inputs whose changes came with a scored channel's
    step in training: ``Detector.command_indices``) changed at reading ``at`` of a window's
    ``readings`` (T, F): a channel that moves when it is commanded moves at the command's
    reading, which nothing before it announces (issue #21: spacecraft telemetry held at
    the levels its one-reading command pulses set alerted at every command,
    ``simulators.synthetic.stepped_telemetry``)."""
    if at < 1 or not commands:
        return False
    now, before = readings[at, commands], readings[at - 1, commands]
    return bool(np.any(now != before))


def _responding(
    readings: np.ndarray, ratios: np.ndarray, threshold: float, inputs: Sequence[int]
) -> bool:
    """Whether a window's errors are its channels' response to a change of one of
    ``inputs`` (a set point, a command: inputs of the model it leaves out of its score):
    one of them changed within the window's ``readings`` (T, F), and the scored readings
    (``ratios`` (S, F), the newest S: ``Detector.step_ratios``) before its first change
    do not carry the excess over ``threshold`` on the feature that made the score -- their
    mean error is at most the threshold, or there are none.

    A channel that follows a set point or a command with a lag (a temperature settling to
    its new set point over tens of readings, telemetry moving to a commanded level) gives
    the forecaster an error for every reading of the lag, not one reading at the step as
    ``_commanded`` covers; where training held few of the changes -- a short training, a
    set point it never saw -- each was alerted (``simulators.synthetic.setpoint_steps``
    trained on 30 %: 4-8 false alerts a series, seed 0's eight opening 9-25 readings after a
    set point step). A window holds the change for a window's length; a channel that does
    not settle -- a fault that came with the change -- keeps its error past it and alerts
    then, and one already anomalous before the change is no response."""
    change = _first_change(readings, inputs)
    if change is None:
        return False
    before = change - (len(readings) - len(ratios))  # scored readings before it
    if before <= 0:
        return True
    errors = np.nan_to_num(ratios[:before, score_feature(ratios)], nan=np.inf, posinf=np.inf)
    return bool(float(errors.mean()) <= threshold)


def _first_change(readings: np.ndarray, inputs: Sequence[int]) -> int | None:
    """The index of the first of a window's ``readings`` (T, F) at which one of ``inputs``
    holds a new value, or None where none of them changed."""
    if not inputs or len(readings) < 2:
        return None
    block = readings[:, list(inputs)]
    moved = np.flatnonzero(np.any(block[1:] != block[:-1], axis=1))
    return int(moved[0]) + 1 if len(moved) else None


def _index_of(window: Window, ts: float) -> int:
    """The index of ``window``'s newest reading at ``ts`` (one of its readings' times)."""
    for index in range(len(window.values) - 1, -1, -1):
        if window.time_of(index) == ts:
            return index
    raise ValueError(f"no reading of the window at {ts}")
