"""Lasting regime changes on top of the simulated pump fleet, with labelled spikes.

``simulators.fleet`` injects *short* faults; thresholds are also judged by what happens after
a change that never goes away. :class:`RegimeScenario` takes a clean
:class:`~simulators.fleet.FleetSimulator` and applies, per device, at most one lasting
change from its ``start`` to the end of the run:

* ``level_shift``: one channel offset by ``magnitude`` x its scale (a recalibrated or
  replaced sensor, a new operating point);
* ``gain_drift``: one channel multiplied by ``1 + magnitude * min(1, (t - start) / ramp)``
  (multiplicative drift: fouling, wear, a sensor's gain creeping, then staying);
* ``noise_change``: extra white noise of ``magnitude`` x the channel's scale (a noisier
  sensor or a rougher running pump).

On every device it also injects short spikes (``spike_rate`` per hour; 1-3 readings of
``spike_size`` x scale, default 8-12 as in ``simulators.fleet``, on one channel, positive on
vibration), whose truth is in ``spikes``: the recall target. Channel scales are the fleet
simulator's (``FleetSimulator.scale``). Deterministic per seed; the clean signal is the
fleet simulator's, whatever is injected.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulators.fleet import FEATURES, FleetSimulator, SimReading

__all__ = [
    "CHANGE_KINDS",
    "Evaluation",
    "Recorder",
    "RegimeChange",
    "RegimeScenario",
    "RunRecord",
    "Spike",
    "evaluate",
]

CHANGE_KINDS = ("level_shift", "gain_drift", "noise_change")


@dataclass(frozen=True, slots=True)
class RegimeChange:
    """From ``start`` on, ``device``'s ``feature`` runs in a new regime (see module doc)."""

    device: str
    kind: str
    feature: str
    start: float
    magnitude: float
    ramp: float = 0.0  # gain_drift: seconds to reach the full gain change

    def __post_init__(self) -> None:
        if self.kind not in CHANGE_KINDS:
            raise ValueError(f"kind must be one of {CHANGE_KINDS}, got {self.kind!r}")
        if self.feature not in FEATURES:
            raise ValueError(f"unknown feature {self.feature!r}")
        if self.kind == "gain_drift" and self.ramp <= 0:
            raise ValueError("gain_drift needs ramp > 0")


@dataclass(frozen=True, slots=True)
class Spike:
    """Readings of ``device`` with ``start <= ts < end`` carry the spike."""

    device: str
    feature: str
    start: float
    end: float
    magnitude: float  # in multiples of the channel's scale, signed


class RegimeScenario:
    """A clean fleet plus lasting changes and labelled spikes, one time step at a time."""

    def __init__(
        self,
        sim: FleetSimulator,
        changes: Sequence[RegimeChange],
        *,
        seed: int,
        spike_rate: float = 1.0,
        spikes_after: float = 0.0,
        spike_size: tuple[float, float] = (8.0, 12.0),
    ) -> None:
        if sim.anomaly_rate != 0:
            raise ValueError("give a clean FleetSimulator (anomaly_rate=0)")
        if spike_rate < 0:
            raise ValueError("spike_rate must be >= 0")
        self.sim = sim
        self.changes = tuple(changes)
        self.spike_rate = spike_rate
        self.spike_size = spike_size  # uniform range, in multiples of the channel's scale
        self.spikes_after = spikes_after  # epoch seconds: no spike before this
        self.spikes: list[Spike] = []
        self._scale = {d: sim.scale(d) for d in sim.devices}
        self._by_device = {d: [c for c in self.changes if c.device == d] for d in sim.devices}
        self._rng = {d: np.random.default_rng([seed, i, 7]) for i, d in enumerate(sim.devices)}
        self._next_spike = {d: self._gap(d, spikes_after) for d in sim.devices}
        self._active: dict[str, tuple[Spike, int]] = {}  # device -> (spike, readings left)

    def _gap(self, device: str, after: float) -> float:
        if self.spike_rate == 0:
            return float("inf")
        # at least 10 minutes apart, so that one spike's alert has closed before the next
        return after + 600.0 + float(self._rng[device].exponential(3600.0 / self.spike_rate))

    def steps(self) -> Iterator[list[SimReading]]:
        """Readings of every device per time step, forever (stop when you like)."""
        for readings in self.sim.steps():
            yield [self._apply(r) for r in readings]

    def _apply(self, reading: SimReading) -> SimReading:
        device, ts = reading.device, reading.ts
        values = dict(reading.values)
        scale = self._scale[device]
        rng = self._rng[device]
        for change in self._by_device[device]:
            if ts < change.start:
                continue
            f = change.feature
            if change.kind == "level_shift":
                values[f] += change.magnitude * scale[f]
            elif change.kind == "gain_drift":
                frac = min(1.0, (ts - change.start) / change.ramp)
                values[f] *= 1.0 + change.magnitude * frac
            else:  # noise_change
                values[f] += float(rng.normal(0.0, change.magnitude * scale[f]))
        active = self._active.get(device)
        if active is None and ts >= self._next_spike[device]:
            feature = FEATURES[int(rng.integers(len(FEATURES)))]
            sign = 1.0 if feature == "vibration" else float(rng.choice([-1.0, 1.0]))
            n = int(rng.integers(1, 4))
            spike = Spike(
                device,
                feature,
                ts,
                round(ts + n * self.sim.step, 6),
                round(sign * float(rng.uniform(*self.spike_size)), 3),
            )
            self.spikes.append(spike)
            active = (spike, n)
        if active is not None:
            spike, left = active
            values[spike.feature] += spike.magnitude * scale[spike.feature]
            if left > 1:
                self._active[device] = (spike, left - 1)
            else:
                self._active.pop(device, None)
                self._next_spike[device] = self._gap(device, ts)
        for f in ("flow", "pressure", "current", "vibration", "voltage"):
            values[f] = max(values[f], 0.0)
        return SimReading(device, ts, {f: round(v, 4) for f, v in values.items()})


# -- driving the real pipeline and scoring what it did ------------------------------------


@dataclass(slots=True)
class AlertSpan:
    """One alert (one uid) from its first notification to its last close (None: still open)."""

    device: str
    uid: str
    opened_at: float
    closed_at: float | None = None
    notifications: int = 1  # 1 + times it was reopened within the cooldown


@dataclass(slots=True)
class RunRecord:
    """What the pipeline did: every notification (open or reopen) and alert span."""

    notifications: list[tuple[str, float, str]]  # (device, window end ts, uid)
    spans: dict[str, AlertSpan]
    audit: list[Any]  # sentinel.records.AuditEvent
    alert_seconds: dict[str, list[tuple[float, float]]]  # device -> alert-open intervals
    windows: int = 0
    run_end: float = 0.0
    still_open: dict[str, bool] = field(default_factory=dict)  # device -> alert open at end


class Recorder:
    """Drives a ``sentinel.worker.pipeline.Pipeline`` through ``process`` (no MQTT, no database)
    and records what it did. Build the pipeline with ``observer=recorder.observe``."""

    def __init__(self) -> None:
        self.record = RunRecord(notifications=[], spans={}, audit=[], alert_seconds={})
        self._open_uid: dict[str, str] = {}

    def observe(self, verdict: Any, alert: Any) -> None:
        from sentinel.records import AlertStatus

        record = self.record
        record.windows += 1
        if alert is None:
            return
        device = alert.device
        ts = verdict.score.window.end_ts
        intervals = record.alert_seconds.setdefault(device, [])
        if alert.status is AlertStatus.CLOSED:
            self._open_uid.pop(device, None)
            record.spans[alert.uid].closed_at = ts
            intervals[-1] = (intervals[-1][0], ts)
            return
        if self._open_uid.get(device) == alert.uid:
            return  # an update of an open alert
        self._open_uid[device] = alert.uid
        record.notifications.append((device, ts, alert.uid))
        intervals.append((ts, -1.0))
        span = record.spans.get(alert.uid)
        if span is None:
            record.spans[alert.uid] = AlertSpan(device, alert.uid, ts)
        else:  # reopened within the cooldown
            span.notifications += 1
            span.closed_at = None

    def drive(
        self,
        pipeline: Any,
        steps: Iterator[list[SimReading]],
        count: int,
        stream: str,
        per_pass: int = 16,
    ) -> RunRecord:
        """Feed ``count`` time steps, ``per_pass`` steps (all devices) per ``process`` call,
        as the daemon's worker drains what arrived since its last pass."""
        from sentinel.records import Delivery, Reading

        record = self.record
        pending: list[Any] = []

        def flush() -> None:
            batch = pipeline.process(pending)
            record.audit.extend(batch.audit)
            pending.clear()

        for k, step in zip(range(count), steps, strict=False):
            pending.extend(
                Delivery(
                    topic="sim",
                    readings=(
                        Reading(stream, r.device, r.ts, tuple(r.values[f] for f in FEATURES)),
                    ),
                    rejected=(),
                    ack=None,
                    received_at=r.ts,
                )
                for r in step
            )
            record.run_end = step[0].ts
            if (k + 1) % per_pass == 0:
                flush()
        if pending:
            flush()
        for device, intervals in record.alert_seconds.items():
            if intervals and intervals[-1][1] < 0:  # still open at the end
                intervals[-1] = (intervals[-1][0], record.run_end)
                record.still_open[device] = True
        return record


def _intervals(
    record: RunRecord, device: str
) -> list[tuple[tuple[str, float, str], tuple[float, float]]]:
    """The device's notifications, each with the alert-open interval it began."""
    mine = [n for n in record.notifications if n[0] == device]
    return list(zip(mine, record.alert_seconds.get(device, []), strict=True))


@dataclass(frozen=True, slots=True)
class Evaluation:
    spikes: int
    caught: int
    false_alerts: int  # explained by no spike and no change
    repeat_alerts: int  # further notifications of a change's alerting (see recovery)
    device_days: float
    changes_detected: int
    # change -> seconds from its start until the alerting it caused ended: the alert it
    # raised, chained with alerts that follow within merge_gap (0.0: it raised no alert;
    # None: still alerting at the end of the run)
    recovery: dict[RegimeChange, float | None]
    alert_fraction_after_change: float  # of the time after the changes, share spent alerting

    @property
    def recall(self) -> float:
        return self.caught / self.spikes if self.spikes else 0.0

    @property
    def false_per_device_day(self) -> float:
        return self.false_alerts / self.device_days


def evaluate(
    record: RunRecord,
    scenario: RegimeScenario,
    *,
    span: float,
    scored_from: float,
    onset_slack: float,
    merge_gap: float = 900.0,
) -> Evaluation:
    """Score a run: a spike is caught when a notification on its device comes within
    ``[start, end + span]``; a change's onset explains a notification within
    ``[start, start + ramp + onset_slack]``; every other notification is a false alert.
    Spikes before ``scored_from`` or too close to the end to be seen are not counted."""
    spikes = [
        s for s in scenario.spikes if scored_from <= s.start and s.end + span <= record.run_end
    ]

    def near(device: str, lo: float, hi: float) -> list[tuple[str, float, str]]:
        return [n for n in record.notifications if n[0] == device and lo <= n[1] <= hi]

    caught = sum(1 for s in spikes if near(s.device, s.start, s.end + span))
    explained: set[tuple[str, float, str]] = set()
    for s in scenario.spikes:
        explained.update(near(s.device, s.start, s.end + span))
    recovery: dict[RegimeChange, float | None] = {}
    detected = repeats = 0
    spike_alerts = set(explained)
    for change in scenario.changes:
        onset = near(change.device, change.start, change.start + change.ramp + onset_slack)
        explained.update(onset)
        detected += bool(onset)
        if not onset:
            recovery[change] = 0.0
            continue
        # The change's own alerting: the alert it raised, chained with any that follow
        # within ``merge_gap`` of the previous one's end (background false alerts hours
        # later are counted as false alerts, not as a slow recovery).
        chain_end: float | None = None
        for n, (lo, hi) in _intervals(record, change.device):
            if n == onset[0]:
                chain_end = hi
            elif (
                chain_end is not None
                and chain_end < lo <= chain_end + merge_gap
                and n not in spike_alerts
            ):
                chain_end = max(chain_end, hi)
                explained.add(n)
                repeats += 1
        assert chain_end is not None
        still_open = record.still_open.get(change.device) and chain_end >= record.run_end
        recovery[change] = None if still_open else chain_end - change.start
    false_alerts = sum(
        1 for n in record.notifications if n not in explained and n[1] >= scored_from
    )
    devices = scenario.sim.devices
    alerting = total = 0.0
    for change in scenario.changes:
        total += record.run_end - change.start
        for lo, hi in record.alert_seconds.get(change.device, []):
            alerting += max(0.0, min(hi, record.run_end) - max(lo, change.start))
    return Evaluation(
        spikes=len(spikes),
        caught=caught,
        false_alerts=false_alerts,
        repeat_alerts=repeats,
        device_days=len(devices) * (record.run_end - scored_from) / 86_400.0,
        changes_detected=detected,
        recovery=recovery,
        alert_fraction_after_change=alerting / total if total else 0.0,
    )
