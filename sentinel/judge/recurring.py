"""Recurring excursions: a rise of the model's score that comes back on a learnt period is
a device's normal, not an anomaly.

Why (issue #21, cause 6, for the score): a pump that runs 20 minutes every morning, a
nightly batch job, a valve that actuates on a timer -- the onset of such a pulse cannot be
predicted from the readings before it, so the forecaster's error (and the autoencoder's)
jumps there every time, and every occurrence alerted: the synthetic ``daily_pulse`` class
raised one false alert a day from the score alone. The spike check already learns pulses of
one to a few readings (``sentinel.judge.spikes``, ``recurring``); this is the same rule for
the excursions of the score that last longer than a spike.

Per device, an *excursion* is a run of consecutive windows judged anomalous by their score
alone (no check beside it hit). Each ended excursion is remembered: its onset (the
first window's end time), its peak as a multiple of the threshold then in force and as one
of the device's *baseline* threshold then (``Verdict.baseline``: the model's calibration
threshold times the device's re-baseline factor), and its duration. A new excursion is
normal when it recurs after the remembered ones at least about as large (their peak at
least 1 / ``recurring_margin`` of this window's, in either unit): the newest
of them sets the period (its distance from the new onset), and ``recurring_count`` of them
in all lie at the multiples of the period back from it, each within 5% of the period (or
within the time between two windows, whichever is longer) -- others may lie between them
(``_chain``). It recurs with a learnt period, however long: daily at 1-minute sampling is
1,440 readings. Those must
be *trusted* -- seen in the model's training readings, which the warm start judges first,
or judged recurring themselves; where any of them alerted, one more is needed. An anomaly's
onset, its end and the next anomaly's onset can be evenly spaced by chance (the synthetic
``cycle_1s``: two half-period faults a period apart), and must not make the next one normal;
a daily pattern on two training days is known from the first live day. It stays normal while
it stays within what was seen: no window above ``recurring_margin`` times the largest of
those peaks (in both units), no longer than 1.5 times the longest of those durations plus a
window. Past either, the rest of the run is anomalous -- a pump that runs at its usual hour
but twice as hard, or does not stop, alerts. An irregular excursion, a first or second one,
or one off the period alerts as before -- unless (opt-in) it is *known*:
``recurring_known`` trusted excursions at least about as large are remembered, whatever
their timing. A pump moved among load levels at random times scores each switch alike,
seen in training and unforeseeable in time; with the same peak and duration limits, a
switch that overshoots or a fault that goes on past them still alerts, later by at most
the longest known excursion. Off by default: it cost SKAB and the synthetic suite.

An excursion the training was too short to hold alerts at every occurrence under those
rules: a count's bursts, a garbage collector's drops, load switches at random times. With
``recurring_frequent`` (default 3) one is also normal when that many episodes of live
excursions at least about as large began within its last ``recurring_within`` readings
(1,000): it recurs as often as normal, as the spike check judges its pulses, within the
same peak and duration limits (``_frequent``). Excursions of the training readings count
only where they alone are that frequent (the training then showed them as the device's
normal; one or two of them beside live ones do not vouch for a fault's onset that scores
like them), and the parts of one fault (its score dipping under the threshold and back) are
one episode, so a fault that follows a few false alerts, or lasts, still alerts.

Why two units: the threshold in force moves as the device learns its own normal scores.
Where it falls -- a noiseless square wave's steps over a short training, 1.5 -> 0.58 in
three days -- a daily step remembered at the old threshold counts as less than half of the
same step a day later, and alerted; in the baseline's unit, which that learning does not
move, it is the same step. Where it rises -- a server whose garbage collector's drops grow
-- peaks in the baseline's unit grow with the drops, and the threshold's unit, which rose
with them, still finds them alike (docs/BENCHMARKS.md, "Recurring excursions in the
model's units too"). Under spot the two are one.

Only the verdict changes: the threshold has already left the excursion's windows out of
what it learns (they scored above it), so a recurring pulse never raises the threshold.
The memory belongs to the device, not to the model (a retrained forecaster cannot predict
the pulse either), so it survives a model swap, is saved with the thresholds
(``snapshot``/``restore``) and parked with them when a device goes quiet.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sentinel.config import ThresholdConfig
from sentinel.records import Verdict

__all__ = ["Excursion", "RecurringExcursions"]

# Intervals within 5% of their median are one period: a daily pulse may drift by a reading
# or so at coarse sampling, random excursions hardly ever line up so (as for spikes).
_PERIOD_TOLERANCE = 0.05
_DURATION_SLACK = 1.5  # a normal excursion may last this much longer than the longest seen
_RATIO_CAP = 1e30  # a score over a zero threshold: as far above it as it gets
# Excursions fewer readings apart than this are one episode for recurring_frequent: a
# fault's score dips under the threshold and comes back, and must not count as recurring.
_EPISODE_GAP = 64


@dataclass(frozen=True, slots=True)
class Excursion:
    """One ended excursion of a device's score: onset and duration in seconds (event time),
    peak as a multiple of the threshold in force and ``base`` as one of the baseline
    threshold (0 where unknown: remembered before it was kept); ``trusted`` when it was
    normal (seen in the training readings, or judged recurring) rather than an alert;
    ``warm`` when it was in the training readings."""

    onset: float
    peak: float
    duration: float
    trusted: bool = False
    warm: bool = False  # in the model's training readings (the warm start)
    base: float = 0.0  # peak as a multiple of the baseline threshold (Verdict.baseline)


@dataclass(slots=True)
class _Run:
    onset: float
    peak: float
    last: float
    normal: bool
    trusted: bool = False  # seen in training readings (warm-up), or judged recurring
    warm: bool = False  # seen in training readings
    base: float = 0.0  # peak as a multiple of the baseline threshold
    limit_peak: float = 0.0  # the most a normal run's window may score, x threshold
    limit_base: float = 0.0  # ... or x the baseline threshold (either keeps it normal)
    limit_end: float = 0.0  # the latest a normal run may still go on (event time)


@dataclass(slots=True)
class _Device:
    past: deque[Excursion]
    run: _Run | None = None
    last_ts: float | None = None  # end time of the device's previous window
    hop_s: float = 0.0  # seconds between its last two windows: the onsets' resolution
    step_s: float = 0.0  # seconds between two readings in its newest window


@dataclass
class RecurringExcursions:
    """Per (stream, device) memory of score excursions, and the verdicts it makes normal."""

    config: ThresholdConfig
    _devices: dict[tuple[str, str], _Device] = field(default_factory=dict)
    _parked: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def reconfigure(self, config: ThresholdConfig) -> None:
        if config.recurring_memory != self.config.recurring_memory:
            for device in self._devices.values():
                device.past = deque(device.past, maxlen=config.recurring_memory)
        self.config = config

    def judge(self, verdict: Verdict, warm: bool = False) -> Verdict:
        """``verdict`` as it stands, or -- when it is anomalous by its score alone, as part
        of an excursion that recurs as the device's normal -- the same window judged normal.
        Feed every verdict of a device in order; ``warm``: a window of the model's training
        readings (``sentinel.worker.warmup``), normal by assumption, so its excursions are
        trusted."""
        if not self.config.recurring:
            return verdict
        window = verdict.score.window
        key = (window.stream, window.device)
        device = self._device(key)
        ts = window.end_ts
        if device.last_ts is not None and ts > device.last_ts:
            device.hop_s = ts - device.last_ts
        device.last_ts = ts
        if len(window.values) > 1:
            device.step_s = (window.end_ts - window.start_ts) / (len(window.values) - 1)
        if not verdict.is_anomaly or _forced(verdict):
            ended = device.run
            if ended is not None and not verdict.is_anomaly:
                duration = ended.last - ended.onset
                device.past.append(
                    Excursion(
                        ended.onset, ended.peak, duration, ended.trusted, ended.warm, ended.base
                    )
                )
                device.run = None
            elif ended is not None:
                ended.last = ts  # a forced window inside an excursion extends it
            return verdict
        ratio = _ratio(verdict.score.value, verdict.threshold)
        base = ratio if verdict.baseline is None else _ratio(verdict.score.value, verdict.baseline)
        run = device.run
        if run is None:
            run = self._start(device, ts, (ratio, base), window.end_ts - window.start_ts)
            run.trusted = warm or run.normal
            run.warm = warm
            device.run = run
        else:
            run.peak = max(run.peak, ratio)
            run.base = max(run.base, base)
            run.last = ts
            larger = ratio > run.limit_peak and base > run.limit_base
            if run.normal and (larger or ts > run.limit_end):
                run.normal = False  # larger or longer than the device's normal pulse
                run.trusted = warm
        if not run.normal:
            return verdict
        return replace(verdict, is_anomaly=False, exceedance=1.0, recurring=True)

    def _start(self, device: _Device, ts: float, ratios: tuple[float, float], span: float) -> _Run:
        """A run beginning at ``ts`` with ``ratios``: its score as multiples of the
        threshold in force and of the baseline."""
        cfg = self.config
        margin = cfg.recurring_margin
        ratio, base = ratios
        alike = [p for p in device.past if _alike(p, ratios, margin)]
        chosen = _chain(alike, ts, cfg.recurring_count, device.hop_s)
        if not chosen:
            # Not periodic, but known: as large an excursion was normal this often before.
            known = [p for p in alike if p.trusted] if cfg.recurring_known else []
            if known and len(known) >= cfg.recurring_known:
                chosen = known
            elif cfg.recurring_frequent:
                chosen = _frequent(device, ts, ratios, margin, cfg)
                if not chosen:
                    return _Run(ts, ratio, ts, normal=False, base=base)
            else:
                return _Run(ts, ratio, ts, normal=False, base=base)
        return _Run(
            ts,
            ratio,
            ts,
            normal=True,
            base=base,
            limit_peak=margin * max(p.peak for p in chosen),
            limit_base=margin * max(p.base for p in chosen),
            limit_end=ts + _DURATION_SLACK * max(p.duration for p in chosen) + span,
        )

    def _device(self, key: tuple[str, str]) -> _Device:
        device = self._devices.get(key)
        if device is None:
            device = self._devices[key] = _Device(deque(maxlen=self.config.recurring_memory))
            parked = self._parked.pop(key, None)
            if parked is not None:
                device.past.extend(_excursions(parked, key[1]))
        return device

    def excursions(self, stream: str, device: str) -> list[Excursion]:
        """A device's remembered excursions, oldest first."""
        state = self._devices.get((stream, device))
        if state is not None:
            return list(state.past)
        parked = self._parked.get((stream, device))
        return [] if parked is None else _excursions(parked, device)

    def park(self, keep: Container[tuple[str, str]]) -> int:
        """Free the state of every device not in ``keep``; its memory waits for its return."""
        gone = [key for key in self._devices if key not in keep]
        for key in gone:
            self._parked[key] = _to_data(self._devices.pop(key))
        return len(gone)

    def snapshot(self, stream: str) -> dict[str, Any]:
        """Each device's remembered excursions (an excursion in progress restarts)."""
        data = {device: saved for (s, device), saved in self._parked.items() if s == stream}
        for (s, device), state in self._devices.items():
            if s == stream and state.past:
                data[device] = _to_data(state)
        return data

    def restore(self, stream: str, devices: Mapping[str, Any]) -> int:
        """Take back ``snapshot``'s memory; ValueError/TypeError/KeyError on a malformed one
        (the caller reports it and starts afresh)."""
        restored = {}
        for device, data in devices.items():
            state = _Device(deque(maxlen=self.config.recurring_memory))
            state.past.extend(_excursions(data, str(device)))
            restored[(stream, str(device))] = state
        self._devices.update(restored)
        return len(restored)


def _forced(verdict: Verdict) -> bool:
    """Whether a check beside the score holds the window anomalous."""
    return any(
        hit is not None
        for hit in (
            verdict.spike,
            verdict.level,
            verdict.constant,
            verdict.stuck,
            verdict.relation,
            verdict.noise,
            verdict.period,
        )
    )


def _ratio(score: float, threshold: float) -> float:
    return min(score / max(threshold, 1e-30), _RATIO_CAP)


def _alike(past: Excursion, ratios: tuple[float, float], margin: float) -> bool:
    """Whether ``past`` was at least about as large as a window scoring ``ratios`` (x the
    threshold in force, x the baseline): in either unit (module docstring)."""
    return past.peak * margin >= ratios[0] or past.base * margin >= ratios[1]


def _chain(alike: list[Excursion], ts: float, count: int, resolution: float) -> list[Excursion]:
    """The remembered excursions ``alike`` (oldest first) that an excursion starting at
    ``ts`` recurs after, or []: the newest of them, and ``count - 1`` more at the earlier
    multiples of its distance from ``ts`` (the period), each within the tolerance --
    ``count`` in all, one more where any of them alerted (an anomaly's onset, its end and
    the next anomaly's onset can be evenly spaced by chance) and none was in the training
    readings.

    Other excursions may lie between them: a slow query or the end of a fault between two
    days' page-cache drops broke a chain that had to be the newest few, and a drop seen on
    every day of training alerted on each day after (issue #21, ``wide_server``). The
    period is still the newest one's distance alone: trying every remembered excursion as
    the last found chains by chance, and a disk-write storm that began at the phase of an
    hourly cron's excursions passed as one (docs/BENCHMARKS.md, "Many-channel servers")."""
    if not alike:
        return []
    period = ts - alike[-1].onset
    if period <= 0:
        return []
    onsets = np.asarray([p.onset for p in alike], dtype=np.float64)
    tolerance = max(_PERIOD_TOLERANCE * period, resolution)
    chain = [alike[-1]]
    for k in range(2, count + 2):
        gap = np.abs(onsets - (ts - k * period))
        nearest = int(gap.argmin())
        if gap[nearest] > tolerance:
            break
        chain.append(alike[nearest])
    # One more where any alerted: an anomaly's own onset, end and the next one's onset can
    # line up. Not where one of them was in the training readings: no live anomaly put it
    # there (a daily pulse seen once in a short training, then alerted on its first live
    # day, is known on its second; docs/BENCHMARKS.md, "A pulse a short training saw once").
    first = chain[:count]
    trusted = all(p.trusted for p in first) or any(p.warm for p in first)
    need = count if trusted else count + 1
    if len(chain) < need:
        return []
    return chain[:need]


def _frequent(
    device: _Device, ts: float, ratios: tuple[float, float], margin: float, cfg: ThresholdConfig
) -> list[Excursion]:
    """The live excursions at least about as large as one starting at ``ts`` (peak at
    least ``ratios / margin``, in either unit: ``_alike``) in the last
    ``recurring_within`` readings, when they fall in at least ``recurring_frequent``
    episodes; else [].

    Excursions fewer than ``_EPISODE_GAP`` readings apart are one episode: a fault's score
    dips under the threshold and comes back, and its later parts must not make each other
    normal. An excursion that continues an episode which alerted is not normal either.
    Excursions of the training readings (``warm``) count only where they alone are as
    frequent (``recurring_frequent`` episodes of them in the span): they are the model's
    own normal tail, and counted beside live ones, a fault's onset that scored like one or
    two of them passed as normal (SKAB: NAB 60 s 33.4 -> 31.3); a training that held the
    excursion that often shows it is the device's normal (SKAB's valve2/0, the fleet:
    docs/BENCHMARKS.md, "Excursions a training held often")."""
    step = device.step_s
    since = ts - cfg.recurring_within * step
    gap = _EPISODE_GAP * step
    recent = [p for p in device.past if p.onset >= since]
    tail_end = -np.inf
    episodes: list[list[Excursion]] = []
    for p in recent:
        if not episodes or p.onset - tail_end > gap:
            episodes.append([])
        episodes[-1].append(p)
        tail_end = max(tail_end, p.onset + p.duration)
    if episodes and ts - tail_end <= gap:
        if not all(p.trusted for p in episodes[-1]):
            return []
        episodes.pop()
    chosen = []
    count = 0
    warm: list[Excursion] = []
    warm_count = 0
    for members in episodes:
        alike = [p for p in members if _alike(p, ratios, margin)]
        live = [p for p in alike if not p.warm]
        if live:
            count += 1
            chosen.extend(live)
        elif alike:  # an episode of the training readings alone
            warm_count += 1
            warm.extend(alike)
    if warm_count >= cfg.recurring_frequent:
        count += warm_count
        chosen.extend(warm)
    return chosen if count >= cfg.recurring_frequent else []


def _to_data(state: _Device) -> dict[str, Any]:
    return {
        "excursions": [[p.onset, p.peak, p.duration, p.trusted, p.warm, p.base] for p in state.past]
    }


def _excursions(data: Mapping[str, Any], device: str) -> list[Excursion]:
    out = []
    for saved in data["excursions"]:
        # saved before warm: 4 values; before the baseline's peak: 5 (0: unknown)
        onset, peak, duration, trusted, *rest = saved
        warm = bool(rest[0]) if rest else bool(trusted)
        base = float(rest[1]) if len(rest) > 1 else 0.0
        if len(rest) > 2:
            raise ValueError(f"recurring excursions of {device!r}: {saved}")
        item = Excursion(float(onset), float(peak), float(duration), bool(trusted), warm, base)
        if not (
            np.isfinite(item.onset) and item.peak >= 0 and item.base >= 0 and item.duration >= 0
        ):
            raise ValueError(f"recurring excursions of {device!r}: {saved}")
        out.append(item)
    return out
