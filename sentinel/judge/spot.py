"""Extreme-value streaming thresholds: SPOT and DSPOT.

Siffer, Fouque, Termier, Largouet, "Anomaly Detection in Streams with Extreme Value Theory",
KDD 2017 (https://doi.org/10.1145/3097983.3098144). The tail above an initial threshold ``t``
(the ``level`` quantile of a calibration batch) is modelled by a generalized Pareto
distribution (GPD), fitted by maximum likelihood with Grimshaw's one-dimensional reduction.
The alarm threshold is the quantile ``z_q`` that a normal value exceeds with probability ``q``::

    z_q = t + sigma / gamma * ((q * n / N_t) ** -gamma - 1)
    z_q = t - sigma * log(q * n / N_t)                          (gamma = 0)

with ``n`` observations seen and ``N_t`` of them above ``t``.

Choosing ``q``. Every normal observation exceeds ``z_q`` with probability ``q``, so the expected
number of false alarms is::

    false alarms ~= q * observations = q * T / dt     (per device; times the number of devices)

for a period ``T`` with one observation every ``dt`` seconds. With ``q = 1e-4`` and one window
every 4 s that is ``1e-4 * 86_400 / 4 ~= 2.2`` false alarms per device-day; ``q = 1e-5`` gives
about one per device-fortnight. This holds only as far as the GPD fits the tail and the
stream is stationary (use :class:`DSpot` for slow drift).

Anomalies (``x > z_q``) never update the state, so an attack cannot raise its own bar.

Cost. A normal observation is O(1). A peak (``t < x <= z_q``, about ``1 - level`` of the
stream) refits the GPD on the most recent ``max_peaks`` excesses, O(max_peaks) in NumPy with no
Python loop over peaks. The refit is incremental: Grimshaw's function is bracketed only around
the previous root (4 points, then ``brentq``); the full candidate grid (48 points) is searched
once every ``FULL_SEARCH_EVERY`` peaks, or whenever the local bracket holds no root; the
thresholds are the same as with a full search on every peak (docs/BENCHMARKS.md, "SPOT's
cost").

Calibration size matters: ``q`` is extrapolated ``(1 - level) / q`` times beyond the peaks
(200x for the defaults), so a few hundred peaks (``level = 0.98``: 10k+ calibration values)
are needed before the false-alarm rate is near ``q``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["FULL_SEARCH_EVERY", "MIN_PEAKS", "DSpot", "Spot", "SpotState", "fit_gpd"]

Label = Literal["anomaly", "peak", "normal"]
FloatArray = npt.NDArray[np.float64]

MIN_PEAKS = 10
"""Fewest excesses above the initial threshold that a GPD fit is attempted on."""

SCHEMA_VERSION = 1

# Candidate grid for Grimshaw's roots, in units where the mean excess is 1.
# Negative side: x = -u / max(y), u in (0, 1), dense near both ends (logit spacing).
_NEG_U = 1.0 / (1.0 + np.exp(-np.linspace(-9.0, 18.0, 24)))
_POS_LOW = 1e-3
# Local brackets around the previous root for incremental refits.
_POS_BRACKET = np.array([0.8, 0.95, 1.05, 1.25])
_LOGIT_BRACKET = np.array([-0.5, -0.1, 0.1, 0.5])
FULL_SEARCH_EVERY = 64
"""A streaming refit searches all of Grimshaw's interval once per this many peaks."""


def _grimshaw_w(x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Grimshaw's ``w(x) = u(x) v(x) - 1`` for each candidate x, and ``v(x) - 1`` (= gamma)."""
    z = 1.0 + np.multiply.outer(x, y)
    u = np.mean(1.0 / z, axis=-1)
    g = np.mean(np.log(z), axis=-1)
    return u * (1.0 + g) - 1.0, g


def _log_likelihood(y: FloatArray, gamma: float, sigma: float) -> float:
    if gamma == 0.0:
        return float(-y.size * math.log(sigma) - np.sum(y) / sigma)
    return float(
        -y.size * math.log(sigma) - (1.0 + 1.0 / gamma) * np.sum(np.log1p((gamma / sigma) * y))
    )


def _moments(y: FloatArray) -> tuple[float, float]:
    """Method-of-moments GPD estimate (Hosking and Wallis 1987); needs gamma < 1/2."""
    mean = float(np.mean(y))
    var = float(np.var(y))
    if not var > 0.0:
        return 0.0, mean
    ratio = mean * mean / var
    return 0.5 * (1.0 - ratio), 0.5 * mean * (ratio + 1.0)


def _best_root(
    y: FloatArray, grid: FloatArray, best: tuple[float, float], best_ll: float
) -> tuple[tuple[float, float], float]:
    """Refine every sign change of ``w`` on ``grid``; keep the most likely (gamma, sigma)."""
    w, _ = _grimshaw_w(grid, y)
    crossings = np.flatnonzero(np.isfinite(w[:-1]) & np.isfinite(w[1:]) & (w[:-1] * w[1:] < 0))
    if len(crossings):
        # Imported here, not with the module: scipy.optimize brings ~65 MB of RSS into every
        # daemon, and only threshold.method = "spot" fits a tail (issue #23, memory).
        from scipy.optimize import brentq  # no stubs installed
    for i in crossings:
        root = brentq(
            lambda x: float(_grimshaw_w(np.array([x]), y)[0][0]),
            float(grid[i]),
            float(grid[i + 1]),
            xtol=1e-12,
        )
        gamma = float(_grimshaw_w(np.array([root]), y)[1][0])
        sigma = gamma / root
        if not (math.isfinite(gamma) and math.isfinite(sigma) and sigma > 0.0):
            continue
        ll = _log_likelihood(y, gamma, sigma)
        if ll > best_ll:
            best, best_ll = (gamma, sigma), ll
    return best, best_ll


def _grimshaw(y: FloatArray, hint: float | None) -> tuple[float, float]:
    """Maximum-likelihood (gamma, sigma) for excesses ``y`` whose mean is 1.

    ``hint`` is a previous root (gamma / sigma in these units): only a small bracket around it
    is searched; if that holds no root, the full grid is.
    """
    y_max = float(np.max(y))
    best = (0.0, 1.0)  # gamma = 0: exponential, sigma = mean excess
    best_ll = _log_likelihood(y, *best)
    if hint is not None and hint != 0.0:
        if hint > 0.0:
            local = hint * _POS_BRACKET
        else:
            # Bracket in logit(u), u = -x * y_max in (0, 1), so it never crosses -1 / y_max.
            u = min(-hint * y_max, 1.0 - 1e-12)
            logit = math.log(u / (1.0 - u))
            local = -1.0 / (1.0 + np.exp(-(logit + _LOGIT_BRACKET))) / y_max
        found, _ = _best_root(y, local, best, best_ll)
        if found != best:
            return found
    y_min = float(np.min(y))
    # Non-trivial roots lie in (-1/y_max, 0) and (0, 2 (mean - min) / min^2) (Grimshaw 1993).
    upper = 2.0 * (1.0 - y_min) / (y_min * y_min) if y_min > 0.0 else 1e12
    best, best_ll = _best_root(y, -_NEG_U / y_max, best, best_ll)
    if upper > _POS_LOW:
        best, best_ll = _best_root(y, np.geomspace(_POS_LOW, min(upper, 1e12), 24), best, best_ll)
    return best


def fit_gpd(excesses: npt.ArrayLike, hint: float | None = None) -> tuple[float, float]:
    """Fit a GPD to positive excesses; returns ``(gamma, sigma)`` (shape, scale).

    Maximum likelihood by Grimshaw's trick (as in the SPOT paper); falls back to the method of
    moments when the likelihood search fails numerically. ``hint`` (a previous fit's
    ``gamma / sigma``) makes the search local: much faster, but it can miss a better root far
    away, so callers should search globally now and then.
    """
    y = np.asarray(excesses, dtype=np.float64)
    if y.ndim != 1 or y.size < 2:
        raise ValueError("need a 1-D array of at least 2 excesses")
    if not (np.all(np.isfinite(y)) and np.all(y > 0.0)):
        raise ValueError("excesses must be finite and positive")
    scale = float(np.mean(y))
    scaled = y / scale  # Grimshaw's x scales as 1/scale, gamma is scale-free
    try:
        with np.errstate(divide="raise", over="raise", invalid="raise"):
            gamma, sigma = _grimshaw(scaled, None if hint is None else hint * scale)
    except (FloatingPointError, ValueError, RuntimeError):
        gamma, sigma = _moments(scaled)
    return gamma, sigma * scale


def _finite_float(data: dict[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"SPOT state: {key!r} must be a finite number, got {value!r}")
    return float(value)


def _int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"SPOT state: {key!r} must be an integer, got {value!r}")
    return value


def _floats(data: dict[str, Any], key: str) -> list[float]:
    value = data.get(key)
    if not isinstance(value, list):
        raise ValueError(f"SPOT state: {key!r} must be a list of numbers")
    return [_finite_float({key: v}, key) for v in value]


@dataclass(frozen=True)
class SpotState:
    """Everything needed to resume a :class:`Spot` or :class:`DSpot` exactly.

    ``peaks`` are excesses over ``init_threshold``, oldest first. ``n`` counts non-anomalous
    observations (calibration included) and ``n_peaks`` all excesses ever seen, so the tail
    probability ``n_peaks / n`` stays right after old peaks are dropped. ``depth`` is None for
    plain SPOT; for DSPOT ``window`` holds the last ``depth`` normal observations.
    """

    q: float
    level: float
    max_peaks: int
    init_threshold: float
    peaks: list[float]
    n: int
    n_peaks: int
    gamma: float
    sigma: float
    depth: int | None = None
    window: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        try:
            _check_params(self.q, self.level, self.max_peaks)
        except ValueError as err:
            raise ValueError(f"SPOT state: {err}") from err
        if not math.isfinite(self.init_threshold):
            raise ValueError("SPOT state: init_threshold must be finite")
        if not MIN_PEAKS <= len(self.peaks) <= self.max_peaks:
            raise ValueError(f"SPOT state: need {MIN_PEAKS}..{self.max_peaks} peaks")
        if not all(math.isfinite(p) and p > 0.0 for p in self.peaks):
            raise ValueError("SPOT state: peaks must be finite and positive")
        if not len(self.peaks) <= self.n_peaks <= self.n:
            raise ValueError("SPOT state: need len(peaks) <= n_peaks <= n")
        if not (math.isfinite(self.gamma) and math.isfinite(self.sigma) and self.sigma > 0.0):
            raise ValueError("SPOT state: gamma must be finite and sigma finite and positive")
        if self.depth is None:
            if self.window:
                raise ValueError("SPOT state: a window needs a depth")
        elif self.depth < 1 or len(self.window) != self.depth:
            raise ValueError("SPOT state: the window must hold exactly depth >= 1 values")
        if not all(math.isfinite(v) for v in self.window):
            raise ValueError("SPOT state: window values must be finite")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (floats round-trip exactly through ``json``)."""
        return {
            "schema": SCHEMA_VERSION,
            "q": self.q,
            "level": self.level,
            "max_peaks": self.max_peaks,
            "init_threshold": self.init_threshold,
            "peaks": list(self.peaks),
            "n": self.n,
            "n_peaks": self.n_peaks,
            "gamma": self.gamma,
            "sigma": self.sigma,
            "depth": self.depth,
            "window": list(self.window),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpotState:
        """Rebuild from :meth:`to_dict` output; ``ValueError`` on anything missing or corrupt."""
        if not isinstance(data, dict):
            raise ValueError("SPOT state must be a dict")
        if data.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"SPOT state: unsupported schema {data.get('schema')!r}")
        depth = data.get("depth")
        return cls(
            q=_finite_float(data, "q"),
            level=_finite_float(data, "level"),
            max_peaks=_int(data, "max_peaks"),
            init_threshold=_finite_float(data, "init_threshold"),
            peaks=_floats(data, "peaks"),
            n=_int(data, "n"),
            n_peaks=_int(data, "n_peaks"),
            gamma=_finite_float(data, "gamma"),
            sigma=_finite_float(data, "sigma"),
            depth=None if depth is None else _int(data, "depth"),
            window=_floats(data, "window"),
        )


def _check_params(q: float, level: float, max_peaks: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if not 0.0 < q < 1.0 - level:
        # z_q is only above t while q < N_t / n ~= 1 - level.
        raise ValueError(f"q must be in (0, 1 - level) = (0, {1.0 - level:g}), got {q}")
    if max_peaks < MIN_PEAKS:
        raise ValueError(f"max_peaks must be at least {MIN_PEAKS}, got {max_peaks}")


class Spot:
    """Streaming Peaks-Over-Threshold (SPOT) upper threshold for one univariate stream."""

    def __init__(self, q: float = 1e-4, level: float = 0.98, max_peaks: int = 5000) -> None:
        _check_params(q, level, max_peaks)
        self.q = q
        self.level = level
        self.max_peaks = max_peaks
        self._t = math.nan
        # Oldest first, always starting at index 0, so a resumed instance sums in the same
        # order and refits bit-for-bit identically.
        self._peaks: FloatArray = np.empty(max_peaks, dtype=np.float64)
        self._count = 0
        self._n = 0
        self._n_peaks = 0
        self._gamma = 0.0
        self._sigma = 1.0
        self._fitted = False

    # -- calibration -------------------------------------------------------------------------

    def fit(self, init: npt.ArrayLike) -> None:
        """Calibrate on a batch of normal data; replaces any previous state."""
        self._calibrate(_as_series(init))

    def _calibrate(self, values: FloatArray) -> None:
        t = float(np.quantile(values, self.level))
        excesses = values[values > t] - t
        if excesses.size < MIN_PEAKS:
            raise ValueError(
                f"only {excesses.size} of {values.size} calibration values lie above the "
                f"{self.level:g} quantile {t:g}; SPOT needs at least {MIN_PEAKS} "
                "(use a longer calibration batch or a lower level)"
            )
        kept = excesses[-self.max_peaks :]
        self._t = t
        self._peaks[: kept.size] = kept
        self._count = kept.size
        self._n = values.size
        self._n_peaks = excesses.size
        self._refit()
        self._fitted = True

    def _refit(self) -> None:
        # Between global searches, search near the last root only: the tail moves little per
        # peak. Keyed on n_peaks so a resumed instance refits exactly as the original would.
        hint = None
        if self._fitted and self._n_peaks % FULL_SEARCH_EVERY and self._gamma != 0.0:
            hint = self._gamma / self._sigma
        self._gamma, self._sigma = fit_gpd(self._peaks[: self._count], hint)

    # -- streaming ---------------------------------------------------------------------------

    @property
    def threshold(self) -> float:
        """The current alarm threshold ``z_q``."""
        self._require_fitted()
        return self._quantile()

    @property
    def init_threshold(self) -> float:
        self._require_fitted()
        return self._t

    def _quantile(self) -> float:
        r = self.q * self._n / self._n_peaks
        if self._gamma == 0.0:
            return self._t - self._sigma * math.log(r)
        return self._t + self._sigma / self._gamma * math.expm1(-self._gamma * math.log(r))

    def tail_probability(self, x: float) -> float:
        """Estimated probability that a normal value is at least ``x``: the GPD tail above
        the initial threshold (exponential where the fit is short-tailed), the empirical
        ``N_t / n`` at or below it. For a long-tailed fit it equals ``q`` at ``threshold``."""
        self._require_fitted()
        return self._tail(float(x))

    @property
    def observations(self) -> int:
        """Non-anomalous observations it has learnt from, calibration included."""
        return self._n

    def _tail(self, value: float) -> float:
        ratio = self._n_peaks / self._n
        y = value - self._t
        if y <= 0.0:
            return min(1.0, ratio)
        # A short-tailed fit (gamma < 0) has a finite end point beyond which it calls every
        # value impossible; read it as exponential instead (a heavier tail), so severities
        # stay ordered and are never overstated. At the threshold this gives >= q.
        if self._gamma <= 0.0:
            return ratio * math.exp(-y / self._sigma)
        return ratio * math.exp(-math.log1p(self._gamma * y / self._sigma) / self._gamma)

    def step(self, x: float) -> Label:
        """Judge one value. Anomalies leave the state untouched; peaks refit the tail."""
        self._require_fitted()
        value = float(x)
        if not math.isfinite(value):
            raise ValueError(f"SPOT cannot judge a non-finite value: {x!r}")
        return self._judge(value)

    def _judge(self, value: float) -> Label:
        if value > self._quantile():
            return "anomaly"
        self._n += 1
        if value <= self._t:
            return "normal"
        if self._count == self.max_peaks:
            self._peaks[:-1] = self._peaks[1:]  # drop the oldest; O(max_peaks) like the refit
            self._count -= 1
        self._peaks[self._count] = value - self._t
        self._count += 1
        self._n_peaks += 1
        self._refit()
        return "peak"

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError(f"{type(self).__name__} must be fit() before use")

    # -- persistence -------------------------------------------------------------------------

    def state(self) -> SpotState:
        self._require_fitted()
        return SpotState(
            q=self.q,
            level=self.level,
            max_peaks=self.max_peaks,
            init_threshold=self._t,
            peaks=[float(p) for p in self._peaks[: self._count]],
            n=self._n,
            n_peaks=self._n_peaks,
            gamma=self._gamma,
            sigma=self._sigma,
        )

    @classmethod
    def from_state(cls, state: SpotState) -> Spot:
        if state.depth is not None:
            raise ValueError("this is a DSpot state; use DSpot.from_state")
        spot = cls(q=state.q, level=state.level, max_peaks=state.max_peaks)
        spot._restore(state)
        return spot

    def _restore(self, state: SpotState) -> None:
        self._t = state.init_threshold
        self._count = len(state.peaks)
        self._peaks[: self._count] = state.peaks
        self._n = state.n
        self._n_peaks = state.n_peaks
        self._gamma = state.gamma
        self._sigma = state.sigma
        self._fitted = True


class DSpot(Spot):
    """Drift-aware SPOT: judges ``x - mean(last depth normal observations)``.

    Anomalies do not enter the window, so a spike does not drag the local mean up.
    """

    def __init__(
        self, q: float = 1e-4, level: float = 0.98, depth: int = 100, max_peaks: int = 5000
    ) -> None:
        super().__init__(q=q, level=level, max_peaks=max_peaks)
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.depth = depth
        self._window: deque[float] = deque(maxlen=depth)

    def fit(self, init: npt.ArrayLike) -> None:
        values = _as_series(init)
        if values.size <= self.depth:
            raise ValueError(
                f"DSpot needs more than depth={self.depth} calibration values, got {values.size}"
            )
        means = np.lib.stride_tricks.sliding_window_view(values, self.depth)[:-1].mean(axis=1)
        self._calibrate(values[self.depth :] - means)
        self._window = deque((float(v) for v in values[-self.depth :]), maxlen=self.depth)

    @property
    def local_mean(self) -> float:
        # fsum is exactly rounded, so the mean does not depend on the window's history and a
        # resumed instance computes the same value.
        return math.fsum(self._window) / self.depth

    @property
    def threshold(self) -> float:
        """Alarm threshold on the raw scale: local mean plus ``z_q``."""
        self._require_fitted()
        return self.local_mean + self._quantile()

    def tail_probability(self, x: float) -> float:
        """As :meth:`Spot.tail_probability`, for ``x`` measured from the local mean."""
        self._require_fitted()
        return self._tail(float(x) - self.local_mean)

    def rebase(self, recent: list[float]) -> None:
        """Re-baseline after a lasting level change: the moving mean restarts from the
        ``recent`` values (anomalous ones included, newest last); the fitted tail, which
        describes the noise around the mean, is kept."""
        values = [float(v) for v in recent if math.isfinite(v)]
        if not values:
            raise ValueError("rebase needs at least one finite value")
        # Pad from the oldest so the window is always full (the mean divides by depth).
        padded = [values[0]] * max(0, self.depth - len(values)) + values[-self.depth :]
        self._window = deque(padded, maxlen=self.depth)

    def step(self, x: float) -> Label:
        self._require_fitted()
        value = float(x)
        if not math.isfinite(value):
            raise ValueError(f"DSpot cannot judge a non-finite value: {x!r}")
        label = self._judge(value - self.local_mean)
        if label != "anomaly":
            self._window.append(value)
        return label

    def state(self) -> SpotState:
        base = super().state()
        return SpotState(**{**base.__dict__, "depth": self.depth, "window": list(self._window)})

    @classmethod
    def from_state(cls, state: SpotState) -> DSpot:
        if state.depth is None:
            raise ValueError("this is a plain Spot state; use Spot.from_state")
        spot = cls(q=state.q, level=state.level, depth=state.depth, max_peaks=state.max_peaks)
        spot._restore(state)
        spot._window = deque(state.window, maxlen=state.depth)
        return spot


def _as_series(init: npt.ArrayLike) -> FloatArray:
    values = np.asarray(init, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"calibration data must be 1-D, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("calibration data must be finite")
    return values
