"""Retraining wired into the daemon: reservoirs, retrainer, schedule, and its commands on
the control socket (``handlers``; the app serves them with its own), and its runs counted
in /metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from sentinel.config import SentinelConfig
from sentinel.daemon.control import Handler
from sentinel.daemon.metrics import record_retraining
from sentinel.model import Registry
from sentinel.retrain.job import open_reservoir
from sentinel.retrain.reservoir import HOLD_SECONDS, ReservoirTap
from sentinel.retrain.retrainer import Install, Retrainer
from sentinel.retrain.scheduler import SCHEDULE_FILE, RetrainScheduler

if TYPE_CHECKING:
    import torch

    from sentinel.retrain.lease import Lease

__all__ = ["RetrainService"]

log = structlog.get_logger(__name__)


class RetrainService:
    """Everything retraining adds to the daemon. ``tap`` goes to the pipeline; ``install``
    is how models reach it."""

    def __init__(
        self,
        config: SentinelConfig,
        registry: Registry,
        device: torch.device | None,
        *,
        has_model: Callable[[str], bool],
        install: Install,
        active_versions: Callable[[], dict[str, str | None]],
        lease: Lease | None = None,
    ) -> None:
        self._config = config
        self._registry = registry
        self._active_versions = active_versions
        self.tap = ReservoirTap(
            {s.name: open_reservoir(config, s.name) for s in config.streams}, hold=HOLD_SECONDS
        )
        self.retrainer = Retrainer(
            config,
            registry,
            device,
            has_model=has_model,
            reservoir_count=self.tap.count,
            reservoir_span=self.tap.span,
            install=install,
            on_finished=record_retraining,
            lease=lease,
        )
        self.scheduler = RetrainScheduler(
            config.retrain,
            [s.name for s in config.streams],
            self.retrainer.request,
            config.state_dir / SCHEDULE_FILE,
        )
        # Served on <state_dir>/control.sock by the app, beside its own commands.
        self.handlers: dict[str, Handler] = {
            "retrain": self._retrain,
            "reload": self._reload,
            "status": self._status,
        }

    def start(self) -> None:
        self.retrainer.start()
        self.scheduler.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop scheduling and cancel a run in progress (the pipeline keeps going)."""
        self.scheduler.stop()
        self.retrainer.stop(timeout)

    def close(self) -> None:
        """Close the reservoirs; after the pipeline has stopped writing to them."""
        self.tap.close()

    def _stream(self, request: dict[str, Any]) -> str:
        name = request.get("stream")
        if name is None and len(self._config.streams) == 1:
            return self._config.streams[0].name
        if not isinstance(name, str):
            raise ValueError("say which stream: the config has several")
        self._config.stream(name)  # KeyError names it
        return name

    def _retrain(self, request: dict[str, Any]) -> dict[str, Any]:
        stream = self._stream(request)
        queued = self.retrainer.request(stream, "manual")
        return {"stream": stream, "queued": queued}

    def _reload(self, request: dict[str, Any]) -> dict[str, Any]:
        stream = self._stream(request)
        return {"stream": stream, "version": self.retrainer.reload(stream)}

    def _status(self, request: dict[str, Any]) -> dict[str, Any]:
        active = self._active_versions()
        return {
            "streams": {
                s.name: {
                    "running_version": active.get(s.name),
                    "registry_active": self._registry.active_version(s.name),
                    "reservoir_rows": self.tap.count(s.name),
                    "next_run": self.scheduler.next_run(s.name),
                }
                for s in self._config.streams
            },
            "pending": self.retrainer.pending(),
        }
