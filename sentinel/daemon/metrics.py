"""Prometheus metrics, read from the components' own counters at scrape time.

The pipeline, the source and the writer already count what they do (``PipelineStats``,
``RejectionLog``, ``Source.status()``, ``AlertWriter.write_errors``); a custom collector
reads those when ``/metrics`` is scraped, so there is one set of numbers and no second
bookkeeping on the hot path. Only the scoring latency is observed as it happens (a
histogram needs every observation).

``RETRAINING_RUNS`` is process-wide so that any code that trains a model (the cold start
here, scheduled retraining elsewhere) can count a run with :func:`record_retraining`.
``stats_dict`` builds the same numbers as a plain dict, for a periodic stats message.

Per-device series (issue #25) are bounded: ``DeviceSeries`` gives the first
``health.metrics_devices`` devices series of their own and counts every other device in its
stream's ``device=""`` series. Counters carry no ``_created`` samples (one more series each,
which no dashboard reads): ``Metrics`` turns them off process-wide.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from sentinel import __version__

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from sentinel.cluster import PartitionOwnership
    from sentinel.config import ColdStartConfig
    from sentinel.daemon.health import Collected
    from sentinel.ingest.source import Source
    from sentinel.records import ScoreBucket
    from sentinel.retrain.reservoir import ReservoirTap
    from sentinel.store import AlertWriter
    from sentinel.worker.pipeline import Pipeline

__all__ = [
    "OTHER_DEVICES",
    "RETRAINING_RUNS",
    "DeviceSeries",
    "Metrics",
    "directory_bytes",
    "record_retraining",
    "stats_dict",
]

# Process-wide: other modules count their training runs here (see record_retraining).
RETRAINING_RUNS = Counter(
    "sentinel_retraining_runs",
    "Model training runs by stream, trigger (cold_start, schedule, manual) and outcome "
    "(activated, or the run's status when no model was installed: rejected, skipped, failed).",
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


OTHER_DEVICES = ""  # the device label of the devices beyond the cap (no device is named "")


@dataclass(slots=True)
class _DeviceCounts:
    windows: int = 0
    anomalous: int = 0
    score: float = 0.0  # highest score of the device's latest pass
    ratio: float = 0.0  # highest score / threshold of its latest pass


class DeviceSeries:
    """Per-device windows, anomalous windows and latest score, for at most ``cap`` devices.

    The first ``cap`` devices to have a window scored get series of their own and keep them
    until the daemon stops; the windows of every other device add to its stream's
    ``device=""`` counters (no score gauges: a latest score of many devices means nothing).
    ``observe`` runs on the pipeline worker once per pass; ``collect`` on a scrape.
    """

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._lock = threading.Lock()
        self._named: dict[tuple[str, str], _DeviceCounts] = {}
        self._other: dict[str, _DeviceCounts] = {}

    def observe(self, buckets: Sequence[ScoreBucket]) -> None:
        with self._lock:
            for b in buckets:
                key = (b.stream, b.device)
                counts = self._named.get(key)
                if counts is None and len(self._named) < self._cap:
                    counts = self._named[key] = _DeviceCounts()
                if counts is None:
                    counts = self._other.setdefault(b.stream, _DeviceCounts())
                counts.windows += b.windows
                counts.anomalous += b.anomalous
                counts.score, counts.ratio = b.max_score, b.max_ratio

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            named = [(k, _DeviceCounts(c.windows, c.anomalous, c.score, c.ratio))
                     for k, c in sorted(self._named.items())]  # fmt: skip
            other = [(s, c.windows, c.anomalous) for s, c in sorted(self._other.items())]
        labels = ["stream", "device"]
        windows = CounterMetricFamily(
            "sentinel_device_windows",
            "Windows scored, by device (health.metrics_devices devices; the rest of a "
            'stream in device="").',
            labels=labels,
        )
        anomalous = CounterMetricFamily(
            "sentinel_device_windows_anomalous",
            "Scored windows judged anomalous (by score or by a spike, level, stuck, noise, "
            "period, constant or relation check), by device (health.metrics_devices devices; "
            'the rest of a stream in device="").',
            labels=labels,
        )
        score = GaugeMetricFamily(
            "sentinel_device_score",
            "Highest window score of the device's latest scoring pass (model units), for "
            "the health.metrics_devices devices with series of their own.",
            labels=labels,
        )
        ratio = GaugeMetricFamily(
            "sentinel_device_score_ratio",
            "Highest window score / threshold of the device's latest scoring pass (above 1: "
            "over the line), for the health.metrics_devices devices with series of their own.",
            labels=labels,
        )
        for (stream, device), c in named:
            windows.add_metric([stream, device], c.windows)
            anomalous.add_metric([stream, device], c.anomalous)
            score.add_metric([stream, device], c.score)
            ratio.add_metric([stream, device], c.ratio)
        for stream, n, flagged in other:
            windows.add_metric([stream, OTHER_DEVICES], n)
            anomalous.add_metric([stream, OTHER_DEVICES], flagged)
        yield from (windows, anomalous, score, ratio)


class Metrics:
    """One daemon's metrics: its own registry, filled by a collector over live components."""

    def __init__(self, state_dir: Path | None = None, *, max_devices: int = 100) -> None:
        # Process-wide in prometheus_client; a daemon has one registry anyway.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in 0.26
        self.devices = DeviceSeries(max_devices)
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
        self._collector.device_series = self.devices
        self.registry.register(self._collector)

    @property
    def cluster(self) -> PartitionOwnership | None:
        return self._collector.cluster

    @cluster.setter
    def cluster(self, cluster: PartitionOwnership | None) -> None:
        """Report this cluster member's partitions (``sentinel_cluster_*``)."""
        self._collector.cluster = cluster

    def attach(
        self,
        pipeline: Pipeline,
        source: Source,
        writer: AlertWriter,
        reservoir: ReservoirTap | None = None,
        cold_start: tuple[ColdStartConfig, Collected] | None = None,
    ) -> None:
        """Start reporting these components (before that, only process metrics);
        ``cold_start``: the rule and where each stream's collection stands."""
        self._collector.components = (pipeline, source, writer)
        self._collector.reservoir = reservoir
        self._collector.cold_start = cold_start
        pipeline.on_scored = self.observe_scoring
        pipeline.on_history = self.devices.observe

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
        self.cluster: PartitionOwnership | None = None  # with [cluster] on
        self.device_series: DeviceSeries | None = None
        self.cold_start: tuple[ColdStartConfig, Collected] | None = None
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
        if self.device_series is not None:
            yield from self.device_series.collect()
        if self.cluster is not None:
            yield from _cluster_metrics(self.cluster)
        if self.components is None:
            return
        pipeline, source, writer = self.components
        yield from _pipeline_metrics(pipeline)
        if self.cold_start is not None:
            yield _cold_start_metric(pipeline, *self.cold_start)
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
        yield CounterMetricFamily(
            "sentinel_history_pruned_rows",
            "Score history rows (device-minutes) deleted after history.retention.",
            writer.history_pruned,
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
        "sentinel_windows_anomalous",
        "Scored windows judged anomalous: above their threshold, or flagged by the spike, "
        "level, stuck, noise, period, constant or relation check.",
        stats.anomalous,
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
    open_alerts = GaugeMetricFamily(
        "sentinel_alerts_open",
        "Alerts open now (acknowledged ones included, resolved ones not), by stream.",
        labels=["stream"],
    )
    counts = pipeline.open_alerts()
    for stream in sorted(pipeline.model_versions()):
        open_alerts.add_metric([stream], counts.get(stream, 0))
    yield open_alerts
    learning = GaugeMetricFamily(
        "sentinel_devices_learning",
        "Devices judged with alerts suppressed until cold_start.span after their first "
        "reading (joined after the model, or the first model came before their span), by "
        "stream.",
        labels=["stream"],
    )
    for stream, count in sorted(pipeline.learning_devices().items()):
        learning.add_metric([stream], count)
    yield learning
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


def _cold_start_metric(pipeline: Pipeline, rule: ColdStartConfig, collected: Collected) -> Metric:
    progress = GaugeMetricFamily(
        "sentinel_cold_start_progress",
        "How far the cold start of each stream without a model is, 0 to 1: the slower of "
        "its readings (cold_start.readings) and the span of its time they cover "
        "(cold_start.span); absent for a stream with a model.",
        labels=["stream"],
    )
    for stream, version in sorted(pipeline.model_versions().items()):
        got = None if version else collected(stream)
        if got is not None:
            progress.add_metric([stream], rule.progress(*got))
    return progress


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


def _cluster_metrics(cluster: PartitionOwnership) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "sentinel_cluster_partitions", "Partitions this member owns now.", len(cluster.owned)
    )
    yield GaugeMetricFamily(
        "sentinel_cluster_members", "Members of the group this member sees.", len(cluster.members)
    )
    yield GaugeMetricFamily(
        "sentinel_cluster_publisher",
        "1 while this member holds the outbox publisher's lock.",
        int(cluster.publisher),
    )
    yield CounterMetricFamily(
        "sentinel_cluster_rebalances",
        "Partitions this member has taken or given since it started.",
        cluster.rebalances,
    )
    yield CounterMetricFamily(
        "sentinel_cluster_fenced",
        "Partitions' parts of write transactions rolled back and left unacknowledged "
        "because another member had taken the partition (its fencing epoch moved on).",
        cluster.fenced,
    )
