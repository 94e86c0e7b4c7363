"""Wires the components together and runs them until asked to stop.

Start order follows the data backwards (store, writer, trainer, pipeline, then MQTT) so that
nothing receives data before its consumer is running; stop order is the reverse, with one
twist: MQTT is *paused* first and disconnected last, so that acknowledgements for everything
committed during the drain still reach the broker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import structlog
import torch

from sentinel.config import SentinelConfig
from sentinel.errors import ConfigError, ModelError
from sentinel.ingest.mqtt import MqttSource
from sentinel.ingest.parse import MessageParser
from sentinel.model import Detector, ModelRegistry, resolve_device
from sentinel.pipeline import Pipeline
from sentinel.records import WriteBatch
from sentinel.retrain.service import RetrainService, load_active_or_previous
from sentinel.store import AlertStore, AlertWriter
from sentinel.training import Trainer

__all__ = ["EXIT_FATAL_CONNECTION", "EXIT_OK", "SentinelApp"]

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_FATAL_CONNECTION = 3
STATS_INTERVAL = 60.0


class SentinelApp:
    """The daemon. ``run(stop)`` blocks until ``stop`` is set or a fatal error occurs."""

    def __init__(self, config: SentinelConfig, *, stats_interval: float = STATS_INTERVAL) -> None:
        self.config = config
        self._stats_interval = stats_interval
        self._fatal: str | None = None
        self._wake = threading.Event()
        self.pipeline: Pipeline | None = None
        self.source: MqttSource | None = None
        self.retrain: RetrainService | None = None
        self.ready = threading.Event()  # set once every component has started

    def run(self, stop: threading.Event) -> int:
        config = self.config
        if config.model.detector != "lstm_ae":
            raise ConfigError(
                f"model.detector = {config.model.detector!r} is a baseline for `sentinel "
                "replay` and benchmarks; the daemon runs lstm_ae"
            )
        log.info("sentinel_starting", config=config.redacted())
        torch.set_num_threads(config.model.torch_threads)
        config.state_dir.mkdir(parents=True, exist_ok=True)
        device = resolve_device(config.model.device)

        store = AlertStore(config.database_url, busy_timeout_ms=config.database.busy_timeout_ms)
        store.open()
        try:
            store.migrate()
            registry = ModelRegistry(config.models_dir)
            models = self._load_models(registry, device)
            writer = AlertWriter(
                store,
                flush_interval=config.database.flush_interval,
                batch_max=config.database.batch_max,
                on_commit=self._send_acks,
            )
            trainer = Trainer(
                config,
                registry,
                device,
                on_model=lambda stream, detector: self._pipeline().install_model(stream, detector),
                on_failure=lambda stream, reason: self._pipeline().training_failed(stream),
            )
            retrain = self.retrain = (
                RetrainService(
                    config,
                    registry,
                    device,
                    has_model=lambda stream: self._pipeline().has_model(stream),
                    install=lambda stream, det, seeds=None: self._pipeline().install_model(
                        stream, det, seeds
                    ),
                    active_versions=lambda: self._pipeline().model_versions(),
                )
                if config.retrain.enabled
                else None
            )
            pipeline = self.pipeline = Pipeline(
                config,
                sink=writer.submit,
                request_training=trainer.submit,
                models=models,
                progress=store.device_progress().values(),
                open_alerts=store.open_alerts(),
                snapshot_path=config.state_dir / "thresholds.json",
                tap=retrain.tap if retrain is not None else None,
                cold_start_buffer=retrain is None,
            )
            source = self.source = MqttSource(
                config.mqtt,
                config.streams,
                parser=MessageParser(
                    config.streams, max_payload_bytes=config.ingest.max_payload_bytes
                ),
                sink=pipeline.offer,
                receive_maximum=config.ingest.queue_size,
                on_fatal=self._on_fatal,
                password=p.get_secret_value() if (p := config.mqtt.password) else None,
            )
            return self._run_components(stop, writer, trainer, pipeline, source, retrain)
        finally:
            if self.retrain is not None:
                self.retrain.close()
            store.close()

    def _run_components(
        self,
        stop: threading.Event,
        writer: AlertWriter,
        trainer: Trainer,
        pipeline: Pipeline,
        source: MqttSource,
        retrain: RetrainService | None = None,
    ) -> int:
        started: list[str] = []
        try:
            writer.start()
            started.append("writer")
            trainer.start()
            started.append("trainer")
            pipeline.start()
            started.append("pipeline")
            if retrain is not None:
                retrain.start()
                started.append("retrain")
            source.start()
            started.append("source")
            self.ready.set()
            log.info("sentinel_running", streams=[s.name for s in self.config.streams])
            next_stats = time.monotonic() + self._stats_interval
            while not stop.is_set() and self._fatal is None:
                self._wake.wait(0.5)
                if not pipeline.alive:
                    log.error("pipeline_thread_died")
                    return 1
                if time.monotonic() >= next_stats:
                    next_stats += self._stats_interval
                    self._log_stats(pipeline, source, writer)
        finally:
            log.info("sentinel_stopping")
            if "source" in started:
                source.pause()
            if retrain is not None and "retrain" in started:
                retrain.stop()
            if "pipeline" in started:
                pipeline.stop()
            if "writer" in started:
                writer.stop()
            if "source" in started:
                source.stop()
            if "trainer" in started:
                trainer.stop()
            self._log_stats(pipeline, source, writer)
            log.info("sentinel_stopped")
        if self._fatal is not None:
            log.error("sentinel_fatal", error=self._fatal)
            return EXIT_FATAL_CONNECTION
        return EXIT_OK

    @property
    def fatal(self) -> str | None:
        return self._fatal

    def _pipeline(self) -> Pipeline:
        assert self.pipeline is not None
        return self.pipeline

    def _load_models(
        self, registry: ModelRegistry, device: torch.device
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
            models[stream.name] = detector
        return models

    def _send_acks(self, batches: Sequence[WriteBatch]) -> None:
        source = self.source
        if source is None:
            return
        for batch in batches:
            for ack in batch.acks:
                source.ack(ack)

    def _on_fatal(self, reason: str) -> None:
        self._fatal = reason
        self._wake.set()

    def _log_stats(self, pipeline: Pipeline, source: MqttSource, writer: AlertWriter) -> None:
        log.info(
            "stats",
            connected=source.connected,
            queue_depth=pipeline.depth,
            queue_full=pipeline.queue_full,
            rejected=pipeline.rejections.as_dict(),
            writer_error=writer.last_error,
            **pipeline.stats.as_dict(),
        )
