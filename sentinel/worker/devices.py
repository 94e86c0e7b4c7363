"""The devices the pipeline worker holds in memory, and how far each one got (issue #19).

Device names come from topics, so anyone allowed to publish can invent them: 30,000
made-up names took 47 MB and never left (docs/BENCHMARKS.md, *Device floods*). So a device
is held only while it talks. One that the worker does not hold is looked up in the store
first (``recall``: its last timestamp and count), which is the same path for a restart and
for a device coming back after ``ingest.device_idle``; each stream holds at most
``max_devices``; and the worker lets the idle ones go (``Pipeline._evict_idle`` frees the
rest of their state beside this table). Owned by the worker thread, like every other piece
of per-device state.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from sentinel.errors import StoreError
from sentinel.records import DeviceProgress, Reading

if TYPE_CHECKING:
    from sentinel.store import AlertStore

__all__ = ["Abandoned", "DeviceState", "DeviceTable", "Recall", "warn_future_progress"]

log = structlog.get_logger(__name__)

# Stored progress of some devices of one stream (``AlertStore.device_progress``).
Recall = Callable[[str, Collection[str]], Mapping[tuple[str, str], DeviceProgress]]

_RETRY_MIN = 0.1
_RETRY_MAX = 5.0


class Abandoned(Exception):
    """The store could not be read and the worker is stopping: the pass is not taken, and
    its messages stay unacknowledged for the broker to deliver again after the restart."""


@dataclass(slots=True)
class DeviceState:
    last_ts: float  # the newest accepted reading's time: older ones are out of order
    readings: int  # accepted in all, restarts included
    seen: float  # monotonic end of the latest pass that had a reading of it
    # monotonic time since when every reading of it was at or before last_ts (0: its
    # latest was taken), and whether that was logged (``Pipeline._not_after``)
    stale_since: float = 0.0
    stale_logged: bool = False


class DeviceTable:
    """Held devices by (stream, device), with a count per stream against its limit."""

    def __init__(
        self, limits: Mapping[str, int], recall: Recall | None, stopping: threading.Event
    ) -> None:
        self.limits = dict(limits)  # stream -> max_devices
        self._recall = recall
        self._stopping = stopping
        self._states: dict[tuple[str, str], DeviceState] = {}
        self._held = dict.fromkeys(self.limits, 0)
        self.recall_errors = 0  # failed lookups, each retried (for metrics)
        self.recall_error: str | None = None  # the latest, cleared by the next success

    def __contains__(self, key: object) -> bool:
        return key in self._states

    def keys(self) -> Collection[tuple[str, str]]:
        return self._states.keys()

    def get(self, key: tuple[str, str]) -> DeviceState | None:
        return self._states.get(key)

    def held(self) -> dict[str, int]:
        """Per stream, the devices held now."""
        return dict(self._held)

    def recall(self, readings: Iterable[Reading]) -> Mapping[tuple[str, str], DeviceProgress]:
        """Stored progress of the devices among ``readings`` that are not held, one query
        per stream. While the store fails this retries, as the writer does (nothing can be
        committed meanwhile either); if the worker is stopping it raises Abandoned."""
        unknown: dict[str, set[str]] = defaultdict(set)
        for reading in readings:
            if (reading.stream, reading.device) not in self._states:
                unknown[reading.stream].add(reading.device)
        if self._recall is None or not unknown:
            return {}
        found: dict[tuple[str, str], DeviceProgress] = {}
        for stream, devices in unknown.items():
            if self._held[stream] >= self.limits[stream]:
                continue  # none can be admitted in this pass: no query for a flood
            delay = _RETRY_MIN
            while True:
                try:
                    found.update(self._recall(stream, devices))
                    self.recall_error = None
                    break
                except StoreError as err:
                    self.recall_errors += 1
                    self.recall_error = str(err)
                    log.error(
                        "device_recall_failed",
                        stream=stream,
                        devices=len(devices),
                        error=str(err),
                        retry_in=delay,
                    )
                    if self._stopping.wait(delay):
                        raise Abandoned from err
                    delay = min(delay * 2, _RETRY_MAX)
        return found

    def admit(
        self, key: tuple[str, str], stored: DeviceProgress | None, now: float
    ) -> DeviceState | None:
        """Hold a device from ``now`` (monotonic) on, with its stored progress if it has
        any; None when its stream already holds its limit."""
        if self._held[key[0]] >= self.limits[key[0]]:
            return None
        self._held[key[0]] += 1
        if stored is None:
            state = DeviceState(-math.inf, 0, now)
        else:
            state = DeviceState(stored.last_ts, stored.readings, now)
        self._states[key] = state
        return state

    def seen(self, keys: Iterable[tuple[str, str]], now: float) -> None:
        """Held devices that had a reading in the pass that ends at ``now`` (monotonic): a
        pass that took long must not make its own devices look idle."""
        for key in keys:
            self._states[key].seen = now

    def reset(self, key: tuple[str, str], now: float) -> bool:
        """Forget a device's progress (an operator's reset); returns whether it was held.

        It is held from ``now`` on with none, rather than dropped, so that its next reading
        is taken even while the store still has the old row (the writer deletes it in
        order, but maybe after that reading's pass has looked it up); beyond the stream's
        limit if need be, for the few devices an operator resets.
        """
        held = key in self._states
        if not held:
            self._held[key[0]] += 1
        self._states[key] = DeviceState(-math.inf, 0, now)
        return held

    def idle(self, now: float, after: float) -> list[tuple[str, str]]:
        """The devices without a reading for ``after`` seconds (monotonic ``now``)."""
        return [key for key, state in self._states.items() if now - state.seen >= after]

    def remove(self, key: tuple[str, str]) -> None:
        if self._states.pop(key, None) is not None:
            self._held[key[0]] -= 1

    def progress(self, key: tuple[str, str]) -> DeviceProgress:
        state = self._states[key]
        return DeviceProgress(key[0], key[1], state.last_ts, state.readings)


def warn_future_progress(store: AlertStore, skew: float, examples: int = 5) -> int:
    """At start: warn about devices whose stored last timestamp is ahead of the clock by
    more than ``skew`` -- a far-future reading taken before ``ingest.max_future_skew``
    existed, which still makes every genuine reading of the device out of order. Not
    undone automatically: a clock that is behind (an edge box before NTP) looks the same.
    Returns how many there are."""
    ahead = store.devices(ahead_of=time.time() + skew)
    if ahead:
        log.warning(
            "device_state_in_future",
            devices=len(ahead),
            examples=[f"{d.stream}/{d.device}" for d in ahead[:examples]],
            effect="their readings are dropped as out_of_order until they are reset",
            fix="sentinel devices reset STREAM --future (or STREAM DEVICE ...)",
        )
    return len(ahead)
