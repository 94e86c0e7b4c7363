"""End-to-end ingest throughput against the ceiling that bounds it, in one run (issue #23).

Every mode times Sentinel and its ceiling on the same private Mosquitto in the same run;
timings on shared machines are noisy, so read the ratio (the last line).

* live (the default): messages published while the subscriber runs. The ceiling is a bare
  paho subscriber (QoS 1, automatic acks, no work per message). One Python publisher feeds
  both, so on a small machine the publisher, not the subscriber, is often the bound.
* ``--drain``: the broker holds a backlog of ``--messages`` for a persistent session (MQTT 5,
  clean_start False, a session expiry), published while the subscriber is away. The ceiling
  is a bare paho subscriber draining its backlog, from first message to last; the daemon
  drains the same backlog from the first delivery its pipeline is offered to the commit of
  the last reading (model load and connect excluded). Both announce the daemon's Receive
  Maximum (``ingest.queue_size``); Mosquitto queues without limit (``max_queued_messages 0``).
  ``--protocol 3.1.1`` drains on MQTT 3.1.1 instead (clean_session False; the in-flight
  window is then Mosquitto's ``max_inflight_messages``, set to the same size).
* ``--batched``: a drain in which each message is a JSON array of ``--batch`` readings of
  one device, reported in readings/s against the model alone (``detector.score``) scoring
  the same windows in the same run.
* ``--latency``: publish -> committed latency (p50, p99) at half the maximum rate, which a
  drain of the same messages measures first (or ``--rate`` gives). A paced publisher in a
  child process (so it takes no GIL time from the daemon) notes each publish time; the
  k-th message acknowledged is the k-th published (one publisher, QoS 1, in order), and
  its latency ends when the commit that acknowledges it is reported.
* ``--warm STEPS`` (drains, latency): the daemon judges as it does past its cold start:
  its model trained on the simulated fleet's own first STEPS readings a device (fault-free)
  and its judge's saved state warmed with them, the messages following them in time.
  Without it the model is one of 4 other pumps and every device's judge starts cold: about
  two thirds of the windows are then judged anomalous, and the checks that learn a device
  start from nothing. The judge line prints the share either way.
* ``--profile DIR`` (drains): after the timed runs, one more daemon drain with cProfile (CPU time,
  ``time.thread_time``) on its MQTT network, pipeline and writer threads; the profiles are
  written to DIR and the top entries printed. cProfile slows Python code unevenly: read
  shares, not seconds; /proc's CPU time per thread (printed for every drain) is the check.

    .venv/bin/python benchmarks/throughput.py [--drain | --batched | --latency] [--devices 20]
        [--steps 1000] [--messages 50000] [--batch 100] [--rate R] [--protocol 5|3.1.1]
        [--repeat 3] [--warm STEPS] [--profile DIR]
        [--sqlite-durability full|unsafe-on-power-loss] [--postgres URL]
        [--flush-interval S [S ...]]

``--postgres URL`` (a PostgreSQL server, e.g. ``postgresql+psycopg://postgres@127.0.0.1/x``)
commits to PostgreSQL instead of SQLite: each daemon run gets a database of its own on that
server, created for it and dropped when the benchmark ends.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import torch
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import create_engine, make_url, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.config import DatabaseConfig, ModelConfig, SentinelConfig
from sentinel.daemon.app import SentinelApp
from sentinel.ingest.mqtt_process import ProcessMqttSource
from sentinel.model import ModelRegistry, scoring_device, train_detector, training_options
from sentinel.records import Delivery, Reading, WriteBatch
from sentinel.store.writer import AlertWriter
from sentinel.worker.pipeline import Pipeline
from simulators.broker import PrivateBroker, Publisher
from simulators.fleet import FEATURES, FleetSimulator, encode
from tests.e2e_helpers import (
    HOP,
    WINDOW,
    daemon_config,
    install_model,
    readings_committed,
    train_fleet_model,
)

TOPIC = "plant/+/pump"
RECEIVE_MAXIMUM = 2_000  # ingest.queue_size's default, which the daemon announces
WAIT = 600.0  # seconds any one phase may take on a loaded machine before the run fails


@dataclass(frozen=True)
class Workload:
    """The messages of one run and the readings they carry, per device in time order."""

    messages: list[tuple[str, bytes]]
    readings: dict[str, list[list[float]]]
    # --warm: each device's readings before the messages (fault-free), which the model is
    # trained on and the judge warmed with, as the daemon's cold start does
    before: dict[str, list[Reading]] = field(default_factory=dict)

    @property
    def reading_count(self) -> int:
        return sum(len(rows) for rows in self.readings.values())


def workload(devices: int, steps: int, seed: int, batch: int = 1, warm: int = 0) -> Workload:
    """``steps`` readings of each device; ``batch`` > 1 packs that many consecutive readings
    of one device into one JSON array message (the ``json`` format's array form).
    ``warm`` > 0: ``warm`` fault-free readings of each device come first, kept apart
    (``Workload.before``); the messages' readings follow them, their first 300 s
    fault-free too."""
    sim = FleetSimulator(devices, seed=seed, anomaly_rate=2.0, warmup=300.0 + warm)
    readings: dict[str, list[list[float]]] = {}
    messages: list[tuple[str, bytes]] = []
    pending: dict[str, list[Any]] = {}
    before: dict[str, list[Reading]] = {}
    seq = 0
    steps_of = sim.steps()
    for _, step in zip(range(warm), steps_of, strict=False):
        for reading in step:
            values = tuple(reading.values[f] for f in FEATURES)
            before.setdefault(reading.device, []).append(
                Reading("pump", reading.device, reading.ts, values)
            )
            seq += 1
    for _, step in zip(range(steps), steps_of, strict=False):
        for reading in step:
            readings.setdefault(reading.device, []).append([reading.values[f] for f in FEATURES])
            topic = f"plant/{reading.device}/pump"
            if batch == 1:
                messages.append((topic, encode(reading, seq, "json")))
            else:
                group = pending.setdefault(reading.device, [])
                group.append(json.loads(encode(reading, seq, "json")))
                if len(group) == batch:
                    messages.append((topic, json.dumps(group, separators=(",", ":")).encode()))
                    pending[reading.device] = []
            seq += 1
    for device, group in pending.items():
        if group:
            topic = f"plant/{device}/pump"
            messages.append((topic, json.dumps(group, separators=(",", ":")).encode()))
    return Workload(messages, readings, before)


def steady_state(load: Workload, out: Path) -> Path:
    """For a workload with readings ``before`` its messages (``--warm``): a model trained on
    them, as the daemon's cold start trains its first model on its own fleet, and the judge
    warmed with them (thresholds, spike memory, relations: ``Pipeline.warm_up``), saved as
    the daemon saves it at a stop, into ``out``: ``models/`` (returned) and, beside it,
    ``thresholds.json``, both of which ``daemon_setup`` copies into each run's state
    directory: every run starts where a daemon that had judged those readings would.
    ``out`` already holding both is reused (``worker_pass.py --models DIR``: two trees
    compared on the same model and state)."""
    models = out / "models"
    if (out / "thresholds.json").exists() and ModelRegistry(models).active_version("pump"):
        return models
    config = SentinelConfig.model_validate(
        daemon_config(out, SimpleNamespace(host="127.0.0.1", port=1883, protocol="5"))
    )
    detector = train_detector(
        [np.asarray([r.values for r in rows], dtype=np.float32) for rows in load.before.values()],
        training_options(config, "pump"),
        device=torch.device("cpu"),
    )
    registry = ModelRegistry(models)
    registry.save(detector)
    registry.activate("pump", detector.version)
    pipeline = Pipeline(
        config,
        sink=lambda batch: None,
        request_training=lambda job: None,
        models={"pump": registry.load_active("pump", scoring_device(config.model))},
        snapshot_path=out / "thresholds.json",
        cold_start_buffer=False,
    )
    pipeline.warm_up("pump", [r for rows in load.before.values() for r in rows])
    pipeline.process([])  # applies the warm-up here, on this thread
    pipeline.start()
    pipeline.stop()  # saves the judge's state, as a daemon's stop does
    assert (out / "thresholds.json").exists()
    return models


def publish(broker: PrivateBroker, messages: list[tuple[str, bytes]]) -> None:
    publisher = Publisher(broker.url, protocol=broker.protocol)
    publisher.start()
    for topic, payload in messages:
        publisher.publish(topic, payload)
    assert publisher.finish(WAIT) == 0


# -- the bare subscriber -----------------------------------------------------------------


class BareSubscriber:
    """A paho subscriber doing no work per message: automatic QoS 1 acks, a counter, and
    the times of its first and its ``expect``-th message."""

    def __init__(
        self, broker: PrivateBroker, client_id: str, expect: int, protocol: str = "5"
    ) -> None:
        self.broker = broker
        self.v5 = protocol == "5"
        self.expect = expect
        self.received = 0
        self.first = self.last = 0.0
        self.done = threading.Event()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            clean_session=None if self.v5 else False,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        if self.received == 0:
            self.first = now
        self.received += 1
        if self.received == self.expect:
            self.last = now
            self.done.set()

    def connect(self, *, subscribe: bool) -> None:
        if subscribe:
            self.client.on_connect = lambda c, *args: c.subscribe(TOPIC, 1)
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 3600
            properties.ReceiveMaximum = RECEIVE_MAXIMUM
            self.client.connect(
                self.broker.host, self.broker.port, clean_start=False, properties=properties
            )
        else:
            self.client.connect(self.broker.host, self.broker.port)
        self.client.loop_start()
        if subscribe:
            assert self.subscribed.wait(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def ceiling_live(broker: PrivateBroker, messages: list[tuple[str, bytes]], run: int) -> float:
    sub = BareSubscriber(broker, f"ceiling-live-{run}", len(messages))
    sub.connect(subscribe=True)
    started = time.perf_counter()
    publish(broker, messages)
    assert sub.done.wait(WAIT), f"ceiling run received {sub.received}/{len(messages)}"
    sub.close()
    return len(messages) / (sub.last - started)


def ceiling_drain(
    broker: PrivateBroker, messages: list[tuple[str, bytes]], run: int, protocol: str
) -> float:
    """Subscribe, leave (the broker keeps the session), publish, come back and drain."""
    client_id = f"ceiling-drain-{run}"
    first = BareSubscriber(broker, client_id, 0, protocol)
    first.connect(subscribe=True)
    first.close()
    publish(broker, messages)
    sub = BareSubscriber(broker, client_id, len(messages), protocol)
    sub.connect(subscribe=False)
    assert sub.done.wait(WAIT), f"ceiling drain received {sub.received}/{len(messages)}"
    sub.close()
    return len(messages) / (sub.last - sub.first)


# -- the daemon ----------------------------------------------------------------------------


class TimedApp(SentinelApp):
    """The real daemon, noting when the commit of the ``expect``-th message is reported
    (``on_commit``, which runs after the transaction and sends the acks)."""

    expect = 0
    acked = 0
    last = 0.0
    done: threading.Event
    commits: list[tuple[float, int]]  # (time.monotonic(), messages acknowledged so far)

    def _committed(self, batches: Sequence[WriteBatch]) -> None:
        self.acked += sum(len(b.acks) for b in batches)
        self.commits.append((time.monotonic(), self.acked))
        if self.expect and self.acked >= self.expect and not self.done.is_set():
            self.last = time.perf_counter()
            self.done.set()
        super()._committed(batches)


class FirstOffer:
    """When a pipeline was first offered a delivery: ``Pipeline.offer`` wrapped for a run."""

    def __init__(self) -> None:
        self.at = 0.0

    @contextmanager
    def watching(self) -> Iterator[None]:
        original = Pipeline.offer

        clock = self

        def offer(self: Pipeline, delivery: Delivery, timeout: float | None = None) -> bool:
            if not clock.at:
                clock.at = time.perf_counter()
            return original(self, delivery, timeout)

        Pipeline.offer = offer  # type: ignore[method-assign]
        try:
            yield
        finally:
            Pipeline.offer = original  # type: ignore[method-assign]


class PostgresDatabases:
    """Fresh databases on one PostgreSQL server (``--postgres``), dropped by ``drop_all``."""

    def __init__(self, server: str) -> None:
        admin = make_url(server)
        if admin.drivername == "postgresql":
            admin = admin.set(drivername="postgresql+psycopg")
        self.admin = admin
        self.engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        self.names: list[str] = []

    def new(self) -> str:
        name = f"sentinel_bench_{uuid.uuid4().hex[:12]}"
        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        return self.admin.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self.engine.connect() as conn:
            for name in self.names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.engine.dispose()


POSTGRES: PostgresDatabases | None = None  # set by --postgres
CLIENT_PROCESS: bool | None = None  # --client-process on|off: [mqtt] client_process
FLUSH_INTERVAL: float = DatabaseConfig().flush_interval  # the product default; --flush-interval
FLUSH_MESSAGES: int = DatabaseConfig().flush_messages  # the product default; --flush-messages


def database_line(durability: str) -> str:
    where = "database: PostgreSQL" if POSTGRES else f"sqlite_durability: {durability}"
    return f"{where}, flush_messages: {FLUSH_MESSAGES}"


def daemon_setup(
    broker: PrivateBroker,
    models: Path,
    state: Path,
    client_id: str,
    durability: str,
    protocol: str = "5",
    flush_interval: float | None = None,
) -> tuple[dict[str, Any], str]:
    install_model(models, state)
    if (models.parent / "thresholds.json").exists():  # steady_state's: the judge warm
        shutil.copyfile(models.parent / "thresholds.json", state / "thresholds.json")
    url = POSTGRES.new() if POSTGRES else f"sqlite:///{state / 'sentinel.db'}"
    config = daemon_config(state, broker, database_url=url, client_id=client_id)
    # The product default unless given, not the tests' 0.05.
    config["database"]["flush_interval"] = flush_interval or FLUSH_INTERVAL
    config["database"]["flush_messages"] = FLUSH_MESSAGES
    config["database"]["sqlite_durability"] = durability
    config["ingest"] = {"queue_size": RECEIVE_MAXIMUM}
    config["logging"]["level"] = "warning"
    config["mqtt"]["protocol"] = protocol
    if CLIENT_PROCESS is not None:  # else the product's default
        config["mqtt"]["client_process"] = CLIENT_PROCESS
    return config, url


@contextmanager
def running(config: dict[str, Any], expect: int = 0) -> Iterator[TimedApp]:
    app = TimedApp(SentinelConfig.model_validate(config), stats_interval=3600)
    app.expect, app.done, app.commits = expect, threading.Event(), []
    stop = threading.Event()
    thread = threading.Thread(target=app.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert app.ready.wait(60)
        yield app
    finally:
        stop.set()
        thread.join(60)


def daemon_live(
    broker: PrivateBroker,
    messages: list[tuple[str, bytes]],
    models: Path,
    work: Path,
    run: int,
    durability: str,
) -> tuple[float, float]:
    config, url = daemon_setup(broker, models, work / f"live-{run}", f"live-{run}", durability)
    with running(config, expect=len(messages)) as app:
        assert app.source is not None
        assert app.source.wait_subscribed(30)
        started = time.perf_counter()
        publish(broker, messages)
        assert app.done.wait(WAIT), "daemon did not take everything in"
        assert app.pipeline is not None
        stats = app.pipeline.stats
        ms_per_window = 1e3 * stats.score_seconds / max(stats.scored, 1)
    assert readings_committed(url) == len(messages)
    return len(messages) / (app.last - started), ms_per_window


@dataclass(frozen=True)
class Drain:
    seconds: float  # first delivery offered to last reading committed
    cpu_share: float  # process CPU seconds per wall second from ready to the last commit
    windows: int  # scored by the daemon
    threads: dict[str, float]  # CPU seconds by thread group over the same span
    anomalous: int = 0  # of the windows, judged anomalous


THREAD_GROUPS = (
    ("paho-network", "paho-mqtt-client-"),
    ("pipeline-worker", "sentinel-pipeline"),
    ("db-writer", "sentinel-writer"),
    ("mqtt-reader", "sentinel-mqtt-reader"),
)


def thread_cpu(app: SentinelApp | None = None) -> dict[str, float]:
    """CPU seconds (user + system) so far of this process's threads, by group, from
    /proc (Linux): what each thread used, without a profiler's overhead or bias; with
    ``app``, its MQTT client process's too (``[mqtt] client_process``) as ``mqtt-process``."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    pid = getattr(app.source, "child_pid", None) if app is not None else None
    if pid is not None:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out["mqtt-process"] = (int(fields[11]) + int(fields[12])) / tick
    for thread in threading.enumerate():
        group = next((g for g, prefix in THREAD_GROUPS if thread.name.startswith(prefix)), "other")
        try:
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except OSError:  # ended meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()  # from field 3, the state
        out[group] = out.get(group, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def daemon_drain(
    broker: PrivateBroker,
    work: Workload,
    models: Path,
    state: Path,
    client_id: str,
    durability: str,
    profile: Callable[[], Any] | None = None,
    protocol: str = "5",
) -> Drain:
    """Start the daemon once for its session, stop it, publish, start it again and time
    the drain. ``profile``: a context manager factory active during the second start."""
    config, url = daemon_setup(broker, models, state, client_id, durability, protocol)
    with running(config) as app:
        assert app.source is not None
        assert app.source.wait_subscribed(30)
    publish(broker, work.messages)
    clock = FirstOffer()
    with (
        clock.watching(),
        profile() if profile else _nothing(),
        running(config, expect=len(work.messages)) as app,
    ):
        cpu0, wall0, threads0 = time.process_time(), time.perf_counter(), thread_cpu(app)
        assert app.done.wait(WAIT), f"daemon drain acked {app.acked}/{len(work.messages)}"
        threads = {k: v - threads0.get(k, 0.0) for k, v in thread_cpu(app).items()}
        child = threads.get("mqtt-process", 0.0)  # its CPU counts: a core it takes
        cpu = (time.process_time() - cpu0 + child) / (app.last - wall0)
        assert app.pipeline is not None
        windows = app.pipeline.stats.scored
        anomalous = app.pipeline.stats.anomalous
    assert readings_committed(url) == work.reading_count
    seconds = app.last - clock.at
    return Drain(seconds, cpu, windows, threads, anomalous)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# -- latency -------------------------------------------------------------------------------


def paced_publish(url: str, messages: list[tuple[str, bytes]], rate: float, times: Any) -> None:
    """Publish ``messages`` at ``rate`` per second (in a child process); sends the
    ``time.monotonic()`` of each publish back through ``times`` (a pipe's end)."""
    publisher = Publisher(url)
    publisher.start()
    sent = []
    started = time.monotonic()
    for k, (topic, payload) in enumerate(messages):
        due = started + k / rate
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)  # pacing a publisher, not waiting for a condition
        sent.append(time.monotonic())
        publisher.publish(topic, payload)
    assert publisher.finish(WAIT) == 0
    times.send(sent)


def daemon_latency(
    broker: PrivateBroker,
    work: Workload,
    models: Path,
    state: Path,
    rate: float,
    durability: str,
    flush_interval: float | None = None,
) -> tuple[np.ndarray, float, dict[str, float]]:
    """Seconds from each message's publish to the report of the commit that acked it, the
    rate the publisher kept, and the daemon's CPU seconds by thread group meanwhile
    (``thread_cpu``; the client process's as ``mqtt-process``)."""
    import multiprocessing

    config, _ = daemon_setup(
        broker, models, state, state.name, durability, flush_interval=flush_interval
    )
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    with running(config, expect=len(work.messages)) as app:
        assert app.source is not None
        assert app.source.wait_subscribed(30)
        child = context.Process(
            target=paced_publish, args=(broker.url, work.messages, rate, sender)
        )
        threads0 = thread_cpu(app)
        child.start()
        sent = np.asarray(receiver.recv())
        child.join(WAIT)
        assert app.done.wait(WAIT), f"daemon acked {app.acked}/{len(work.messages)}"
        threads = {k: v - threads0.get(k, 0.0) for k, v in thread_cpu(app).items()}
    at = np.asarray([t for t, _ in app.commits])
    upto = np.asarray([n for _, n in app.commits])
    committed = at[np.searchsorted(upto, np.arange(1, len(sent) + 1))]
    kept = (len(sent) - 1) / float(sent[-1] - sent[0])
    return np.asarray(committed - sent), kept, threads


# -- the model alone -----------------------------------------------------------------------


def model_ceiling(models: Path, work: Workload, score_batch_max: int) -> tuple[float, int]:
    """Seconds the active model takes to score every window of ``work`` (each device's
    WINDOW-long windows every HOP readings), in passes of 4096 windows; and their count.
    Loaded on the runtime the daemon picks with the default config (NumPy on the CPU)."""
    device = scoring_device(ModelConfig())
    detector = ModelRegistry(models).load_active("pump", device, score_batch_max)
    assert detector is not None
    parts = []
    for rows in work.readings.values():
        values = np.asarray(rows, dtype=np.float32)
        view = np.lib.stride_tricks.sliding_window_view(values, WINDOW, axis=0)
        parts.append(view[::HOP].transpose(0, 2, 1))
    windows = np.ascontiguousarray(np.concatenate(parts))
    started = time.perf_counter()
    for i in range(0, len(windows), 4096):
        detector.score(windows[i : i + 4096])
    return time.perf_counter() - started, len(windows)


# -- profiling -----------------------------------------------------------------------------


class ThreadProfiles:
    """cProfile with a CPU-time clock on the daemon's network, pipeline and writer threads,
    by wrapping their thread functions while active; ``report`` sums them by stage.

    (py-spy ``--gil`` was tried for this too: it gave the network thread 34 % of a batched
    drain that /proc's per-thread CPU time, and cProfile, put at 18-20 %: it counts the
    GIL's last holder, and a thread waiting to take the GIL back keeps that name.)"""

    TARGETS: tuple[tuple[str, type, str], ...] = (
        ("paho-network", mqtt.Client, "_thread_main"),
        ("pipeline-worker", Pipeline, "_run"),
        ("db-writer", AlertWriter, "_run"),
        ("mqtt-reader", ProcessMqttSource, "_read_loop"),
    )

    def __init__(self, out: Path) -> None:
        self.out = out
        self.profiles: dict[str, cProfile.Profile] = {}

    @contextmanager
    def active(self) -> Iterator[None]:
        originals = [(cls, attr, getattr(cls, attr)) for _, cls, attr in self.TARGETS]
        for (name, cls, attr), (_, _, original) in zip(self.TARGETS, originals, strict=True):
            setattr(cls, attr, self._wrap(name, original))
        try:
            yield
        finally:
            for cls, attr, original in originals:
                setattr(cls, attr, original)

    def stages(self, totals: dict[str, float]) -> dict[str, float]:
        """CPU seconds by pipeline stage: the cumulative times of the functions that mark
        each stage (file, function name), the rest of each thread its own stage."""

        def cum(thread: str, file: str, *functions: str) -> float:
            profile = self.profiles.get(thread)
            if profile is None:
                return 0.0
            entries = pstats.Stats(profile).stats  # type: ignore[attr-defined]
            return float(
                sum(
                    v[3]
                    for (path, _, func), v in entries.items()
                    if file in path and func in functions
                )
            )

        net, work, db = "paho-network", "pipeline-worker", "db-writer"
        reader = "mqtt-reader"  # client_process: the client's own CPU is the child's
        parse = cum(net, "sentinel/ingest/parse.py", "parse")
        parse += cum(reader, "sentinel/ingest/parse.py", "parse")
        offer = cum(net, "sentinel/worker/pipeline.py", "offer")
        offer += cum(reader, "sentinel/worker/pipeline.py", "offer")
        on_message = cum(net, "sentinel/ingest/mqtt.py", "_on_message")
        on_message += cum(reader, "sentinel/ingest/mqtt_process.py", "_deliver")
        handoff = totals.get(reader, 0.0) - cum(
            reader, "sentinel/ingest/mqtt_process.py", "_deliver"
        )
        model = cum(work, "sentinel/model/", "score", "step_ratios")
        windows = cum(work, "sentinel/worker/windows.py", "add")
        reservoir = cum(work, "sentinel/retrain/reservoir.py", "observe")
        judge = cum(work, "sentinel/worker/pipeline.py", "_score") - model
        acks = cum(db, "sentinel/ingest/mqtt.py", "ack")
        acks += cum(db, "sentinel/ingest/mqtt_process.py", "ack")
        return {
            "paho: select, read, decode, loop": totals.get(net, 0.0)
            - cum(net, "sentinel/ingest/mqtt.py", "_on_message"),
            "client process: receiving batches": handoff,
            "parse (MessageParser)": parse,
            "on_message / _deliver rest, enqueue (offer)": on_message - parse,
            "  of which Pipeline.offer": offer,
            "window assembly": windows,
            "scoring (the model)": model,
            "judge: checks, thresholds, alerts": judge,
            "retraining reservoir": reservoir,
            "worker rest (queue, devices)": totals.get(work, 0.0)
            - windows
            - model
            - judge
            - reservoir,
            "writer: commit": totals.get(db, 0.0) - acks,
            "acks (paho PUBACKs, or to the client process)": acks,
        }

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            profile = self.profiles[name] = cProfile.Profile(time.thread_time)
            profile.enable()
            try:
                return original(*args, **kwargs)
            finally:
                profile.disable()

        return run

    def report(self, top: int = 15) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        totals: dict[str, float] = {}
        for name, profile in self.profiles.items():
            profile.dump_stats(self.out / f"{name}.prof")
            stats = pstats.Stats(profile)
            totals[name] = stats.total_tt  # type: ignore[attr-defined]
        everything = sum(totals.values())
        print(f"CPU seconds per thread (profiled drain; profiles in {self.out}):")
        for name, seconds in totals.items():
            print(f"  {name:16s} {seconds:7.2f} s  {seconds / everything:5.1%}")
        print("CPU by stage, share of the threads (cumulative times, callees included):")
        for stage, seconds in self.stages(totals).items():
            print(f"  {stage:38s} {seconds / everything:6.1%}")
        for name, profile in self.profiles.items():
            stats = pstats.Stats(profile)
            entries = stats.stats  # type: ignore[attr-defined]
            ranked = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
            print(f"{name}: top {top} by own CPU time (share of the thread; cumulative share)")
            for (path, line, func), (_, _, tt, ct, _) in ranked:
                where = f"{Path(path).name}:{line}({func})"
                share, cum = tt / max(totals[name], 1e-9), ct / max(totals[name], 1e-9)
                print(f"  {share:6.1%} {cum:6.1%}  {where}")


# -- the modes ----------------------------------------------------------------------------


def machine_line() -> str:
    return (
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{torch.get_num_threads()} torch thread(s), python {platform.python_version()}"
    )


def anomalous_line(anomalous: int, windows: int) -> str:
    return f"-- windows judged anomalous: {anomalous} of {windows} ({anomalous / windows:.0%})"


def judge_line(args: argparse.Namespace) -> str:
    if args.warm:
        return (
            f"judge: warm (--warm {args.warm}: the model trained on the fleet's own first "
            f"{args.warm} readings a device, the judge warmed with them)"
        )
    return "judge: cold (a model of 4 other pumps; every device's threshold and checks new)"


def live(args: argparse.Namespace, broker: PrivateBroker, models: Path, work: Path) -> None:
    messages = workload(args.devices, args.steps, seed=7).messages
    ceilings, rates, scoring = [], [], []
    for run in range(args.repeat):
        ceilings.append(ceiling_live(broker, messages, run))
        rate, ms = daemon_live(broker, messages, models, work, run, args.sqlite_durability)
        rates.append(rate)
        scoring.append(ms)
    c, r = statistics.median(ceilings), statistics.median(rates)
    print(machine_line())
    print(
        f"live: {len(messages)} messages per run ({args.devices} devices x {args.steps} "
        f"readings, {len(FEATURES)} features), runs: {args.repeat}, "
        f"{database_line(args.sqlite_durability)}"
    )
    print(f"bare paho subscriber (ceiling): {c:8.0f} msg/s  runs {[round(x) for x in ceilings]}")
    print(f"sentinel end to end:            {r:8.0f} msg/s  runs {[round(x) for x in rates]}")
    print(f"ratio: {r / c:.2f} of the ceiling; scoring {statistics.median(scoring):.3f} ms/window")


def profiled(
    args: argparse.Namespace,
    broker: PrivateBroker,
    load: Workload,
    models: Path,
    work: Path,
) -> None:
    """One more drain, with cProfile on the daemon's threads."""
    profiles = ThreadProfiles(args.profile)
    daemon_drain(
        broker, load, models, work / "profiled", "profiled", args.sqlite_durability,
        profile=profiles.active, protocol=args.protocol,
    )  # fmt: skip
    profiles.report()


def thread_line(threads: Counter[str]) -> str:
    total = sum(threads.values()) or 1.0
    shares = ", ".join(f"{k} {v / total:.0%}" for k, v in threads.most_common())
    return f"sentinel CPU by thread while draining (/proc, all runs): {shares}"


def drain(args: argparse.Namespace, broker: PrivateBroker, models: Path, work: Path) -> None:
    steps = max(1, args.messages // args.devices)
    load = workload(args.devices, steps, seed=7, warm=args.warm)
    if args.warm:  # the model and the judge's state of a daemon past its cold start
        models = steady_state(load, work / "steady")
    n = len(load.messages)
    ceilings, rates, cpu = [], [], []
    threads: Counter[str] = Counter()
    for run in range(args.repeat):
        ceilings.append(ceiling_drain(broker, load.messages, run, args.protocol))
        result = daemon_drain(
            broker, load, models, work / f"drain-{run}", f"drain-{run}", args.sqlite_durability,
            protocol=args.protocol,
        )  # fmt: skip
        rates.append(n / result.seconds)
        cpu.append(result.cpu_share)
        threads.update(result.threads)
        judged = (result.anomalous, result.windows)
    if args.profile is not None:
        profiled(args, broker, load, models, work)
    c, r = statistics.median(ceilings), statistics.median(rates)
    print(machine_line())
    print(judge_line(args), anomalous_line(*judged))
    print(
        f"drain: a backlog of {n} messages ({args.devices} devices x {steps} readings, "
        f"{len(FEATURES)} features), MQTT {args.protocol}, in flight {RECEIVE_MAXIMUM}, "
        f"runs: {args.repeat}, "
        f"{database_line(args.sqlite_durability)}; daemon timed from its first delivery "
        "to its last commit (model load and connect excluded)"
    )
    print(f"bare paho drain (ceiling): {c:8.0f} msg/s  runs {[round(x) for x in ceilings]}")
    print(f"sentinel drain:            {r:8.0f} msg/s  runs {[round(x) for x in rates]}")
    print(f"sentinel process CPU per wall second while draining: {statistics.median(cpu):.2f}")
    print(thread_line(threads))
    print(f"ratio: {r / c:.2f} of the ceiling")


def batched(args: argparse.Namespace, broker: PrivateBroker, models: Path, work: Path) -> None:
    steps = max(1, args.messages // args.devices)
    load = workload(args.devices, steps, seed=7, warm=args.warm, batch=args.batch)
    if args.warm:  # the model and the judge's state of a daemon past its cold start
        models = steady_state(load, work / "steady")
    n = load.reading_count
    score_batch_max = SentinelConfig.model_validate(
        daemon_config(work, broker)
    ).model.score_batch_max
    ceilings, rates, cpu = [], [], []
    threads: Counter[str] = Counter()
    windows = daemon_windows = 0
    for run in range(args.repeat):
        seconds, windows = model_ceiling(models, load, score_batch_max)
        ceilings.append(n / seconds)
        result = daemon_drain(
            broker, load, models, work / f"batched-{run}", f"batched-{run}",
            args.sqlite_durability,
        )  # fmt: skip
        rates.append(n / result.seconds)
        cpu.append(result.cpu_share)
        threads.update(result.threads)
        daemon_windows = result.windows
        judged = (result.anomalous, result.windows)
    if args.profile is not None:
        profiled(args, broker, load, models, work)
    c, r = statistics.median(ceilings), statistics.median(rates)
    print(machine_line())
    print(judge_line(args), anomalous_line(*judged))
    print(
        f"batched drain: {n} readings in {len(load.messages)} messages of up to {args.batch} "
        f"({args.devices} devices x {steps} readings), windows {WINDOW} hop {HOP}: "
        f"{windows} for the model alone, {daemon_windows} scored by the daemon; "
        f"runs: {args.repeat}, {database_line(args.sqlite_durability)}"
    )
    print(f"model alone (ceiling): {c:9.0f} readings/s  runs {[round(x) for x in ceilings]}")
    print(f"sentinel drain:        {r:9.0f} readings/s  runs {[round(x) for x in rates]}")
    print(f"sentinel process CPU per wall second while draining: {statistics.median(cpu):.2f}")
    print(thread_line(threads))
    print(f"ratio: {r / c:.2f} of the model ceiling")


def latency(args: argparse.Namespace, broker: PrivateBroker, models: Path, work: Path) -> None:
    """p50/p99 at half the maximum, ``--repeat`` runs for each ``--flush-interval``, the
    intervals taken in turn so that a noisy spell of the box falls on all of them."""
    steps = max(1, args.messages // args.devices)
    load = workload(args.devices, steps, seed=7, warm=args.warm)
    if args.warm:  # the model and the judge's state of a daemon past its cold start
        models = steady_state(load, work / "steady")
    n = len(load.messages)
    maximum = args.rate
    if maximum is None:
        result = daemon_drain(broker, load, models, work / "max", "max", args.sqlite_durability)
        maximum = n / result.seconds
    intervals = args.flush_interval or [FLUSH_INTERVAL]
    runs: dict[float, list[tuple[float, float, float, float, float, float]]] = {
        i: [] for i in intervals
    }
    for run in range(args.repeat):
        for interval in intervals:
            seconds, kept, threads = daemon_latency(
                broker, load, models, work / f"latency-{run}-{interval:g}", maximum / 2,
                args.sqlite_durability, interval,
            )  # fmt: skip
            p50, p99 = np.percentile(seconds, [50, 99]) * 1e3
            # CPU per message while paced: the worker's, and the daemon's with its client
            # process (a live fleet's cost, where each pass holds what arrived meanwhile)
            worker = 1e6 * threads.get("pipeline-worker", 0.0) / n
            total = 1e6 * sum(threads.values()) / n
            runs[interval].append((p50, p99, seconds.max() * 1e3, kept, worker, total))
    print(machine_line())
    print(judge_line(args))
    print(
        f"latency: {n} messages ({args.devices} devices x {steps} readings) published at "
        f"{maximum / 2:.0f} msg/s, half the maximum {maximum:.0f} msg/s "
        f"({'given' if args.rate else 'a drain of the same messages'}); runs: {args.repeat} "
        f"per flush_interval, {database_line(args.sqlite_durability)}"
    )
    for interval, rows in runs.items():
        print(
            f"flush_interval {interval:g} s: publish -> committed p50 "
            f"{statistics.median(r[0] for r in rows):.0f} ms, p99 "
            f"{statistics.median(r[1] for r in rows):.0f} ms (medians); runs: p50 "
            f"{[round(r[0]) for r in rows]}, p99 {[round(r[1]) for r in rows]}, max "
            f"{[round(r[2]) for r in rows]} ms, publisher kept {[round(r[3]) for r in rows]} msg/s"
        )
        print(
            f"flush_interval {interval:g} s: CPU per message while paced: worker "
            f"{statistics.median(r[4] for r in rows):.0f} us, daemon and client process "
            f"{statistics.median(r[5] for r in rows):.0f} us (medians); runs: worker "
            f"{[round(r[4]) for r in rows]}, all {[round(r[5]) for r in rows]} us"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--drain", action="store_true", help="drain a persisted backlog")
    mode.add_argument("--batched", action="store_true", help="drain arrays of --batch readings")
    mode.add_argument("--latency", action="store_true", help="latency at half the maximum rate")
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--steps", type=int, default=1000, help="live: readings per device")
    ap.add_argument("--messages", type=int, default=50_000, help="drain: readings in all")
    ap.add_argument("--batch", type=int, default=100, help="batched: readings per message")
    ap.add_argument("--rate", type=float, default=None, help="latency: the maximum, msg/s")
    ap.add_argument("--protocol", choices=("5", "3.1.1"), default="5", help="drain: subscribers'")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--warm",
        type=int,
        default=0,
        metavar="STEPS",
        help="drains, latency: a model trained on the fleet's own first STEPS readings a "
        "device and the judge warmed with them, as after the daemon's cold start (default "
        "0: a model of 4 other pumps, every device's judge cold)",
    )
    ap.add_argument("--profile", type=Path, default=None, help="drains: profile into DIR")
    ap.add_argument("--sqlite-durability", choices=("full", "unsafe-on-power-loss"), default="full")
    ap.add_argument(
        "--flush-interval",
        type=float,
        nargs="+",
        help="[database] flush_interval (s; default the product's); latency: each in turn",
    )
    ap.add_argument(
        "--flush-messages",
        type=int,
        help="[database] flush_messages (default the product's)",
    )
    ap.add_argument("--postgres", metavar="URL", help="commit to fresh databases on this server")
    ap.add_argument(
        "--client-process",
        choices=("on", "off"),
        help="[mqtt] client_process (default: the product's, on); the CPU figures include "
        "the client process's",
    )
    args = ap.parse_args()
    global POSTGRES, FLUSH_INTERVAL, FLUSH_MESSAGES, CLIENT_PROCESS
    CLIENT_PROCESS = None if args.client_process is None else args.client_process == "on"
    FLUSH_MESSAGES = args.flush_messages or FLUSH_MESSAGES
    if args.flush_interval and not args.latency:
        FLUSH_INTERVAL = args.flush_interval[0]
    POSTGRES = PostgresDatabases(args.postgres) if args.postgres else None

    from sentinel.logs import configure_logging

    configure_logging("warning", "console")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = work / "models"
        train_fleet_model(models, devices=4, steps=1200)
        broker = PrivateBroker(
            prefer="mosquitto",
            workdir=work / "broker",
            # Queue a whole backlog for an absent session; MQTT 3 clients' in-flight window
            # as large as the MQTT 5 Receive Maximum both subscribers announce.
            options=("max_queued_messages 0", f"max_inflight_messages {RECEIVE_MAXIMUM}"),
        )
        broker.start()
        try:
            if args.drain:
                drain(args, broker, models, work)
            elif args.batched:
                batched(args, broker, models, work)
            elif args.latency:
                latency(args, broker, models, work)
            else:
                live(args, broker, models, work)
        finally:
            broker.stop()
            if POSTGRES is not None:
                POSTGRES.drop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
