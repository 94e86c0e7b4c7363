"""Warm start: the readings from before a stream's first model, judged once it arrives.

Why (issue #21, causes 2, 6 and 7): a device's threshold, spike memory and constant check
learn only from windows they judge. Started at the first scored window, a device whose
normal includes pulses alerts on its first pulses (they become normal only after
``spikes.recurring_count`` of them), its spike noise scale is unknown for
``spikes.warmup`` readings and its threshold sits on the model's calibration for
``threshold.warmup`` windows -- although the model was trained on exactly those pulses.

So the readings a device sent before its stream had a model -- the rows the model was
trained on -- are kept (at most ``cold_start.warm_readings`` per device, the latest) and,
once the model is installed, run through the pipeline's own judging path with alerts
suppressed (``Pipeline._warm``): their windows are scored by the new model and fed to the
device's threshold (as any window is: one judged anomalous teaches it nothing, river's
``protect_anomaly_detector``), to the spike check (noise scale and remembered pulses) and
to the constant check. Replay hands its training rows to the same path
(``Pipeline.warm_up``). A device first seen after the model exists has no such readings
and starts cold. A daemon restarted before its stream's first model takes the readings it
kept from before the restart back from the retraining reservoir (``PipelineTap.latest``),
which is also what the model will be trained on; with retraining off the cold start's
readings were in memory and are collected afresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sentinel.records import Reading

__all__ = ["WarmTail"]


@dataclass(slots=True)
class _Ring:
    times: np.ndarray  # (size,) float64
    values: np.ndarray  # (size, n_features) float32, as windows hold them
    head: int = 0  # next slot to write
    filled: int = 0
    first: float = 0.0  # the first reading's time, kept after the ring wraps


@dataclass
class WarmTail:
    """Per device, the latest ``size`` readings of one stream, in arrival order.

    Memory is ``size`` x (4 x features + 8) bytes per device, held only while the stream
    waits for its first model (the pipeline drops the tail when the model is installed).
    """

    stream: str
    size: int
    n_features: int
    _rings: dict[str, _Ring] = field(default_factory=dict)

    def add(self, reading: Reading) -> None:
        if self.size <= 0:
            return
        ring = self._rings.get(reading.device)
        if ring is None:
            ring = self._rings[reading.device] = _Ring(
                np.zeros(self.size, dtype=np.float64),
                np.zeros((self.size, self.n_features), dtype=np.float32),
                first=reading.ts,
            )
        ring.times[ring.head] = reading.ts
        ring.values[ring.head] = reading.values
        ring.head = (ring.head + 1) % self.size
        ring.filled = min(ring.filled + 1, self.size)

    @property
    def devices(self) -> list[str]:
        return list(self._rings)

    def count(self, device: str) -> int:
        """How many readings of ``device`` are kept."""
        ring = self._rings.get(device)
        return 0 if ring is None else ring.filled

    def began(self, device: str, ts: float) -> None:
        """The device's readings began at ``ts``, before the first one added (a restart
        recalled its newest): ``span`` counts from there."""
        ring = self._rings.get(device)
        if ring is not None:
            ring.first = min(ring.first, ts)

    def span(self, device: str) -> tuple[float, float] | None:
        """The time of the device's first reading added (kept when the ring wraps) and of
        its newest; None for a device with none."""
        ring = self._rings.get(device)
        if ring is None or ring.filled == 0:
            return None
        return ring.first, float(ring.times[(ring.head - 1) % self.size])

    def readings(self, device: str) -> list[Reading]:
        """The device's kept readings, oldest first."""
        ring = self._rings.get(device)
        if ring is None:
            return []
        order = (ring.head - ring.filled + np.arange(ring.filled)) % self.size
        return [
            Reading(self.stream, device, float(ts), tuple(float(v) for v in row))
            for ts, row in zip(ring.times[order], ring.values[order], strict=True)
        ]
