"""What the API needs of the running daemon, handed to ``build_app`` in one object.

The API holds no state of its own: alerts and devices are read and changed through the
daemon's ``AlertStore`` (the functions the CLI uses), models through its ``Registry``,
and what only the pipeline worker knows (a device's live threshold) is asked of it with a
typed command (``Pipeline.describe_devices``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sentinel.config import SentinelConfig
    from sentinel.daemon.health import Health
    from sentinel.daemon.metrics import Metrics
    from sentinel.model import Registry
    from sentinel.store import AlertStore
    from sentinel.worker.commands import DeviceView

__all__ = ["ApiContext", "DescribeDevices", "ReloadModel"]

# (stream, device) pairs -> the worker's view of each; None when it did not answer in time.
DescribeDevices = Callable[[Sequence[tuple[str, str]]], "dict[tuple[str, str], DeviceView] | None"]
# Swap the registry's active version of a stream into the running pipeline; returns it.
ReloadModel = Callable[[str], str]


@dataclass(frozen=True)
class ApiContext:
    """The daemon's parts the API reads and acts through. ``config`` is a callable: a
    SIGHUP reload replaces the daemon's config, and the API follows it."""

    config: Callable[[], SentinelConfig]
    store: AlertStore
    registry: Registry
    health: Health
    metrics: Metrics
    # The running pipeline's model versions per stream (None while a stream has none).
    model_versions: Callable[[], dict[str, str | None]]
    describe_devices: DescribeDevices
    # None when the daemon cannot swap a model in while running (retraining is off): an
    # activation then takes effect at its next start, as with `sentinel models activate`.
    reload_model: ReloadModel | None
    token: str | None  # the write actions' bearer token; None disables them
