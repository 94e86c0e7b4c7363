"""Counters for what the pipeline took in, skipped and produced, and its rejection log."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from sentinel.logs import Throttle
from sentinel.records import Rejected, RejectReason

__all__ = ["PipelineStats", "RejectionLog"]

log = structlog.get_logger(__name__)


@dataclass
class RejectionLog:
    """Counts rejected input by reason; logs each reason at most once per ``interval``.

    A broken device can send thousands of bad messages a second: every one is counted,
    but the log shows one line per reason per interval, with how many were suppressed.
    """

    interval: float
    clock: Callable[[], float] = time.monotonic
    counts: Counter[RejectReason] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._throttle = Throttle(self.interval, self.clock)

    def record(self, rejected: Rejected) -> None:
        reason = rejected.reason
        self.counts[reason] += 1
        suppressed = self._throttle.allow(reason)
        if suppressed is None:
            return
        log.warning(
            "input_rejected",
            reason=reason.value,
            topic=rejected.topic,
            detail=rejected.detail,
            payload=rejected.payload_head,
            suppressed_since_last=suppressed,
            total=self.counts[reason],
        )

    def as_dict(self) -> dict[str, int]:
        return {reason.value: n for reason, n in sorted(self.counts.items())}


@dataclass
class PipelineStats:
    """What the worker did; read by the app's periodic stats line and by tests."""

    messages: int = 0
    readings: int = 0
    windows: int = 0
    windows_unscored: int = 0  # no model yet for the stream
    warm_windows: int = 0  # judged with alerts suppressed at a first model (warmup.py)
    # judged with alerts suppressed in a device's first cold_start.span after it joined
    learning_windows: int = 0
    scored: int = 0
    anomalous: int = 0
    recurring: int = 0  # above the threshold, normal as a recurring excursion (recurring.py)
    relation_broken: int = 0  # a feature left the device's relations (relations.py)
    alerts_opened: int = 0
    alerts_closed: int = 0
    alerts_reopened: int = 0  # within alerts.cooldown of their end: the same alert again
    batch_errors: int = 0
    evicted: int = 0  # devices whose state left memory after ingest.device_idle
    score_seconds: float = 0.0

    def as_dict(self) -> dict[str, int | float]:
        return {
            "messages": self.messages,
            "readings": self.readings,
            "windows": self.windows,
            "windows_unscored": self.windows_unscored,
            "warm_windows": self.warm_windows,
            "learning_windows": self.learning_windows,
            "scored": self.scored,
            "anomalous": self.anomalous,
            "recurring": self.recurring,
            "relation_broken": self.relation_broken,
            "alerts_opened": self.alerts_opened,
            "alerts_closed": self.alerts_closed,
            "alerts_reopened": self.alerts_reopened,
            "batch_errors": self.batch_errors,
            "devices_evicted": self.evicted,
            "score_ms_per_window": round(1e3 * self.score_seconds / self.scored, 3)
            if self.scored
            else 0.0,
        }
