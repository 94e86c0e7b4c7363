"""Periods: each feature's cycle longer than two of the model's windows, and how far its
days ever strayed from one another in training.

Why a check beside the model: the forecaster judges a window from its context (32 readings
by default: 2 h 40 min at 5 minutes). A daily schedule that does not run -- an air handler
that never starts one morning (``missed_start`` in the synthetic suite), a day whose rise
never comes -- leaves every reading at a level the channel holds each night, so no window
of context shows anything wrong, and it was missed on every seed (docs/BENCHMARKS.md, "A
schedule that did not run"). What shows it is the day as a whole against the days before
it: the newest subsequence one period long against its nearest neighbour among earlier
ones, a *left discord* (Lu, Keogh et al., "Matrix Profile XXIV: DAMP", KDD 2022).

At training, per feature (``PeriodStats.fit``):

* the period is the highest local maximum of the raw readings' autocorrelation (pooled
  over training's segments, never across two), at least 0.5 and 0.3 above its lowest
  point before it (a channel that only wanders has none), up to ``MAX_PERIOD`` readings,
  with ``MIN_PERIODS`` periods in one segment; only a period
  longer than ``WINDOWS`` of the model's windows is kept (the model sees half of a
  shorter cycle in every window);
* the readings are averaged in blocks of ``block`` readings, so that a period is about
  ``BLOCKS`` blocks whatever its length (piecewise aggregate approximation: a schedule's
  shape, not its noise, and a fixed cost a period);
* the *reference* is the largest distance (root mean square, raw units) of any training
  subsequence one period long to its nearest earlier one, ending at least a period before
  it and within ``HISTORY`` periods (the subsequence itself never matches), and at least
  ``TYPICAL`` times their median (a short training's largest is an underestimate); read
  from subsequences with ``WEEK`` periods before them where training holds ``WEEK`` + 2
  (a weekend against the weekend before it, not against weekdays only);
* the *library* is training's newest ``HISTORY`` periods of blocks, the neighbours a
  device's first day is judged against before it has days of its own.

``sentinel.judge.discord`` keeps each device's recent blocks and judges the newest period
against the library and the device's own earlier periods. A feature constant in training,
one without such a period, and every feature of a model saved before this existed, are
not judged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from sentinel.errors import ModelError

__all__ = ["FeaturePeriod", "PeriodStats", "blocks", "find_period", "nearest"]

FloatArray = npt.NDArray[np.float64]

MAX_PERIOD = 4096  # longest period sought, in readings (a day at 1 minute is 1,440)
MIN_PERIODS = 3  # training must hold this many periods: a query and a period of neighbours
# A period is judged when longer than this many of the model's windows: the model sees half
# of a shorter one in every window (and an hourly cron's pulse every 60 readings, judged
# reading by reading, raised alerts on the synthetic server metrics that nothing found).
WINDOWS = 2
BLOCKS = 64  # blocks a period is averaged into (at least a reading each)
HISTORY = 16  # periods of neighbours searched, and kept in the library
PHASE_PERIODS = 4  # earlier periods a block is read against at its own hour (the check's)
_MIN_LAG = 8  # shortest lag the autocorrelation is read at
_PEAK, _RISE, _BETTER = 0.5, 0.3, 0.05  # a period's autocorrelation: level, rise, a better one's
# The reference is at least this multiple of training's median distance: a short training
# shows few periods, and the largest of them is then an underestimate of how far a normal
# one strays (server metrics trained on 5 hourly periods strayed to 2.2-2.9 x the median in
# the rest of their data, where their training's largest was 1.2 x).
TYPICAL = 2.0
# Where training holds this many periods and two more, the reference is read from queries
# with this many periods before them: a schedule idle at weekends trained on two weeks had
# its first weekend read against weekdays only, which set the reference at a whole day's
# difference (12 kW of an 18 kW fan) and left a weekday that never started unseen.
WEEK = 7
# A reference of 0 (a feature that repeats exactly) would make every reading of noise a
# discord: it is at least this share of max(1, |the feature's median|).
_FLOOR = 1e-3
# Queries over training are taken every this share of a period (a discord lasts longer
# than a sixteenth of a period), and at most ``_QUERIES`` of them, spread evenly: a week
# read every second with a 100-second cycle holds 100,000, and fitting two such features
# took 6 s on the dev box (training on a Raspberry Pi must not wait on this).
_QUERY_STRIDE = 1 / 16
_QUERIES = 1000


def autocorrelation(segments: Sequence[FloatArray]) -> FloatArray:
    """The sample autocorrelation at every lag up to the longest segment's length, pooled
    over ``segments`` (each in time order, NaN as the mean): products of readings are
    taken within a segment only, about the mean of them all (by FFT)."""
    arrays = [np.asarray(s, dtype=np.float64) for s in segments if len(s)]
    if not arrays:
        return np.zeros(0)
    finite = np.concatenate(arrays)
    mean = float(np.nanmean(finite)) if np.isfinite(finite).any() else 0.0
    a = np.zeros(max(len(s) for s in arrays))
    for values in arrays:
        x = np.nan_to_num(values - mean)
        spectrum = np.fft.rfft(x, 2 * len(x))
        a[: len(x)] += np.fft.irfft(spectrum * np.conj(spectrum))[: len(x)]
    out: FloatArray = a / a[0] if a[0] > 0 else np.zeros(len(a))
    return out


def find_period(segments: Sequence[FloatArray], longest: int = MAX_PERIOD) -> int | None:
    """The lag, in readings, of the highest autocorrelation peak of ``segments`` (each in
    time order, gaps between them) that is at least 0.5 and 0.3 above its lowest point
    before it, of at most ``longest`` and a third of the longest segment: a period some
    segment holds ``MIN_PERIODS`` times; None where there is none. Never across two
    segments: twelve devices' segments of one length each, laid end to end, made their
    length a period."""
    arrays = [np.asarray(s, dtype=np.float64) for s in segments]
    arrays = [s for s in arrays if len(s) >= MIN_PERIODS * _MIN_LAG]
    if not arrays or all(np.nanstd(s) == 0 for s in arrays if np.isfinite(s).any()):
        return None
    a = autocorrelation(arrays)
    best = None
    lowest = np.minimum.accumulate(a)
    reach = max(len(s) for s in arrays) // MIN_PERIODS - 1
    for lag in range(_MIN_LAG, min(longest, reach) + 1):
        peak = a[lag] >= a[lag - 1] and a[lag] >= a[lag + 1]
        strong = a[lag] >= _PEAK and a[lag] - lowest[lag - 1] >= _RISE
        if peak and strong and (best is None or a[lag] > a[best] + _BETTER):
            best = lag
    return best


def blocks(values: FloatArray, block: int) -> FloatArray:
    """``values`` (N,) averaged in consecutive blocks of ``block`` readings (the remainder
    dropped); a block with fewer than half of its readings finite is NaN."""
    values = np.asarray(values, dtype=np.float64)
    count = len(values) // block
    shaped = values[: count * block].reshape(count, block)
    finite = np.isfinite(shaped)
    total = np.where(finite, shaped, 0.0).sum(axis=1)
    n = finite.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(2 * n >= block, total / np.maximum(n, 1), np.nan)


def nearest(history: FloatArray, query: FloatArray) -> tuple[float, int]:
    """The root mean square distance from ``query`` (L,) to its nearest subsequence of
    ``history`` (blocks, NaN at gaps), over the query's finite blocks, and where that
    neighbour starts; (inf, -1) where no subsequence without a NaN is as long as it."""
    length = len(query)
    if len(history) < length:
        return math.inf, -1
    finite = np.isfinite(query)
    if not finite.any():
        return math.inf, -1
    if finite.all():
        squared = _squared_distances(history, query)
    else:
        candidates = sliding_window_view(history, length)[:, finite]
        squared = ((candidates - query[finite]) ** 2).mean(axis=1)
        squared = np.where(np.isnan(squared), np.inf, squared)
    best = int(squared.argmin())
    if not math.isfinite(float(squared[best])):
        return math.inf, -1
    return math.sqrt(float(squared[best])), best


def _squared_distances(history: FloatArray, query: FloatArray) -> FloatArray:
    """The mean squared distance of ``query`` (L,), all finite, to every subsequence of
    ``history``, inf for those holding a NaN: |c|^2 - 2 c.q + |q|^2 from running sums and
    one correlation, O(len(history) x L) in C rather than an (N, L) array of differences
    (the check runs it once a window per periodic feature)."""
    length = len(query)
    gaps = ~np.isfinite(history)
    values = np.where(gaps, 0.0, history)
    centre = float(query.mean())  # distances do not move with a shift; cancellation does
    values, query = values - centre, query - centre
    values[gaps] = 0.0
    sums = np.concatenate([[0.0], np.cumsum(values * values)])
    holes = np.concatenate([[0], np.cumsum(gaps)])
    squares = sums[length:] - sums[:-length]
    cross = np.correlate(values, query, mode="valid")
    out = np.maximum(squares - 2.0 * cross + float(query @ query), 0.0) / length
    return np.where(holes[length:] - holes[:-length] > 0, np.inf, out)


@dataclass(frozen=True)
class FeaturePeriod:
    """One judged feature's period (``module docstring``)."""

    feature: int  # index into the model's features
    period: int  # readings
    block: int  # readings a block averages
    length: int  # blocks a subsequence (a period) holds
    reference: float  # training's largest distance to a nearest earlier period, raw units
    library: tuple[float, ...]  # training's newest blocks, NaN between segments
    # How many blocks a period's hours drift against the same hours of the last
    # ``PHASE_PERIODS`` periods in training (``_drift``): at least 1
    slack: int = 1

    def __post_init__(self) -> None:
        if (
            self.feature < 0
            or self.block < 1
            or self.length < 2
            or self.period < self.length
            or not 1 <= self.slack <= self.length
        ):
            raise ModelError("periods: feature, block, length, period or slack out of range")
        if not (math.isfinite(self.reference) and self.reference > 0):
            raise ModelError("periods.reference must be a positive number")
        # Every gap is the one ``math.nan`` object: containers compare their items by
        # identity first, so two equal libraries compare equal (NaN != NaN).
        library = tuple(v if math.isfinite(v) else math.nan for v in self.library)
        object.__setattr__(self, "library", library)


@dataclass(frozen=True)
class PeriodStats:
    """The judged features' periods; empty where no feature has one."""

    features: tuple[FeaturePeriod, ...] = ()

    @classmethod
    def fit(
        cls, segments: Sequence[np.ndarray], window: int, skip: Sequence[int] = ()
    ) -> PeriodStats:
        """From raw (N_i, F) segments (in time order, each without gaps), the features
        with a period longer than ``WINDOWS`` x ``window`` readings."""
        arrays = [np.asarray(s, dtype=np.float64) for s in segments if len(s)]
        if not arrays:
            return cls()
        found: list[FeaturePeriod] = []
        for f in range(arrays[0].shape[1]):
            if f in skip:
                continue
            fitted = _fit_feature(f, [a[:, f] for a in arrays], window)
            if fitted is not None:
                found.append(fitted)
        return cls(tuple(found))

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": [
                {
                    "feature": p.feature,
                    "period": p.period,
                    "block": p.block,
                    "length": p.length,
                    "reference": p.reference,
                    "slack": p.slack,
                    # JSON has no NaN: a gap between segments is null
                    "library": [v if math.isfinite(v) else None for v in p.library],
                }
                for p in self.features
            ]
        }

    @classmethod
    def from_dict(cls, data: Any) -> PeriodStats:
        if not isinstance(data, dict) or not isinstance(data.get("features"), list):
            raise ModelError("periods must be a JSON object with a list of features")
        found = []
        for item in data["features"]:
            if not isinstance(item, dict):
                raise ModelError("periods.features must hold objects")
            try:
                library = tuple(math.nan if v is None else float(v) for v in item["library"])
                found.append(
                    FeaturePeriod(
                        feature=int(item["feature"]),
                        period=int(item["period"]),
                        block=int(item["block"]),
                        length=int(item["length"]),
                        reference=float(item["reference"]),
                        library=library,
                        slack=int(item.get("slack", 1)),
                    )
                )
            except (KeyError, TypeError, ValueError) as err:
                raise ModelError(f"periods.features: {err}") from err
        return cls(tuple(found))


def _fit_feature(feature: int, segments: list[FloatArray], window: int) -> FeaturePeriod | None:
    joined = np.concatenate(segments)
    period = find_period(segments)
    if period is None or period <= WINDOWS * window:
        return None
    block = max(1, math.ceil(period / BLOCKS))
    length = max(2, round(period / block))
    parts: list[FloatArray] = []
    for values in segments:
        if len(values) >= block:
            parts.extend((blocks(values, block), np.array([np.nan])))
    sequence = np.concatenate(parts[:-1]) if parts else np.zeros(0)
    if np.isfinite(sequence).sum() < MIN_PERIODS * length:
        return None
    distances = []
    stride = _stride(len(sequence), length)
    reach = HISTORY * length
    # a query needs two periods before it; a week of them where training holds a week and
    # two more periods, so that a weekend is read against the weekend before it
    first = (WEEK + 1) * length if len(sequence) >= (WEEK + 2) * length else 3 * length
    for end in range(first, len(sequence) + 1, stride):
        query = sequence[end - length : end]
        if not np.isfinite(query).all():
            continue
        distance, _ = nearest(sequence[max(0, end - length - reach) : end - length], query)
        if math.isfinite(distance):
            distances.append(distance)
    if not distances:
        return None
    level = float(np.nanmedian(joined))
    reference = max(
        max(distances),
        TYPICAL * float(np.median(distances)),
        _FLOOR * max(1.0, abs(level)),
    )
    library = sequence[-(HISTORY + 1) * length :]
    return FeaturePeriod(
        feature=feature,
        period=period,
        block=block,
        length=length,
        reference=reference,
        library=tuple(float(v) for v in library),
        slack=_drift(sequence, period, block, length, reference),
    )


def _stride(blocks: int, length: int) -> int:
    """Blocks between training's queries of ``length`` blocks in ``blocks``: a sixteenth of
    a period, or more where that would make over ``_QUERIES`` of them."""
    return max(1, round(length * _QUERY_STRIDE), math.ceil((blocks - 3 * length) / _QUERIES))


def _drift(sequence: FloatArray, period: int, block: int, length: int, reference: float) -> int:
    """How far, in blocks, training's periods drift against the same hours of the last
    ``PHASE_PERIODS`` periods: for each query (as for the reference) and each of them,
    the shift within an eighth of a period that brings the earlier one nearest, where
    that makes them alike (within ``reference``), and the 90th percentile of those
    shifts' sizes, at least 1. Read every few seconds a schedule's hours fall within a
    block of the day before's; read at irregular times (a reading every 1 to 10 minutes)
    a period of readings is a day give or take hours, and the same hours lie several
    blocks apart. A weekday and a Sunday are alike at no shift: their best one says
    nothing of the drift (counted, it set the drift of a schedule idle at weekends at an
    eighth of a day, and that envelope hid an evening the fan ran four hours late)."""
    reach = max(1, round(length / 8))
    shifts: list[int] = []
    stride = _stride(len(sequence), length)
    for end in range(3 * length, len(sequence) + 1, stride):
        query = sequence[end - length : end]
        if not np.isfinite(query).all():
            continue
        for m in range(1, PHASE_PERIODS + 1):
            centre = end - round(m * period / block)
            first, last = centre - reach - length, centre + reach
            if first < 0 or last > end:
                continue
            squared = _squared_distances(sequence[first:last], query)
            best = int(squared.argmin())
            if squared[best] <= reference * reference:
                shifts.append(abs(best - reach))
    if not shifts:
        return 1
    return max(1, math.ceil(float(np.percentile(shifts, 90))))
