"""The local control channel: a Unix socket in the state directory.

``<state_dir>/control.sock``, owner-only (0600), one JSON object per line each way:

* ``{"command": "retrain", "stream": S}`` -> queue a retraining run now;
* ``{"command": "reload", "stream": S}`` -> swap in the registry's active version (what
  ``sentinel models activate`` and ``rollback`` send after switching the ACTIVE pointer);
* ``{"command": "status"}`` -> active versions, queued runs, next scheduled runs;
* ``{"command": "reset_devices", "stream": S, "devices": [D, ...], "note": N}`` -> forget
  the devices' last timestamps in the pipeline and delete their stored progress
  (``sentinel devices reset``); served whether or not retraining is enabled.

Answers are ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. A socket in the
state directory needs no network exposure and its file permissions are the access control.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from sentinel.errors import SentinelError

__all__ = ["CONTROL_SOCKET", "ControlServer", "Handler", "send_command"]

log = structlog.get_logger(__name__)

CONTROL_SOCKET = "control.sock"
_MAX_LINE = 65_536

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlServer:
    """Serves commands from ``handlers[command](request) -> answer`` on its own thread."""

    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self._path = Path(path)
        self._handlers = handlers
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> Path:
        return self._path

    def start(self) -> None:
        if len(os.fsencode(self._path)) >= 104:  # sun_path is 104-108 bytes
            log.error("control_socket_path_too_long", path=str(self._path))
            return
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()  # left behind by a killed daemon
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self._path))
        finally:
            os.umask(old)
        sock.listen(8)
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="sentinel-control", daemon=True)
        self._thread.start()
        log.info("control_socket_listening", path=str(self._path))

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if not self._stop.is_set():
                    log.exception("control_accept_failed")
                return
            with conn:
                try:
                    conn.settimeout(5.0)
                    answer = self._answer(_read_line(conn))
                    conn.sendall(json.dumps(answer).encode() + b"\n")
                except OSError as err:
                    log.warning("control_connection_failed", error=str(err))
                except Exception:  # thread boundary: a bad request must not stop the channel
                    log.exception("control_request_failed")

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError as err:
            return {"ok": False, "error": f"not JSON: {err}"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "expected a JSON object"}
        handler = self._handlers.get(str(request.get("command")))
        if handler is None:
            return {
                "ok": False,
                "error": f"unknown command {request.get('command')!r}; "
                f"known: {sorted(self._handlers)}",
            }
        try:
            answer = handler(request)
        except (SentinelError, KeyError, ValueError) as err:
            return {"ok": False, "error": str(err)}
        log.info("control_command", command=request.get("command"), stream=request.get("stream"))
        return {"ok": True, **answer}


def send_command(path: Path, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one command to a running daemon. Raises ConnectionError when none listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as err:
            raise ConnectionError(f"no daemon listening on {path}") from err
        sock.sendall(json.dumps(request).encode() + b"\n")
        answer = json.loads(_read_line(sock))
    finally:
        sock.close()
    if not isinstance(answer, dict):
        raise ConnectionError(f"{path}: unexpected answer {answer!r}")
    return answer


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < _MAX_LINE:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]
