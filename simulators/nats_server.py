"""A private nats-server with JetStream on free local ports, for tests and the demo.

Like ``simulators.broker.PrivateBroker`` for Mosquitto: it listens on 127.0.0.1 only, never
on the shared 4222, keeps its JetStream store in its work dir (so ``restart()`` keeps streams,
messages and consumers), and can open NATS's MQTT listener (which needs a ``server_name``
and JetStream, both set here). ``mappings`` become the account's subject mappings, which is
where nats-server 2.9 partitions subjects (``sentinel.ingest.subjects.server_mappings``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from simulators.broker import TlsListener, _find_binary, free_ports, launch_server, stop_server

__all__ = ["PrivateNats", "find_nats_server"]

_HOST = "127.0.0.1"


def find_nats_server() -> str | None:
    """Path of the nats-server binary, or None."""
    return _find_binary("nats-server")


class PrivateNats:
    """A nats-server process of our own: ``start()``, ``stop()``, ``restart()``. ``users``
    (name: password) turns on password authentication; ``tls`` makes the client listener
    speak TLS with that certificate."""

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        mappings: Mapping[str, str] | None = None,
        mqtt: bool = False,
        users: Mapping[str, str] | None = None,
        tls: TlsListener | None = None,
    ) -> None:
        self._workdir = workdir
        self._owns_workdir = False
        self._mappings = dict(mappings or {})
        self._mqtt = mqtt
        self._users = dict(users or {})
        self._tls = tls
        self._port: int | None = None
        self._mqtt_port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        return _HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"nats://{_HOST}:{self.port}"

    @property
    def mqtt_port(self) -> int:
        if self._mqtt_port is None:
            raise RuntimeError("started without the MQTT listener")
        return self._mqtt_port

    @property
    def log_path(self) -> Path:
        if self._workdir is None:
            raise RuntimeError("the server has not been started")
        return self._workdir / "nats-server.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        with self._lock:
            if self.running:
                return
            if self._workdir is None:
                self._workdir = Path(tempfile.mkdtemp(prefix="sentinel-nats-"))
                self._owns_workdir = True
            self._workdir.mkdir(parents=True, exist_ok=True)
            if self._port is None:
                self._port, *mqtt = free_ports(2 if self._mqtt else 1)
                self._mqtt_port = mqtt[0] if mqtt else None
            self._launch(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (JetStream writes its state), SIGKILL after ``timeout``. Idempotent."""
        with self._lock:
            self._terminate(timeout)
            if self._owns_workdir and self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same ports and store (a server outage)."""
        with self._lock:
            self._terminate(timeout)
            self._launch(timeout)

    def __enter__(self) -> PrivateNats:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _conf(self) -> Path:
        assert self._workdir is not None
        # JSON strings are valid in nats-server's config syntax and quote {{...}} safely.
        lines = [
            "server_name: sentinel-test",
            f"listen: {_HOST}:{self._port}",
            f"jetstream {{ store_dir: {json.dumps(str(self._workdir / 'js'))} }}",
        ]
        if self._tls is not None:
            cert, key = json.dumps(str(self._tls.cert_file)), json.dumps(str(self._tls.key_file))
            lines.append(f"tls {{ cert_file: {cert}, key_file: {key} }}")
        if self._users:
            users = ", ".join(
                f"{{user: {json.dumps(u)}, password: {json.dumps(p)}}}"
                for u, p in self._users.items()
            )
            lines.append(f"authorization {{ users: [{users}] }}")
        if self._mqtt_port is not None:
            lines.append(f"mqtt {{ listen: {_HOST}:{self._mqtt_port} }}")
        if self._mappings:
            lines.append("mappings = {")
            lines += [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in self._mappings.items()]
            lines.append("}")
        path = self._workdir / "nats-server.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _launch(self, timeout: float) -> None:
        binary = find_nats_server()
        if binary is None:
            raise RuntimeError("no nats-server binary (apt-get install nats-server)")
        ports = [p for p in (self._port, self._mqtt_port) if p is not None]
        self._proc = launch_server(
            "nats-server", [binary, "-c", str(self._conf())], self.log_path, ports, timeout
        )

    def _terminate(self, timeout: float) -> None:
        proc, self._proc = self._proc, None
        stop_server(proc, timeout)
