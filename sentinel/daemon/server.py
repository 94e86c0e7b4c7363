"""The daemon's HTTP server: an ASGI app (``sentinel.api``) on uvicorn, in a thread of its own.

uvicorn runs its own asyncio loop on the ``sentinel-http`` thread; the daemon's other
threads never touch it. The listening socket is bound in ``start()`` on the caller's thread,
so a port in use fails the start with ``OSError`` at once (the app logs it and carries on
without the server, as before) and ``port = 0`` reports the port it took. ``stop(timeout)``
asks uvicorn to exit and waits for the thread; the socket is closed with it, so a restart of
the components in the same process (a SIGHUP that changed the streams) binds the port again.

Requests are not logged (``access_log`` off): a scrape every 15 s forever would drown the
journal. uvicorn's own warnings and errors go through the root logger, i.e. structlog's
renderer (``sentinel.logs``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import TYPE_CHECKING

import structlog
import uvicorn

if TYPE_CHECKING:
    from starlette.types import ASGIApp

__all__ = ["HttpServer"]

log = structlog.get_logger(__name__)

# Seconds uvicorn waits for requests in flight when stopping before it cancels them; a
# request blocked on a hung database must not hold the daemon's stop up for long.
GRACEFUL_SECONDS = 2


class HttpServer:
    """Serves ``app`` on ``bind:port``; constructed without I/O, ``start()``, ``stop()``."""

    def __init__(self, bind: str, port: int, app: ASGIApp) -> None:
        self._bind = bind
        self._port = port
        self._app = app
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._socket is not None:
            port: int = self._socket.getsockname()[1]
            return port
        return self._port

    def start(self, timeout: float = 10.0) -> None:
        """Bind (``OSError`` if that fails) and serve; returns once uvicorn accepts."""
        sock = _listen(self._bind, self._port)
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            access_log=False,
            log_config=None,  # the root logger's handler (structlog) renders its lines
            log_level="warning",
            server_header=False,
            timeout_graceful_shutdown=GRACEFUL_SECONDS,
        )
        server = uvicorn.Server(config)
        self._socket, self._server = sock, server
        self._thread = threading.Thread(
            target=self._serve, args=(server, sock), name="sentinel-http", daemon=True
        )
        self._thread.start()
        # uvicorn says it is serving by a flag only: poll it, with a deadline.
        deadline = time.monotonic() + timeout
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not server.started:
            self.stop()
            raise OSError(f"the HTTP server did not start on {self._bind}:{self._port}")
        log.info("health_listening", bind=self._bind, port=self.port)

    @staticmethod
    def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except Exception:  # thread boundary: the daemon goes on without its HTTP server
            log.exception("http_server_failed")

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("http_server_stop_timeout", timeout=timeout)
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
        self._server = self._thread = None
        self._socket = None


def _listen(bind: str, port: int) -> socket.socket:
    """A listening TCP socket on ``bind`` (an IPv4 or IPv6 address, or a host name)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        bind.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        # A restart must not wait out TIME_WAIT connections of the previous process.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
