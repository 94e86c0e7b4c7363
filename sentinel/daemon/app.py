"""Wires the components together and runs them until asked to stop.

Start order follows the data backwards (store, writer, trainer, pipeline, then the source)
so that nothing receives data before its consumer is running; stop order is the reverse,
with one twist: the source is *paused* first and disconnected last, so that
acknowledgements for everything committed during the drain still reach the broker.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from sentinel.api import ApiContext, build_app
from sentinel.cluster import PartitionOwnership
from sentinel.cluster.fence import PartitionFence
from sentinel.cluster.ownership import group_key
from sentinel.cluster.state import ClusterJudgeState
from sentinel.config import (
    API_TOKEN_CREDENTIAL,
    API_TOKEN_ENV,
    SentinelConfig,
    load_config,
    read_secret,
)
from sentinel.daemon.control import CONTROL_SOCKET, ControlServer
from sentinel.daemon.health import DatabaseProbe, Health, Progress
from sentinel.daemon.malloc import release_free_memory
from sentinel.daemon.metrics import Metrics, record_retraining, stats_dict
from sentinel.daemon.reload import plan_reload
from sentinel.daemon.retraining import RetrainService
from sentinel.daemon.sdnotify import Notifier, watchdog_interval
from sentinel.daemon.server import HttpServer
from sentinel.errors import ConfigError, ModelError, StoreError
from sentinel.ingest.mqtt import MqttSource
from sentinel.ingest.mqtt_process import ProcessMqttSource
from sentinel.ingest.parse import MessageParser
from sentinel.ingest.source import Source
from sentinel.ingest.subjects import device_partition
from sentinel.logs import configure_logging
from sentinel.model import Detector, Registry, daemon_refusal, scoring_device
from sentinel.model.registry import load_active_or_previous, nats_registry, open_registry
from sentinel.publish.publisher import AlertPublisher
from sentinel.records import Ack, WriteBatch
from sentinel.retrain.retrainer import reservoir_rule
from sentinel.store import AlertStore, AlertWriter
from sentinel.store.durability import warn_not_durable
from sentinel.store.judge_state import load_judge_state
from sentinel.store.outbox import OutboxPolicy
from sentinel.worker.coldstart import Trainer
from sentinel.worker.devices import warn_future_progress
from sentinel.worker.pipeline import Pipeline

if TYPE_CHECKING:
    import torch

    from sentinel.daemon.follow import RegistryFollower
    from sentinel.ingest.nats import NatsSource
    from sentinel.model.nats_registry import Activation, NatsRegistry
    from sentinel.retrain.lease import Lease

__all__ = [
    "EXIT_FATAL_CONNECTION",
    "EXIT_OK",
    "EXIT_RESTART",
    "EXIT_WRITER_GAVE_UP",
    "SentinelApp",
]

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_FATAL_CONNECTION = 3
# The database writer stopped with batches it never committed (the database failed until
# the stop's deadline). Their messages were not acknowledged: the broker sends them again.
EXIT_WRITER_GAVE_UP = 4
# run() stopped every component to start them again with ``restart_config`` (a SIGHUP that
# changed the stream list); the caller starts a new SentinelApp in the same process.
EXIT_RESTART = -1
STATS_INTERVAL = 60.0
# Asked of systemd (EXTEND_TIMEOUT_USEC) before a migration: one that copies a table can
# outlast the unit's TimeoutStartSec (300 s) on a large database, and a start killed
# mid-migration rolls it back, to be tried again at every restart (0008: a 30-day score
# history of 1,000 pumps, 43 million rows, is ~2 minutes on a desktop core).
MIGRATE_TIMEOUT_S = 3600.0


class SentinelApp:
    """The daemon. ``run(stop)`` blocks until ``stop`` is set or a fatal error occurs."""

    def __init__(
        self,
        config: SentinelConfig,
        *,
        stats_interval: float = STATS_INTERVAL,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path  # re-read on SIGHUP (see request_reload)
        self.notifier = notifier or Notifier()
        self.metrics = Metrics(config.state_dir, max_devices=config.health.metrics_devices)
        self.health = Health()
        self.health_server: HttpServer | None = None
        self._reload = threading.Event()
        self._registry: Registry | None = None
        self._device: torch.device | None = None  # the scoring device, set by run()
        # Per stream, the version last handed to the pipeline (what it runs or soon will).
        self._handed: dict[str, str] = {}
        self.follower: RegistryFollower | None = None
        self._stats_interval = stats_interval
        self._fatal: str | None = None
        self._wake = threading.Event()
        self.pipeline: Pipeline | None = None
        self.source: Source | None = None
        self.publisher: AlertPublisher | None = None
        self.retrain: RetrainService | None = None
        self.control: ControlServer | None = None
        self.cluster: PartitionOwnership | None = None  # with [cluster] enabled
        self.ready = threading.Event()  # set once every component has started
        self.restart_config: SentinelConfig | None = None  # see EXIT_RESTART

    def run(self, stop: threading.Event) -> int:
        config = self.config
        refusal = daemon_refusal(config.model.detector)
        if refusal is not None:
            raise ConfigError(refusal)
        log.info("sentinel_starting", config=config.redacted())
        for warning in config.warnings():
            log.warning("config_warning", detail=warning)
        config.state_dir.mkdir(parents=True, exist_ok=True)
        # None: NumPy scores on the CPU and this process never imports torch (~190 MB).
        device = self._device = scoring_device(config.model)
        if device is not None:
            import torch

            torch.set_num_threads(config.model.torch_threads)

        publish = config.publish
        store = AlertStore(
            config.database_url,
            busy_timeout_ms=config.database.busy_timeout_ms,
            sqlite_durability=config.database.sqlite_durability,
            outbox=OutboxPolicy(publish.update_peak_factor, publish.update_interval)
            if publish.enabled
            else None,
        )
        store.open()
        try:
            store.migrate(
                on_start=lambda: self.notifier.extend_timeout(
                    MIGRATE_TIMEOUT_S, "migrating the database"
                )
            )
            warn_not_durable(store)
            warn_future_progress(store, config.ingest.max_future_skew)
            registry = self._registry = open_registry(config, role="daemon")
            # The NATS client is imported only where a NATS registry or source is
            # configured (issue #23, memory).
            shared = nats_registry(registry)
            for stream in config.streams:  # bounded disk use, also after a config change
                registry.prune(stream.name, config.retrain.keep_versions)
            models = self._load_models(registry, device)
            fence = (
                PartitionFence(
                    group_key(self._cluster_group()), config.nats.partitions, config.cluster.member
                )
                if config.cluster.enabled
                else None
            )
            writer = AlertWriter(
                store,
                flush_interval=config.database.flush_interval,
                flush_messages=config.database.flush_messages,
                batch_max=config.database.batch_max,
                on_commit=self._committed,
                on_resolved=lambda uids: self._pipeline().alerts_resolved(uids),
                # Pruned also with history off: what an earlier run recorded still ages out.
                history_retention=config.history.retention,
                prune_batch=config.history.prune_batch,
                fence=fence,
                on_fenced=self._abandon,
            )
            if publish.enabled:
                self.publisher = AlertPublisher(
                    publish,
                    config.mqtt,
                    store,
                    password=p.get_secret_value() if (p := config.mqtt.password) else None,
                    # One member of a cluster drains the shared outbox.
                    drains=(lambda: self.cluster is not None and self.cluster.publisher)
                    if config.cluster.enabled
                    else None,
                )
            trainer = Trainer(
                config,
                registry,
                device,
                on_model=self._model_trained,
                on_failure=self._training_failed,
            )
            retrain = self.retrain = (
                RetrainService(
                    config,
                    registry,
                    device,
                    has_model=lambda stream: self._pipeline().has_model(stream),
                    install=self._install,
                    active_versions=lambda: self._pipeline().model_versions(),
                    # Shared registry: one daemon at a time retrains a stream.
                    lease=_lease(shared, config),
                )
                if config.retrain.enabled
                else None
            )
            pipeline = self.pipeline = Pipeline(
                config,
                sink=writer.submit,
                request_training=trainer.submit,
                models=models,
                recall=store.device_progress,
                # Ended alerts too: they carry each device's cooldown across a restart.
                # In a cluster, each partition's come with the partition (_take_partition).
                open_alerts=[]
                if config.cluster.enabled
                else [*store.open_alerts(), *store.last_ended_alerts()],
                snapshot_path=config.state_dir / "thresholds.json",
                tap=retrain.tap if retrain is not None else None,
                cold_start_buffer=retrain is None,
                shared_state=ClusterJudgeState(
                    store,
                    config.nats.partitions,
                    lambda: self.cluster.owned if self.cluster is not None else (),
                )
                if config.cluster.enabled
                else None,
            )
            if config.retrain.control_socket:  # device resets need it with retraining off too
                self.control = ControlServer(
                    config.state_dir / CONTROL_SOCKET,
                    {
                        "reset_devices": self._reset_devices,
                        **(retrain.handlers if retrain is not None else {}),
                    },
                )
            if shared is not None:
                from sentinel.daemon.follow import RegistryFollower

                self.follower = RegistryFollower(
                    shared,
                    [s.name for s in config.streams],
                    adopt=self._adopt,
                    running=self._handed.get,
                )
            source = self.source = self._make_source(pipeline)
            if config.cluster.enabled:
                assert fence is not None
                self.cluster = self._make_cluster(store, pipeline, source, fence)
                self.health.cluster = self.metrics.cluster = self.cluster
            tap = retrain.tap if retrain is not None else None
            # Where each stream's cold start stands: the reservoir's, or the in-memory one's
            cold_start = (
                (config.cold_start, pipeline.cold_start_collected)
                if tap is None
                else (reservoir_rule(config), lambda stream: (tap.count(stream), tap.span(stream)))
            )
            self.metrics.attach(pipeline, source, writer, tap, cold_start)
            probe = DatabaseProbe(store, config.health.database_probe_interval)
            self.health.attach(pipeline, source, writer, probe, cold_start=cold_start)
            probe.start()
            try:
                self._start_health_server(store, registry)
                return self._run_components(stop, writer, trainer, pipeline, source, retrain)
            finally:
                probe.stop()
                if self.health_server is not None:
                    self.health_server.stop()
        finally:
            if self.retrain is not None:
                self.retrain.close()
            if self._registry is not None and (shared := nats_registry(self._registry)):
                shared.stop()
            self.notifier.close()
            store.close()

    def _run_components(
        self,
        stop: threading.Event,
        writer: AlertWriter,
        trainer: Trainer,
        pipeline: Pipeline,
        source: Source,
        retrain: RetrainService | None = None,
    ) -> int:
        started: list[str] = []
        try:
            writer.start()
            started.append("writer")
            if self.publisher is not None:
                self.publisher.start()
                started.append("publisher")
            trainer.start()
            started.append("trainer")
            pipeline.start()
            started.append("pipeline")
            if retrain is not None:
                retrain.start()
                started.append("retrain")
            if self.follower is not None:
                self.follower.start()
                started.append("follower")
            if self.control is not None:
                self.control.start()
                started.append("control")
            source.start()
            started.append("source")
            if self.cluster is not None:
                self.cluster.start()
                started.append("cluster")
            self.ready.set()
            self.health.phase = "running"
            log.info("sentinel_running", streams=[s.name for s in self.config.streams])
            self.notifier.ready(status="running")
            housekeeping = _Housekeeping(Progress(pipeline, source), watchdog_interval())
            next_stats = time.monotonic() + self._stats_interval
            while not stop.is_set() and self._fatal is None and self.restart_config is None:
                self._wake.wait(0.5)
                if not pipeline.alive:
                    log.error("pipeline_thread_died")
                    return 1
                if self._reload.is_set():
                    self._reload.clear()
                    self._wake.clear()  # set by request_reload: wait again next time round
                    try:
                        self.reload()
                    except Exception:  # a reload bug must not stop a running daemon
                        log.exception("config_reload_crashed")
                housekeeping.tick(self)
                if time.monotonic() >= next_stats:
                    next_stats += self._stats_interval
                    self._log_stats(pipeline, source, writer)
                    self._publish_stats(pipeline, source, writer)
        finally:
            restarting = self.restart_config is not None and self._fatal is None
            log.info("sentinel_stopping", restarting=restarting)
            self.health.phase = "stopping"
            if restarting:
                self.notifier.reloading()  # READY again once the new components run
            else:
                self.notifier.stopping()
            if "cluster" in started and self.cluster is not None:
                self.cluster.stop()  # no more hand-overs; the locks stay through the drain
            if "source" in started:
                source.pause()
            if "control" in started and self.control is not None:
                self.control.stop()
            if "follower" in started and self.follower is not None:
                self.follower.stop()
            if retrain is not None and "retrain" in started:
                retrain.stop()
            if "pipeline" in started:
                pipeline.stop()
            if "writer" in started:
                writer.stop()
            if "publisher" in started and self.publisher is not None:
                self.publisher.stop()  # after the writer: its last events are in the outbox
            if "source" in started:
                source.stop()
            if self.cluster is not None:
                self.cluster.close()  # the partitions go once their acks have
            if "trainer" in started:
                trainer.stop()
            self._log_stats(pipeline, source, writer)
            log.info("sentinel_stopped")
        if self._fatal is not None:
            log.error("sentinel_fatal", error=self._fatal)
            return EXIT_FATAL_CONNECTION
        if writer.uncommitted:
            # Not a clean stop, and no in-process restart on top of a failing database.
            log.error(
                "sentinel_writes_uncommitted", batches=writer.uncommitted, error=writer.last_error
            )
            return EXIT_WRITER_GAVE_UP
        return EXIT_RESTART if self.restart_config is not None else EXIT_OK

    def _make_source(self, pipeline: Pipeline) -> Source:
        """The source ``ingest.source`` names; both parse with the same parser."""
        config = self.config
        parser = MessageParser(
            config.streams,
            max_payload_bytes=config.ingest.max_payload_bytes,
            max_future_skew=config.ingest.max_future_skew,
        )
        if config.ingest.source == "nats":
            from sentinel.ingest.nats import NatsSource

            return NatsSource(
                config.nats,
                parser=parser,
                sink=pipeline.offer,
                # What one consumer may have in flight: about what the queue holds.
                max_ack_pending=config.ingest.queue_size,
                on_fatal=self._on_fatal,
                # In a cluster the partitions come one by one (_make_cluster).
                partitions=() if config.cluster.enabled else None,
            )
        mqtt_source = ProcessMqttSource if config.mqtt.client_process else MqttSource
        return mqtt_source(
            config.mqtt,
            config.streams,
            parser=parser,
            sink=pipeline.offer,
            receive_maximum=config.ingest.queue_size,
            on_fatal=self._on_fatal,
            password=p.get_secret_value() if (p := config.mqtt.password) else None,
        )

    def _cluster_group(self) -> str:
        return self.config.cluster.group or self.config.nats.consumer_prefix

    def _make_cluster(
        self, store: AlertStore, pipeline: Pipeline, made: Source, fence: PartitionFence
    ) -> PartitionOwnership:
        """Partition ownership shared with the other daemons (sentinel.cluster)."""
        config = self.config
        source = _nats_source(made)
        assert source is not None  # a cluster's source is NATS (the config's validator)
        partitions = config.nats.partitions
        timeout = config.cluster.release_timeout

        def belongs(partition: int) -> Callable[[str], bool]:
            return lambda device: device_partition(device, partitions) == partition

        def take(partition: int) -> bool:
            # Fenced: the lock is ours, so the previous owner released or died. Its
            # devices' progress and alerts are read from the store now, not from memory.
            in_it = belongs(partition)
            try:
                alerts = [
                    a for a in [*store.open_alerts(), *store.last_ended_alerts()] if in_it(a.device)
                ]
                judge = load_judge_state(store, partition)
            except StoreError as err:
                log.warning("cluster_take_failed", partition=partition, error=str(err))
                return False
            if pipeline.hand_over(in_it, alerts=alerts, judge=judge, timeout=timeout) is None:
                log.warning("cluster_take_failed", partition=partition, error="worker busy")
                return False
            return source.acquire(partition)

        def give(partition: int) -> bool:
            if not source.release(partition, timeout):
                return False
            # Everything of it is committed: store what the judge learnt of its devices
            # and let them go, for their next owner.
            pipeline.hand_over(belongs(partition), save=True, timeout=timeout)
            return True

        def drop(partition: int) -> None:
            # The session and its locks are gone: read no more of it, even if what is in
            # flight does not commit in time (its messages go to the next owner).
            source.release(partition, timeout, keep_on_timeout=False)
            pipeline.hand_over(belongs(partition), timeout=timeout)

        return PartitionOwnership(
            config.database_url,
            group=self._cluster_group(),
            member=config.cluster.member,
            partitions=partitions,
            interval=config.cluster.interval,
            take=take,
            give=give,
            drop=drop,
            fence=fence,
        )

    @property
    def fatal(self) -> str | None:
        return self._fatal

    def _pipeline(self) -> Pipeline:
        assert self.pipeline is not None
        return self.pipeline

    def _load_models(
        self, registry: Registry, device: torch.device | None
    ) -> dict[str, Detector | None]:
        models: dict[str, Detector | None] = {}
        for stream in self.config.streams:
            try:
                # A corrupt active version falls back to its predecessor (issue #5).
                detector = load_active_or_previous(
                    registry, stream.name, device, self.config.model.score_batch_max
                )
            except ModelError as err:
                # Never fatal: the stream starts over with a cold start.
                log.error("model_unusable", stream=stream.name, error=str(err))
                detector = None
            if detector is not None:
                log.info("model_loaded", stream=stream.name, version=detector.version)
                self._handed[stream.name] = detector.version
            models[stream.name] = detector
        return models

    def _committed(self, batches: Sequence[WriteBatch]) -> None:
        self._send_acks(batches)
        if self.publisher is not None:
            self.publisher.observe_scores(b for batch in batches for b in batch.history)
            if any(b.alerts for b in batches):
                self.publisher.notify()

    def _abandon(self, acks: Sequence[Ack]) -> None:
        if (source := _nats_source(self.source)) is not None:
            source.abandon(acks)

    def _send_acks(self, batches: Sequence[WriteBatch]) -> None:
        if self.source is not None:
            self.source.ack([ack for batch in batches for ack in batch.acks])

    def _on_fatal(self, reason: str) -> None:
        self._fatal = reason
        self.health.fatal = reason
        self._wake.set()

    def _log_stats(self, pipeline: Pipeline, source: Source, writer: AlertWriter) -> None:
        log.info(
            "stats",
            connected=source.connected,
            queue_depth=pipeline.depth,
            queue_full=pipeline.queue_full,
            rejected=pipeline.rejections.as_dict(),
            writer_error=writer.last_error,
            **pipeline.stats.as_dict(),
        )

    def _publish_stats(self, pipeline: Pipeline, source: Source, writer: AlertWriter) -> None:
        if self.publisher is None or not self.config.publish.stats:
            return
        try:
            self.publisher.publish_json("stats", stats_dict(pipeline, source, writer))
        except (ValueError, TypeError) as err:  # a counter JSON cannot hold: log, never stop
            log.error("stats_publish_failed", error=str(err))

    # -- operations: health server, reload, retraining bookkeeping ------------------------

    def _start_health_server(self, store: AlertStore, registry: Registry) -> None:
        cfg = self.config.health
        if not cfg.enabled:
            return
        retrain = self.retrain
        context = ApiContext(
            config=lambda: self.config,
            store=store,
            registry=registry,
            health=self.health,
            metrics=self.metrics,
            model_versions=lambda: self._pipeline().model_versions(),
            describe_devices=lambda keys: self._pipeline().describe_devices(keys),
            # The handler behind the control socket's "reload", which `models activate`
            # sends: the API switches versions the way the CLI does.
            reload_model=(
                (lambda stream: str(retrain.handlers["reload"]({"stream": stream})["version"]))
                if retrain is not None
                else None
            ),
            token=read_secret(API_TOKEN_CREDENTIAL, API_TOKEN_ENV),
        )
        server = HttpServer(cfg.bind, cfg.port, build_app(context, api=cfg.api))
        try:
            server.start()
        except OSError as err:
            # Not fatal: detection matters more than its dashboard. Logged loudly.
            log.error("health_listen_failed", bind=cfg.bind, port=cfg.port, error=str(err))
            return
        if cfg.api:
            log.info("api_serving", prefix="/api/v1", writes=context.token is not None)
        self.health_server = server

    def request_reload(self) -> None:
        """Ask the main loop to re-read the config file (what SIGHUP does)."""
        self._reload.set()
        self._wake.set()

    def reload(self) -> bool:
        """Re-read ``config_path`` and apply its live keys; False when the file was refused."""
        if self.config_path is None:
            log.warning("config_reload_unavailable", reason="started without a config file")
            return False
        self.notifier.reloading()
        try:
            loaded = load_config(self.config_path)
            plan = plan_reload(self.config, loaded)
        except (ConfigError, ValueError) as err:
            self.metrics.config_reloads.labels(result="refused").inc()
            log.error("config_reload_refused", path=str(self.config_path), error=str(err))
            return False
        finally:
            self.notifier.ready(status="running")
        if plan.needs_restart:
            log.warning(
                "config_reload_needs_restart",
                keys={k: {"running": v[0], "file": v[1]} for k, v in plan.needs_restart.items()},
            )
        if plan.restart_streams is not None:
            # The stream list changes what is subscribed, parsed, windowed, modelled and
            # retrained: the components start again with it, in this process. The stop
            # drains and commits everything in flight and the MQTT session resumes, so no
            # reading is lost (readings arriving meanwhile wait at the broker).
            self.restart_config = plan.restart_streams
            self.metrics.config_reloads.labels(result="applied").inc()
            log.info(
                "config_reload_restarting_components",
                path=str(self.config_path),
                streams={
                    "old": [s.name for s in self.config.streams],
                    "new": [s.name for s in plan.restart_streams.streams],
                },
                changed={k: {"old": v[0], "new": v[1]} for k, v in plan.applied.items()},
            )
            self._wake.set()
            return True
        if not plan.changed:
            self.metrics.config_reloads.labels(result="unchanged").inc()
            log.info("config_reload_unchanged", path=str(self.config_path))
            return True
        self.config = plan.config
        if any(k.startswith("logging.") for k in plan.applied):
            configure_logging(plan.config.logging.level, plan.config.logging.format)
        if self.pipeline is not None:
            self.pipeline.reconfigure(plan.config)
        self.metrics.config_reloads.labels(result="applied").inc()
        log.info(
            "config_reloaded",
            path=str(self.config_path),
            changed={k: {"old": v[0], "new": v[1]} for k, v in plan.applied.items()},
        )
        return True

    def _reset_devices(self, request: dict[str, Any]) -> dict[str, Any]:
        """The control socket's ``reset_devices`` (``sentinel devices reset``)."""
        stream, devices, note = request.get("stream"), request.get("devices"), request.get("note")
        if (
            not isinstance(devices, list)
            or not devices
            or not all(isinstance(d, str) for d in devices)
        ):
            raise ValueError("reset_devices needs a non-empty list of device names")
        if not isinstance(stream, str) or stream not in {s.name for s in self.config.streams}:
            raise ValueError(f"no stream {stream!r} in the running daemon's config")
        if note is not None and not isinstance(note, str):
            raise ValueError("note must be a string")
        # Within the CLI's 10 s: a worker blocked longer answers with an error, not silence.
        held = self._pipeline().reset_devices(stream, devices, note, timeout=5.0)
        return {"stream": stream, "devices": len(devices), "held": held}

    def _install(
        self,
        stream: str,
        detector: Detector,
        seeds: Mapping[str, Sequence[float]] | None = None,
        shadow: bool = False,
    ) -> None:
        """Every model reaches the pipeline here (``Retrainer.install``)."""
        self._handed[stream] = detector.version
        self._pipeline().install_model(stream, detector, seeds, shadow)

    def _adopt(self, activation: Activation) -> None:
        """A version another daemon (or the CLI elsewhere) activated: swap it in as a local
        reload would, in shadow first when a retraining run produced it."""
        stream, version = activation.stream, activation.version
        if self.retrain is not None:
            shadow = activation.reason.startswith("retrain")
            self.retrain.retrainer.reload(stream, version, shadow=shadow)
            return
        assert self._registry is not None
        detector = self._registry.load_version(
            stream,
            version,
            self._device,
            max_batch=self.config.model.score_batch_max,
        )
        self._install(stream, detector)

    def _model_trained(self, stream: str, detector: Detector) -> None:
        self._install(stream, detector)
        record_retraining(stream, "activated")
        if self._registry is not None:
            self._registry.prune(stream, self.config.retrain.keep_versions)

    def _training_failed(self, stream: str, reason: str) -> None:
        record_retraining(stream, "failed")
        self._pipeline().training_failed(stream)


class _Housekeeping:
    """Feeds systemd's watchdog while the pipeline makes progress; keeps STATUS= fresh;
    hands malloc's free pages back once a minute (``release_free_memory``)."""

    STATUS_INTERVAL = 10.0
    TRIM_INTERVAL = 60.0

    def __init__(self, progress: Progress, watchdog: float | None) -> None:
        self._progress = progress
        self._watchdog = watchdog
        # Ask for progress four times per watchdog period: one quiet check is not fatal.
        self._check_every = watchdog / 4 if watchdog else None
        self._next_check = 0.0
        self._next_status = 0.0
        self._next_trim = time.monotonic() + self.TRIM_INTERVAL
        self._starved_since: float | None = None
        self._last_state: tuple[str, tuple[str, ...]] = ("", ())

    def tick(self, app: SentinelApp) -> None:
        now = time.monotonic()
        if now >= self._next_trim:
            self._next_trim = now + self.TRIM_INTERVAL
            release_free_memory()
        if self._check_every is not None and now >= self._next_check:
            self._next_check = now + self._check_every
            if self._progress.check(now):
                app.notifier.watchdog()
                self._starved_since = None
            elif self._starved_since is None:
                self._starved_since = now
                log.warning(
                    "watchdog_not_fed",
                    reason="no progress: no input, and not idle-and-connected",
                    restart_after_s=self._watchdog,
                )
        report = app.health.report()
        state = (report.status, report.problems[:1])
        # Counts every STATUS_INTERVAL; a change of health at once.
        if now >= self._next_status or state != self._last_state:
            self._next_status = now + self.STATUS_INTERVAL
            self._last_state = state
            stats = report.checks.get("pipeline", {})
            app.notifier.status(
                f"{report.status}; readings {stats.get('readings', 0)}; "
                f"queue {stats.get('queue_depth', 0)}"
                + (f"; {report.problems[0]}" if report.problems else "")
            )


def _nats_source(source: Source | None) -> NatsSource | None:
    """``source`` where it is a ``NatsSource``, without importing the NATS client where no
    NATS source was ever made (it cannot be one then)."""
    module = sys.modules.get("sentinel.ingest.nats")
    if module is None or source is None:
        return None
    kind: type[NatsSource] = module.NatsSource
    return source if isinstance(source, kind) else None


def _lease(shared: NatsRegistry | None, config: SentinelConfig) -> Lease | None:
    """One daemon at a time retrains a stream of a shared registry: its NATS lease."""
    if shared is None:
        return None
    from sentinel.retrain.lease import NatsLease

    return NatsLease(shared.link, config.registry, shared.by)
