"""What the MQTT side could drain if the worker ran in a process of its own (issue #23).

``throughput.py --drain`` found the daemon at 0.2-0.3 of a bare paho subscriber, and its
profile put paho's own receive path at about a third of the daemon's CPU: one process, one
GIL, so parse, windows, model, checks, commit and acks all share the core the ceiling has
to itself. Moving the worker (and the writer) into a child process is the change that
would lift that bound; this probe measures the bound before anyone builds it. On the same
private Mosquitto and the same persisted backlog (``throughput.py``'s workload, one
reading a message), each subscriber drains N messages, timed from the first message to the
last acknowledgement:

* ``bare``: paho, automatic QoS 1 acks, a counter (``throughput.py``'s ceiling);
* ``parse``: manual acks, the daemon's ``MessageParser`` and a ``Delivery`` built on the
  network thread as ``MqttSource._on_message`` does, the ack sent at once (the network
  thread's own share of the daemon, with nothing behind it);
* ``thread``: manual acks; the network thread only appends (topic, payload, mid) to a batch
  that a consumer *thread* in the same process takes every 256 messages or 5 ms, parses
  with the same parser and hands back, and the mids are acked from there (the daemon's
  thread layout, minus the worker's judging and the commit);
* ``process``: the same, the consumer a *child process* (multiprocessing, spawn) that
  parses the batches it gets through a pipe and sends back their mids; a thread of the
  main process acks them (the worker-in-its-own-process layout, minus judging and commit);
* ``process-raw``: the same, each batch sent as four byte strings (its topics, the
  payloads' lengths, the payloads joined, the mids) instead of a pickled list of tuples;
* ``process-net``: the child of ``process``, but fed and acknowledged by the network
  thread itself: each full batch is sent from the message callback, which also acks
  whatever mids the child has sent back; a thread that sleeps 20 ms at a time hands over
  the last partial batch once messages stop.

A consumer that did the daemon's work would take longer per message, but in ``process``
on a core of its own where there is one; the ratio of ``process`` to ``bare`` is what the
MQTT side leaves for it, the upper bound of the drain ratio such a layout could reach on
this machine. Each line also gives the machine's busy CPUs while draining (/proc/stat, the
broker's and the child's included): on a box as small as the broker's own, the layouts
share the cores with it.

    .venv/bin/python benchmarks/handoff_probe.py [--devices 20] [--messages 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from array import array
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import RECEIVE_MAXIMUM, TOPIC, machine_line, publish, workload

from sentinel.config import SentinelConfig
from sentinel.ingest.parse import MessageParser
from sentinel.records import Delivery
from simulators.broker import PrivateBroker
from tests.e2e_helpers import daemon_config

BATCH = 256  # messages a hand-off carries at most (the worker's pass bound)
FLUSH = 0.005  # seconds a partial batch waits
WAIT = 300.0


def parser() -> MessageParser:
    """The daemon's parser for the fleet stream the workload publishes."""
    address = SimpleNamespace(host="127.0.0.1", port=1883, protocol="5")
    raw = daemon_config(Path(tempfile.gettempdir()), address)
    config = SentinelConfig.model_validate(raw)
    return MessageParser(config.streams, max_payload_bytes=config.ingest.max_payload_bytes)


def consume(conn: Connection) -> None:
    """The child process: parse each batch, send its mids back; None ends it. It says
    "ready" first, so that its start-up (imports) is not timed as the drain's."""
    parse = parser().parse
    conn.send("ready")
    while True:
        batch = conn.recv()
        if batch is None:
            return
        for topic, payload, _ in batch:
            parse(topic, payload, time.time())
        conn.send([mid for _, _, mid in batch])


def consume_raw(conn: Connection) -> None:
    """The child process, blobs: one topic (the batch's first; the parse is per payload),
    the payloads' lengths and bytes, the mids; sends the mids back; b"" ends it."""
    parse = parser().parse
    conn.send_bytes(b"ready")
    while True:
        head = conn.recv_bytes()
        if not head:
            return
        topics = head.decode().split("\n")
        lengths = array("I")
        lengths.frombytes(conn.recv_bytes())
        blob = conn.recv_bytes()
        mids = conn.recv_bytes()
        at = 0
        for topic, length in zip(topics, lengths, strict=True):
            parse(topic, blob[at : at + length], time.time())
            at += length
        conn.send_bytes(mids)


class Subscriber:
    """One drain of the backlog by one of the four layouts (module docstring)."""

    def __init__(self, broker: PrivateBroker, client_id: str, expect: int, mode: str) -> None:
        self.broker, self.expect, self.mode = broker, expect, mode
        self.received = self.acked = 0
        self.first = self.last = 0.0
        self.done = threading.Event()
        self.batch: list[tuple[str, bytes, int]] = []
        self.lock = threading.Lock()
        self.ready = threading.Condition(self.lock)
        self.parse = parser().parse
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=mode != "bare",
        )
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.threads: list[threading.Thread] = []
        self.child: Any = None
        self.latest = 0.0
        self.conn: Connection | None = None

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if self.received == 0:
            self.first = time.perf_counter()
        self.received += 1
        if self.mode == "bare":
            self._acked(1)
        elif self.mode == "parse":
            readings, rejected = self.parse(msg.topic, msg.payload, time.time())
            Delivery(msg.topic, tuple(readings), tuple(rejected), None, time.time())
            client.ack(msg.mid, 1)
            self._acked(1)
        elif self.mode == "process-net":
            self.latest = time.perf_counter()
            with self.lock:
                self.batch.append((msg.topic, bytes(msg.payload), msg.mid))
                if len(self.batch) >= BATCH:
                    self._hand_over()
        else:
            with self.lock:
                self.batch.append((msg.topic, bytes(msg.payload), msg.mid))
                if len(self.batch) >= BATCH:
                    self.ready.notify()

    def _hand_over(self) -> None:
        """process-net, under ``lock``: send the batch, ack what the child has sent back."""
        assert self.conn is not None
        if self.batch:
            self.conn.send(self.batch)
            self.batch = []
        while self.conn.poll(0):
            mids = self.conn.recv()
            for mid in mids:
                self.client.ack(mid, 1)
            self._acked(len(mids))

    def _idle(self) -> None:
        """process-net: when no message came for a while, hand over what is left (the
        backlog's end) and ack the replies; asleep otherwise, so it takes no GIL time."""
        while not self.done.is_set():
            time.sleep(0.02)
            if time.perf_counter() - self.latest > 0.01:
                with self.lock:
                    self._hand_over()

    def _acked(self, count: int) -> None:
        self.acked += count
        if self.acked >= self.expect:
            self.last = time.perf_counter()
            self.done.set()

    def _take(self) -> list[tuple[str, bytes, int]]:
        with self.lock:
            if len(self.batch) < BATCH:
                self.ready.wait(FLUSH)
            batch, self.batch = self.batch, []
        return batch

    def _thread_consumer(self) -> None:
        while not self.done.is_set():
            batch = self._take()
            for topic, payload, _ in batch:
                self.parse(topic, payload, time.time())
            for _, _, mid in batch:
                self.client.ack(mid, 1)
            self._acked(len(batch))

    def _sender(self) -> None:
        assert self.conn is not None
        while not self.done.is_set():
            batch = self._take()
            if batch:
                self.conn.send(batch)

    def _sender_raw(self) -> None:
        assert self.conn is not None
        while not self.done.is_set():
            batch = self._take()
            if batch:
                self.conn.send_bytes("\n".join(t for t, _, _ in batch).encode())
                self.conn.send_bytes(array("I", [len(p) for _, p, _ in batch]).tobytes())
                self.conn.send_bytes(b"".join(p for _, p, _ in batch))
                self.conn.send_bytes(array("i", [m for _, _, m in batch]).tobytes())

    def _acker_raw(self) -> None:
        assert self.conn is not None
        while not self.done.is_set():
            if self.conn.poll(0.1):
                mids = array("i")
                mids.frombytes(self.conn.recv_bytes())
                for mid in mids:
                    self.client.ack(mid, 1)
                self._acked(len(mids))

    def _acker(self) -> None:
        assert self.conn is not None
        while not self.done.is_set():
            if self.conn.poll(0.1):
                mids = self.conn.recv()
                for mid in mids:
                    self.client.ack(mid, 1)
                self._acked(len(mids))

    def start(self, *, subscribe: bool) -> None:
        if self.mode == "thread":
            self.threads = [threading.Thread(target=self._thread_consumer, daemon=True)]
        elif self.mode == "process-net":
            self.conn, theirs = mp.get_context("spawn").Pipe()
            self.child = mp.get_context("spawn").Process(target=consume, args=(theirs,))
            self.child.start()
            assert self.conn.recv() == "ready"
            self.threads = [threading.Thread(target=self._idle, daemon=True)]
        elif self.mode in ("process", "process-raw"):
            raw = self.mode == "process-raw"
            self.conn, theirs = mp.get_context("spawn").Pipe()
            self.child = mp.get_context("spawn").Process(
                target=consume_raw if raw else consume, args=(theirs,)
            )
            self.child.start()
            assert (self.conn.recv_bytes() if raw else self.conn.recv()) in ("ready", b"ready")
            self.threads = [
                threading.Thread(target=self._sender_raw if raw else self._sender, daemon=True),
                threading.Thread(target=self._acker_raw if raw else self._acker, daemon=True),
            ]
        for thread in self.threads:
            thread.start()
        if subscribe:
            self.client.on_connect = lambda c, *args: c.subscribe(TOPIC, 1)
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        self.client.connect(
            self.broker.host, self.broker.port, clean_start=False, properties=properties
        )
        self.client.loop_start()
        if subscribe:
            assert self.subscribed.wait(10)

    def close(self) -> None:
        self.done.set()
        with self.lock:
            self.ready.notify_all()
        for thread in self.threads:
            thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()
        if self.conn is not None:
            if self.mode == "process-raw":
                self.conn.send_bytes(b"")
            else:
                self.conn.send(None)
            self.child.join(10)


def busy() -> tuple[float, float]:
    """The machine's busy and total jiffies so far, all CPUs (/proc/stat)."""
    with open("/proc/stat") as handle:
        fields = [float(v) for v in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def drain(
    broker: PrivateBroker, messages: list[tuple[str, bytes]], run: str, mode: str
) -> tuple[float, float]:
    """Subscribe, leave (the broker keeps the session), publish, come back and drain:
    messages a second, and the machine's busy CPUs (broker included) while draining."""
    client_id = f"handoff-{mode}-{run}"
    first = Subscriber(broker, client_id, 0, "bare")
    first.start(subscribe=True)
    first.close()
    publish(broker, messages)
    sub = Subscriber(broker, client_id, len(messages), mode)
    sub.start(subscribe=False)
    before = busy()
    assert sub.done.wait(WAIT), f"{mode} drained {sub.acked}/{len(messages)}"
    after = busy()
    seconds = sub.last - sub.first
    sub.close()
    cpus = (os.cpu_count() or 1) * (after[0] - before[0]) / max(after[1] - before[1], 1.0)
    return len(messages) / seconds, cpus


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from sentinel.logs import configure_logging

    configure_logging("warning", "console")
    load = workload(args.devices, max(1, args.messages // args.devices), seed=7)
    modes = ("bare", "parse", "thread", "process", "process-raw", "process-net")
    rates: dict[str, list[float]] = {m: [] for m in modes}
    cpus: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        broker = PrivateBroker(
            prefer="mosquitto",
            workdir=Path(tmp) / "broker",
            options=("max_queued_messages 0", f"max_inflight_messages {RECEIVE_MAXIMUM}"),
        )
        broker.start()
        try:
            for run in range(args.repeat):
                for mode in modes:
                    rate, used = drain(broker, load.messages, str(run), mode)
                    rates[mode].append(rate)
                    cpus[mode].append(used)
        finally:
            broker.stop()
    print(machine_line())
    print(
        f"a backlog of {len(load.messages)} messages ({args.devices} devices, one reading a "
        f"message), MQTT 5, in flight {RECEIVE_MAXIMUM}, runs: {args.repeat}; each timed "
        "from its first message to its last acknowledgement"
    )
    bare = statistics.median(rates["bare"])
    for mode in modes:
        median = statistics.median(rates[mode])
        runs = [round(r) for r in rates[mode]]
        used = statistics.median(cpus[mode])
        print(
            f"{mode:11s} {median:7.0f} msg/s  {median / bare:.2f} of bare  runs {runs}  "
            f"busy CPUs (broker included) {used:.2f} of {os.cpu_count()}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
