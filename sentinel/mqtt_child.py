"""The MQTT client's own process: paho's network loop, off the daemon's GIL (issue #23).

Run by ``sentinel.ingest.mqtt_process.ProcessMqttSource`` (``main([FD, PID])``), FD one end
of a socket pair whose other end the daemon (PID) holds. Over it, as
``multiprocessing.connection`` messages (pickled tuples):

* daemon -> child: first ``ChildSettings``; then ``("ack", epoch, [mid, ...])``,
  ``("pause",)`` and ``("stop", seconds)``.
* child -> daemon: ``("ready",)`` or ``("error", why)`` once, then
  ``("connected", epoch, session_present)``, ``("disconnected", reason)``,
  ``("subscribed",)``, ``("fatal", why)``, ``("log", level, event, fields)`` and
  ``("batch", epoch, [(topic, payload, mid, qos, received_at), ...])``; ``("stopped",)``
  last.

The child does no parsing and holds no state beyond the connection: it passes raw messages
on and sends the PUBACKs the daemon asks for, once their readings are committed. Batches
are handed over on paho's network thread itself, a full one (``BATCH`` messages) at once
and the rest within ``LINGER`` seconds by a second thread, which is what measured fastest
(docs/BENCHMARKS.md, "What the MQTT side leaves for a worker in a process of its own").

A child whose daemon is gone exits at once and sends no acknowledgement: every message it
held comes again to the next daemon (the parent-death signal, and end of file on the
socket, whichever comes first). It ignores SIGINT and SIGTERM, which a terminal or systemd
sends the whole process group: the daemon stops it in order, after its last acks.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import paho.mqtt.client as mqtt

from sentinel.errors import ConfigError
from sentinel.mqtt import (
    FATAL_REFUSALS,
    connect_error,
    connect_session,
    fatal_connect_error,
    session_client,
)

if TYPE_CHECKING:
    from sentinel.config import MqttConfig

__all__ = ["BATCH", "LINGER", "ChildSettings", "main"]

BATCH = 256  # messages handed over at once by the network thread
LINGER = 0.002  # seconds a partial batch waits for more before the flusher sends it
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ChildSettings:
    """What the child needs to connect: the daemon's ``[mqtt]`` (``MqttConfig.model_dump()``:
    plain values, so that the child need not import the config and what it imports --
    SQLAlchemy, pydantic: 40 MB) and its subscriptions."""

    mqtt: dict[str, Any]
    subscriptions: tuple[str, ...]
    receive_maximum: int
    password: str | None

    @property
    def config(self) -> MqttConfig:
        """``[mqtt]`` read by attribute, as ``sentinel.mqtt``'s helpers read it."""
        fields = dict(self.mqtt)
        fields["tls"] = SimpleNamespace(**fields["tls"])
        return cast("MqttConfig", SimpleNamespace(**fields))


class _Link:
    """The child's end of the socket: sends from several threads, one at a time."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            try:
                self.conn.send(message)
            except OSError:
                os._exit(0)  # the daemon is gone: nothing of ours is acknowledged

    def log(self, level: str, event: str, **fields: Any) -> None:
        self.send(("log", level, event, fields))


class _RelayPahoLog(logging.Handler):
    """paho's own warnings reach the daemon's log, not this process's stderr."""

    def __init__(self, link: _Link) -> None:
        super().__init__(logging.WARNING)
        self._link = link

    def emit(self, record: logging.LogRecord) -> None:
        level = "error" if record.levelno >= logging.ERROR else "warning"
        self._link.log(level, "paho", message=record.getMessage())


class _Client:
    """One paho client with a persistent session and manual acks, as ``MqttSource`` has,
    whose callbacks only hand things to the daemon."""

    def __init__(self, settings: ChildSettings, link: _Link) -> None:
        self._settings = settings
        self._config = settings.config
        self._link = link
        self._epoch = 0
        self._paused = False
        self._connected = threading.Event()
        self._batch: list[tuple[str, bytes, int, int, float]] = []
        self._batch_lock = threading.Lock()
        self._wake = threading.Event()
        self._running = True
        client = session_client(self._config, settings.password)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client
        self._flusher = threading.Thread(target=self._flush_loop, name="flush", daemon=True)

    def start(self) -> None:
        self._flusher.start()
        connect_session(self._client, self._config, self._settings.receive_maximum)
        self._client.loop_start()

    def ack(self, epoch: int, mids: list[int]) -> None:
        if epoch != self._epoch:
            return  # another connection's packet ids: the broker resends those messages
        for mid in mids:
            self._client.ack(mid, 1)

    def pause(self) -> None:
        self._paused = True

    def stop(self, timeout: float) -> None:
        """Disconnect after the acknowledgements already queued, within ``timeout``."""
        self._paused = True
        self._client.disconnect()
        deadline = time.monotonic() + timeout
        while self._connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        self._client.loop_stop()
        self._running = False
        self._wake.set()

    # -- paho callbacks (network thread) ---------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            name = reason_code.getName()
            if name in FATAL_REFUSALS:
                self._link.log("error", "mqtt_refused_fatal", reason=name)
                self._fatal(f"{FATAL_REFUSALS[name]} ({name})")
            else:
                self._link.log("warning", "mqtt_refused", reason=name)
            return
        self._flush()  # whatever the old connection left goes out under its own epoch
        with self._batch_lock:
            self._epoch += 1
        self._connected.set()
        self._link.send(("connected", self._epoch, bool(flags.session_present)))
        qos = int(self._config.qos)
        client.subscribe([(topic, qos) for topic in self._settings.subscriptions])

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        cfg = self._config
        err = connect_error()
        fatal = fatal_connect_error(cfg, err)
        if fatal is not None:
            self._link.log("error", "mqtt_tls_failed_fatal", host=cfg.host, port=cfg.port)
            self._fatal(fatal)
            return
        why = str(err) if err is not None else None
        self._link.log("warning", "mqtt_connect_failed", host=cfg.host, port=cfg.port, error=why)

    def _fatal(self, reason: str) -> None:
        self._client.disconnect()  # stops paho's reconnect loop
        self._link.send(("fatal", reason))

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self._flush()
        self._connected.clear()
        self._link.send(("disconnected", str(reason_code)))

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[Any], props: Any
    ) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            self._link.log("error", "mqtt_subscribe_refused", reasons=failed)
        else:
            self._link.send(("subscribed",))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._paused:
            return  # left unacknowledged: redelivered after we reconnect
        item = (message.topic, bytes(message.payload), message.mid, message.qos, time.time())
        with self._batch_lock:
            self._batch.append(item)
            full = len(self._batch) >= BATCH
        if full:
            self._flush()
        else:
            self._wake.set()

    # -- hand-over -------------------------------------------------------------------------

    def _flush(self) -> None:
        with self._batch_lock:
            batch, self._batch = self._batch, []
            epoch = self._epoch  # every message in it arrived on this connection
        if batch:
            # Blocks while the daemon's side of the socket is full: TCP backpressure.
            self._link.send(("batch", epoch, batch))

    def _flush_loop(self) -> None:
        while self._running:
            self._wake.wait()
            self._wake.clear()
            time.sleep(LINGER)
            self._flush()


def _die_with_parent() -> None:
    """Linux: the kernel kills us when the daemon dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not all(a.isdigit() for a in args):
        print(
            "usage: python -m sentinel.mqtt_child FD PARENT_PID (started by the daemon)",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    conn = Connection(int(args[0]))
    if os.getppid() != int(args[1]):
        return 0  # the daemon died before the signal was armed
    link = _Link(conn)
    try:
        settings = conn.recv()
        logging.getLogger("paho.mqtt.client").addHandler(_RelayPahoLog(link))
        client = _Client(settings, link)
    except ConfigError as err:
        link.send(("error", str(err)))
        return 1
    except EOFError:
        return 0
    link.send(("ready",))
    client.start()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the daemon is gone: no acks, every message comes again
        kind = message[0]
        if kind == "ack":
            client.ack(message[1], message[2])
        elif kind == "pause":
            client.pause()
        elif kind == "stop":
            client.stop(message[1])
            link.send(("stopped",))
            return 0


if __name__ == "__main__":
    sys.exit(main())
