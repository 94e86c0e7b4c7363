"""Prometheus metrics, read from the components' own counters at scrape time.

The pipeline, the source and the writer already count what they do (``PipelineStats``,
``RejectionLog``, ``Source.status()``, ``AlertWriter.write_errors``); a custom collector
reads those when ``/metrics`` is scraped, so there is one set of numbers and no second
bookkeeping on the hot path. Only the scoring latency is observed as it happens (a
histogram needs every observation).

``RETRAINING_RUNS`` is process-wide so that any code that trains a model (the cold start
here, scheduled retraining elsewhere) can count a run with :func:`record_retraining`.
``stats_dict`` builds the same numbers as a plain dict, for a periodic stats message.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from sentinel import __version__

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from sentinel.ingest.source import Source
    from sentinel.retrain.reservoir import ReservoirTap
    from sentinel.store import AlertWriter
    from sentinel.worker.pipeline import Pipeline

__all__ = [
    "RETRAINING_RUNS",
    "Metrics",
    "directory_bytes",
    "record_retraining",
    "stats_dict",
]

# Process-wide: other modules count their training runs here (see record_retraining).
RETRAINING_RUNS = Counter(
    "sentinel_retraining_runs",
    "Model training runs by stream, trigger (cold_start, scheduled, drift, manual) and "
    "outcome (activated, rejected, failed).",
    ["stream", "trigger", "outcome"],
    registry=None,
)

# Scoring a pass's windows of one stream takes ~1 ms per few hundred windows on a CPU; the
# buckets reach far enough to see a Jetson's first CUDA call or a stalled CPU.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def record_retraining(stream: str, outcome: str, trigger: str = "cold_start") -> None:
    """Count one training run: ``outcome`` activated, rejected or failed."""
    RETRAINING_RUNS.labels(stream=stream, trigger=trigger, outcome=outcome).inc()


def _copy(mapping: Mapping[Any, int]) -> dict[Any, int]:
    # The worker thread may add a key while a scrape copies: retry rather than lock.
    for _ in range(5):
        try:
            return dict(mapping)
        except RuntimeError:
            continue
    return {}


def directory_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (0 when it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # removed while we walked
    return total


class Metrics:
    """One daemon's metrics: its own registry, filled by a collector over live components."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.scoring_seconds = Histogram(
            "sentinel_scoring_seconds",
            "Seconds to score one pass's windows of a stream (one batched forward pass).",
            ["stream"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "sentinel_config_reloads",
            "SIGHUP reloads by result (applied, unchanged, refused).",
            ["result"],
            registry=self.registry,
        )
        self.registry.register(RETRAINING_RUNS)
        self.registry.register(ProcessCollector(registry=None))
        self._collector = _ComponentCollector(state_dir)
        self.registry.register(self._collector)

    def attach(
        self,
        pipeline: Pipeline,
        source: Source,
        writer: AlertWriter,
        reservoir: ReservoirTap | None = None,
    ) -> None:
        """Start reporting these components (before that, only process metrics)."""
        self._collector.components = (pipeline, source, writer)
        self._collector.reservoir = reservoir
        pipeline.on_scored = self.observe_scoring

    def stats(self) -> dict[str, Any] | None:
        """``stats_dict`` of the attached components (None before the daemon has them)."""
        components = self._collector.components
        return stats_dict(*components) if components is not None else None

    def observe_scoring(self, stream: str, windows: int, seconds: float) -> None:
        self.scoring_seconds.labels(stream=stream).observe(seconds)


class _ComponentCollector(Collector):
    def __init__(self, state_dir: Path | None) -> None:
        self.components: tuple[Pipeline, Source, AlertWriter] | None = None
        self.reservoir: ReservoirTap | None = None  # with retraining on
        self._state_dir = state_dir
        self._started = time.time()

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily("sentinel_build", "Sentinel's version and Python.")
        info.add_metric([], {"version": __version__, "python": platform.python_version()})
        yield info
        yield GaugeMetricFamily(
            "sentinel_start_time_seconds", "When the daemon started (Unix time).", self._started
        )
        if self._state_dir is not None:
            yield GaugeMetricFamily(
                "sentinel_state_dir_bytes",
                "Bytes of files under the state directory (models, SQLite, snapshots).",
                directory_bytes(self._state_dir),
            )
        if self.components is None:
            return
        pipeline, source, writer = self.components
        yield from _pipeline_metrics(pipeline)
        connection = source.status()  # named by the source: sentinel_mqtt_connected, ...
        yield GaugeMetricFamily(
            f"sentinel_{connection.name}_connected",
            "1 while connected to the broker.",
            int(connection.connected),
        )
        yield CounterMetricFamily(
            f"sentinel_{connection.name}_connects",
            "Successful connections to the broker.",
            connection.connects,
        )
        yield GaugeMetricFamily(
            "sentinel_writer_queue_depth",
            "Batches waiting for the database writer.",
            writer.pending,
        )
        yield CounterMetricFamily(
            "sentinel_database_write_errors",
            "Failed database commits (each is retried; nothing is dropped).",
            writer.write_errors,
        )
        yield CounterMetricFamily(
            "sentinel_database_read_errors",
            "Failed reads of devices' stored progress by the pipeline worker (each retried; "
            "the worker waits meanwhile).",
            pipeline.recall_errors,
        )
        yield GaugeMetricFamily(
            "sentinel_database_up",
            "0 while the last database commit, or the worker's last read, failed; else 1.",
            int(writer.last_error is None and pipeline.recall_error is None),
        )
        if self.reservoir is not None:
            lost = CounterMetricFamily(
                "sentinel_reservoir_lost_readings",
                "Readings the retraining reservoir could not store (a full disk, an "
                "unwritable state directory), by stream: they will never train a model.",
                labels=["stream"],
            )
            for stream, n in sorted(self.reservoir.lost.items()):
                lost.add_metric([stream], n)
            yield lost


def _pipeline_metrics(pipeline: Pipeline) -> Iterator[Metric]:
    stats = pipeline.stats
    yield CounterMetricFamily("sentinel_messages", "MQTT messages taken in.", stats.messages)
    yield CounterMetricFamily(
        "sentinel_readings", "Readings accepted (in order, parsed).", stats.readings
    )
    dropped = CounterMetricFamily(
        "sentinel_readings_dropped", "Input skipped, by reason.", labels=["reason"]
    )
    counts = {str(k): v for k, v in _copy(pipeline.rejections.counts).items()}
    if pipeline.queue_full:
        counts["queue_full"] = counts.get("queue_full", 0) + pipeline.queue_full
    for reason, n in sorted(counts.items()):
        dropped.add_metric([reason], n)
    yield dropped
    yield GaugeMetricFamily(
        "sentinel_queue_depth", "Deliveries waiting for the pipeline worker.", pipeline.depth
    )
    devices = GaugeMetricFamily(
        "sentinel_devices",
        "Devices held in memory, by stream (refused beyond the stream's max_devices).",
        labels=["stream"],
    )
    for stream, held in sorted(pipeline.devices_held().items()):
        devices.add_metric([stream], held)
    yield devices
    yield CounterMetricFamily(
        "sentinel_devices_evicted",
        "Devices whose state left memory after ingest.device_idle without a reading.",
        stats.evicted,
    )
    windows = CounterMetricFamily(
        "sentinel_windows", "Windows completed, by outcome.", labels=["outcome"]
    )
    windows.add_metric(["scored"], stats.scored)
    windows.add_metric(["unscored"], stats.windows_unscored)  # no model yet
    yield windows
    yield CounterMetricFamily(
        "sentinel_windows_anomalous", "Scored windows above their threshold.", stats.anomalous
    )
    yield CounterMetricFamily(
        "sentinel_windows_recurring",
        "Scored windows above their threshold judged normal: a device's recurring excursion.",
        stats.recurring,
    )
    yield CounterMetricFamily(
        "sentinel_windows_relation_broken",
        "Scored windows where a feature left the device's learnt relations to its other "
        "features (the relation check).",
        stats.relation_broken,
    )
    alerts = CounterMetricFamily("sentinel_alerts", "Alert changes, by event.", labels=["event"])
    alerts.add_metric(["opened"], stats.alerts_opened)
    alerts.add_metric(["reopened"], stats.alerts_reopened)  # within alerts.cooldown
    alerts.add_metric(["closed"], stats.alerts_closed)
    yield alerts
    yield CounterMetricFamily(
        "sentinel_batch_errors", "Pipeline passes that failed (logged).", stats.batch_errors
    )
    model = GaugeMetricFamily(
        "sentinel_model_active",
        '1 for the model version each stream scores with; a stream without a model has version="".',
        labels=["stream", "version"],
    )
    for stream, version in sorted(pipeline.model_versions().items()):
        model.add_metric([stream, version or ""], 1 if version else 0)
    yield model


def stats_dict(pipeline: Pipeline, source: Source, writer: AlertWriter) -> dict[str, Any]:
    """The daemon's numbers as plain JSON-safe data (for a periodic ``<prefix>/stats``)."""
    counts = {str(k): v for k, v in _copy(pipeline.rejections.counts).items()}
    if pipeline.queue_full:
        counts["queue_full"] = counts.get("queue_full", 0) + pipeline.queue_full
    connection = source.status()
    return {
        "ts": time.time(),
        "version": __version__,
        f"{connection.name}_connected": connection.connected,
        "queue_depth": pipeline.depth,
        "writer_queue_depth": writer.pending,
        "database_ok": writer.last_error is None,
        "database_write_errors": writer.write_errors,
        "dropped": counts,
        "models": pipeline.model_versions(),
        **pipeline.stats.as_dict(),
    }
