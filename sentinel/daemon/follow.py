"""A swap reaches every daemon: versions activated in the shared registry are swapped in.

With ``[registry] backend = "nats"`` (issue #24) any daemon, or ``sentinel models
activate`` on any host, writes a stream's active key; every daemon watches those keys
(``NatsRegistry.watch``) and this component loads what they name and hands it to the
pipeline through the same path as a local reload (``Retrainer.reload``: the version is
loaded first, its thresholds seeded from this daemon's reservoir, and the worker swaps it in
between two passes), so all daemons score a stream with the same version. A version this
daemon already runs or was handed (it activated it itself) is skipped. One that cannot be
loaded is logged and the running model kept, as for a local reload.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection

import structlog

from sentinel.errors import ModelError
from sentinel.model.nats_registry import Activation, NatsRegistry

__all__ = ["RegistryFollower"]

log = structlog.get_logger(__name__)


class RegistryFollower:
    """``start()``/``stop()``. ``adopt(activation)`` installs a version (on this
    component's thread); ``running(stream)`` is the version last handed to the pipeline."""

    def __init__(
        self,
        registry: NatsRegistry,
        streams: Collection[str],
        *,
        adopt: Callable[[Activation], None],
        running: Callable[[str], str | None],
    ) -> None:
        self._registry = registry
        self._streams = frozenset(streams)
        self._adopt = adopt
        self._running = running
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.adopted = 0  # versions swapped in because another process activated them

    def start(self) -> None:
        self._registry.watch()
        self._thread = threading.Thread(target=self._run, name="registry-follow", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            activation = self._registry.next_activation(timeout=0.5)
            if activation is None or activation.stream not in self._streams:
                continue
            if activation.instance == self._registry.instance:
                continue  # this process activated it, and handed it to the pipeline itself
            if self._running(activation.stream) == activation.version:
                self._mirror(activation)  # already running: only the cache's pointer
                continue
            try:
                self._adopt(activation)
            except ModelError as err:
                log.error(
                    "model_adopt_failed",
                    stream=activation.stream,
                    version=activation.version,
                    error=str(err),
                )
                continue
            except Exception:  # thread boundary: one bad version must not stop following
                log.exception("model_adopt_crashed", stream=activation.stream)
                continue
            self.adopted += 1
            self._mirror(activation)
            log.info(
                "model_adopted",
                stream=activation.stream,
                version=activation.version,
                reason=activation.reason,
                activated_by=activation.by,
            )

    def _mirror(self, activation: Activation) -> None:
        try:
            self._registry.mirror(activation.stream, activation.version, activation.reason)
        except ModelError as err:  # the cache only: NATS still has the truth
            log.warning("model_cache_pointer_failed", stream=activation.stream, error=str(err))
