"""Adaptive per-device thresholds on window scores.

Two methods, chosen by ``threshold.method``:

* ``quantile`` -- each device tracks a rolling quantile (river's ``RollingQuantile``) of its
  own recent *normal* scores; the threshold is that quantile times a headroom multiplier.
  Until a device has ``warmup`` normal scores it is judged against the model's calibration
  threshold, taken from scores on held-back training windows.
* ``spot`` -- a drift-aware extreme-value threshold (DSPOT, Siffer et al., KDD 2017,
  ``sentinel.spot``) on the log of the score: autoencoder errors drift multiplicatively.
  It is fitted once per model on the log of the model's held-back scores, copied to every
  device, and then follows each device's own normal windows. Its risk ``q`` is the
  expected fraction of normal windows above the threshold. A model without enough
  held-back scores for the tail fit falls back to ``quantile``, with a warning.

Windows judged anomalous never update either method, so an anomaly cannot raise the bar it
is judged by (river's ``protect_anomaly_detector``). The price is river issue #948: a real,
lasting level shift keeps firing; drift-aware re-baselining is the rest of issue #4.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from river import stats

from sentinel.config import ThresholdConfig
from sentinel.records import Score, Verdict
from sentinel.spot import DSpot, SpotState

__all__ = ["ThresholdBank", "calibration_threshold"]

log = structlog.get_logger(__name__)

_LOG_FLOOR = 1e-12  # log() of a zero score


def calibration_threshold(quantiles: dict[str, float], quantile: float, multiplier: float) -> float:
    """The model's own threshold: its held-back score quantile nearest ``quantile``."""
    if not quantiles:
        raise ValueError("the model has no calibration quantiles")
    nearest = min(quantiles, key=lambda key: abs(float(key) - quantile))
    return quantiles[nearest] * multiplier


@dataclass(slots=True)
class _DeviceThreshold:
    quantile: stats.RollingQuantile
    recent: deque[float]  # what the rolling quantile holds, kept so it can be snapshotted
    normal_seen: int = 0
    spot: DSpot | None = None


@dataclass
class ThresholdBank:
    """Thresholds for every (stream, device), created on first sight."""

    config: ThresholdConfig
    _devices: dict[tuple[str, str], _DeviceThreshold] = field(default_factory=dict)
    # stream -> a DSPOT fitted on its model's held-back scores, or None when that failed
    _seeds: dict[str, DSpot | None] = field(default_factory=dict)

    def judge(self, score: Score, fallback: float, calibration: Sequence[float] = ()) -> Verdict:
        """Judge one score; normal scores then update the device's threshold.

        ``fallback`` is the model's calibration threshold (quantile warm-up);
        ``calibration`` its held-back scores, in time order (spot).
        """
        key = (score.window.stream, score.window.device)
        state = self._devices.get(key)
        if state is None:
            state = self._devices[key] = self._new_device(score.window.stream, calibration)
        if state.spot is not None:
            x = math.log(max(score.value, _LOG_FLOOR))
            threshold = math.exp(state.spot.threshold)
            is_anomaly = state.spot.step(x) == "anomaly"
            return Verdict(score=score, threshold=threshold, is_anomaly=is_anomaly)
        threshold = self.current(state, fallback)
        is_anomaly = score.value > threshold
        if not is_anomaly:
            state.quantile.update(score.value)
            state.recent.append(score.value)
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
        self._seeds.pop(stream, None)

    def reconfigure(self, config: ThresholdConfig) -> None:
        """Adopt a reloaded config without forgetting what the devices have learned.

        ``multiplier`` and ``warmup`` are read at every judgement. A new ``quantile`` or
        ``history`` rebuilds each device's rolling quantile from the normal scores it
        remembers. A change of method, or of DSPOT's parameters, refits DSPOT from the
        model's held-back scores when each device next scores a window.
        """
        old, self.config = self.config, config
        spot_keys = ("method", "risk", "spot_level", "spot_depth")
        if any(getattr(old, k) != getattr(config, k) for k in spot_keys):
            self._seeds.clear()
            if config.method == "spot":
                self._devices.clear()
            else:
                for state in self._devices.values():
                    state.spot = None
        if (old.quantile, old.history) != (config.quantile, config.history):
            for key, state in list(self._devices.items()):
                fresh = self._empty()
                for value in list(state.recent)[-config.history :]:
                    fresh.quantile.update(value)
                    fresh.recent.append(value)
                fresh.normal_seen = state.normal_seen
                fresh.spot = state.spot
                self._devices[key] = fresh

    def snapshot(self, stream: str) -> dict[str, Any]:
        """A stream's per-device threshold state as JSON-safe data (see ``restore``)."""
        return {
            device: {
                "normal_seen": state.normal_seen,
                "recent": list(state.recent),
                "spot": state.spot.state().to_dict() if state.spot is not None else None,
            }
            for (s, device), state in self._devices.items()
            if s == stream
        }

    def restore(self, stream: str, devices: Mapping[str, Any]) -> int:
        """Take back a snapshot; raises ValueError (naming the device) if it is corrupt."""
        restored: dict[tuple[str, str], _DeviceThreshold] = {}
        for device, data in devices.items():
            try:
                state = self._empty()
                for value in data["recent"][-self.config.history :]:
                    value = float(value)
                    if not math.isfinite(value):
                        raise ValueError(f"non-finite score {value}")
                    state.quantile.update(value)
                    state.recent.append(value)
                state.normal_seen = int(data["normal_seen"])
                spot = data.get("spot")
                if spot is not None:
                    state.spot = DSpot.from_state(SpotState.from_dict(spot))
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"device {device!r}: {err}") from err
            restored[(stream, str(device))] = state
        self._devices.update(restored)  # all or nothing
        return len(restored)

    def _empty(self) -> _DeviceThreshold:
        return _DeviceThreshold(
            stats.RollingQuantile(self.config.quantile, window_size=self.config.history),
            deque(maxlen=self.config.history),
        )

    def _new_device(self, stream: str, calibration: Sequence[float]) -> _DeviceThreshold:
        state = self._empty()
        if self.config.method == "spot":
            seed = self._seed(stream, calibration)
            if seed is not None:
                state.spot = DSpot.from_state(seed.state())
        return state

    def _seed(self, stream: str, calibration: Sequence[float]) -> DSpot | None:
        if stream in self._seeds:
            return self._seeds[stream]
        cfg = self.config
        spot: DSpot | None = DSpot(q=cfg.risk, level=cfg.spot_level, depth=cfg.spot_depth)
        try:
            assert spot is not None
            spot.fit([math.log(max(v, _LOG_FLOOR)) for v in calibration])
            log.info(
                "spot_threshold_fitted",
                stream=stream,
                samples=len(calibration),
                threshold=round(math.exp(spot.threshold), 4),
            )
        except ValueError as err:
            log.warning(
                "spot_threshold_unavailable",
                stream=stream,
                samples=len(calibration),
                reason=str(err),
                using="quantile",
            )
            spot = None
        self._seeds[stream] = spot
        return spot
