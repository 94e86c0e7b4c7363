"""The relation check: a window whose mean of one feature no longer follows the device's other
features is anomalous, whatever the model's score.

Why a check beside the model: on a plant, most of what moves a channel is shared. A pump's
flow, pressure, motor current and supply voltage all follow its load; a compressor's
discharge temperature follows its pressure ratio. Load changes move each channel's level by
more than its faults do (on the simulated fleet the training window means spread 2-5 channel
scales within one pump, its level shifts are 4-6, its drifts 6-10 at their end), so neither a
level check against training's spread nor a forecaster that learns each channel's next
reading from its last sees a fault that moves one channel alone: a sensor's offset, a drift, a
motor drawing current that no longer tracks the hydraulic load. What a normal load change
never does is move one channel without the others. So each device keeps a model of how each
feature's window mean follows the other features' window means, and a window whose residual
on one feature is far beyond the device's normal residuals is anomalous.

**The model** is linear: per feature, a least-squares fit of its window mean on the other
features' window means, made on the device's own normal windows -- a fleet of pumps of
different sizes shares one stream's LSTM, but each pump has its own curves. Window means
average the sensors' noise away, which is what makes a shift of a few noise standard
deviations visible. The fit is not shrunk (no ridge beyond numerical safety): where several
features follow one load, a break shows only in the small differences between them, which a
shrunk fit gives up first. A linear fit of curved relations (pressure goes with the square
of flow) leaves a residual that each feature's scale absorbs.

**The scale** of feature f is the ``quantile`` of its absolute residuals, each window's taken
from a fit that did not see that window or any window overlapping it (held-out blocks, see
``fit_relations``), floored at the noise of a window mean; a window is anomalous when a
residual exceeds ``k`` times its scale. The hit names the feature whose departure alone
explains the window's residuals best (``Relations.culprit``): where flow and current both
follow the load, either moving alone throws both predictions off.

**A break that lasts.** A residual of one to a few scales never reaches k in one window but
does not fall back as noise does: each feature's ratio averaged over the windows one window's
readings span is judged against ``sustained`` times the largest such average of the learnt
windows, held out (``fit_relations``), with the window itself beyond that limit on the same
side (a break that has ended stops counting with its windows). It is judged once the learnt
windows hold 32 correlation times of those averages (32 independent averages: about 20 spans
where the residuals are noise, more where they follow a slow lag): the largest of fewer is
one draw of few, and a residual following a lag longer than what was learnt has wandered once.

**Only within reach.** A feature is judged only while the other features lie within
``reach`` times the farthest any learnt window's did (squared Mahalanobis distance in their
learnt covariance): a prediction extrapolated to a load the device never ran at is a guess,
and on SKAB most false alarms of an ungated check came from such windows (docs/BENCHMARKS.md).
A fault that moves one feature leaves the others where they were, so its own prediction is
still judged.

**Learning.** A device's windows are judged once it has learnt ``warmup`` windows (200, and
8 per feature judged); until then nothing is. The scale is the ``quantile`` (0.995) of the
learnt windows' residuals, and from fewer than 1 / (1 - quantile) windows it is their
largest: a pump that joined a fleet after training was judged from 64, a third of its first
simulated day, and raised twice the false alerts it does with 200 (docs/BENCHMARKS.md,
"Relations learnt on 200 windows"). Its first fit comes at 64 (``_FIRST_FIT``): the spike
check's per-reading relation residuals and the joint-step rule use it before its own hits
are reported, and the hits found before then still keep a break's windows out of what is
learnt. The warm start's windows (its stream's training
rows) are all learnt, so a device whose readings trained the model is judged from its first
live window where they are enough; later, only windows whose final verdict is normal are,
each once the windows after it show the readings it holds were not the start of a break
(``learn``). The last ``history`` are
kept and the fit is renewed every ``refit`` learnt windows, so relations that drift with the
seasons are followed while a fault, judged anomalous, teaches nothing. A relation that stays
broken (most windows hits) for the threshold's ``rebaseline_after`` is a new normal (a pump
rebuilt, a sensor recalibrated):
the device forgets its relations and learns them afresh, with an audit event
(``relations_relearnt``), instead of alerting until retraining.

Features constant in the model's training are the constant check's and left out here, as are
features constant among the learnt windows; a feature whose readings move within fewer than
half of the learnt windows (a command flag, a set point) helps predict the others but is not
judged itself; a stream with fewer than two varying features has
no relations to judge. The fits belong to the devices, not the model: they survive model
swaps and, through ``snapshot``/``restore``, restarts (the learnt window means themselves are
re-learnt, as the spike check's residual history is).
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Collection, Container, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from sentinel.config import RelationsConfig
from sentinel.judge.evidence import carrying_readings
from sentinel.model.base import Detector
from sentinel.records import AuditEvent, RelationHit, Window

__all__ = ["RelationCheck", "Relations", "fit_relations"]

log = structlog.get_logger(__name__)

FloatArray = npt.NDArray[np.float64]
# ``Relations.departure_basis``: directions, named-and-usable, squared norms, norms
DepartureBasis = tuple[FloatArray, npt.NDArray[np.bool_], FloatArray, FloatArray]

# Ridge penalty per learnt window, in standardised units: numerical safety only (two
# identical features), far below the small eigenvalues a break between collinear features
# lives in.
_RIDGE = 1e-6
_FLOAT_MAX = float(np.finfo(np.float64).max)
_FIRST_ROWS = 32  # a device's first ring of window means; it doubles up to ``history``
_MAX_FOLDS = 32  # most held-out blocks the residual scale is measured on (fit_relations)
_MIN_PER_FEATURE = 8  # learnt windows per varying feature before a fit is trusted
# Learnt windows before a device's first fit, where ``warmup`` is longer: the fit serves the
# spike check's per-reading relation residuals and the joint-step rule from here, while
# its own hits wait for ``warmup`` windows, the scale being a high quantile of them.
_FIRST_FIT = 64
_CONSTANT = 1e-9  # a window-mean spread below this (relative to the level) is constant
_MOVING = 0.5  # judged: features whose readings move within at least this share of windows
# Spans of learnt windows before the sustained average is worked out at all, and
# independent averages (the learnt windows over the averages' correlation time) before it is
# judged: the largest of fewer is one draw of few, not a wander one can extrapolate from.
# An average over a span of white residuals decorrelates in ~0.63 span, so the second is
# ~20 spans there and longer where the residual follows a slow lag.
_SUSTAINED_SPANS = 16
_SUSTAINED_INDEPENDENT = 32


# A step the channels took together (``Relations.moved_together``): at least two judged
# features' readings jumped beyond this many robust deviations of their window's
# reading-to-reading changes, and none of their relation residuals did. Four: a change a
# Gaussian noise makes once in ~16,000 readings (docs/BENCHMARKS.md, "A joint step opens
# nothing").
JOINT = 4.0
# How far before a forecast miss ``Relations.ramped_together`` looks for the move's start:
# a window's length over this (8 readings of 32).
RAMP_LEAD = 4
MAD_TO_SIGMA = 1.4826  # median |r| of normal noise x this = its standard deviation


@dataclass(frozen=True, slots=True)
class Relations:
    """One device's fitted relations over F features, in raw units about ``centre``."""

    centre: FloatArray  # (F,) the learnt windows' mean window means
    weights: FloatArray  # (F, F) prediction of each feature from the others; zero diagonal
    inverse: FloatArray  # (F,) 1 / residual scale; 0: not judged
    # (F, F) inverse covariance of the learnt window means over the features used (zero
    # elsewhere): from it, how far a window's other features lie from the learnt ones
    precision: FloatArray
    reach: FloatArray  # (F,) the farthest any learnt window's other features lay (see z)
    # (F,) 1 / the largest residual ratio, averaged over one window's span of consecutive
    # learnt windows, held out (``fit_relations``); 0: not judged so
    sustained: FloatArray
    # (F,) inverse > 0, made once: the spike check asks for it at every window
    judged_mask: npt.NDArray[np.bool_] = field(init=False, repr=False, compare=False)
    judged: int = field(init=False, repr=False, compare=False)  # how many features judged

    def __post_init__(self) -> None:
        mask = self.inverse > 0
        mask.flags.writeable = False  # shared by every caller
        object.__setattr__(self, "judged_mask", mask)
        object.__setattr__(self, "judged", int(mask.sum()))

    def residuals(self, means: FloatArray) -> FloatArray:
        """(B, F) window means -> (B, F) signed residuals, raw units."""
        d = means - self.centre
        out: FloatArray = d - d @ self.weights.T
        return out

    def distances(self, means: FloatArray) -> FloatArray:
        """(B, F): per feature f, the squared Mahalanobis distance of the window's other
        features from the learnt ones, in their learnt covariance. With P the precision
        matrix and u = P d, that distance is d'Pd - u_f^2 / P_ff (the inverse of the
        covariance without f is a Schur complement of P)."""
        d = means - self.centre
        u = d @ self.precision
        total = np.einsum("bf,bf->b", d, u)
        diag = np.diag(self.precision)
        safe = np.where(diag > 0, diag, 1.0)
        out: FloatArray = total[:, None] - np.where(diag > 0, u * u / safe, 0.0)
        return out

    def z(self, means: FloatArray, reach: float) -> FloatArray:
        """(B, F) window means -> (B, F) |residual| / scale; 0 where a feature is not judged
        or the window's other features lie beyond ``reach`` x ``self.reach``."""
        out: FloatArray = np.abs(self.residuals(means)) * self.inverse
        if reach > 0:
            out[self.distances(means) > reach * self.reach] = 0.0
        return out

    def ratios(self, means: FloatArray) -> FloatArray:
        """(B, F) window means -> (B, F) signed residuals in units of each feature's scale
        (0 where a feature is not judged)."""
        out: FloatArray = self.residuals(means) * self.inverse
        return out

    def moved_together(
        self, readings: FloatArray, first: int, feature: int, last: int | None = None
    ) -> bool:
        """Whether readings ``first`` to ``last`` (default: ``first`` alone) of one window's
        ``readings`` (T, F, raw) are a move the device's channels made together, as a pump's
        load step or ramp is: at least two judged features changed across them -- from the
        reading before ``first`` to ``last``, beyond ``JOINT`` robust deviations (1.4826 x
        MAD) of the window's reading-to-reading changes of each -- while none of their
        residuals (what is left of a feature after the others' prediction; the fit is
        linear, so it applies to single readings as to window means) changed so, nor that
        of ``feature``, the one the forecaster missed, which must be among those judged.
        One channel moving alone moves its residual; a drift, a channel the relations do
        not judge, or readings across which nothing moved have nothing here to vouch for
        them (``sentinel.judge.alerts``). Differences, not levels: a trend through the
        window does not widen them.

        A span, not only one reading: read every second, a load change is a ramp of 8-25
        readings that the forecaster misses over several of them, where read every 5 s it
        is one step (docs/BENCHMARKS.md, "A load ramp read every second"). Across a span
        of white noise the net change spreads as one reading-to-reading change does, so
        the same limit holds for both.

        A channel that did not move is not asked to keep its residual: its prediction
        from the others moves with them, and where it follows them through a lag longer
        than the window (a winding temperature behind its load) its residual moves by as
        much -- what the relation check judges over the windows after, not a reason to
        alert on the load change itself (docs/BENCHMARKS.md, "A channel that has not followed
        yet")."""
        return self._together(readings, first, feature, first if last is None else last)

    def ramped_together(
        self, readings: FloatArray, first: int, feature: int, last: int | None = None
    ) -> bool:
        """Whether readings ``first`` to ``last`` of one window's ``readings`` end a move
        the device's channels made together that began up to a quarter of the window's
        readings before them (``RAMP_LEAD``): ``moved_together`` across that longer span,
        with ``feature``, the one the forecaster missed, among the channels that moved.

        Read every second, a pump's load ramp lasts 8-25 readings, and the forecaster misses
        it at a reading or two near its end, where the move since the reading before is
        inside the noise (docs/BENCHMARKS.md, "A ramp's lead"). From a few readings before,
        the ramp stands out. Over a longer span a channel that always drifts slowly (a load
        average, a memory's sawtooth, a cache that fills) also moves beyond its
        reading-to-reading noise, whatever else happened: the missed channel must itself
        have moved, so that such channels cannot vouch alone for a miss of another (a disk
        storm's writes at their own level, judged beside a slowly rising memory)."""
        last = first if last is None else last
        start = max(1, first - len(readings) // RAMP_LEAD)
        return start < first and self._together(readings, start, feature, last, missed=True)

    def _together(
        self, readings: FloatArray, first: int, feature: int, last: int, missed: bool = False
    ) -> bool:
        judged = self.inverse > 0
        if first < 1 or last < first or last >= len(readings) or not judged[feature]:
            return False
        values = np.asarray(readings, dtype=np.float64)
        own = values[:, judged]
        spread = np.median(np.abs(np.diff(own, axis=0)), axis=0) * MAD_TO_SIGMA
        moved = np.abs(own[last] - own[first - 1]) > JOINT * spread
        index = int(np.count_nonzero(judged[:feature]))  # the missed one, among judged
        if np.count_nonzero(moved) < 2 or (missed and not moved[index]):
            return False
        residuals = self.residuals(values)[:, judged]
        noise = np.median(np.abs(np.diff(residuals, axis=0)), axis=0) * MAD_TO_SIGMA
        still = np.abs(residuals[last] - residuals[first - 1]) <= JOINT * noise
        asked = moved.copy()
        asked[index] = True
        return bool(np.all(still[asked]))

    def culprit(self, seen: FloatArray, z: FloatArray) -> int:
        """The feature whose departure alone best explains a window's residuals: ``seen``
        (F,) its signed residual ratios (``ratios``), ``z`` (F,) the ratios judged (0 where
        not judged).

        The largest residual does not say which feature moved: where two features follow
        one load, either moving alone throws both predictions off by about as much. A
        departure x of feature f alone changes residual g by x (g = f) or -x weights[g, f]:
        that direction, in units of each residual's scale, is compared with all residuals
        seen, and of the features judged in this window the one whose direction explains
        most of them is named (fault isolation by reconstruction; Alcala and Qin,
        Automatica 45, 2009). The features out of reach are not named (their predictions
        are extrapolated), but their residuals still count as evidence: a feature that
        moved puts the others' predictions out of reach and keeps its own."""
        directions = (np.eye(len(seen)) - self.weights) * self.inverse[:, None]
        norms = np.einsum("gf,gf->f", directions, directions)
        named = (z > 0) & (norms > 0)
        if not named.any():
            return int(z.argmax())
        explained = np.where(named, (seen @ directions) ** 2 / np.where(named, norms, 1.0), -1.0)
        return int(explained.argmax())

    def departures(
        self,
        residuals: FloatArray,
        inverse: FloatArray,
        named: npt.NDArray[np.bool_],
        basis: DepartureBasis | None = None,
    ) -> tuple[FloatArray, FloatArray]:
        """Per reading, how far each feature alone departed from the others: ``residuals``
        (T, F) the readings' relation residuals (``residuals``) less their local median,
        ``inverse`` (F,) 1 / each residual's normal scale (0: not used), ``named`` (F,) the
        features that may be named. Returns (T, F) ``z``, the departure's size in units of
        its own uncertainty (0 where not named), and (T, F) ``size``, that departure in the
        feature's raw units. ``basis``: ``departure_basis(inverse, named)``, made once for
        the windows of a device that share them (issue #23, speed).

        ``culprit``'s test made per reading: a departure x of feature f alone moves the
        scaled residuals along ``directions[:, f]``; the least-squares x from the scaled
        residuals is their projection on it over its squared norm, and that projection
        over the norm is a z-score where the scaled residuals are unit noise. All
        residuals count, so a flow spike seen in the flow, pressure and current
        predictions at once stands out more than in any one of them."""
        directions, ok, safe, root = basis or self.departure_basis(inverse, named)
        projection = (residuals * inverse) @ directions
        z: FloatArray = np.where(ok, np.abs(projection) / root, 0.0)
        size: FloatArray = np.where(ok, projection / safe, 0.0)
        return z, size

    def departure_basis(self, inverse: FloatArray, named: npt.NDArray[np.bool_]) -> DepartureBasis:
        """What ``departures`` needs of the fit, ``inverse`` and ``named`` alone: each
        feature's direction in the scaled residuals, whether it is named, its squared norm
        (1 where not named) and that norm."""
        directions = (np.eye(len(inverse)) - self.weights) * inverse[:, None]
        norms = np.einsum("gf,gf->f", directions, directions)
        ok = named & (norms > 0)
        safe = np.where(ok, norms, 1.0)
        return directions, ok, safe, np.sqrt(safe)

    def to_data(self) -> dict[str, Any]:
        return {
            "centre": self.centre.tolist(),
            "weights": self.weights.tolist(),
            "inverse": self.inverse.tolist(),
            "precision": self.precision.tolist(),
            "reach": self.reach.tolist(),
            "sustained": self.sustained.tolist(),
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any], features: int) -> Relations:
        """Raises ValueError where ``data`` does not describe ``features`` features (a fit
        saved before ``sustained`` existed is not judged so until it is renewed)."""
        arrays = {
            key: np.asarray(data[key], dtype=np.float64)
            for key in ("centre", "weights", "inverse", "precision", "reach")
        }
        arrays["sustained"] = np.asarray(data.get("sustained", [0.0] * features), np.float64)
        for key, array in arrays.items():
            want = (features, features) if key in ("weights", "precision") else (features,)
            if array.shape != want or not np.all(np.isfinite(array)):
                raise ValueError(f"relations {key} is not {want} finite numbers")
        return cls(**arrays)


def fit_relations(
    means: FloatArray,
    noise: FloatArray,
    quantile: float,
    skip: Collection[int] = (),
    block: int = 1,
    moving: FloatArray | None = None,
) -> Relations | None:
    """Fit each varying feature's window mean on the other varying features' over ``means``
    (n, F, oldest first), the residual scale floored at ``noise`` (F,: the noise of one
    window mean); the features in ``skip`` are neither judged nor used. None when fewer than
    two features vary. A feature whose readings moved within fewer than half of the learnt
    windows (``moving``: that fraction per feature) is used but not judged: a command flag or
    a set point that switches now and then is constant inside most windows, its window mean
    follows nothing the other features say, and the few switches a fit has seen do not tell
    where the next one lands.

    The scale is measured on residuals each window gets from a fit that did not see it:
    contiguous blocks of at least ``block`` windows (the caller passes the windows one
    window's readings span, so no window overlapping a held-out one is fitted on), each
    predicted from a fit on the rest. In-sample residuals understate the scale: a fit on
    eight features takes up part of the noise of a hundred overlapping windows, and a device
    with a short warm start would alert on its noise. Much longer blocks would overstate it
    where the relations are curved: a block holding the only windows at one load is then
    predicted by extrapolating the others, which ``reach`` keeps a later window from being.

    The same held-out residuals, averaged over ``block`` consecutive windows, give the
    sustained scale: the largest such average (in units of the scale) is how far a
    device's residuals wander for a window's span when nothing is broken -- more where
    they follow a slow lag the fit cannot see (a winding's temperature behind its load),
    less where they are noise. It is floored at twice what an average of ``block``
    independent residuals spreads, so a fit on few windows is not judged by a lucky calm
    stretch."""
    n, count = means.shape
    centre = means.mean(axis=0)
    spread = means.std(axis=0)
    varying = spread > _CONSTANT * np.maximum(1.0, np.abs(centre))
    varying[list(skip)] = False
    used = np.flatnonzero(varying)
    if used.size < 2:
        return None
    z = (means[:, used] - centre[used]) / spread[used]
    gram = z.T @ z
    size = max(block, -(-n // _MAX_FOLDS))
    starts = range(0, n, size)
    # Each held-out block's fit is on the rest (a block leaving fewer than two rows is
    # predicted by the full fit); all of them and the full fit in one stacked solve.
    parts = [z[lo : lo + size] for lo in starts]
    rest = [k for k, part in enumerate(parts) if n - len(part) >= 2]
    grams = np.stack([gram, *(gram - parts[k].T @ parts[k] for k in rest)])
    fits = _least_squares(grams, np.array([n, *(n - len(parts[k]) for k in rest)]))
    full, by_part = fits[0], dict(zip(rest, fits[1:], strict=True))
    held = np.empty_like(z)
    for k, (lo, part) in enumerate(zip(starts, parts, strict=True)):
        held[lo : lo + size] = part - part @ by_part.get(k, full).T
    weights = np.zeros((count, count))
    inverse = np.zeros(count)
    precision = np.zeros((count, count))
    standard = np.linalg.pinv(gram / n)  # in standardised units
    precision[np.ix_(used, used)] = standard / np.outer(spread[used], spread[used])
    judged = np.ones(count, dtype=bool) if moving is None else moving >= _MOVING
    quantiles = np.quantile(np.abs(held), quantile, axis=0).tolist()  # one call, not U
    for j, f in enumerate(used):
        weights[f, used] = full[j] * spread[f] / spread[used]
        if not judged[f]:
            continue
        scale = quantiles[j] * spread[f]
        scale = max(scale, float(noise[f]), _CONSTANT * max(1.0, abs(float(centre[f]))))
        inverse[f] = 1.0 / scale
    sustained = np.zeros(count)
    if n >= _SUSTAINED_SPANS * block:
        ratios = held * (spread[used] * inverse[used])
        sums = np.cumsum(np.vstack([np.zeros(used.size), ratios]), axis=0)
        averages = (sums[block:] - sums[:-block]) / block
        largest = np.abs(averages).max(axis=0)
        sigmas = NormalDist().inv_cdf((1.0 + quantile) / 2.0)
        floor = 2.0 / (sigmas * math.sqrt(block))
        # The largest wander is read off only where the windows hold many independent
        # ones: a residual that follows a lag longer than the learnt span wanders once.
        # Timed on the averages themselves: window-to-window noise hides a slow wander
        # from the raw residual's autocorrelation, not from its averages.
        seen = n >= _SUSTAINED_INDEPENDENT * _correlation_time(averages)
        sustained[used] = np.where(
            (inverse[used] > 0) & seen, 1.0 / np.maximum(largest, floor), 0.0
        )
    fitted = Relations(centre, weights, inverse, precision, np.zeros(count), sustained)
    reach = fitted.distances(means).max(axis=0) * (inverse > 0)
    return Relations(centre, weights, inverse, precision, reach, sustained)


def _nan_to_zero(values: FloatArray) -> FloatArray:
    """``np.nan_to_num(values, nan=0.0)`` (infinities to the largest finite floats) in three
    ufunc calls: the relation check asks for it twice per device and pass, and
    ``nan_to_num``'s argument handling was most of its cost (issue #23)."""
    out: FloatArray = np.where(np.isnan(values), 0.0, values)
    np.maximum(out, -_FLOAT_MAX, out=out)
    np.minimum(out, _FLOAT_MAX, out=out)
    return out


def _correlation_time(series: FloatArray) -> FloatArray:
    """(n, U) series, oldest first -> (U,) the lag, in rows, at which each column's
    autocorrelation first falls below 1/e; n where it never does (or the column is
    constant)."""
    n = len(series)
    centred = series - series.mean(axis=0)
    power = np.einsum("nu,nu->u", centred, centred)
    spectrum = np.fft.rfft(centred, n=2 * n, axis=0)
    lagged = np.fft.irfft(spectrum * np.conj(spectrum), n=2 * n, axis=0)[:n]
    below = lagged < np.exp(-1.0) * power
    first = np.where(below.any(axis=0), below.argmax(axis=0), n)
    out: FloatArray = np.where(power > 0, first, n).astype(np.float64)
    return out


def _carrying(
    fit: Relations, values: np.ndarray, feature: int, side: float, limit: float
) -> int | None:
    """The newest reading of a window (``values`` (T, F), raw) that carries its residual on
    ``feature``, as readings before the window's newest: of the fewest whose per-reading
    residuals (on the hit's ``side``, in the feature's scales) hold the window's mean beyond
    ``limit``. The window's residual is the mean of its readings' residuals (the fit is
    linear), so a break that ended stays in the windows that hold it for a window's length;
    its own readings are the evidence of its end (``sentinel.judge.evidence``). None where
    the feature's own residual is not beyond ``limit`` (a culprit named by the others'
    residuals) or is not finite: the window's newest reading, as before."""
    ratios = fit.ratios(values.astype(np.float64))[:, feature] * np.sign(side)
    if not np.isfinite(ratios).all() or not np.isfinite(limit) or ratios.mean() <= limit:
        return None
    _, last = carrying_readings(ratios, limit)
    return len(ratios) - 1 - last


def _least_squares(grams: FloatArray, n: npt.NDArray[np.int_]) -> FloatArray:
    """(K, U, U) weights predicting each of U standardised columns from the others (zero
    diagonal), for each of K (U, U) ``grams`` matrices over ``n[k]`` rows.

    The K * U ridge systems are solved in one stacked ``np.linalg.solve`` (the same LAPACK
    routine on the same matrices as one call each, so the same weights): a fit solves
    them for the full fit and every held-out block, and a call per system or per block
    was a large share of the worker (issue #23; docs/BENCHMARKS.md, "The worker in its
    steady state")."""
    count, used = grams.shape[0], grams.shape[1]
    others = _others(used)
    rows = np.arange(used)[:, None]
    ridge = (_RIDGE * n)[:, None, None, None] * np.eye(used - 1)
    systems = grams[:, others[:, :, None], others[:, None, :]] + ridge
    out = np.zeros((count, used, used))
    out[:, rows, others] = np.linalg.solve(systems, grams[:, others, rows][..., None])[..., 0]
    return out


@functools.cache
def _others(used: int) -> npt.NDArray[np.intp]:
    """(U, U - 1): row j lists the columns other than j, in order."""
    columns = np.arange(used)
    others: npt.NDArray[np.intp] = np.stack([np.delete(columns, j) for j in range(used)])
    others = others.reshape(used, used - 1)
    others.flags.writeable = False  # shared by every call
    return others


@dataclass(slots=True)
class _Broken:
    """How long a device's relations have been broken: since the first hit of an episode
    that has not gone one window's span without a hit, and how many of its windows hit."""

    since: float | None = None
    windows: int = 0
    hits: int = 0
    calm_windows: int = 0  # consecutive windows without a hit

    def calm(self, span: int) -> None:
        if self.since is None:
            return
        self.windows += 1
        self.calm_windows += 1
        if self.calm_windows >= span:  # a whole window judged normal: the episode ended
            self.since, self.windows, self.hits, self.calm_windows = None, 0, 0, 0

    def hit(self, at: float, relearn_after: float) -> bool:
        """Count a hit at ``at``; True when the episode has lasted ``relearn_after`` seconds
        (> 0) with most of its windows hits."""
        if self.since is None:
            self.since = at
        self.windows += 1
        self.hits += 1
        self.calm_windows = 0
        lasted = at - self.since
        return 0 < relearn_after <= lasted and 2 * self.hits >= self.windows


@dataclass(slots=True)
class _Device:
    # (history, F) learnt window means, oldest overwritten. It starts small and doubles up
    # to history (12 KB at the defaults, which every device used to pay with its first
    # window; issue #23, memory); until then rows sit in order from 0 and head == filled.
    ring: npt.NDArray[np.float32]
    noise: FloatArray  # (F,) running mean of within-window sd / sqrt(window)
    moving: FloatArray  # (F,) running share of windows whose readings of it moved
    filled: int = 0
    head: int = 0  # next row of the ring to write
    learnt: int = 0  # windows learnt since the last (re)start
    since_fit: int = 0
    fit: Relations | None = None
    episode: _Broken = field(default_factory=lambda: _Broken())
    skip: frozenset[int] = frozenset()  # features the fit left out (constant in training)
    # normal windows (mean, noise, moved) waiting for the windows after them (``learn``)
    pending: deque[tuple[FloatArray, FloatArray, FloatArray]] = field(default_factory=deque)
    # the newest window means judged, for the sustained average over one window's span
    recent: deque[FloatArray] = field(default_factory=deque)

    @classmethod
    def empty(cls, history: int, features: int) -> _Device:
        return cls(
            ring=np.zeros((min(_FIRST_ROWS, history), features), dtype=np.float32),
            noise=np.zeros(features),
            moving=np.ones(features),
        )


def _needed(windows: int, features: int, history: int) -> int:
    """Learnt windows a device needs: ``windows``, at least 8 per feature, at most
    ``history``."""
    return min(max(windows, _MIN_PER_FEATURE * features), history)


def _skipped(detector: Detector) -> frozenset[int]:
    return frozenset(detector.constant_values())


def _by_device(windows: Sequence[Window]) -> dict[tuple[str, str], list[int]]:
    """Each device's windows' indexes, in order."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, window in enumerate(windows):
        groups.setdefault((window.stream, window.device), []).append(i)
    return groups


class RelationCheck:
    """Per device, the relations between its features' window means; per window, the
    feature that left them (``check``); ``learn`` then takes the windows judged normal."""

    def __init__(self, config: RelationsConfig, hop: int) -> None:
        self.config = config
        self.hop = hop
        self._devices: dict[tuple[str, str], _Device] = {}
        # devices freed while idle, or restored and not seen since: their saved state
        self._parked: dict[tuple[str, str], dict[str, Any]] = {}
        self._events: list[AuditEvent] = []
        # (device, window end) of hits found before the device's warmup, not reported
        self._withheld: set[tuple[tuple[str, str], float]] = set()

    def reconfigure(self, config: RelationsConfig, hop: int) -> None:
        if config.history != self.config.history:
            # a ring of another length: the fits are kept, the window means re-learnt
            self.park(keep=())
        self.config, self.hop = config, hop

    def check(
        self,
        detector: Detector,
        windows: Sequence[Window],
        stacked: np.ndarray,
        relearn_after: float = 0.0,
    ) -> list[RelationHit | None]:
        """``stacked``: the raw (B, T, F) values of ``windows``, in order; ``detector`` their
        model, whose features constant in training are the constant check's. Each device's
        windows are judged with its fit as it stood before the batch (``learn`` comes after).

        ``relearn_after``: seconds a device's relations may stay broken -- most of its
        windows hits, never one window's span without -- before they are learnt afresh (the
        threshold's ``rebaseline_after``, so one setting bounds how long any new normal
        alerts); 0: never."""
        count, length, features = stacked.shape
        hits: list[RelationHit | None] = [None] * count
        if not self.config.enabled or count == 0 or features < 2:
            return hits
        means = stacked.mean(axis=1, dtype=np.float64)
        skip = _skipped(detector)
        span = -(-length // self.hop)  # windows that one window's readings span
        k, reach, sustained = self.config.k, self.config.reach, self.config.sustained
        sigmas = NormalDist().inv_cdf((1.0 + self.config.quantile) / 2.0)
        judged_after = _needed(self.config.warmup, features, self.config.history)
        for key, rows in _by_device(windows).items():
            state = self._fitted(key, features, skip)
            if state is None or state.fit is None:
                continue
            # Before warmup windows the hits are kept from the caller but still keep the
            # windows of a break out of what is learnt (``learn``), as judged ones do.
            withheld = state.learnt < judged_after
            fit = state.fit
            block = means[rows]
            signed = fit.ratios(block)
            z = np.abs(signed)
            # The sustained average: each window's signed ratios with those of the windows
            # before it, one window's span in all (the device's previous batches included).
            earlier = list(state.recent)[-(span - 1) :] if span > 1 else []
            state.recent.extend(block[-span:])
            while len(state.recent) > span:
                state.recent.popleft()
            both = np.vstack([fit.ratios(np.stack(earlier)), signed]) if earlier else signed
            sums = np.cumsum(np.vstack([np.zeros(features), both]), axis=0)
            ends = np.arange(len(earlier) + 1, len(both) + 1)
            begins = np.maximum(ends - span, 0)
            average = (sums[ends] - sums[begins]) / span
            average[ends - begins < span] = 0.0  # not a whole span seen yet
            # Both the span's average and the window itself beyond the sustained limit, on
            # one side: a break that has ended stops counting when its windows do.
            own = np.where(signed * average > 0, np.abs(signed), 0.0)
            limit = fit.sustained * (1.0 / sustained if sustained > 0 else 0.0)
            drawn = np.minimum(np.abs(average), own) * limit  # 1: at the sustained limit
            # Out of reach matters only where a ratio is over its limit: measured there only.
            over = np.flatnonzero((z.max(axis=1) > k) | (drawn.max(axis=1) > 1.0))
            if over.size and reach > 0:
                far = fit.distances(block[over]) > reach * fit.reach
                z[over] = np.where(far, 0.0, z[over])
                drawn[over] = np.where(far, 0.0, drawn[over])
            peaks = _nan_to_zero(z.max(axis=1))
            lasting = _nan_to_zero(drawn.max(axis=1))
            unknown = np.zeros(len(rows), dtype=bool)
            unknown[over] = True
            for j, i in enumerate(rows):
                ratio = float(peaks[j])
                broken = ratio > k
                if not broken and lasting[j] <= 1.0:
                    if not unknown[j]:
                        state.episode.calm(span)
                    continue  # over a limit only where out of reach: says nothing
                if broken:
                    culprit = fit.culprit(signed[j], z[j])
                else:
                    # A break too small for one window, lasting: named by the averages;
                    # as severe as a window at k.
                    culprit = fit.culprit(average[j], drawn[j])
                    ratio = float(abs(average[j, culprit]))
                # The scale is the quantile of normal residuals: a ratio is as unlikely as
                # a Gaussian residual that many times that quantile off.
                equivalent = ratio if broken else k * float(drawn[j, culprit])
                exceedance = math.erfc(equivalent * sigmas / math.sqrt(2.0))
                side = signed[j, culprit] if broken else average[j, culprit]
                bound = k if broken else 1.0 / max(float(limit[culprit]), 1e-300)
                age = _carrying(fit, stacked[i], culprit, side, bound)
                hit = RelationHit(culprit, ratio, exceedance, age)
                if withheld:
                    self._withheld.add((key, windows[i].end_ts))
                else:
                    hits[i] = hit
                if state.episode.hit(windows[i].end_ts, relearn_after):
                    self._relearn(key, state, windows[i].end_ts, relearn_after)
                    break  # the device's later windows wait for its new relations
        return hits

    def fits(self, detector: Detector, windows: Sequence[Window]) -> list[Relations | None]:
        """Each window's device's fit as it stands (None: not judged), for the spike check's
        per-reading relation residuals (``sentinel.judge.spikes``)."""
        fits: list[Relations | None] = [None] * len(windows)
        features = windows[0].values.shape[1] if windows else 0
        if not self.config.enabled or features < 2:
            return fits
        skip = _skipped(detector)
        for key, rows in _by_device(windows).items():
            state = self._fitted(key, features, skip)
            if state is not None:
                for i in rows:
                    fits[i] = state.fit
        return fits

    def _fitted(self, key: tuple[str, str], features: int, skip: frozenset[int]) -> _Device | None:
        """The device's state where it has a fit for these features, restored if parked."""
        state = self._devices.get(key)
        if state is None and key in self._parked:
            state = self._state(key, features)
        if state is None or state.fit is None or state.skip != skip:
            return None
        return state

    def learn(
        self,
        detector: Detector,
        windows: Sequence[Window],
        stacked: np.ndarray,
        learnt: Sequence[bool],
        hits: Sequence[RelationHit | None],
    ) -> None:
        """Remember the windows marked in ``learnt`` (their means), refitting when due
        (after the batch: a fit renewed at most one batch late); ``hits``: what ``check``
        found in the same windows.

        A window is remembered only once the windows its readings reach into have shown no
        broken relation: it waits until as many windows as one window's readings span have
        followed it, and a hit drops the ones still waiting. The windows just before a
        break hold its first readings without being over k yet; a few of them among the
        learnt ones lift the scale's high quantile towards the break's own level, and the
        break would judge itself normal. (Only this check's hits drop them: dropping the
        windows before any anomaly would learn the quietest windows only, and judge the
        rest by too small a scale.)"""
        count, length, features = stacked.shape
        if not self.config.enabled or count == 0 or features < 2:
            return
        cfg = self.config
        values = stacked.astype(np.float64)
        means = values.mean(axis=1)
        spread = values.std(axis=1)
        noise = spread / math.sqrt(length)
        moved = (spread > 0).astype(np.float64)
        usable = np.isfinite(means).all(axis=1) & np.isfinite(noise).all(axis=1)
        skip = _skipped(detector)
        needed = _needed(min(cfg.warmup, _FIRST_FIT), features, cfg.history)
        span = -(-length // self.hop)  # windows that one window's readings span
        for key, rows in _by_device(windows).items():
            state = self._state(key, features)
            ready: list[tuple[FloatArray, FloatArray, FloatArray]] = []
            for i in rows:
                withheld = bool(self._withheld) and (key, windows[i].end_ts) in self._withheld
                if hits[i] is not None or withheld:
                    state.pending.clear()
                elif learnt[i] and usable[i]:
                    state.pending.append((means[i], noise[i], moved[i]))
                    if len(state.pending) > span:
                        ready.append(state.pending.popleft())
            if ready:
                self._remember(state, ready)
            due = state.fit is None or state.since_fit >= cfg.refit or state.skip != skip
            if state.filled >= needed and due:
                ring = state.ring[: state.filled].astype(np.float64)
                if state.filled == cfg.history:  # oldest first
                    ring = np.roll(ring, -state.head, axis=0)
                state.fit = fit_relations(ring, state.noise, cfg.quantile, skip, span, state.moving)
                state.skip, state.since_fit = skip, 0
        self._withheld.clear()

    def _remember(
        self, state: _Device, ready: list[tuple[FloatArray, FloatArray, FloatArray]]
    ) -> None:
        history = self.config.history
        ready = ready[-history:]
        for _, noise, moved in ready:
            state.learnt += 1
            rate = 1.0 / min(state.learnt, history)
            state.noise += (noise - state.noise) * rate
            state.moving += (moved - state.moving) * rate
        if len(state.ring) < history and state.filled + len(ready) > len(state.ring):
            rows = min(history, max(2 * len(state.ring), state.filled + len(ready)))
            grown = np.zeros((rows, state.ring.shape[1]), dtype=np.float32)
            grown[: state.filled] = state.ring[: state.filled]
            state.ring = grown
        at = (state.head + np.arange(len(ready))) % history
        state.ring[at] = np.stack([mean for mean, _, _ in ready])
        state.head = (state.head + len(ready)) % history
        state.filled = min(state.filled + len(ready), history)
        state.since_fit += len(ready)

    def _state(self, key: tuple[str, str], features: int) -> _Device:
        state = self._devices.get(key)
        if state is not None and state.ring.shape[1] == features:
            return state
        state = _Device.empty(self.config.history, features)
        parked = self._parked.pop(key, None)
        if parked is not None:
            try:
                state.fit = Relations.from_data(parked["fit"], features)
                state.noise = np.asarray(parked["noise"], dtype=np.float64).reshape(features)
                state.moving = np.asarray(
                    parked.get("moving", [1.0] * features), dtype=np.float64
                ).reshape(features)
                state.learnt = int(parked["learnt"])
                state.skip = frozenset(int(f) for f in parked["skip"])
            except (KeyError, TypeError, ValueError) as err:  # another stream's features
                log.warning("relations_state_dropped", stream=key[0], device=key[1], error=str(err))
                state = _Device.empty(self.config.history, features)
        self._devices[key] = state
        return state

    def _relearn(
        self, key: tuple[str, str], state: _Device, at: float, relearn_after: float
    ) -> None:
        episode = state.episode
        detail: dict[str, object] = {
            "broken_since": episode.since,
            "windows": episode.windows,
            "hit_windows": episode.hits,
            "relearn_after": relearn_after,
        }
        del self._devices[key]
        self._events.append(AuditEvent(key[0], key[1], at, "relations_relearnt", detail))
        log.info("relations_relearnt", stream=key[0], device=key[1], at=at, **detail)

    def drain_events(self) -> list[AuditEvent]:
        """Audit events (relations learnt afresh) since the last call."""
        events, self._events = self._events, []
        return events

    def park(self, keep: Container[tuple[str, str]]) -> int:
        """Free the state of every device not in ``keep``; a fitted one keeps its fit and
        judges with it when it returns, re-learning its window means."""
        gone = [key for key in self._devices if key not in keep]
        for key in gone:
            data = _to_data(self._devices.pop(key))
            if data is not None:
                self._parked[key] = data
        return len(gone)

    def snapshot(self, stream: str) -> dict[str, Any]:
        """Each fitted device's relations, parked devices included (the learnt window means
        themselves are re-learnt: ``history`` x features floats per device)."""
        data = {device: saved for (s, device), saved in self._parked.items() if s == stream}
        for (s, device), state in self._devices.items():
            if s == stream and (saved := _to_data(state)) is not None:
                data[device] = saved
        return data

    def restore(self, stream: str, devices: Mapping[str, Any], n_features: int) -> int:
        """Take back ``snapshot``'s relations; raises ValueError/TypeError/KeyError on a
        malformed one (the caller reports it and starts afresh)."""
        restored = {}
        for device, data in devices.items():
            Relations.from_data(data["fit"], n_features)  # validated now, not on first use
            if len(data["noise"]) != n_features:
                raise ValueError(f"relations of {device!r} do not fit {n_features} features")
            restored[(stream, str(device))] = dict(data)
        for key in restored:
            self._devices.pop(key, None)
        self._parked.update(restored)
        return len(restored)

    def stats(self) -> dict[str, int]:
        judged = sum(1 for s in self._devices.values() if s.fit is not None)
        return {"devices": len(self._devices), "judged": judged, "parked": len(self._parked)}


def _to_data(state: _Device) -> dict[str, Any] | None:
    if state.fit is None:
        return None
    return {
        "fit": state.fit.to_data(),
        "noise": state.noise.tolist(),
        "moving": state.moving.tolist(),
        "learnt": state.learnt,
        "skip": sorted(state.skip),
    }
