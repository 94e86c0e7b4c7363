"""The MQTT source with its client in a process of its own (``[mqtt] client_process``).

Why (issue #23): draining a backlog, paho's own receive path -- select, read, packet
decoding, dispatch -- was ~36 % of the daemon's CPU, on the same GIL as the worker that
judges the readings; a daemon on one core can then take in at most what is left of it.
Here the paho client runs in a child process (``sentinel.mqtt_child``) on a core of
its own, and the daemon receives raw messages from it in batches over a socket pair:
parsing, the worker and the commit stay in the daemon, unchanged.

The delivery guarantee is ``MqttSource``'s: QoS 1 on a persistent session, a message
acknowledged only once everything it carried is committed. Acks travel back to the child
tagged with the connection they name; the child drops those of an earlier connection (the
broker resends those messages, and the duplicate check recognises their readings). A child
that dies is started again; whatever it held unacknowledged comes again from the broker. A
daemon killed outright takes its child with it (Linux's parent-death signal; elsewhere the
child sees end of file on the socket): no acknowledgement is sent for anything it did not
commit.

The source's interface is ``Source``'s; ``start()`` waits until the child has started (it
imports paho and the config: about a second) and raises ``ConfigError`` for what it refused
(TLS files that do not load).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import structlog

from sentinel.config import MqttConfig, StreamConfig
from sentinel.errors import ConfigError
from sentinel.ingest.mqtt import MqttSessionState
from sentinel.ingest.parse import MessageParser
from sentinel.ingest.source import Sink
from sentinel.mqtt_child import ChildSettings
from sentinel.records import Ack, Delivery, Rejected, RejectReason

__all__ = ["ProcessMqttSource"]

log = structlog.get_logger(__name__)

START_TIMEOUT = 60.0  # seconds for the child to import and say it is ready
RESTART_DELAY = 1.0  # seconds before a child that died is started again
_STALE = 0  # the epoch of a message from a connection already gone: its ack is dropped
# The child imports this very package, whatever directory the daemon was started from.
_ROOT = str(Path(__file__).resolve().parents[2])
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from sentinel.mqtt_child import main; sys.exit(main(sys.argv[2:]))"
)


class ProcessMqttSource(MqttSessionState):
    """``MqttSource`` with paho in a child process; the same constructor and protocol.

    ``sink`` is called on this source's reader thread, in arrival order, and may block it up
    to a third of the keep-alive; a delivery it refuses is left unacknowledged, and so is the
    rest of its batch, for the broker to resend.
    """

    def __init__(
        self,
        config: MqttConfig,
        streams: list[StreamConfig],
        *,
        parser: MessageParser,
        sink: Sink,
        receive_maximum: int,
        on_fatal: Callable[[str], None],
        password: str | None = None,
    ) -> None:
        super().__init__()
        self._config = config
        self._settings = ChildSettings(
            mqtt=config.model_dump(),
            subscriptions=tuple(s.subscription for s in streams),
            receive_maximum=max(1, min(receive_maximum, 65_535)),
            password=password,
        )
        self._parser = parser
        self._sink = sink
        self._sink_timeout = config.keepalive / 3
        self._on_fatal = on_fatal
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        # (ours, the child's) for the current connection, replaced as one tuple so that the
        # writer's ack() never pairs one connection's number with another's: ours is
        # bumped on every connection, whichever child made it.
        self._epochs = (0, 0)
        self._paused = threading.Event()
        self._stopped = threading.Event()  # the child said it stopped
        self.restarts = 0  # children started again after one died

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self._config
        log.info(
            "mqtt_connecting",
            host=cfg.host,
            port=cfg.port,
            client_id=cfg.client_id,
            protocol=cfg.protocol,
            tls=cfg.tls.enabled,
            client_process=True,
        )
        self._conn = self._spawn()
        self._reader = threading.Thread(
            target=self._read_loop, name="sentinel-mqtt-reader", daemon=True
        )
        self._reader.start()

    def pause(self) -> None:
        """Stop taking messages in; those arriving now stay unacknowledged at the broker."""
        self._paused.set()
        self._send(("pause",))

    def stop(self, timeout: float = 5.0) -> None:
        if self._conn is None:
            return
        self._paused.set()
        self._stopping = True
        deadline = time.monotonic() + timeout
        # DISCONNECT is queued behind any acknowledgements already sent to the child.
        if self._send(("stop", timeout)):
            self._stopped.wait(timeout)
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(max(0.0, deadline - time.monotonic()))
        self._end_child(max(0.5, deadline - time.monotonic()))
        with self._send_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- state ----------------------------------------------------------------------------

    @property
    def child_pid(self) -> int | None:
        """The client process's pid (tests kill it), None when none runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def ack(self, acks: Iterable[Ack]) -> None:
        """Acknowledge committed messages that arrived on the current connection."""
        epoch, child_epoch = self._epochs
        mids: list[int] = []
        for ack in acks:
            if ack.epoch != epoch:
                # The broker will resend it; our duplicate check will recognise it.
                self.unacked_dropped += 1
                continue
            mids.append(ack.token)
        if mids and not self._send(("ack", child_epoch, mids)):
            self.unacked_dropped += len(mids)

    # -- the child ------------------------------------------------------------------------

    def _spawn(self) -> Connection:
        """Start a child, hand it the settings and wait until it is ready.

        Linux's parent-death signal follows the *thread* that started the child: here the
        one that called ``start()`` (the daemon's run, alive until it stops) or, for a
        child started again, the reader thread (alive until ``stop()``)."""
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, _ROOT, str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        self._process = process
        conn.send(self._settings)
        if not conn.poll(START_TIMEOUT):
            self._end_child(1.0)
            conn.close()
            raise ConfigError(f"the MQTT client process did not start in {START_TIMEOUT:g} s")
        try:
            first = conn.recv()
        except EOFError:
            code = process.wait()
            conn.close()
            raise ConfigError(f"the MQTT client process exited at start (code {code})") from None
        if first[0] == "error":
            process.wait()
            conn.close()
            raise ConfigError(first[1])
        return conn

    def _end_child(self, timeout: float) -> None:
        process = self._process
        if process is None:
            return
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._process = None

    def _send(self, message: tuple[Any, ...]) -> bool:
        with self._send_lock:
            conn = self._conn
            if conn is None:
                return False
            try:
                conn.send(message)
            except OSError:
                return False  # the child is gone; the reader starts another
            return True

    def _read_loop(self) -> None:
        while True:
            conn = self._conn
            if conn is None:
                return
            try:
                message = conn.recv()
            except (EOFError, OSError):
                if self._stopping or self._fatal is not None:
                    return
                if not self._restart():
                    return
                continue
            kind = message[0]
            if kind == "batch":
                self._deliver(message[1], message[2])
            elif kind == "connected":
                self._on_connected(message[1], message[2])
            elif kind == "disconnected":
                self._session_lost(message[1])
            elif kind == "subscribed":
                self._subscribed.set()
                log.info("mqtt_subscribed", topics=list(self._settings.subscriptions))
            elif kind == "fatal":
                self._fatal = message[1]
                self._connected.clear()
                self._on_fatal(message[1])
            elif kind == "log":
                getattr(log, message[1])(message[2], **message[3])
            elif kind == "stopped":
                self._stopped.set()
                return

    def _restart(self) -> bool:
        """The child died: start another (its messages come again). False when stopping."""
        process = self._process
        code = process.wait() if process is not None else None
        self._connected.clear()
        self._subscribed.clear()
        log.error("mqtt_client_process_died", exit_code=code, restart_in=RESTART_DELAY)
        with self._send_lock:
            if self._conn is not None:
                self._conn.close()
        deadline = time.monotonic() + RESTART_DELAY
        while time.monotonic() < deadline:
            if self._stopping:
                return False
            time.sleep(0.05)
        try:
            conn = self._spawn()
        except ConfigError as err:
            if self._stopping:
                return False  # stopped while it started: not a failure
            log.error("mqtt_client_process_restart_failed", error=str(err))
            self._fatal = f"the MQTT client process could not be started again: {err}"
            self._on_fatal(self._fatal)
            return False
        with self._send_lock:
            if self._stopping:  # stop() came while it started: it must not stay connected
                conn.close()
                self._end_child(0.0)
                return False
            self._conn = conn
        self.restarts += 1
        if self._paused.is_set():
            self._send(("pause",))
        return True

    def _on_connected(self, child_epoch: int, session_present: bool) -> None:
        epoch = self._epochs[0] + 1
        self._epochs = (epoch, child_epoch)
        self.connects += 1
        self._connected.set()
        log.info("mqtt_connected", session_present=session_present, epoch=epoch)

    def _deliver(self, child_epoch: int, batch: list[tuple[str, bytes, int, int, float]]) -> None:
        if self._paused.is_set():
            return  # left unacknowledged: redelivered after we reconnect
        ours, current = self._epochs
        epoch = ours if child_epoch == current else _STALE
        for i, (topic, payload, mid, qos, received_at) in enumerate(batch):
            try:
                readings, rejected = self._parser.parse(topic, payload, received_at)
            except Exception as err:  # the parser should never raise
                log.exception("parser_crashed", topic=topic)
                readings, rejected = (
                    [],
                    [Rejected(RejectReason.UNPARSABLE, topic, f"parser error: {err!r}")],
                )
            delivery = Delivery(
                topic=topic,
                readings=tuple(readings),
                rejected=tuple(rejected),
                ack=Ack(mid, epoch) if qos > 0 else None,
                received_at=received_at,
            )
            if not self._sink(delivery, self._sink_timeout):
                # The pipeline has been stuck for a long time: this message and the rest
                # of its batch stay unacknowledged (QoS 0: gone), to come again.
                log.error("ingest_queue_full", topic=topic, qos=qos, left=len(batch) - i)
                return

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if self._process is not None and self._process.poll() is None:
                self._process.kill()
