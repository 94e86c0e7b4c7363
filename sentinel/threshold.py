"""Adaptive per-device thresholds on reconstruction scores.

Each device tracks a rolling quantile (river's ``RollingQuantile``) of its own recent
*normal* scores; the threshold is that quantile times a headroom multiplier. Until a device
has ``warmup`` normal scores it is judged against the model's calibration threshold, taken
from scores on held-back training windows.

Windows judged anomalous never update the quantile, so an anomaly cannot raise the bar it
is judged by (river's ``protect_anomaly_detector``). The price is river issue #948: a real,
lasting level shift keeps firing; issue #4 adds drift-aware re-baselining on top of this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from river import stats

from sentinel.config import ThresholdConfig
from sentinel.records import Score, Verdict

__all__ = ["ThresholdBank", "calibration_threshold"]


def calibration_threshold(quantiles: dict[str, float], quantile: float, multiplier: float) -> float:
    """The model's own threshold: its held-back score quantile nearest ``quantile``."""
    if not quantiles:
        raise ValueError("the model has no calibration quantiles")
    nearest = min(quantiles, key=lambda key: abs(float(key) - quantile))
    return quantiles[nearest] * multiplier


@dataclass(slots=True)
class _DeviceThreshold:
    quantile: stats.RollingQuantile
    normal_seen: int = 0


@dataclass
class ThresholdBank:
    """Thresholds for every (stream, device), created on first sight."""

    config: ThresholdConfig
    _devices: dict[tuple[str, str], _DeviceThreshold] = field(default_factory=dict)

    def judge(self, score: Score, fallback: float) -> Verdict:
        """Judge one score; normal scores then update the device's threshold.

        ``fallback`` is the model's calibration threshold, used during warm-up.
        """
        key = (score.window.stream, score.window.device)
        state = self._devices.get(key)
        if state is None:
            state = self._devices[key] = _DeviceThreshold(
                stats.RollingQuantile(self.config.quantile, window_size=self.config.history)
            )
        threshold = self.current(state, fallback)
        is_anomaly = score.value > threshold
        if not is_anomaly:
            state.quantile.update(score.value)
            state.normal_seen += 1
        return Verdict(score=score, threshold=threshold, is_anomaly=is_anomaly)

    def current(self, state: _DeviceThreshold, fallback: float) -> float:
        value = state.quantile.get()
        if state.normal_seen < self.config.warmup or value is None:
            return fallback
        return float(value) * self.config.multiplier

    def reset_stream(self, stream: str) -> None:
        """Forget a stream's thresholds, e.g. when a new model changes its score scale."""
        for key in [k for k in self._devices if k[0] == stream]:
            del self._devices[key]
