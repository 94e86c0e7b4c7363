"""Group anomalous windows into alerts with a lifecycle.

``open_after`` anomalous windows among a device's last ``open_within`` (M of N; by default
M consecutive) open an alert; it stays open and is updated while windows stay anomalous,
and closes after ``close_after`` consecutive normal windows. At most one alert is open per
(stream, device). Open alerts are restored from the database at start, so a restarted
daemon continues them instead of opening duplicates.

Cooldown: for ``cooldown`` seconds (event time; auto: 64 readings of the stream's learnt
interval, at most a day) after an alert ends, the same device and stream opens no new
alert. If M of N windows are anomalous again within it, the ended alert is *reopened* (same
uid, status open, its window count and peak continue), so a flapping fault is one alert,
not many. An alert an operator resolved (``sentinel alerts resolve``) is
final: within its cooldown new anomalous windows are suppressed (counted, no alert), after
it a new alert may open. The daemon learns of a resolve when the writer finds the row
resolved (``resolved``); until then its updates of that row are ignored by the store.

A joint step opens nothing: where every anomalous window of an opening run has one and the
same reading as its only evidence, by the score alone, and the device's channels took that
reading together (``Verdict.joint``: at least two features its relations judge jumped,
none of their residuals from the others' prediction did; ``Relations.moved_together``),
no alert opens (``_joint_step``). Windows overlap, so one reading the forecaster missed
sits in the scored readings of several windows and meets ``open_after`` by itself; where
the channels moved together at it, that reading is a step they all took, as a pump's load
step is (25 of the simulated fleet's 54 false alerts; docs/BENCHMARKS.md, "A joint step
opens nothing"). Read every second, the same load change is a ramp of 8-25 readings the
forecaster misses over several of them: a run whose windows' evidence spans share a
reading and were each a move the channels made together, across the span, opens nothing
either (docs/BENCHMARKS.md, "A load ramp read every second"). One channel jumping alone
leaves its relation and still alerts; so does a
univariate stream's step -- a set point, a level shift -- which has no relations to vouch
for it; and a fault that goes on after its first reading gives evidence beyond it.
Likewise a *commanded* step: where that one reading is one at which a commanding input of
the model changed (a command whose channel moved at its reading in training:
``Detector.command_indices``, and a channel constant in training at the rest of their
pulse trains: a command the training happened not to send, ``command_channels`` in
``sentinel.worker.pipeline``), the channel the forecaster missed stepped at the command's
reading, which nothing before it announced (spacecraft telemetry held at the levels its
commands set; ``Verdict.joint`` covers both).

Nor does a *response*: where every anomalous window of an opening run is so by the score
alone and holds a change of one of the model's stepped inputs (a set point, a command)
with its scored readings before the change normal (``Verdict.response``), the errors are
the channels following that change with a lag, which training may have held too few of to
forecast (a set point it never saw). A window holds the change for a window's length;
after it, windows that go on from such a run by the score alone, each scoring lower
than the one before, are the channels still settling and count as responses too
(``_settle``). A channel that does not settle keeps or raises its error, and a run then
opens as any other -- unless it settled at the level the command's earlier sends set,
which the command-level check vouches for (``sentinel.judge.command_levels``: a mode
training never saw).

Severity is cut from each window's exceedance probability (``Verdict.exceedance``):
``critical`` at or below ``severity_critical``, ``warning`` at or below
``severity_warning``, else ``info``; an alert keeps the highest it reached.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from sentinel.config import AlertsConfig
from sentinel.judge.evidence import onset
from sentinel.judge.noise import directed_roughness
from sentinel.records import (
    Alert,
    AlertReason,
    AlertStatus,
    FeatureContribution,
    Severity,
    Verdict,
)
from sentinel.timescale import TimeScale

__all__ = ["AlertTracker", "alert_checks", "severity_of"]

# Within the cooldown, a run is the ended alert's fault again when their leading features
# each carried at least this share of the other's contributions (``_shared_lead``): a quarter,
# so that a feature is one of the few the fault was about, not a bystander.
SHARED_LEAD = 0.25


def severity_of(exceedance: float, config: AlertsConfig) -> Severity:
    """The severity of a window that a normal one would reach with this probability."""
    if exceedance <= config.severity_critical:
        return Severity.CRITICAL
    if exceedance <= config.severity_warning:
        return Severity.WARNING
    return Severity.INFO


def alert_checks(alert: Alert) -> str:
    """Which checks opened ``alert``, as replay's ``check`` column names them: ``score`` (its
    peak window scored above the threshold), ``spike:FEATURE``, ``level:FEATURE`` (a lone
    shift or a level off training's: the strongest hit among its opening windows),
    ``constant:FEATURE``, ``stuck:FEATURE``, ``relation:FEATURE``, ``noise:FEATURE`` and
    ``period:FEATURE``, joined by ``+``. An alert opened by a spike alone scores below its
    threshold, and this is what says why it fired."""
    parts = ["score"] if alert.peak_score > alert.threshold else []
    reason = alert.reason
    if reason is not None:
        for kind, hit in (("spike", reason.spike), ("level", reason.level)):
            if hit is not None:
                parts.append(f"{kind}:{hit[0]}")
        if reason.constant is not None:
            parts.append(f"constant:{reason.constant[0]}")
        if reason.stuck is not None:
            parts.append(f"stuck:{reason.stuck[0]}")
        if reason.relation is not None:
            parts.append(f"relation:{reason.relation[0]}")
        if reason.noise is not None:
            parts.append(f"noise:{reason.noise[0]}")
        if reason.period is not None:
            parts.append(f"period:{reason.period[0]}")
    return "+".join(parts) or "score"


def _evidence(verdict: Verdict) -> tuple[float, float]:
    """An anomalous verdict's evidence span; its window's newest reading where the verdict
    carries none."""
    if verdict.evidence is not None:
        return verdict.evidence
    end = verdict.score.window.end_ts
    return end, end


def _joint_step(run: Sequence[Verdict]) -> bool:
    """Whether ``run``'s only evidence is one move the channels made together
    (``Verdict.joint``) or one excursion the spike check knows as the device's normal
    (``Verdict.usual``): one reading, the same in every window, or a ramp's readings, every
    such window's span sharing at least one reading with every other's, and any other
    window's evidence within the readings they share (the same move, seen in a window
    whose newest readings the spike check could not judge yet); or every window of it is
    a response to an input's change (``Verdict.response``)."""
    if all(v.response for v in run):
        return True
    vouched = [_evidence(v) for v in run if v.joint or v.usual]
    if not vouched:
        return False
    lo, hi = max(s for s, _ in vouched), min(e for _, e in vouched)
    return lo <= hi and all(
        v.joint or v.usual or lo <= _evidence(v)[0] <= _evidence(v)[1] <= hi for v in run
    )


def _settle(device: _Device, verdict: Verdict) -> Verdict:
    """``verdict``, a response (``Verdict.response``) where it goes on, by the score alone
    and scoring lower than the window before it, from a run of anomalous windows that
    began with responses: the channels still settling after the change left the window.

    A response is read within a window's length of the change, but a channel that follows
    a set point with a lag settles over several time constants: a temperature that follows
    its set point with a lag of 20 readings, 10 degrees away, is still tens of normal
    errors off the forecast 32 readings after the step, and its run's last windows opened
    an alert at the step's tail (``simulators.synthetic.setpoint_steps`` trained on 30 %,
    seeds 0 and 1: 6 false alerts each, 3 and 5 with this). Settling, the error falls
    window by window; a fault that came with the change holds or raises it, and a window
    whose score did not fall, a check beside the score, or a normal window ends the run --
    but not the noise check on a channel moving one way (``directed_roughness``: the
    settling itself, rougher than training's windows).
    What it cannot tell from a lag: a fault that steps a channel just as an input changes,
    whose error then falls as the forecaster follows the new level -- alerted once a
    window's score stops falling, or by the level and relation checks. A counter's tick is
    no such change (``sentinel.worker.pipeline.response_inputs``); before counters were
    left out, a runaway process beside a disk counter's tick was missed this way."""
    if not verdict.is_anomaly:
        device.settling = None
        return verdict
    value = verdict.score.value
    if verdict.response:
        device.settling = value
        return verdict
    if (
        device.settling is not None
        and value < device.settling
        and (verdict.by_score_alone or directed_roughness(verdict))
    ):
        device.settling = value
        return replace(verdict, response=True)
    device.settling = None
    return verdict


def _max_severity(a: Severity, b: Severity) -> Severity:
    return a if a.rank >= b.rank else b


@dataclass(slots=True)
class _Open:
    alert: Alert
    excess: np.ndarray  # summed per-feature error above normal, over the alert's windows
    normal_run: int = 0
    # the latest reading that was evidence of the anomaly (sentinel.judge.evidence): where
    # the alert ends when it closes, however long its last reading stayed in the windows
    evidence_end: float = float("-inf")


@dataclass(slots=True)
class _Device:
    recent: deque[Verdict]  # the last N verdicts while no alert is open
    open: _Open | None = None
    ended: _Open | None = None  # the last alert that ended: cooldown and reopening
    ended_at: float = float("-inf")  # when it ended (event time)
    resolved: bool = False  # an operator resolved it: never reopened
    last_ts: float = float("-inf")  # the latest window seen
    normal_end: float = float("-inf")  # newest reading of the latest window judged normal
    # the score of the device's latest anomalous window while its run of anomalous windows
    # is a response to an input's change and what settles after it (``_settle``), else None
    settling: float | None = None


@dataclass
class AlertTracker:
    """Turns a device's verdicts, in time order, into alert changes."""

    config: AlertsConfig
    features: dict[str, tuple[str, ...]]  # stream -> feature names
    config_hash: str = ""  # stored in every alert's reason
    _devices: dict[tuple[str, str], _Device] = field(default_factory=dict)
    suppressed: int = 0  # alerts not opened because of a resolved alert's cooldown
    # stream -> its model's learnt seconds per reading, which scales an auto cooldown
    intervals: dict[str, float | None] = field(default_factory=dict)

    def cooldown(self, stream: str) -> float:
        """``cooldown`` in seconds for ``stream``: the config's, or auto (64 readings of
        its model's interval, at most a day: sentinel.timescale)."""
        return TimeScale(self.intervals.get(stream)).cooldown(self.config.cooldown)

    def restore(self, alerts: Iterable[Alert]) -> int:
        """Take over alerts that were open when the daemon last stopped."""
        restored = 0
        for alert in alerts:
            if alert.stream not in self.features:
                continue
            names = self.features[alert.stream]
            excess = np.zeros(len(names))
            for contribution in alert.top_features:
                if contribution.feature in names:
                    excess[names.index(contribution.feature)] = contribution.share
            device = self._device(alert.stream, alert.device)
            if alert.status in (AlertStatus.CLOSED, AlertStatus.RESOLVED):
                # Ended alerts only restore the cooldown (the latest one per device wins).
                ended_at = alert.ended_at if alert.ended_at is not None else alert.updated_at
                if ended_at >= device.ended_at:
                    device.ended = _Open(alert=alert, excess=excess)
                    device.ended_at = ended_at
                    device.resolved = alert.status is AlertStatus.RESOLVED
                continue
            device.open = _Open(alert=alert, excess=excess, evidence_end=alert.updated_at)
            restored += 1
        return restored

    def resolved(self, uids: Iterable[str]) -> int:
        """Alerts an operator resolved: close them here too, without a change to write.

        Their cooldown starts at the device's latest window. Returns how many were open.
        """
        wanted = set(uids)
        closed = 0
        for device in self._devices.values():
            current = device.open
            if current is not None and current.alert.uid in wanted:
                device.open = None
                device.recent.clear()
                device.ended = current
                device.ended_at = max(device.last_ts, current.alert.updated_at)
                device.resolved = True
                closed += 1
            elif device.ended is not None and device.ended.alert.uid in wanted:
                device.resolved = True
        return closed

    def observe(self, verdict: Verdict, baseline: Sequence[float]) -> Alert | None:
        """Feed one verdict; returns the alert's new state if this verdict changed it.

        ``baseline`` is the model's mean per-feature error on normal data: contributions are
        how far each feature's error rose *above* its normal level, so a naturally noisy
        sensor is not blamed for every alert.
        """
        window = verdict.score.window
        device = self._device(window.stream, window.device)
        device.last_ts = max(device.last_ts, window.end_ts)
        verdict = _settle(device, verdict)
        if verdict.is_anomaly:
            return self._anomalous(device, verdict, baseline)
        device.normal_end = max(device.normal_end, window.end_ts)
        current = device.open
        if current is None:
            device.recent.append(verdict)  # normal windows age anomalous ones out
            return None
        current.normal_run += 1
        if current.normal_run < self.config.close_after:
            return None
        device.open = None
        # The anomaly ended with its last evidence, not with the windows that still held it
        # nor with the normal run after them.
        alert = current.alert
        ended_at = min(current.evidence_end, alert.updated_at)
        if ended_at < alert.started_at:  # an alert restored from before evidence was kept
            ended_at = alert.updated_at
        closed = replace(alert, status=AlertStatus.CLOSED, ended_at=ended_at)
        device.ended = _Open(alert=closed, excess=current.excess)
        device.ended_at = alert.updated_at
        device.resolved = False
        return closed

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

    def open_by_stream(self) -> dict[str, int]:
        """Alerts open now per stream (an acknowledged one is open until it closes); read
        from another thread (metrics), so a copy that races the worker is taken again."""
        for _ in range(5):
            try:
                open_keys = [k for k, d in list(self._devices.items()) if d.open is not None]
            except RuntimeError:  # the worker changed the dict while it was copied
                continue
            counts: dict[str, int] = {}
            for stream, _device in open_keys:
                counts[stream] = counts.get(stream, 0) + 1
            return counts
        return {}

    def busy(self, key: tuple[str, str], now: float) -> bool:
        """Whether a device's state must stay: an alert is open, or one ended within
        ``cooldown`` of ``now`` (event time) and could still be reopened."""
        device = self._devices.get(key)
        return device is not None and (
            device.open is not None or device.ended_at + self.cooldown(key[0]) > now
        )

    def drop(self, which: Callable[[tuple[str, str]], bool]) -> int:
        """Drop the state of every device ``which`` selects, open alerts included: their
        partition moved to another daemon, which restores them from the store."""
        gone = [k for k in self._devices if which(k)]
        for key in gone:
            del self._devices[key]
        return len(gone)

    def forget(self, keep: Container[tuple[str, str]], now: float) -> int:
        """Drop the state of every device not in ``keep`` that is not ``busy``: what it
        loses is its last few verdicts (the M-of-N history). Returns how many."""
        gone = [k for k in self._devices if k not in keep and not self.busy(k, now)]
        for key in gone:
            del self._devices[key]
        return len(gone)

    def _anomalous(
        self, device: _Device, verdict: Verdict, baseline: Sequence[float]
    ) -> Alert | None:
        current = device.open
        if current is not None:
            current.normal_run = 0
            current.excess += self._excess(verdict, baseline)
            current.evidence_end = max(current.evidence_end, _evidence(verdict)[1])
            alert = current.alert
            score = verdict.score
            current.alert = replace(
                alert,
                updated_at=score.window.end_ts,
                peak_score=max(alert.peak_score, score.value),
                windows=alert.windows + 1,
                top_features=self._top(score.window.stream, current.excess),
                model_version=score.model_version,
                severity=_max_severity(
                    alert.severity, severity_of(verdict.exceedance, self.config)
                ),
            )
            return current.alert
        device.recent.append(verdict)
        run = [v for v in device.recent if v.is_anomaly]
        if len(run) < self.config.open_after or _joint_step(run):
            return None
        device.recent.clear()
        excess = sum((self._excess(v, baseline) for v in run), np.zeros(len(baseline)))
        first, last = run[0].score, run[-1].score
        peak = max(run, key=lambda v: v.score.value)
        exceedance = min(v.exceedance for v in run)
        severity = severity_of(exceedance, self.config)
        cooling = first.window.end_ts - device.ended_at < self.cooldown(first.window.stream)
        if device.ended is not None and cooling and self._same_fault(device.ended, excess, run):
            if device.resolved:
                self.suppressed += 1
                return None
            return self._reopen(device, run, excess, severity)
        reason = None
        if run[-1].state is not None:
            names = self.features[first.window.stream]
            hits = [v.spike for v in run if v.spike is not None]
            spike = None
            if hits:
                top = max(hits, key=lambda h: h.z)
                spike = (names[top.feature], round(top.z, 2))
            levels = [v.level for v in run if v.level is not None]
            level = None
            if levels:
                far = max(levels, key=lambda h: h.z)
                level = (names[far.feature], round(far.z, 2))
            constants = [v.constant for v in run if v.constant is not None]
            constant = None
            if constants:
                hit = constants[0]
                constant = (names[hit.feature], hit.value, hit.expected)
            frozen = [v.stuck for v in run if v.stuck is not None]
            stuck = None
            if frozen:
                longest = max(frozen, key=lambda h: h.run / h.limit)
                stuck = (names[longest.feature], longest.run, longest.limit)
            broken = [v.relation for v in run if v.relation is not None]
            relation = None
            if broken:
                off = max(broken, key=lambda h: h.z)
                relation = (names[off.feature], round(off.z, 2))
            rough = [v.noise for v in run if v.noise is not None]
            noise = None
            if rough:
                roughest = max(rough, key=lambda h: h.ratio)
                noise = (names[roughest.feature], round(roughest.ratio, 2))
            unlike = [v.period for v in run if v.period is not None]
            period = None
            if unlike:
                furthest = max(unlike, key=lambda h: h.ratio)
                period = (names[furthest.feature], round(furthest.ratio, 2))
            reason = AlertReason(
                run[-1].state,
                exceedance,
                self.config_hash,
                spike,
                level,
                constant,
                stuck,
                relation,
                noise,
                period,
            )
        alert = Alert(
            uid=str(uuid.uuid4()),
            stream=first.window.stream,
            device=first.window.device,
            status=AlertStatus.OPEN,
            # The onset is the first evidence (sentinel.judge.evidence), which a window
            # holding a fault's first readings can show before its newest reading, but
            # not before what the device's last normal window held.
            started_at=onset(run, device.normal_end),
            updated_at=last.window.end_ts,
            ended_at=None,
            peak_score=peak.score.value,
            threshold=peak.threshold,
            top_features=self._top(first.window.stream, excess),
            model_version=last.model_version,
            windows=len(run),
            severity=severity,
            reason=reason,
        )
        device.open = _Open(
            alert=alert, excess=excess, evidence_end=max(_evidence(v)[1] for v in run)
        )
        return alert

    def _reopen(
        self, device: _Device, run: list[Verdict], excess: np.ndarray, severity: Severity
    ) -> Alert:
        ended = device.ended
        assert ended is not None
        device.ended = None
        last = run[-1].score
        alert = ended.alert
        total = ended.excess + excess
        reopened = replace(
            alert,
            status=AlertStatus.OPEN,
            ended_at=None,
            updated_at=last.window.end_ts,
            peak_score=max(alert.peak_score, *(v.score.value for v in run)),
            windows=alert.windows + len(run),
            top_features=self._top(last.window.stream, total),
            model_version=last.model_version,
            severity=_max_severity(alert.severity, severity),
        )
        device.open = _Open(
            alert=reopened, excess=total, evidence_end=max(_evidence(v)[1] for v in run)
        )
        return reopened

    def _same_fault(self, ended: _Open, excess: np.ndarray, run: Sequence[Verdict]) -> bool:
        """Whether a new run of anomalous windows is the ended alert's fault again: its
        feature that contributed most is the alert's. A flapping fault is one alert; another
        feature going wrong within the cooldown -- a frozen channel minutes after a spike on
        another -- is another problem, and gets its own alert (issue #21). So is a channel
        that freezes after an alert about something else on it (a current sensor going
        stale after its current drifted): a dead sensor is a fault of its own, whatever
        the channel did before; the readings that jump when a frozen channel comes back
        still continue its alert. An alert that names no feature (restored from before
        contributions were kept) is taken to be the same fault."""
        top = ended.alert.top_features
        total = float(excess.sum())
        if not top or total <= 0.0:
            return True
        names = self.features[ended.alert.stream]
        feature = names[int(np.argmax(excess))]
        if feature != top[0].feature and not self._shared_lead(top, excess / total, names):
            return False
        reason = ended.alert.reason
        was_stuck = reason is not None and reason.stuck is not None and reason.stuck[0] == feature
        frozen = any(v.stuck is not None and names[v.stuck.feature] == feature for v in run)
        return was_stuck or not frozen

    @staticmethod
    def _shared_lead(
        top: Sequence[FeatureContribution], shares: np.ndarray, names: Sequence[str]
    ) -> bool:
        """Whether an ended alert (``top``, its contributions) and a new run (``shares`` of
        its excess per feature) were led by the same group of features: each one's leading
        feature carried at least ``SHARED_LEAD`` of the other's. Features that move
        together (a CPU and the load averages that follow it) take turns at the lead: a
        runaway process's end was led by load1, its onset by load5, and its end opened an
        alert of its own (issue #21, wide_server)."""
        lead = names[int(np.argmax(shares))]
        carried = {c.feature: c.share for c in top}
        index = {name: i for i, name in enumerate(names)}
        first = top[0].feature
        return (
            carried.get(lead, 0.0) >= SHARED_LEAD
            and first in index
            and float(shares[index[first]]) >= SHARED_LEAD
        )

    @staticmethod
    def _excess(verdict: Verdict, baseline: Sequence[float]) -> np.ndarray:
        # Each feature's error as a multiple of its normal level, minus the normal 1x: the
        # same per-feature ratio the score is made of.
        errors = np.asarray(verdict.score.feature_errors, dtype=np.float64)
        normal = np.maximum(np.asarray(baseline, dtype=np.float64), 1e-4)
        excess = np.maximum(errors / normal - 1.0, 0.0)
        if verdict.spike is not None:
            # z squared is the spiking reading's squared error over its normal level: the
            # same kind of ratio, for one reading.
            excess[verdict.spike.feature] += verdict.spike.z**2
        if verdict.level is not None:
            # Likewise the window mean's squared distance in training's window-mean spread.
            excess[verdict.level.feature] += verdict.level.z**2
        if verdict.constant is not None:
            # A feature constant in training has no error scale to measure a departure in:
            # it is what this window is about, so it outweighs the rest of the window.
            excess[verdict.constant.feature] += 1.0 + float(excess.sum())
        if verdict.stuck is not None:
            # A frozen feature's error is, if anything, below normal: it has no error to
            # weigh, and it is what this window is about, as for a constant's departure.
            excess[verdict.stuck.feature] += 1.0 + float(excess.sum())
        if verdict.relation is not None:
            # A feature that left its relations to the others may have a normal error of
            # its own (the forecaster follows a shift after one reading): it is what the
            # window is about.
            excess[verdict.relation.feature] += 1.0 + float(excess.sum())
        if verdict.noise is not None:
            # Roughness is the feature's own, measured on its readings: what the window is
            # about, whatever the model's error made of it.
            excess[verdict.noise.feature] += 1.0 + float(excess.sum())
        if verdict.period is not None:
            # A period unlike every earlier one is the feature's own day, which no window's
            # error measures: what the window is about.
            excess[verdict.period.feature] += 1.0 + float(excess.sum())
        return excess

    def _top(self, stream: str, excess: np.ndarray) -> tuple[FeatureContribution, ...]:
        total = float(excess.sum())
        if total <= 0.0:
            return ()
        names = self.features[stream]
        values = excess.tolist()  # Python floats once, not a NumPy scalar per feature
        order = np.argsort(-excess)[: self.config.top_features].tolist()
        return tuple(
            FeatureContribution(feature=names[i], share=round(values[i] / total, 4))
            for i in order
            if values[i] > 0.0
        )
