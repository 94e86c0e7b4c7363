"""A private MQTT broker on a free local port, for tests and the demo.

Mosquitto when its binary is installed (MQTT 5); otherwise amqtt in a child process
(MQTT 3.1.1 only). The broker always listens on 127.0.0.1, never on the shared port 1883;
with ``tls`` (Mosquitto only) that listener speaks TLS with the given certificate.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

__all__ = [
    "BrokerKind",
    "PrivateBroker",
    "Publisher",
    "TlsListener",
    "find_mosquitto",
    "free_port",
    "free_ports",
    "main",
    "parse_url",
]

BrokerKind = Literal["mosquitto", "amqtt"]

_MOSQUITTO_DIRS = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin", "/usr/bin")
_HOST = "127.0.0.1"


def free_port(host: str = _HOST) -> int:
    """A port nobody listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = _HOST) -> list[int]:
    """``count`` distinct ports nobody listens on right now: each the kernel's pick for
    port 0 while the others are still bound. Two ``free_port()`` calls in a row may return
    the same port once the first socket is closed (a nats-server given one port for its
    client and MQTT listeners exits: "address already in use")."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in _MOSQUITTO_DIRS:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary (sbin is often not on PATH), or None."""
    return _find_binary("mosquitto")


def _mosquitto_hash(password: str) -> str:
    # Mosquitto 2's own format ($7$: PBKDF2-SHA512, 101 rounds), used where mosquitto_passwd
    # is missing; see mosquitto's src/password_mosq.c.
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As brokers do: a restart must not be refused over the old socket's TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def launch_server(
    name: str, cmd: Sequence[str], log_path: Path, ports: Sequence[int], timeout: float
) -> subprocess.Popen[bytes]:
    """Start a server process of our own, its output appended to ``log_path`` (a restart
    keeps the earlier lines), and return once every one of ``ports`` accepts connections.
    Raises RuntimeError, with the log's tail, when a port is taken beforehand (the readiness
    probe would take the other listener for ours), when the process exits, or at
    ``timeout``. Shared by ``PrivateBroker`` and ``simulators.nats_server.PrivateNats``."""
    for port in ports:
        if not _port_free(_HOST, port):
            raise RuntimeError(f"port {port} on {_HOST} is already in use")
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal must not hit the server first
        )
    deadline = time.monotonic() + timeout
    while not all(_port_open(_HOST, port) for port in ports):
        if proc.poll() is not None:
            raise RuntimeError(
                f"{name} exited with code {proc.returncode} on port(s) {list(ports)}; "
                f"log tail:\n{_tail(log_path)}"
            )
        if time.monotonic() >= deadline:
            stop_server(proc, 2.0)
            raise RuntimeError(
                f"{name} did not accept connections on port(s) {list(ports)} within "
                f"{timeout:g} s; log tail:\n{_tail(log_path)}"
            )
        time.sleep(0.02)  # polling a port with a deadline, not waiting for luck
    return proc


def stop_server(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM (brokers write their state on it), SIGKILL after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


@dataclass(frozen=True)
class TlsListener:
    """PEM files of a TLS listener: the broker's certificate, its key, and the CA that
    signed it (Mosquitto wants one even when clients present no certificate)."""

    ca_file: Path
    cert_file: Path
    key_file: Path


class PrivateBroker:
    """An MQTT broker process of our own: ``start()``, ``stop()``, ``restart()`` on one port.

    With ``persistence=True`` (mosquitto only) sessions and queued QoS 1 messages survive
    ``restart()``: mosquitto writes its database when it gets SIGTERM. With ``tls``
    (mosquitto only) the listener speaks TLS, for tests of certificate handling.
    ``options`` are further mosquitto.conf lines (mosquitto only), e.g. the benchmarks'
    ``max_inflight_messages``.
    """

    def __init__(
        self,
        *,
        prefer: Literal["auto", "mosquitto", "amqtt"] = "auto",
        persistence: bool = False,
        users: dict[str, str] | None = None,
        workdir: Path | None = None,
        tls: TlsListener | None = None,
        options: Sequence[str] = (),
    ) -> None:
        self._prefer = prefer
        self._options = tuple(options)
        self._persistence = persistence
        self._tls = tls
        self._users = dict(users) if users else None
        self._workdir = workdir
        self._owns_workdir = False
        self._port: int | None = None
        self._kind: BrokerKind | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self._lock = threading.Lock()

    # -- properties ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return _HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the broker has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def kind(self) -> BrokerKind:
        if self._kind is None:
            raise RuntimeError("the broker has not been started")
        return self._kind

    @property
    def protocol(self) -> Literal["5", "3.1.1"]:
        return "5" if self.kind == "mosquitto" else "3.1.1"

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise RuntimeError("the broker has not been started")
        return self._workdir

    @property
    def log_path(self) -> Path | None:
        return self._log

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Launch the broker and return once its port accepts TCP connections."""
        with self._lock:
            if self.running:
                return
            if self._kind is None:
                self._kind = self._choose_kind()
            if self._workdir is None:
                self._workdir = Path(tempfile.mkdtemp(prefix="sentinel-broker-"))
                self._owns_workdir = True
            self._workdir.mkdir(parents=True, exist_ok=True)
            if self._port is None:
                self._port = free_port()
            self._launch(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; removes a temporary work dir. Idempotent."""
        with self._lock:
            self._terminate(timeout)
            if self._owns_workdir and self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None
                self._owns_workdir = False

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port and work dir (a broker outage)."""
        with self._lock:
            if self._port is None or self._kind is None:
                raise RuntimeError("the broker has not been started")
            self._terminate(timeout)
            self._launch(timeout)

    def __enter__(self) -> PrivateBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------

    def _choose_kind(self) -> BrokerKind:
        if self._prefer == "amqtt":
            if self._tls is not None or self._options:
                raise RuntimeError("tls and options need mosquitto, not amqtt")
            return "amqtt"
        if find_mosquitto() is not None:
            return "mosquitto"
        if self._prefer == "mosquitto" or self._tls is not None or self._options:
            raise RuntimeError(
                "prefer='mosquitto', tls or options but no mosquitto binary was found"
            )
        return "amqtt"

    def _launch(self, timeout: float) -> None:
        assert self._workdir is not None
        assert self._port is not None
        self._log = self._workdir / f"{self.kind}.log"
        if self.kind == "mosquitto":
            cmd = [str(find_mosquitto()), "-c", str(self._write_mosquitto_conf())]
        else:
            cmd = [
                sys.executable,
                "-m",
                "simulators.broker",
                "--serve-amqtt",
                "--port",
                str(self._port),
            ]
            if self._users:
                cmd += ["--password-file", str(self._write_amqtt_passwords())]
        self._proc = launch_server(self.kind, cmd, self._log, [self._port], timeout)

    def _terminate(self, timeout: float) -> None:
        proc, self._proc = self._proc, None
        stop_server(proc, timeout)

    def _write_mosquitto_conf(self) -> Path:
        assert self._workdir is not None
        assert self._log is not None
        lines = [
            f"listener {self._port} {_HOST}",
            f"allow_anonymous {'false' if self._users else 'true'}",
            f"log_dest file {self._log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            # Offline persistent sessions keep everything (the default 1000 would drop
            # readings during a detector outage and break exact-count tests).
            "max_queued_messages 0",
        ]
        if self._tls is not None:
            lines += [
                f"cafile {self._tls.ca_file}",
                f"certfile {self._tls.cert_file}",
                f"keyfile {self._tls.key_file}",
            ]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to 'mosquitto' and can't write
        if self._users:
            lines.append(f"password_file {self._write_mosquitto_passwords()}")
        if self._persistence:
            persist = self._workdir / "persist"
            persist.mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {persist}/"]
        lines += self._options
        conf = self._workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return conf

    def _write_mosquitto_passwords(self) -> Path:
        assert self._workdir is not None
        assert self._users
        path = self._workdir / "passwd"
        tool = _find_binary("mosquitto_passwd")
        if tool is None:
            text = "".join(f"{u}:{_mosquitto_hash(p)}\n" for u, p in self._users.items())
            path.write_text(text, encoding="utf-8")
        else:
            path.unlink(missing_ok=True)
            for i, (user, password) in enumerate(self._users.items()):
                flags = ["-c", "-b"] if i == 0 else ["-b"]
                subprocess.run(
                    [tool, *flags, str(path), user, password],
                    check=True,
                    capture_output=True,
                    timeout=10,
                )
        path.chmod(0o600)
        return path

    def _write_amqtt_passwords(self) -> Path:
        from pwdlib import PasswordHash
        from pwdlib.hashers.argon2 import Argon2Hasher

        assert self._workdir is not None
        assert self._users
        hasher = PasswordHash((Argon2Hasher(),))
        path = self._workdir / "amqtt-passwd"
        path.write_text(
            "".join(f"{u}:{hasher.hash(p)}\n" for u, p in self._users.items()), encoding="utf-8"
        )
        path.chmod(0o600)
        return path


# -- the simulators' publishing client ------------------------------------------------------


def parse_url(url: str) -> tuple[str, int]:
    """``mqtt://HOST:PORT`` (or ``HOST:PORT``) as (host, port); port 1883 when omitted."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise ValueError(f"not an mqtt://HOST:PORT URL: {url!r}")
    return parts.hostname, parts.port or 1883


# publishes awaiting the broker's ack before a simulator's next one waits (``Publisher``'s
# ``window``): bounds paho's queue when a simulator publishes as fast as it can
PUBLISH_WINDOW = 10_000


class Publisher:
    """A paho 2 client for the simulators: unthrottled QoS 1 publishing, counted broker acks.

    Acknowledgements are counted in ``on_publish`` rather than with ``wait_for_publish``:
    a message published while the broker is away gets rc NO_CONN, which ``wait_for_publish``
    raises on, yet paho still sends it after reconnecting and the broker still acks it.
    """

    def __init__(
        self,
        url: str,
        *,
        protocol: Literal["5", "3.1.1"] = "5",
        username: str | None = None,
        password: str | None = None,
        client_id: str = "",
        max_inflight: int = 1000,
        window: int | None = None,
    ) -> None:
        self.host, self.port = parse_url(url)
        version = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version
        )
        self._client.max_inflight_messages_set(max_inflight)  # paho's default 20 throttles
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(1, 2)
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish
        self._cond = threading.Condition()
        # publishes not yet acknowledged that ``publish`` lets pile up before it waits (None:
        # no bound; paho queues them all)
        self._window = window
        self._connected = threading.Event()
        self._refused: str | None = None
        self._sent = 0
        self._acked = 0
        self._failed = 0

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._refused = str(reason)
        self._connected.set()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._cond:
            self._acked += 1
            if reason.is_failure:
                self._failed += 1
            self._cond.notify_all()

    def start(self, timeout: float = 10.0) -> None:
        """Connect and wait for the CONNACK; a refusal (e.g. bad credentials) raises."""
        self._client.connect(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(timeout) or self._refused is not None:
            self._client.loop_stop()
            self._client.disconnect()
            why = self._refused or f"no CONNACK within {timeout:g} s"
            raise ConnectionError(f"{self.host}:{self.port}: broker refused us: {why}")

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Hand one message to paho. With a ``window``, first wait (up to a minute, then go
        on) until fewer than that many are unacknowledged: a publisher faster than the
        broker otherwise queues everything in paho's memory, and with hundreds of
        thousands queued (10,000 pumps x 64 readings at full speed) paho stopped sending
        them, the broker idle, the rest never published."""
        with self._cond:
            window = self._window
            if window is not None:
                self._cond.wait_for(lambda: self._sent - self._acked < window, timeout=60.0)
            self._sent += 1
        self._client.publish(topic, payload, qos)

    @property
    def unacknowledged(self) -> int:
        """Messages handed to paho that the broker has not acknowledged yet."""
        with self._cond:
            return self._sent - self._acked

    def finish(self, timeout: float = 30.0) -> int:
        """Wait until the broker acknowledged every publish, disconnect; return how many not."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._acked < self._sent:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            missing = self._sent - self._acked + self._failed
        self._client.disconnect()
        self._client.loop_stop()
        return missing


# -- the amqtt child process ---------------------------------------------------------------


async def _serve_amqtt(port: int, password_file: str | None) -> None:
    from amqtt.broker import Broker

    plugins: dict[str, dict[str, object]] = {}
    if password_file:
        plugins["amqtt.plugins.authentication.FileAuthPlugin"] = {"password_file": password_file}
    else:
        plugins["amqtt.plugins.authentication.AnonymousAuthPlugin"] = {"allow_anonymous": True}
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{_HOST}:{port}"}},
        "plugins": plugins,
    }
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    broker = Broker(config, loop=loop)
    await broker.start()
    try:
        await stop.wait()
    finally:
        await broker.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.broker",
        description="Run a private MQTT broker in the foreground until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument("--prefer", choices=("auto", "mosquitto", "amqtt"), default="auto")
    parser.add_argument("--persistence", action="store_true", help="mosquitto persistence")
    parser.add_argument("--serve-amqtt", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--password-file", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve_amqtt:
        if args.port is None:
            parser.error("--serve-amqtt needs --port")
        import logging

        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
        asyncio.run(_serve_amqtt(args.port, args.password_file))
        return 0

    broker = PrivateBroker(prefer=args.prefer, persistence=args.persistence)
    if args.port is not None:
        broker._port = args.port
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        broker.start()
        print(f"{broker.url} ({broker.kind}, MQTT {broker.protocol}); Ctrl-C stops", flush=True)
        while not stop.wait(0.5):
            if not broker.running:
                print(f"broker exited; log tail:\n{_tail(broker.workdir / f'{broker.kind}.log')}")
                return 1
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
