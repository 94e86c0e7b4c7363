"""Per-device sliding windows over accepted readings (NumPy ring buffers)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from sentinel.config import WindowConfig
from sentinel.records import Reading, Window
from sentinel.timescale import TimeScale

__all__ = ["WindowAssembler"]


@dataclass(slots=True)
class _Ring:
    values: np.ndarray  # (length, n_features) float32
    times: np.ndarray  # (length,) float64
    head: int = 0  # next slot to write
    filled: int = 0  # readings held, up to length
    since_emit: int = 0  # readings added since the last window was emitted
    last_ts: float | None = None


@dataclass
class WindowAssembler:
    """Assembles fixed-length windows for every device of one stream.

    Readings must arrive in time order per device (the pipeline rejects out-of-order and
    duplicate readings before they get here). A window is emitted once ``length`` readings
    are held and ``hop`` new readings arrived since the previous window. A gap longer than
    ``max_gap`` seconds restarts the device's window: a window spanning a gap would mix two
    operating periods and look anomalous for no reason. Auto ``max_gap`` is 60 readings of
    ``interval``, the stream's model's learnt seconds per reading (sentinel.timescale).
    """

    stream: str
    n_features: int
    config: WindowConfig
    interval: float | None = None
    gap_resets: int = 0
    _rings: dict[str, _Ring] = field(default_factory=dict)
    max_gap: float = field(init=False)  # seconds, resolved once: add() runs per reading
    # Per ring head, the indices that unroll a full ring into time order: built once, as
    # _emit runs per window (np.r_ there was a visible share of the worker, issue #23).
    _unroll: list[npt.NDArray[np.intp]] = field(init=False)
    # config.length and config.hop as plain ints, read for every reading
    _length: int = field(init=False)
    _hop: int = field(init=False)

    def __post_init__(self) -> None:
        self.set_interval(self.interval)
        length = self._length = self.config.length
        self._hop = self.config.hop
        self._unroll = [np.r_[head:length, 0:head] for head in range(length)]

    def set_interval(self, interval: float | None) -> None:
        """Take a model's learnt interval: an auto ``max_gap`` follows it."""
        self.interval = interval
        self.max_gap = TimeScale(interval).max_gap(self.config.max_gap)

    def add(self, reading: Reading) -> Window | None:
        ring = self._rings.get(reading.device)
        if ring is None:
            ring = self._rings[reading.device] = self._new_ring()
        elif ring.last_ts is not None and reading.ts - ring.last_ts > self.max_gap:
            self.gap_resets += 1
            ring.filled = ring.since_emit = 0
        length, head = self._length, ring.head
        ring.values[head] = reading.values
        ring.times[head] = reading.ts
        ring.head = head + 1 if head + 1 < length else 0
        if ring.filled < length:
            ring.filled += 1
        ring.since_emit += 1
        ring.last_ts = reading.ts
        if ring.filled < length or ring.since_emit < self._hop:
            return None
        ring.since_emit = 0
        return self._emit(reading.device, ring)

    def reset(self, device: str) -> None:
        """Forget a device's buffered readings (its next window starts from scratch)."""
        self._rings.pop(device, None)

    @property
    def devices(self) -> int:
        return len(self._rings)

    def _new_ring(self) -> _Ring:
        length = self.config.length
        return _Ring(
            values=np.zeros((length, self.n_features), dtype=np.float32),
            times=np.zeros(length, dtype=np.float64),
        )

    def _emit(self, device: str, ring: _Ring) -> Window:
        # The ring is full, so the oldest reading sits at head: unroll it into time order.
        order = self._unroll[ring.head]
        times = ring.times[order]
        return Window(
            stream=self.stream,
            device=device,
            start_ts=float(times[0]),
            end_ts=float(times[-1]),
            values=ring.values[order],  # fancy indexing copies: the window owns its data
            times=times,
        )
