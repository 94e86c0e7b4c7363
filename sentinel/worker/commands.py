"""Requests from other threads to the pipeline worker: one typed command each, on one queue.

The worker alone owns the per-stream and per-device state, so the other threads only ask:
the retrainer (a new model, a failed training), the reload (a new config), the writer
(alerts an operator resolved) and the control socket (a device reset) each put a command
on the pipeline's queue, and the worker runs them between two passes, in the order they
came -- a reload and then a swap is applied in that order. Each command is a frozen
dataclass whose ``run`` applies it, as Home Assistant's recorder does with its
``RecorderTask``s, instead of a queue per kind of request and tuples with magic ``None``s
(issue #20).

Deliveries keep their own queue: it is bounded, and a full one makes the MQTT network
thread wait and then refuse a message (backpressure), while a command must never be
refused nor wait behind a backlog of readings.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sentinel.config import SentinelConfig
from sentinel.model import Detector
from sentinel.records import Alert, DeviceJudgeState, Reading, ThresholdState

if TYPE_CHECKING:
    from sentinel.worker.pipeline import Pipeline

__all__ = [
    "AlertsResolved",
    "Command",
    "DescribeDevices",
    "DeviceView",
    "DevicesReply",
    "HandOver",
    "HandOverReply",
    "InstallModel",
    "Reconfigure",
    "ResetDevices",
    "ResetReply",
    "TrainingFailed",
    "WarmUp",
]


class Command(ABC):
    """A request to the pipeline worker; ``run`` applies it, on the worker thread."""

    @abstractmethod
    def run(self, pipeline: Pipeline) -> None: ...


@dataclass(frozen=True)
class InstallModel(Command):
    """A new model for ``stream``. ``seeds``: per device, its scores on recent normal
    windows, oldest first (the thresholds it starts with); ``shadow``: it first scores
    beside the active model (a scheduled promotion, ``sentinel.worker.shadow``)."""

    stream: str
    detector: Detector
    seeds: Mapping[str, Sequence[float]] = field(default_factory=dict)
    shadow: bool = False

    def run(self, pipeline: Pipeline) -> None:
        pipeline._install_model(self.stream, self.detector, self.seeds, self.shadow)


@dataclass(frozen=True)
class WarmUp(Command):
    """Readings from before ``stream``'s model (replay's training rows), to be judged with
    alerts suppressed so their devices start warm (``sentinel.worker.warmup``)."""

    stream: str
    readings: tuple[Reading, ...]

    def run(self, pipeline: Pipeline) -> None:
        pipeline._warm_up(self.stream, self.readings)


@dataclass(frozen=True)
class TrainingFailed(Command):
    """A cold-start training run for ``stream`` failed: collect afresh."""

    stream: str

    def run(self, pipeline: Pipeline) -> None:
        pipeline._training_failed(self.stream)


@dataclass(frozen=True)
class Reconfigure(Command):
    """A reloaded config, whose live keys the worker takes."""

    config: SentinelConfig

    def run(self, pipeline: Pipeline) -> None:
        pipeline._reconfigure(self.config)


@dataclass(frozen=True)
class AlertsResolved(Command):
    """Alerts an operator resolved (reported by the writer after its commit)."""

    uids: tuple[str, ...]

    def run(self, pipeline: Pipeline) -> None:
        pipeline._alerts_resolved(self.uids)


@dataclass
class ResetReply:
    """The worker's answer to a ``ResetDevices``; ``done`` is set once it is given."""

    done: threading.Event = field(default_factory=threading.Event)
    held: list[str] = field(default_factory=list)  # those the worker had in memory
    error: str | None = None  # why the writer did not take the reset


@dataclass(frozen=True)
class ResetDevices(Command):
    """``sentinel devices reset`` through the control socket; the caller waits on
    ``reply``."""

    stream: str
    devices: tuple[str, ...]
    note: str | None = None
    reply: ResetReply = field(default_factory=ResetReply)

    def run(self, pipeline: Pipeline) -> None:
        pipeline._reset_devices(self.stream, self.devices, self.note, self.reply)


@dataclass(frozen=True, slots=True)
class DeviceView:
    """What the worker holds of one device now (the REST API's device view)."""

    stream: str
    device: str
    held: bool  # in memory; False: idle (parked) or never seen since the start
    threshold: ThresholdState | None  # None while not held, or without a model


@dataclass
class DevicesReply:
    """The worker's answer to a ``DescribeDevices``; ``done`` is set once it is given."""

    done: threading.Event = field(default_factory=threading.Event)
    views: dict[tuple[str, str], DeviceView] = field(default_factory=dict)


@dataclass(frozen=True)
class DescribeDevices(Command):
    """A read of the worker's per-device state for ``keys`` ((stream, device) pairs); the
    caller waits on ``reply``. Nothing changes."""

    keys: tuple[tuple[str, str], ...]
    reply: DevicesReply = field(default_factory=DevicesReply)

    def run(self, pipeline: Pipeline) -> None:
        try:
            pipeline._describe_devices(self.keys, self.reply)
        finally:
            self.reply.done.set()


@dataclass
class HandOverReply:
    """The worker's answer to a ``HandOver``; ``done`` is set once it is applied."""

    done: threading.Event = field(default_factory=threading.Event)
    devices: int = 0  # devices it let go of


@dataclass(frozen=True)
class HandOver(Command):
    """A partition moving to or from this daemon (``sentinel.cluster``): the worker lets go
    of every device for which ``belongs(device)`` holds, so that the next reading of one is
    recalled from the store (the other daemon's progress). Giving (``save``), it first
    stores what the judge learnt of them; taking, it restores ``alerts`` (the store's open
    and last ended alerts of the partition) and ``judge`` (its devices' saved judge
    state). The caller waits on ``reply``."""

    belongs: Callable[[str], bool]
    alerts: tuple[Alert, ...] = ()
    judge: tuple[DeviceJudgeState, ...] = ()
    save: bool = False
    reply: HandOverReply = field(default_factory=HandOverReply)

    def run(self, pipeline: Pipeline) -> None:
        try:
            pipeline._hand_over(self)
        finally:
            self.reply.done.set()
