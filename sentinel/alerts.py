"""Group anomalous windows into alerts with a lifecycle.

``open_after`` anomalous windows among a device's last ``open_within`` (M of N; by default
M consecutive) open an alert; it stays open and is updated while windows stay anomalous,
and closes after ``close_after`` consecutive normal windows. At most one alert is open per
(stream, device). Open alerts are restored from the database at start, so a restarted
daemon continues them instead of opening duplicates.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from sentinel.config import AlertsConfig
from sentinel.records import Alert, AlertStatus, FeatureContribution, Verdict

__all__ = ["AlertTracker"]


@dataclass(slots=True)
class _Open:
    alert: Alert
    excess: np.ndarray  # summed per-feature error above normal, over the alert's windows
    normal_run: int = 0


@dataclass(slots=True)
class _Device:
    recent: deque[Verdict]  # the last N verdicts while no alert is open
    open: _Open | None = None


@dataclass
class AlertTracker:
    """Turns a device's verdicts, in time order, into alert changes."""

    config: AlertsConfig
    features: dict[str, tuple[str, ...]]  # stream -> feature names
    _devices: dict[tuple[str, str], _Device] = field(default_factory=dict)

    def restore(self, alerts: Iterable[Alert]) -> int:
        """Take over alerts that were open when the daemon last stopped."""
        restored = 0
        for alert in alerts:
            if alert.status is AlertStatus.CLOSED or alert.stream not in self.features:
                continue
            names = self.features[alert.stream]
            excess = np.zeros(len(names))
            for contribution in alert.top_features:
                if contribution.feature in names:
                    excess[names.index(contribution.feature)] = contribution.share
            device = self._device(alert.stream, alert.device)
            device.open = _Open(alert=alert, excess=excess)
            restored += 1
        return restored

    def observe(self, verdict: Verdict, baseline: Sequence[float]) -> Alert | None:
        """Feed one verdict; returns the alert's new state if this verdict changed it.

        ``baseline`` is the model's mean per-feature error on normal data: contributions are
        how far each feature's error rose *above* its normal level, so a naturally noisy
        sensor is not blamed for every alert.
        """
        window = verdict.score.window
        device = self._device(window.stream, window.device)
        if verdict.is_anomaly:
            return self._anomalous(device, verdict, baseline)
        current = device.open
        if current is None:
            device.recent.append(verdict)  # normal windows age anomalous ones out
            return None
        current.normal_run += 1
        if current.normal_run < self.config.close_after:
            return None
        device.open = None
        # The anomaly ended with the last anomalous window, not with the normal run after it.
        alert = current.alert
        return replace(alert, status=AlertStatus.CLOSED, ended_at=alert.updated_at)

    def _device(self, stream: str, device: str) -> _Device:
        key = (stream, device)
        state = self._devices.get(key)
        if state is None:
            state = self._devices[key] = _Device(deque(maxlen=self.config.window_span))
        return state

    def reconfigure(self, config: AlertsConfig) -> None:
        """Adopt reloaded alert rules; open alerts stay open and follow the new rules."""
        span_changed = config.window_span != self.config.window_span
        self.config = config
        if span_changed:
            for device in self._devices.values():
                device.recent = deque(device.recent, maxlen=config.window_span)

    @property
    def open_alerts(self) -> int:
        return sum(1 for d in self._devices.values() if d.open is not None)

    def _anomalous(
        self, device: _Device, verdict: Verdict, baseline: Sequence[float]
    ) -> Alert | None:
        current = device.open
        if current is not None:
            current.normal_run = 0
            current.excess += self._excess(verdict, baseline)
            alert = current.alert
            score = verdict.score
            current.alert = replace(
                alert,
                updated_at=score.window.end_ts,
                peak_score=max(alert.peak_score, score.value),
                windows=alert.windows + 1,
                top_features=self._top(score.window.stream, current.excess),
                model_version=score.model_version,
            )
            return current.alert
        device.recent.append(verdict)
        run = [v for v in device.recent if v.is_anomaly]
        if len(run) < self.config.open_after:
            return None
        device.recent.clear()
        excess = sum((self._excess(v, baseline) for v in run), np.zeros(len(baseline)))
        first, last = run[0].score, run[-1].score
        peak = max(run, key=lambda v: v.score.value)
        alert = Alert(
            uid=str(uuid.uuid4()),
            stream=first.window.stream,
            device=first.window.device,
            status=AlertStatus.OPEN,
            started_at=first.window.end_ts,
            updated_at=last.window.end_ts,
            ended_at=None,
            peak_score=peak.score.value,
            threshold=peak.threshold,
            top_features=self._top(first.window.stream, excess),
            model_version=last.model_version,
            windows=len(run),
        )
        device.open = _Open(alert=alert, excess=excess)
        return alert

    @staticmethod
    def _excess(verdict: Verdict, baseline: Sequence[float]) -> np.ndarray:
        # Each feature's error as a multiple of its normal level, minus the normal 1x: the
        # same per-feature ratio the score is made of.
        errors = np.asarray(verdict.score.feature_errors, dtype=np.float64)
        normal = np.maximum(np.asarray(baseline, dtype=np.float64), 1e-4)
        return np.maximum(errors / normal - 1.0, 0.0)

    def _top(self, stream: str, excess: np.ndarray) -> tuple[FeatureContribution, ...]:
        total = float(excess.sum())
        if total <= 0.0:
            return ()
        names = self.features[stream]
        order = np.argsort(-excess)[: self.config.top_features]
        return tuple(
            FeatureContribution(feature=names[i], share=round(float(excess[i]) / total, 4))
            for i in order
            if excess[i] > 0.0
        )
