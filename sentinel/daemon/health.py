"""What ``/healthz`` reports, and the watchdog's idea of progress (served by
``sentinel.daemon.server`` with the REST API, ``sentinel.api``).

Health is judged from the components' own state: the source's connection, the writer's last
commit and a periodic ``SELECT 1`` probe of the database, whether every stream has a model,
and whether the pipeline worker is still taking passes. Anything wrong makes ``/healthz``
answer 503 with a JSON body naming each problem, so a probe, a load balancer or a person
with curl sees *why*.

The systemd watchdog must not be fed just because the process is alive: ``Progress`` says
whether the pipeline moved since it was last asked -- messages were taken in, or it is idle
with nothing queued while the source is connected -- and its worker thread has taken a pass
recently. A daemon wedged in a deadlock, or cut off from its broker for longer than
``WatchdogSec=``, stops feeding the watchdog and systemd restarts it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import text

if TYPE_CHECKING:
    from sentinel.cluster import PartitionOwnership
    from sentinel.config import ColdStartConfig
    from sentinel.ingest.source import Source
    from sentinel.store import AlertStore, AlertWriter
    from sentinel.worker.pipeline import Pipeline

__all__ = ["DatabaseProbe", "Health", "HealthReport", "Progress"]

log = structlog.get_logger(__name__)

# The worker wakes at least every 0.1 s; a pass that has not come round for this long is
# stuck (or blocked on a writer that cannot commit).
STALL_SECONDS = 30.0


# A stream's cold start so far: (readings collected, seconds of its time they cover), or
# None where it collects nothing (it has a model, or waits for one trained elsewhere).
Collected = Callable[[str], "tuple[int, float] | None"]


def cold_start_problem(stream: str, rule: ColdStartConfig, collected: int, covered: float) -> str:
    """``/healthz``'s problem line for a stream still without a model: how far its cold
    start is, so an hour's wait for ``cold_start.span`` reads as one."""
    progress = rule.progress(collected, covered)
    if progress >= 1.0:
        return (
            f"model: no model yet for stream {stream!r}: cold start collected, training "
            "(log: training_progress, retrain_finished)"
        )
    wants = f"{collected:,} readings ({rule.readings:,} needed)"
    if rule.span > 0:
        wants += f" covering {covered:,.0f} s of its time ({rule.span:,.0f} needed)"
    return f"model: no model yet for stream {stream!r}: cold start {progress:.0%}, {wants}"


@dataclass(frozen=True)
class HealthReport:
    status: str  # ok | degraded | starting | stopping
    problems: tuple[str, ...] = ()
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def http_status(self) -> int:
        return 200 if self.status == "ok" else 503

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "problems": list(self.problems), "checks": self.checks}


class DatabaseProbe:
    """``SELECT 1`` every ``interval`` seconds on its own thread (a hung database must not
    hang the watchdog or an HTTP request)."""

    def __init__(self, store: AlertStore, interval: float) -> None:
        self._store = store
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self.checked_at: float | None = None

    def check(self) -> None:
        try:
            with self._store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as err:  # noqa: BLE001 - any driver error means "unreachable"
            if self.error is None:
                log.warning("database_probe_failed", error=str(err).splitlines()[0][:300])
            self.error = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        else:
            if self.error is not None:
                log.info("database_probe_recovered")
            self.error = None
        self.checked_at = time.time()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sentinel-db-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.check()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)


class Health:
    """Judges health from the live components (attached once they exist)."""

    def __init__(self) -> None:
        self.phase = "starting"  # starting | running | stopping
        self.fatal: str | None = None
        self._components: tuple[Pipeline, Source, AlertWriter] | None = None
        self._probe: DatabaseProbe | None = None
        self._cold_start: tuple[ColdStartConfig, Collected] | None = None
        self.cluster: PartitionOwnership | None = None  # with [cluster] on

    def attach(
        self,
        pipeline: Pipeline,
        source: Source,
        writer: AlertWriter,
        probe: DatabaseProbe | None = None,
        cold_start: tuple[ColdStartConfig, Collected] | None = None,
    ) -> None:
        """``cold_start``: the rule and where each stream's collection stands, for the
        problem line of a stream without a model."""
        self._components = (pipeline, source, writer)
        self._probe = probe
        self._cold_start = cold_start

    def report(self) -> HealthReport:
        if self._components is None:
            return HealthReport("starting", ("starting up",))
        pipeline, source, writer = self._components
        connection = source.status()
        problems: list[str] = []
        if self.fatal:
            problems.append(f"fatal: {self.fatal}")
        if not connection.connected:
            problems.append(f"{connection.name}: not connected to the broker")
        db_error = writer.last_error or (self._probe.error if self._probe else None)
        if db_error:
            problems.append(f"database: unreachable or failing: {db_error}")
        models = pipeline.model_versions()
        collecting: dict[str, dict[str, Any]] = {}
        for stream in (s for s, v in models.items() if not v):
            got = self._cold_start[1](stream) if self._cold_start is not None else None
            if got is None or self._cold_start is None:
                problems.append(f"model: no model yet for stream {stream!r}")
                continue
            rule, (collected, covered) = self._cold_start[0], got
            problems.append(cold_start_problem(stream, rule, collected, covered))
            collecting[stream] = {
                "collected": collected,
                "covered_s": round(covered, 1),
                "progress": round(rule.progress(collected, covered), 3),
            }
        stalled = time.monotonic() - pipeline.heartbeat
        if not pipeline.alive:
            problems.append("pipeline: worker thread is not running")
        elif stalled > STALL_SECONDS:
            problems.append(f"pipeline: no pass for {stalled:.0f} s (writer blocked?)")
        checks = {
            connection.name: {"connected": connection.connected, "connects": connection.connects},
            "database": {
                "ok": db_error is None,
                "error": db_error,
                "write_errors": writer.write_errors,
                "probed_at": self._probe.checked_at if self._probe else None,
            },
            "models": models,
            "cold_start": collecting,
            # devices whose alerts wait for their first cold_start.span (not a problem)
            "learning_devices": pipeline.learning_devices(),
            "pipeline": {
                "alive": pipeline.alive,
                "seconds_since_pass": round(stalled, 3),
                "queue_depth": pipeline.depth,
                "writer_queue_depth": writer.pending,
                "readings": pipeline.stats.readings,
            },
        }
        cluster = self.cluster
        if cluster is not None:
            checks["cluster"] = cluster.status()
            if not cluster.connected:
                problems.append("cluster: no session on the database: owns no partition")
        if self.phase != "running":
            return HealthReport(self.phase, (self.phase, *problems), checks)
        return HealthReport("degraded" if problems else "ok", tuple(problems), checks)


class Progress:
    """Whether the pipeline moved since the last call: the watchdog's feeding rule."""

    def __init__(self, pipeline: Pipeline, source: Source) -> None:
        self._pipeline = pipeline
        self._source = source
        self._messages = pipeline.stats.messages

    def check(self, now: float | None = None) -> bool:
        pipeline = self._pipeline
        now = time.monotonic() if now is None else now
        if not pipeline.alive or now - pipeline.heartbeat > STALL_SECONDS:
            return False
        messages = pipeline.stats.messages
        took_in = messages != self._messages
        self._messages = messages
        idle_connected = self._source.connected and pipeline.depth == 0
        return took_in or idle_connected
