"""One NATS connection on its own asyncio loop thread, for synchronous callers.

The shared model registry (``sentinel.model.nats_registry``) and the retraining lease
(``sentinel.retrain.lease``) are called from ordinary threads: the retrainer, the control
socket, the CLI. nats-py is asyncio, so this link runs its loop on a thread of its own and
``call`` hands it one coroutine at a time, waiting at most ``timeout`` for the answer. A
first connection that fails is retried in the background (a daemon started while NATS is
down works from its local cache and catches up once NATS answers); later outages are
nats-py's reconnects. ``generation`` counts connections, so that a watcher can start again
after a reconnect (the server forgets ephemeral consumers when it restarts).

The connection settings are the ``[nats]`` section's, as for the JetStream source
(``sentinel.ingest.nats``), which keeps a connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import structlog
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from sentinel.config import NatsConfig
from sentinel.errors import RegistryUnavailable

__all__ = ["NatsLink", "tls_context"]

log = structlog.get_logger(__name__)

T = TypeVar("T")


def tls_context(config: NatsConfig) -> ssl.SSLContext | None:
    """The TLS context ``[nats.tls]`` asks for; None when TLS is off (shared with the
    JetStream source, ``sentinel.ingest.nats``)."""
    tls = config.tls
    if not tls.enabled:
        return None
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.insecure:
        context.check_hostname = False
    return context


class NatsLink:
    """``start(wait)``, ``call(fn, timeout)``, ``stop()``. ``fn`` receives the JetStream
    context and runs on the link's loop."""

    def __init__(self, config: NatsConfig, *, role: str) -> None:
        self._config = config
        self._role = role  # appended to the connection name: "registry", "cli", ...
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._nc: NatsClient | None = None
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._stop_async: asyncio.Event | None = None
        self._ready = threading.Event()  # the loop runs
        self.generation = 0  # +1 at every (re)connection
        self._last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self, wait: float) -> bool:
        """Start the loop and connect; True when connected within ``wait`` seconds (the
        connection keeps being tried in the background either way)."""
        self._thread = threading.Thread(target=self._run, name=f"nats-{self._role}", daemon=True)
        self._thread.start()
        self._ready.wait(5.0)
        return self._connected.wait(wait)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        loop, stop_async = self._loop, self._stop_async
        if loop is not None and stop_async is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed already
                loop.call_soon_threadsafe(stop_async.set)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("nats_link_stop_timed_out", role=self._role)
            self._thread = None

    def call(self, fn: Callable[[JetStreamContext], Awaitable[T]], timeout: float) -> T:
        """Run ``fn(js)`` on the loop; RegistryUnavailable when not connected, on a NATS
        error or after ``timeout`` seconds. Other exceptions of ``fn`` pass through."""
        loop, nc = self._loop, self._nc
        if loop is None or nc is None or not self._connected.is_set():
            raise RegistryUnavailable("NATS is not connected")

        async def run() -> T:
            return await asyncio.wait_for(fn(nc.jetstream(timeout=timeout)), timeout)

        try:
            future = asyncio.run_coroutine_threadsafe(run(), loop)
        except RuntimeError as err:  # the loop closed
            raise RegistryUnavailable("NATS link stopped") from err
        try:
            return future.result(timeout + 1.0)
        except (NatsError, TimeoutError, OSError) as err:
            future.cancel()
            raise RegistryUnavailable(f"NATS: {err!r}") from err

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a long-lived task (a watcher) on the loop; it ends with the link."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("the link has not been started")
        self._loop.call_soon_threadsafe(self._loop.create_task, coro)

    async def wait_stop(self, seconds: float) -> bool:
        """On the loop: True once the link stops, False after ``seconds``."""
        assert self._stop_async is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_async.wait(), seconds)
        return self._stop_async.is_set()

    async def client(self) -> NatsClient | None:
        """On the loop: the connected client, waiting for one; None once the link stops."""
        assert self._stop_async is not None
        while not self._stop_async.is_set():
            if self._nc is not None and self._connected.is_set():
                return self._nc
            await self.wait_stop(0.2)
        return None

    # -- the loop's thread --------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except Exception:  # thread boundary: say why the link stopped
            log.exception("nats_link_crashed", role=self._role)
        finally:
            self._connected.clear()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _main(self) -> None:
        self._stop_async = asyncio.Event()
        self._ready.set()
        if self._stopping.is_set():
            return
        nc = await self._connect()
        if nc is None:
            return
        try:
            await self._stop_async.wait()
        finally:
            with contextlib.suppress(NatsError, TimeoutError, OSError):
                await nc.close()
            self._connected.clear()

    def _options(self) -> dict[str, Any]:
        cfg = self._config
        options: dict[str, Any] = {
            "servers": cfg.servers,
            "name": f"{cfg.name}-{self._role}"[:64],
            "connect_timeout": cfg.connect_timeout,
            "reconnect_time_wait": cfg.reconnect_wait,
            "max_reconnect_attempts": -1,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "error_cb": self._on_error,
            "tls": tls_context(cfg),
        }
        if cfg.username:
            password = cfg.password
            options["user"] = cfg.username
            options["password"] = password.get_secret_value() if password else ""
        if cfg.creds_file is not None:
            options["user_credentials"] = str(cfg.creds_file)
        return options

    async def _connect(self) -> NatsClient | None:
        assert self._stop_async is not None
        warned = False
        while not self._stop_async.is_set():
            nc = NatsClient()
            # nats-py may retry a first connection on its own: race it against the stop.
            connecting = asyncio.ensure_future(nc.connect(**self._options()))
            stopped = asyncio.ensure_future(self._stop_async.wait())
            await asyncio.wait({connecting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not connecting.done():
                connecting.cancel()
                await asyncio.gather(connecting, return_exceptions=True)
                with contextlib.suppress(NatsError, TimeoutError, OSError):
                    await nc.close()
                return None
            err = connecting.exception()
            if err is None:
                self._nc = nc
                self._connected_again()
                log.info("nats_link_connected", role=self._role)
                return nc
            if not isinstance(err, NatsError | OSError | TimeoutError):
                raise err
            if not warned:  # once: an edge box may wait for hours, on its local cache
                log.warning("nats_link_unavailable", role=self._role, error=str(err))
                warned = True
            await self.wait_stop(self._config.reconnect_wait)
        return None

    def _connected_again(self) -> None:
        self.generation += 1
        self._last_error = None
        self._connected.set()

    async def _on_disconnected(self) -> None:
        self._connected.clear()
        if not self._stopping.is_set():
            log.warning("nats_link_disconnected", role=self._role)

    async def _on_reconnected(self) -> None:
        self._connected_again()
        log.info("nats_link_reconnected", role=self._role)

    async def _on_error(self, err: Exception) -> None:
        # Each failed reconnect attempt reports here: say each kind of error once.
        text = str(err) or type(err).__name__
        if text != self._last_error:
            self._last_error = text
            log.warning("nats_link_error", role=self._role, error=text)
