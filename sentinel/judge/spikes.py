"""Spikes: single readings far off their neighbours, judged per reading beside the model.

Why a second check: a window's reconstruction error averages over its readings, and an
autoencoder's error on normal data is far above the sensors' own noise (it cannot recall
each pump's exact level and load cycle). A one-to-three-reading spike of ten times a
channel's noise then moves a 16-reading window's error less than a normal change of load
does, and on the simulated fleet the model missed most spikes at any sane threshold
(docs/BENCHMARKS.md, "Thresholds after lasting regime changes").

The check is a Hampel identifier (Hampel 1974; Pearson et al., "Generalized Hampel
Filters", 2016): a reading's residual from the median of itself and its ``neighbours``
readings on each side, divided by the device's own robust noise scale per feature. A
reading is a spike when that ratio, ``z``, exceeds ``k``. A median follows steps, ramps and
slow cycles, so level shifts and load changes leave no residual; only excursions of at most
``neighbours`` readings do. The noise itself is measured with the reading left out of its
median (see ``hampel_residuals``).

Each device's noise scale is learnt from its own residuals (never from a spike's: residuals
beyond ``k`` are left out), over the last ``history`` readings, so a sensor that becomes
noisier for good is re-learnt within about half of ``history`` readings instead of alerting
forever. The scale is ``max(1.4826 x median |r|, 1.2533 x mean |r|, step)``: the first
two are the normal-noise standard deviation estimated two ways (the larger is kept, so a
heavy-tailed channel is not judged by its median alone), the last the channel's typical
step, the median of its non-zero residuals. On a noisy channel every residual is non-zero
and the step is below the first term, so it changes nothing; on a channel that moves in
steps and stays flat between them (counters, set points, few distinct values) most
residuals are exactly 0, the first two terms are near 0 too, and the step is what its
readings normally move by: a reading is then a spike only when it is ``k`` ordinary steps
off its neighbours. (The floor used to be the smallest non-zero residual, which on such a
channel is one rare small step, so every ordinary larger one was a spike: issue #21, cause
6.) A feature with no non-zero residual yet (a constant channel) is not judged.

**Relation residuals** (``relations``; issue #21). Read once a minute, a pump's drive
changes load every 5-15 readings in one step that moves every channel by as much as a
fault's spike, so a channel's own residuals and noise scale are made of such steps and a
two-reading excursion of one channel looks like a short load change. What tells them apart
is that the other channels did not move. Where a device has relations (the relation
check's linear fit, ``sentinel.judge.relations``, which applies to single readings as to
window means), each reading's residuals from it go through the same median and get their
own noise scale per feature, learnt the same way; from them, the departure of each judged
feature alone is estimated (``Relations.departures``) and judged as a z-score: a spike of
the flow moves the flow, pressure and current residuals at once, a load change none. Each
residual's noise counts as at least what every feature predicting it brings (``|weight|``
times that feature's residual noise, ``_shared_noise``): a fit on window means leans on
the channel whose mean follows the load closest, and one ordinary reading of it otherwise
moved every residual by several of their robust scales at once (docs/BENCHMARKS.md,
"Departures of the channel the others lean on"). Such a hit is a spike like any other,
judged against ``relations_k`` instead of ``k`` (its ``z`` is reported times k /
relations_k, so that one limit judges both, and is the larger of the two where both judge
a reading). A feature is not named while the window's other features lie beyond the
relation check's ``reach``.

Each device also remembers its recent spikes per feature (``recurring``): at most
``recurring_memory`` of them, each the reading's index in the device's own count of judged
readings and its signed residual. A new spike is normal when at least ``recurring_count``
remembered ones on the same feature, on the same side and at least 1 / ``recurring_margin``
of its size, lie within the last ``recurring_within`` readings (it recurs as often as
normal), or when the last ``recurring_count`` of those of about its size (within the margin
either way) and it are evenly
spaced, each interval within 5% of their median (it recurs with a learnt period, however
long: an hourly pulse at 1 s sampling is 3,600 readings apart); a normal spike does not make
its windows anomalous. A daily pulse, a bursty count or a periodic actuation is then judged
only until it has recurred that often, while a first, rare or larger-than-ever spike still
alerts. Adjacent spiking readings (within ``2 x neighbours``) are one burst, counted once.
Every spike is remembered, normal or not (that is how a pulse becomes known), but none
teaches the noise scale; so is every *near miss*, a reading within ``recurring_margin`` of
the limit (``z`` above ``k / recurring_margin``), the smallest that can make a spike
normal: a pulse whose size straddles ``k`` (an hourly cron's burst of disk writes, 6-12
times the noise) crosses it only now and then, and were only the crossings remembered, it
would never recur often enough to be known (issue #21, ``wide_server``). The memory
travels with the noise scale (``snapshot``, ``park``).

**Heavy tails** (``tail``; issue #21). Latencies, request counts and Student-t noise
leave their median by ten scales every few hundred readings as a matter of course, and each
such reading was a spike (the held-out server metrics' false alerts were almost all the
spike check's). Each device logs, per feature, its last 64 readings past half of k that
were no spike (Gaussian noise reaches 5 scales once in about 2 million readings; a step or
a ramp never does, the median follows it). Where those on one side of the median came in
at least three episodes 64 readings apart within ``history`` (a noise burst, or a fault,
is one episode), the limit on that side rises from k to the z a normal reading exceeds
once in a million by their tail, at most ``recurring_margin`` times the largest of them
(``_tail_limits``): an outlier as large as the tail has shown is no spike, one far beyond
it still is, and a pulse train does not hide a pulse twice its size or a dip on the other
side. Where the sample is spread as a tail's is (its excesses' spread at least half their
mean; a pulse train's are nearly equal), the limit may reach 3 times the largest instead:
a database's latency showed 13 scales in a thousand readings and sent 20-33 as a matter of
course (docs/BENCHMARKS.md, "A heavy tail's limit"). A hit's z is reported in units of its
limit times k. The log is not saved: after a restart the limits are k until it has
refilled.

A reading is judged in every window where it has ``neighbours`` readings on both sides, so
an alert's ``open_after`` windows can see it (with hop 4 and window 16, two or three times),
and the newest ``neighbours`` readings of a window wait for the next one.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from sentinel.config import SpikesConfig
from sentinel.judge.relations import MAD_TO_SIGMA, DepartureBasis, Relations
from sentinel.records import SpikeHit

__all__ = ["SpikeCheck", "SpikeHit", "hampel_residuals"]

_MEAN_TO_SIGMA = 1.2533  # sqrt(pi / 2): mean |r| of normal noise x this = its sd
_Z_CAP = 1e30  # stands in for an infinite z (a residual that overflowed)
# A pulse is periodic when its intervals are within 5% of their median: a daily pulse
# may drift by a reading or so at coarse sampling, random spikes hardly ever line up so.
_PERIOD_TOLERANCE = 0.05
_FIRST_ROWS = 64  # a device's first residual ring; it doubles up to ``history``
_DEPARTURE_FEATURES = 3  # judged features a device's relations need for per-reading departures
_RECOMPUTE_EVERY = 32  # accepted readings between scale updates (a median costs ~0.1 ms)
# Residuals within this share of a reading's size are float rounding, not noise: readings
# are float32 (a unit in the last place is 6e-8 to 1.2e-7 of the value), and on an exact
# ramp a reading less the mean of two neighbours is at most one such unit. Counted as
# noise, such residuals were the whole noise scale of a counter or a ramp that rises by the
# same step each reading (a server's memory between garbage collections, 0.02 a minute),
# and every collection's drop was a spike at z ~ 1e12 (issue #21). Two units at most, so a
# fine sensor's real noise (a barometer's 0.05 Pa at 101,325 Pa is 5e-7) stays noise.
RESOLUTION = 2.5e-7

FloatArray = npt.NDArray[np.float64]


def hampel_residuals(
    values: npt.NDArray[Any],
    neighbours: int,
    readings: npt.NDArray[Any] | None = None,
    newest: int | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Each reading's residuals from the median of its span of ``neighbours`` readings on
    each side: (B, T, F) windows give a (B, T - 2 * neighbours, F) array, position i
    belonging to reading i + neighbours, and a second of its last ``newest`` positions
    (default all).

    The first is from the median of the whole span, the reading included: a step or a ramp
    leaves none, a short excursion all of itself. The second leaves the reading out of the
    median, and is what the noise is measured on: on a trend the reading itself is the
    median of its span, so the first residual is 0 there and would make every trending
    channel look noiseless. The check learns the noise from each window's new readings
    only, so it asks for those alone: the rank and the two middle values are a third of
    the work (issue #23).

    Residuals within ``RESOLUTION`` of the readings' own size are 0: they are the rounding
    of float32 readings, not the sensor's noise (``readings``: the windows the residuals'
    sizes are judged by, when ``values`` are themselves residuals; default ``values``).
    """
    span = 2 * neighbours + 1
    x = np.asarray(values, dtype=np.float64)
    ordered = np.sort(sliding_window_view(x, span, axis=1), axis=-1)  # (B, T', F, span)
    centre = x[:, neighbours : x.shape[1] - neighbours]
    judged: FloatArray = centre - ordered[..., neighbours]
    size = (
        centre
        if readings is None
        else np.asarray(readings, dtype=np.float64)[:, neighbours : x.shape[1] - neighbours]
    )
    floor = RESOLUTION * np.abs(size)
    judged[np.abs(judged) <= floor] = 0.0
    # The span's median without the reading: drop the reading's own rank from the sorted
    # span (rank = how many values are below it; ties are equal values, so any one will do)
    # and average the two middle ones of the 2 * neighbours left.
    first = 0 if newest is None else max(centre.shape[1] - newest, 0)
    ordered, centre, floor = ordered[:, first:], centre[:, first:], floor[:, first:]
    rank = (ordered < centre[..., None]).sum(axis=-1)
    low = np.where(rank <= neighbours - 1, ordered[..., neighbours], ordered[..., neighbours - 1])
    high = np.where(rank <= neighbours, ordered[..., neighbours + 1], ordered[..., neighbours])
    noise: FloatArray = centre - (low + high) / 2
    noise[np.abs(noise) <= floor] = 0.0
    return judged, noise


@dataclass(slots=True)
class _DeviceNoise:
    # |residual| per feature of the last accepted readings: a ring of ``history`` rows, so
    # the scale's median runs on it in place (no list of rows to convert each time). It
    # starts small and doubles until it holds ``history`` rows, and holds float32, as the
    # windows hold the readings: 24 KB at six features and the default 1,000, where a
    # float64 ring allocated whole with a device's first window was 48 KB (issue #23,
    # memory). Until it is full the rows sit in order from 0 and head == filled.
    ring: npt.NDArray[np.float32]
    history: int
    filled: int = 0
    head: int = 0  # next row to write
    scale: FloatArray | None = None  # None until warm (NaN: that feature is not judged)
    inverse: FloatArray | None = None  # 1 / scale, 0 where NaN: z = |residual| x this
    seen: int = 0  # readings accepted in all
    since: int = 0  # accepted since the scale was last computed
    clock: int = 0  # readings judged in all: the index of the next fresh one
    # per feature, the remembered spikes (reading index, signed residual), oldest first; ()
    # until the feature's first: an empty deque is ~620 bytes, six a device (issue #23)
    spikes: list[deque[tuple[int, float]] | tuple[()]] = field(default_factory=list)
    # (reading index, feature) -> whether that recent spike was normal, so that the
    # windows after the one that first judged it judge it the same
    normal: dict[tuple[int, int], bool] = field(default_factory=dict)
    # the same for the device's relation residuals (``_relation_residuals``): their ring
    # and scale, once the device has relations; its spikes are remembered above
    point: _DeviceNoise | None = None
    # the relation residuals' floored inverse scales (``_shared_noise``) and the fit and
    # inverse they were made from, and the fit's ``departure_basis`` with them: made again
    # only when either is replaced, not per window
    shared: tuple[Relations, FloatArray, FloatArray, DepartureBasis] | None = None
    # per side of the median (below, above) and feature, the z a reading must exceed to be
    # a spike: k, or beyond it on a heavy tail (``_tail_limits``); None: k everywhere
    limit: FloatArray | None = None
    # per feature, the newest readings past half of k that were no spike (reading index,
    # signed z): the tail's sample; () until the feature's first, not saved (re-learnt)
    tails: list[deque[tuple[int, float]] | tuple[()]] = field(default_factory=list)
    logged: int = 0  # readings logged in ``tails`` in all
    tail_at: tuple[int, int] = (-1, 0)  # (``logged``, ``clock``) when the limits were read

    @classmethod
    def empty(cls, history: int, n_features: int, memory: int) -> _DeviceNoise:
        ring = np.zeros((min(_FIRST_ROWS, history), n_features), dtype=np.float32)
        return cls(ring, history, spikes=[() for _ in range(n_features)])

    def past(self, feature: int, memory: int) -> deque[tuple[int, float]]:
        """The feature's remembered spikes, made on first use."""
        past = self.spikes[feature]
        if isinstance(past, deque):
            return past
        made: deque[tuple[int, float]] = deque(maxlen=memory)
        self.spikes[feature] = made
        return made

    def log_tail(self, at: int, feature: int, z: float) -> None:
        """Log a reading past half of k that was no spike (``_tail_limits``' sample)."""
        if not self.tails:
            self.tails = [() for _ in self.spikes]
        past = self.tails[feature]
        if not isinstance(past, deque):
            past = self.tails[feature] = deque(maxlen=_TAIL_MEMORY)
        past.append((at, z))
        self.logged += 1

    def remember(self, at: int, feature: int, size: float, cfg: SpikesConfig) -> bool:
        """Remember a spike of ``size`` at reading ``at``; True when it is a normal one."""
        past = self.past(feature, cfg.recurring_memory)
        burst = bool(past) and at - past[-1][0] <= 2 * cfg.neighbours
        earlier = list(past)[:-1] if burst else list(past)  # a burst is not its own past
        start = past[-1][0] if burst else at  # a burst is timed by its first reading
        margin = cfg.recurring_margin
        # similar-or-larger: on the same side, at least 1 / margin of this one
        similar = [
            (when, other)
            for when, other in earlier
            if other * size > 0 and abs(other) * margin >= abs(size)
        ]
        recent = sum(when > at - cfg.recurring_within for when, _ in similar)
        # a period is learnt from alike spikes only (within margin either way): a one-off
        # far larger spike must not break the period of the device's normal pulses
        alike = [when for when, other in similar if abs(other) <= margin * abs(size)]
        normal = recent >= cfg.recurring_count or _periodic(
            [*alike[-cfg.recurring_count :], start], cfg.recurring_count
        )
        if burst:
            first, known = past[-1]
            past[-1] = (first, known if abs(known) >= abs(size) else size)
        else:
            past.append((at, size))
        self.normal[(at, feature)] = normal
        return normal

    def forget_before(self, at: int) -> None:
        """Drop the normal/not decisions of readings no window can hold any more."""
        self.normal = {key: v for key, v in self.normal.items() if key[0] >= at}

    def add(self, rows: FloatArray) -> None:
        rows = rows[-self.history :]
        if len(self.ring) < self.history and self.filled + len(rows) > len(self.ring):
            grown = np.zeros(
                (
                    min(self.history, max(2 * len(self.ring), self.filled + len(rows))),
                    self.ring.shape[1],
                ),
                dtype=np.float32,
            )
            grown[: self.filled] = self.ring[: self.filled]
            self.ring, self.head = grown, self.filled  # head wrapped to 0 if it was full
        size, head, count = len(self.ring), self.head, len(rows)
        if head + count <= size:  # the common case: one slice, no index array
            self.ring[head : head + count] = rows
        else:
            self.ring[(head + np.arange(count)) % size] = rows
        self.head = (head + count) % size
        self.filled = min(size, self.filled + len(rows))
        self.seen += len(rows)
        self.since += len(rows)

    def newest(self, count: int) -> npt.NDArray[np.float32]:
        """The newest ``count`` rows (at most ``filled``), oldest first."""
        count = min(count, self.filled)
        index = (self.head - count + np.arange(count)) % len(self.ring)
        rows: npt.NDArray[np.float32] = self.ring[index]
        return rows

    def resize(self, history: int) -> None:
        kept = self.newest(history)
        self.ring = np.zeros((history, self.ring.shape[1]), dtype=np.float32)
        self.ring[: len(kept)] = kept
        self.history = history
        self.filled, self.head = len(kept), len(kept) % history

    def set_memory(self, memory: int) -> None:
        self.spikes = [deque(past, maxlen=memory) if past else () for past in self.spikes]

    def set_scale(self, scale: FloatArray) -> None:
        self.scale = scale
        judged = np.isfinite(scale)
        self.inverse = np.where(judged, 1.0 / np.where(judged, scale, 1.0), 0.0)
        self.since = 0


@dataclass
class SpikeCheck:
    """Per (stream, device) spike judgments and the noise scales behind them."""

    config: SpikesConfig
    hop: int  # the stream's window hop: which interior readings are new in each window
    _devices: dict[tuple[str, str], _DeviceNoise] = field(default_factory=dict)
    # (stream, device) -> ``snapshot`` data of a device gone quiet (``park``)
    _parked: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def check(
        self,
        stream: str,
        devices: list[str],
        values: npt.NDArray[Any],
        fits: Sequence[Relations | None] = (),
        reach: float = 0.0,
        usual: list[frozenset[tuple[int, int]]] | None = None,
    ) -> list[SpikeHit | None]:
        """Judge a batch of one stream's windows (B, T, F), in arrival order, then learn
        from their new readings. ``fits``: each window's device's relations, where it has
        them (``RelationCheck.fits``), for the relation residuals; ``reach``: the relation
        check's, a feature is not named while the window's other features lie beyond it.
        ``usual``, where given, gets one set a window: the (reading index in the window,
        feature) of each of its readings whose excursion the device knows as normal -- a
        spike or near miss its memory judged to recur as often as normal or on its period,
        or one within a limit its learnt tail widened -- for the pipeline to vouch for a
        score that only such a reading made (``vouch``)."""
        cfg = self.config
        if not cfg.enabled or len(devices) == 0:
            return [None] * len(devices)
        neighbours = min(cfg.neighbours, (values.shape[1] - 1) // 2)
        residuals, noise = hampel_residuals(values, neighbours, newest=self.hop)
        interior = residuals.shape[1]
        fresh = min(self.hop, interior)
        magnitude = np.abs(residuals)
        spread = np.abs(noise)
        finite = np.asarray(np.isfinite(spread).all(axis=2), dtype=np.bool_)
        # Which one feature left the others needs at least two others to agree it was not
        # them: with two judged features, a departure of either moves both residuals, and a
        # daily pulse on a counter was named as a departure of the load beside it.
        fits = [f if f is not None and f.judged >= _DEPARTURE_FEATURES else None for f in fits]
        across = _relation_residuals(values, fits, neighbours, self.hop) if cfg.relations else None
        # what each window's relation residuals teach (``_learn_point``), for all at once
        learn_sizes = np.abs(across[1]) if across is not None else np.zeros((0, 0, 0))
        learn_finite = np.asarray(np.isfinite(learn_sizes).all(axis=2), dtype=np.bool_)
        hits: list[SpikeHit | None] = []
        for i, device in enumerate(devices):
            state = self._devices.get((stream, device))
            if state is None:
                parked = self._parked.pop((stream, device), None)
                if parked is not None:
                    self.restore(stream, {device: parked}, values.shape[2])
                    state = self._devices[(stream, device)]
                else:
                    state = _DeviceNoise.empty(cfg.history, values.shape[2], cfg.recurring_memory)
                    self._devices[(stream, device)] = state
            hit = None
            normal: frozenset[tuple[int, int]] = frozenset()
            keep: npt.NDArray[np.bool_] = finite[i]
            z: FloatArray | None = None
            signed = residuals[i]
            if state.inverse is not None:
                z = magnitude[i] * state.inverse  # 0 for features not judged
            fit = fits[i] if across is not None and i < len(fits) else None
            if fit is not None and state.point is not None and state.point.inverse is not None:
                assert across is not None
                shared = state.point.shared
                if shared is None or shared[0] is not fit or shared[1] is not state.point.inverse:
                    inverse = state.point.inverse
                    noise_inverse = _shared_noise(fit, inverse)
                    basis = fit.departure_basis(noise_inverse, fit.judged_mask)
                    shared = state.point.shared = (fit, inverse, noise_inverse, basis)
                point, size = fit.departures(across[0][i], shared[2], fit.judged_mask, shared[3])
                point *= cfg.k / cfg.relations_k  # in units of k: one limit for both
                if z is not None:
                    # A feature whose own reading did not leave its neighbours' median did
                    # not spike, whatever the others' prediction of it did.
                    point[z == 0.0] = 0.0
                if point.max() > cfg.k and reach > 0:  # out of reach: a guess, not named
                    # The window's means, except for the features the fit uses but does
                    # not judge (commands, set points), taken reading by reading: a command
                    # sent as a one-reading pulse is 1/32 in a window mean and 1 at its
                    # reading, far beyond every learnt mean, where the linear fit
                    # extrapolated is no prediction (issue #21, command-driven telemetry).
                    window = np.asarray(values[i], dtype=np.float64)
                    rows = np.broadcast_to(window.mean(axis=0), (interior, window.shape[1]))
                    stepped = fit.inverse == 0
                    if stepped.any():
                        own = window[neighbours : neighbours + interior]
                        rows = np.where(stepped, own, rows)
                    point[fit.distances(rows) > reach * fit.reach] = 0.0
                if z is None:
                    z, signed = point, size
                elif point.max() > cfg.k:  # rare: only then the two are merged
                    signed = np.where(point > z, size, signed)
                    z = np.maximum(z, point)
            if z is not None:
                t, f = divmod(int(z.argmax()), z.shape[1])
                # Readings within the margin of a spike are remembered as spikes are: a
                # normal pulse whose size straddles k (an hourly cron's burst of disk
                # writes, 6-12 x the noise) crosses it only now and then, and were only
                # those remembered, it would never recur often enough to be known.
                near = cfg.k / cfg.recurring_margin if cfg.recurring else cfg.k
                limit: FloatArray | float = cfg.k
                raw = z  # before the device's normal spikes are set to 0
                if z[t, f] > near:  # the common case, nothing near a spike, costs no more
                    if state.limit is not None:  # per reading, its residual's side's limit
                        limit = np.where(signed >= 0, state.limit[1], state.limit[0])
                    newest = z[interior - fresh :]
                    newest_limit = (
                        limit[interior - fresh :] if isinstance(limit, np.ndarray) else limit
                    )
                    keep = keep & ~(newest > newest_limit).any(axis=1)
                    if cfg.recurring:
                        first = state.clock - (interior - fresh)  # interior reading 0's index
                        candidates = z > near
                        z = self._without_normal(state, first, signed, z, newest > near)
                        if usual is not None:
                            normal = self._usual(state, first, candidates, neighbours)
                            tail = candidates & (z <= limit) & (limit > cfg.k)
                            if tail.any():
                                normal = normal | frozenset(
                                    (int(r) + neighbours, int(g))
                                    for r, g in zip(*np.nonzero(tail), strict=True)
                                )
                    ratio = z / limit
                    t, f = divmod(int(ratio.argmax()), z.shape[1])
                    if ratio[t, f] > 1.0:
                        hit = SpikeHit(
                            feature=f,
                            # in units of k; a residual that overflowed (near float64's limit)
                            z=min(float(ratio[t, f]) * cfg.k, _Z_CAP),
                            age=interior - 1 - t + neighbours,
                        )
                if cfg.tail and float(raw[interior - fresh :].max()) > cfg.k / 2:
                    _log_tails(state, raw, z, signed, limit, interior - fresh, cfg.k)
            state.clock += fresh
            if state.normal:
                state.forget_before(state.clock - interior)
            state.add(spread[i][keep])
            if state.filled >= cfg.warmup and (
                state.scale is None or state.since >= _RECOMPUTE_EVERY
            ):
                state.set_scale(_scale(state.ring[: state.filled]))
                # read again when the log grew, and now and then for its entries that aged
                # out of history (~0.1 ms a device with a tail; nothing without one)
                logged, read = state.tail_at
                if state.logged != logged or state.clock - read >= cfg.history // 4:
                    state.limit = _tail_limits(state, cfg)
                    state.tail_at = (state.logged, state.clock)
            if fit is not None and across is not None:
                self._learn_point(state, learn_sizes[i][keep & learn_finite[i]])
            hits.append(hit)
            if usual is not None:
                usual.append(normal)
        return hits

    def _learn_point(self, state: _DeviceNoise, rows: FloatArray) -> None:
        """Learn a device's relation residuals' noise as its readings' (``state.point``)
        from the |residual| ``rows`` it keeps (finite ones only)."""
        cfg = self.config
        if state.point is None:
            state.point = _DeviceNoise.empty(cfg.history, rows.shape[1], 1)
        point = state.point
        point.add(rows)
        if point.filled >= cfg.warmup and (point.scale is None or point.since >= _RECOMPUTE_EVERY):
            point.set_scale(_scale(point.ring[: point.filled]))

    def _without_normal(
        self,
        state: _DeviceNoise,
        first: int,
        residuals: FloatArray,
        z: FloatArray,
        spiking: npt.NDArray[np.bool_],
    ) -> FloatArray:
        """``z`` with the device's normal spikes set to 0, after remembering the spikes
        among the window's fresh readings (``spiking``, the window's last rows)."""
        cfg = self.config
        fresh = len(spiking)
        older = len(z) - fresh
        for t, f in zip(*np.nonzero(spiking), strict=True):
            state.remember(first + older + int(t), int(f), float(residuals[older + t, f]), cfg)
        z = z.copy()
        for t, f in zip(*np.nonzero(z > cfg.k), strict=True):
            if state.normal.get((first + int(t), int(f)), False):
                z[t, f] = 0.0
        return z

    def _usual(
        self,
        state: _DeviceNoise,
        first: int,
        near: npt.NDArray[np.bool_],
        neighbours: int,
    ) -> frozenset[tuple[int, int]]:
        """The window's readings (index in the window, feature) among ``near`` (interior
        positions within the margin of the limit) that the device's memory judged normal,
        as remembered when each was among a window's fresh readings -- after
        ``_without_normal`` has remembered this window's own."""
        if not state.normal:
            return frozenset()
        return frozenset(
            (int(t) + neighbours, int(f))
            for t, f in zip(*np.nonzero(near), strict=True)
            if state.normal.get((first + int(t), int(f)), False)
        )

    def normal_spikes(self, stream: str, device: str) -> list[list[tuple[int, float]]]:
        """A device's remembered spikes per feature: (reading index, signed residual)."""
        state = self._devices.get((stream, device))
        return [] if state is None else [list(past) for past in state.spikes]

    def scale(self, stream: str, device: str) -> FloatArray | None:
        """A device's current noise scale per feature (NaN: not judged), None until warm."""
        state = self._devices.get((stream, device))
        return None if state is None or state.scale is None else state.scale.copy()

    def reconfigure(self, config: SpikesConfig, hop: int) -> None:
        if config.history != self.config.history:
            for state in self._devices.values():
                state.resize(config.history)
                if state.point is not None:
                    state.point.resize(config.history)
        if config.recurring_memory != self.config.recurring_memory:
            for state in self._devices.values():
                state.set_memory(config.recurring_memory)
        tails = ("k", "tail", "recurring_margin", "history")
        if any(getattr(config, key) != getattr(self.config, key) for key in tails):
            for state in self._devices.values():
                state.limit = _tail_limits(state, config)  # in the new k, or k when off
                state.tail_at = (state.logged, state.clock)
        self.config, self.hop = config, hop

    def park(self, keep: Container[tuple[str, str]]) -> int:
        """Free the state of every device not in ``keep``: a warm one keeps its scale and
        count, as in a snapshot, and re-learns its residual history when it returns."""
        gone = [key for key in self._devices if key not in keep]
        for key in gone:
            data = _to_data(self._devices.pop(key))
            if data is not None:
                self._parked[key] = data
        return len(gone)

    def snapshot(self, stream: str) -> dict[str, Any]:
        """Each warm device's scale, counts and remembered spikes, parked devices included:
        enough to judge at once after a restart; the residual history itself is re-learnt
        (it would be ``history`` x features floats per device)."""
        data = {device: parked for (s, device), parked in self._parked.items() if s == stream}
        for (s, device), state in self._devices.items():
            if s == stream and (saved := _to_data(state)) is not None:
                data[device] = saved
        return data

    def restore(self, stream: str, devices: Mapping[str, Any], n_features: int) -> int:
        """Take back ``snapshot``'s scales; raises ValueError/TypeError/KeyError on a
        malformed one (the caller reports it and starts afresh)."""
        restored = {}
        for device, data in devices.items():
            state = _DeviceNoise.empty(
                self.config.history, n_features, self.config.recurring_memory
            )
            state.set_scale(_restored_scale(data["scale"], n_features, device))
            if "point" in data:  # absent before relation residuals were judged (issue #21)
                state.point = _DeviceNoise.empty(self.config.history, n_features, 1)
                state.point.set_scale(_restored_scale(data["point"], n_features, device))
            state.seen = int(data["seen"])
            # absent in snapshots written before spikes were remembered (issue #21)
            state.clock = int(data.get("clock", 0))
            for at, feature, size in data.get("spikes", []):
                if not 0 <= int(feature) < n_features:
                    raise ValueError(
                        f"spike memory of {device!r} does not fit {n_features} features"
                    )
                state.past(int(feature), self.config.recurring_memory).append(
                    (int(at), float(size))
                )
            state.limit = _tail_limits(state, self.config)
            restored[(stream, str(device))] = state
        self._devices.update(restored)
        return len(restored)


def _relation_residuals(
    values: npt.NDArray[Any], fits: Sequence[Relations | None], neighbours: int, newest: int
) -> tuple[FloatArray, FloatArray] | None:
    """``hampel_residuals`` of each window's readings' residuals from its device's relation
    fit (zeros for a window without one; only the residuals of judged features; the noise
    of the ``newest`` positions alone); None when no window has a fit.

    A load change moves every channel of a device at once, in one step at coarse sampling,
    and the channels' own residuals are made of such steps; the relation residuals are not:
    what is left of one channel after the others' prediction moves only when it moves
    alone (issue #21). The fit is linear, so it applies to single readings as it does to
    window means."""
    if not any(fit is not None for fit in fits):
        return None
    across = np.zeros(values.shape, dtype=np.float64)
    # The windows of one fit (one device's in the batch) in one call, not one each
    by_fit: dict[int, tuple[Relations, list[int]]] = {}
    for i, fit in enumerate(fits):
        if fit is not None:
            by_fit.setdefault(id(fit), (fit, []))[1].append(i)
    for fit, rows in by_fit.values():
        windows = np.asarray(values[rows], dtype=np.float64)  # (k, T, F)
        flat = windows.reshape(-1, windows.shape[2])
        across[rows] = (fit.residuals(flat) * fit.judged_mask).reshape(windows.shape)
    return hampel_residuals(across, neighbours, values, newest)


def _shared_noise(fit: Relations, inverse: FloatArray) -> FloatArray:
    """1 / each relation residual's noise, that noise at least what each feature predicting
    it brings: a residual g = x_g - sum_f w_gf x_f carries |w_gf| times f's noise. A fit on
    window means leans on the channel whose mean follows the load closest (weights of 30-60
    on a pump's pressure), and a robust scale of its per-reading residuals, taken from
    readings where that channel's noise is mostly a quantisation step or two, understated
    it: one ordinary reading of the pressure moved every residual by several of their
    scales at once, a 12-deviation "departure" out of 2-3 of its own. ``inverse``: 1 / each
    residual's learnt scale, 0 where not judged (left 0)."""
    scale = np.where(inverse > 0, 1.0 / np.where(inverse > 0, inverse, 1.0), 0.0)
    brought = np.abs(fit.weights) * scale[None, :]
    floored = np.maximum(scale, brought.max(axis=1))
    out: FloatArray = np.where(inverse > 0, 1.0 / np.where(floored > 0, floored, 1.0), 0.0)
    return out


def _periodic(times: list[int], count: int) -> bool:
    """Whether the last ``count`` intervals between ``times`` (readings, oldest first) are
    one period: each within ``_PERIOD_TOLERANCE`` of their median (at least one reading)."""
    if len(times) < count + 1:
        return False
    intervals = np.diff(np.asarray(times, dtype=np.float64))
    period = float(np.median(intervals))
    return period > 0 and bool(
        (np.abs(intervals - period) <= max(1.0, _PERIOD_TOLERANCE * period)).all()
    )


def _to_data(state: _DeviceNoise) -> dict[str, Any] | None:
    if state.scale is None:
        return None
    return {
        "scale": _scale_data(state.scale),
        "seen": state.seen,
        "clock": state.clock,
        # [reading index, feature, signed residual], oldest first per feature
        "spikes": [
            [at, feature, size] for feature, past in enumerate(state.spikes) for at, size in past
        ],
        # the relation residuals' scale (absent: none learnt yet)
        **(
            {"point": _scale_data(state.point.scale)}
            if state.point and state.point.scale is not None
            else {}
        ),
    }


def _scale_data(scale: FloatArray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in scale]


def _restored_scale(data: Sequence[float | None], n_features: int, device: str) -> FloatArray:
    values = [math.nan if v is None else float(v) for v in data]
    if len(values) != n_features or any(v <= 0 for v in values if not math.isnan(v)):
        raise ValueError(f"spike scale of {device!r} does not fit {n_features} features")
    return np.asarray(values, dtype=np.float64)


_TAIL_RISK = 1e-6  # a normal reading's chance, per reading, of being a spike on a heavy tail
_TAIL_LEAST = 3  # episodes past half of k a feature needs before its tail is read
_TAIL_MEMORY = 64  # readings past half of k logged per feature (``_DeviceNoise.tails``)
_TAIL_GAP = 64  # readings between two exceedances that make them two episodes
# A tail's sample whose excesses' standard deviation is at least this share of their mean
# is spread as a tail's (an exponential's equals its mean; pulses of one size have ~0) and
# its limit may reach _TAIL_REACH times the largest it showed, not ``recurring_margin``.
_TAIL_SPREAD = 0.5
_TAIL_REACH = 3.0


def _log_tails(
    state: _DeviceNoise,
    raw: FloatArray,
    judged: FloatArray,
    signed: FloatArray,
    limit: FloatArray | float,
    start: int,
    k: float,
) -> None:
    """Log the window's fresh readings (interior rows from ``start``) past half of k that
    were no spike: under their side's ``limit``, or spikes the memory judged normal (their
    ``judged`` z set to 0)."""
    z = raw[start:]
    bound = limit[start:] if isinstance(limit, np.ndarray) else limit
    passed = (z > k / 2) & ((z <= bound) | ((z > k) & (judged[start:] == 0.0)))
    for r, g in zip(*np.nonzero(passed), strict=True):
        side = 1.0 if signed[start + r, g] >= 0 else -1.0
        state.log_tail(state.clock + int(r), int(g), side * float(z[r, g]))


def _tail_limits(state: _DeviceNoise, cfg: SpikesConfig) -> FloatArray | None:
    """Per side (below, above the median) and feature (2, F), the z beyond which a reading
    is a spike: k, or more on a heavy tail; None where every one is k (``tail`` off, nothing
    judged yet, or no tail learnt).

    The sample is the device's last readings past half of k (5 noise scales off their
    neighbours' median at the defaults, which Gaussian noise reaches about once in 2
    million readings, and a step or a ramp never does: the median follows it) that were
    no spike (``_log_tails``), on that side. Where a feature's within the last ``history``
    readings came in at least ``_TAIL_LEAST`` episodes ``_TAIL_GAP`` readings apart (a
    burst of noise is one episode, and so is a fault), their excesses are a sample of its
    tail (peaks over a threshold, as ``sentinel.judge.spot``; Siffer et al., KDD 2017),
    taken as exponential -- the excesses' mean, which a heavier tail only makes
    conservative -- and the limit is the z that a normal reading exceeds with probability
    ``_TAIL_RISK``: ``k / 2 + mean x ln(rate / risk)``; never more than
    ``recurring_margin`` x the largest the side showed (a pulse train's normal pulses do
    not hide one twice their size), never less than k. The reach past the largest is
    ``_TAIL_REACH`` instead where the excesses are spread as an exponential's are (their
    standard deviation at least ``_TAIL_SPREAD`` of their mean; it equals the mean for an
    exponential, and is near 0 for pulses of one size): a heavy tail's largest in a
    thousand readings is a poor bound on its next, a pulse train's is a good one. A spike
    beyond the limit is never in the sample, so an alerted one does not widen its own."""
    if not cfg.tail or state.inverse is None or not any(state.tails):
        return None
    limits = np.full((2, len(state.inverse)), cfg.k)
    half = cfg.k / 2
    since = state.clock - cfg.history
    span = min(cfg.history, state.clock)
    for f, past in enumerate(state.tails):
        if not past or state.inverse[f] == 0.0 or span <= 0:
            continue
        for side in (0, 1):
            found = [(at, abs(z)) for at, z in past if at >= since and (z >= 0) == bool(side)]
            if len(found) < _TAIL_LEAST:
                continue
            times = np.array([at for at, _ in found])
            if 1 + np.count_nonzero(np.diff(times) > _TAIL_GAP) < _TAIL_LEAST:
                continue
            z = np.array([size for _, size in found])
            excess = z - half
            limit = half + float(excess.mean()) * math.log(len(z) / span / _TAIL_RISK)
            spread = float(excess.std()) >= _TAIL_SPREAD * float(excess.mean())
            reach = _TAIL_REACH if spread else cfg.recurring_margin
            limit = min(limit, reach * float(z.max()))
            limits[side, f] = max(cfg.k, limit)
    return limits if bool((limits > cfg.k).any()) else None  # None: k everywhere, cheaper


def _scale(magnitudes: npt.NDArray[np.floating[Any]]) -> FloatArray:
    """Noise scale per feature from |residuals| (N, F); NaN where every residual is 0.

    Both medians are read off one sort of each feature's residuals: the plain one and,
    where some residuals are 0, the median of the non-zero ones, which are the sorted
    row's tail (|r| >= 0, so the zeros sort first). Equal, value for value, to
    ``_scale_reference`` (``np.median`` of each: the middle value, or the mean of the two
    middle ones; the mean summed in the order ``mean(axis=0)`` sums a column, reading by
    reading), and a fifth of its cost; it runs per device every 32 readings (issue #23).
    The residuals are laid out a feature a row, in float64, once: sorting, summing and
    counting along contiguous rows is where the time went (the ring holds float32)."""
    n = len(magnitudes)
    if n == 0:
        return _scale_reference(np.asarray(magnitudes, dtype=np.float64))
    rows = np.array(magnitudes.T, dtype=np.float64, order="C")  # (F, N)
    total = np.add.accumulate(rows, axis=1)[:, -1]  # in reading order, as mean(axis=0)
    rows.sort(axis=1)
    # a handful of features: read as Python floats, not by NumPy calls on six values each
    if any(v != v for v in rows[:, -1].tolist()) or min(rows[:, 0].tolist()) < 0:
        # outside what the sort's reading assumes (NaN sorts last)
        return _scale_reference(np.asarray(magnitudes, dtype=np.float64))
    mean = total / n * _MEAN_TO_SIGMA
    low, high = rows[:, (n - 1) // 2], rows[:, n // 2]
    median = (high if n % 2 == 1 else (low + high) / 2) * MAD_TO_SIGMA
    step = np.zeros(len(rows))
    ends = zip(rows[:, 0].tolist(), rows[:, -1].tolist(), strict=True)
    for f, (first, last) in enumerate(ends):
        if first != 0.0 or last == 0.0:  # no zeros, or nothing but: no step median
            continue
        # the non-zero residuals' median: the zeros sort first, so they end where the
        # binary search for the first value above 0 lands
        start = int(rows[f].searchsorted(0.0, side="right"))
        count = n - start
        middle = float(rows[f, start + count // 2])
        step[f] = (
            middle if count % 2 == 1 else (float(rows[f, start + (count - 1) // 2]) + middle) / 2
        )
    scale = np.maximum(np.maximum(median, mean), step)
    result: FloatArray = np.where(scale > 0, scale, np.nan)
    return result


def _scale_reference(magnitudes: FloatArray) -> FloatArray:
    """``_scale`` with one ``np.median`` per feature: its definition, and what it falls back
    on for input with NaN or negative values (which the check never gives it)."""
    median = np.median(magnitudes, axis=0) * MAD_TO_SIGMA
    mean = magnitudes.mean(axis=0) * _MEAN_TO_SIGMA
    # The typical step, the median of the non-zero residuals, matters only where some are
    # 0: with none, it is the plain median, below the first term. So a noisy channel costs
    # nothing more, and a step-like one one median of its non-zero residuals.
    step = np.zeros(magnitudes.shape[1])
    zeros = (magnitudes == 0).sum(axis=0)
    for feature in np.flatnonzero((zeros > 0) & (zeros < len(magnitudes))):
        column = magnitudes[:, feature]
        step[feature] = np.median(column[column > 0])
    scale = np.maximum(np.maximum(median, mean), step)
    result: FloatArray = np.where(scale > 0, scale, np.nan)
    return result
