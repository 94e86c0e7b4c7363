"""Training the LSTM autoencoder on recorded normal data, with early stopping and calibration.

Also the windowing every detector's training shares: ``make_windows`` and the time-ordered
split into training and held-back windows (``_split_starts``).
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import structlog
import torch
from torch import nn

from sentinel.errors import DataError, ModelError
from sentinel.model.base import PULSE_READINGS, ProgressFn, TrainOptions, new_version
from sentinel.model.calibration import Calibration, held_level_floor, segment_changes
from sentinel.model.drifting import DRIFTING_FEATURE_HINT, drifting_features
from sentinel.model.levels import LevelStats
from sentinel.model.lstm_ae import LstmAutoencoder
from sentinel.model.lstm_detector import (
    LstmAeDetector,
    LstmAeMeta,
    reconstruction_errors,
    window_centre,
)
from sentinel.model.noise import NoiseStats
from sentinel.model.periods import PeriodStats
from sentinel.model.scaler import Scaler
from sentinel.model.stuck import RunStats
from sentinel.model.windowing import make_windows

__all__ = [
    "CONSTANT_FEATURE_HINT",
    "MIN_WINDOWS",
    "PATIENCE",
    "FitResult",
    "TrainingData",
    "commanding_features",
    "constant_features",
    "counter_features",
    "fit_autoencoder",
    "fit_module",
    "make_windows",
    "prepare_training",
    "pulse_features",
    "stepped_features",
    "train_detector",
    "training_record",
]

log = structlog.get_logger(__name__)

MIN_WINDOWS = 8  # fewer cannot give both a training set and a validation set
# An epoch draws at least this many training windows, repeating them where the data holds
# fewer: SKAB's 400 training readings made 5 batches an epoch, and 30 such epochs (150
# steps) stopped the forecaster while its held-back loss still fell, every file; early
# stopping's patience, in epochs, was 25 steps. With 16 batches an epoch a small training
# converges and stops on its own (17-19 epochs there). Larger trainings are unchanged.
MIN_EPOCH_WINDOWS = 1_024
# The held-back part of a training is at least this many windows' worth of readings (up to
# half of it): 80 at the default window of 32, what a 400-reading training holds back
# at validation_fraction 0.2 (SKAB's protocol). Below it the held-back windows overlap so
# much that their median error rests on a few dozen readings: an hourly white noise trained
# on 240 readings held back 48, its live scores ran at 2.4 times their median, and 816 of
# its 1,760 live rows were judged anomalous (docs/BENCHMARKS.md, "Short trainings").
MIN_HELD_BACK_WINDOWS = 2.5
PATIENCE = 5  # epochs without a better validation loss before training stops
_MIN_IMPROVEMENT = 1e-4  # relative; smaller gains are noise and do not reset patience
_GRAD_CLIP = 1.0  # LSTMs occasionally take exploding steps early on
# A feature whose standard deviation in the training data is below this share of its
# magnitude (of 1 near zero) is constant: float noise, not a signal the model can learn.
_CONSTANT_SPREAD = 1e-6
CONSTANT_FEATURE_HINT = (
    "the model leaves it out of its score and the constant check judges it instead: a "
    "departure from this value alerts once, and a new value it keeps is learnt "
    "([constants] in the config); train on data where it varies to have the model judge it"
)

IntArray = npt.NDArray[np.int64]


def constant_features(segments: Sequence[np.ndarray], features: Sequence[str]) -> dict[str, float]:
    """The features that do not vary in the training data, each with its value.

    Such a feature is reconstructed perfectly in training, so its calibrated error is
    about zero and any later change in it would score 10^3-10^8 times that (issues #19,
    #21). The model records them (``LstmAeMeta.constant_features``), sees them at this
    value and leaves them out of its score; ``sentinel.judge.constants`` judges them by any
    departure instead.
    """
    rows = np.concatenate([np.asarray(s, dtype=np.float64) for s in segments])
    if not len(rows):
        return {}
    mean, std = rows.mean(axis=0), rows.std(axis=0)
    flat = std <= _CONSTANT_SPREAD * np.maximum(1.0, np.abs(mean))
    return {name: float(mean[i]) for i, name in enumerate(features) if flat[i]}


def stepped_features(
    segments: Sequence[np.ndarray],
    features: Sequence[str],
    window: int,
    constants: Container[str] = (),
) -> tuple[str, ...]:
    """The features that hold their value for longer than a window between changes, on
    average, in the training data: set points, operators' commands, modes, slow counters.

    A one-step forecast of such a feature is exact except at its steps, which nothing in
    the readings before them announces (an operator moves a set point when they choose), so
    its normal error is about zero and its every step scores the step's square over that:
    the worst feature of the window by far. The threshold then learns the steps of training,
    so a larger step than most alerts, and the error of the features that respond to the
    steps -- where a fault would show -- sits far below it (issue #21, the synthetic
    ``setpoint_steps``: a normal 10-degree step alerted, a temperature 3 degrees off its
    set point for 150 readings did not). So the model still reads them, as inputs, but
    leaves them out of its score (``LstmMeta.stepped_features``); their levels, spikes and
    frozen runs are still judged by the other checks. Changes are counted within each
    segment (a gap between segments is no step). Constant features (``constants``) are left
    out of the score already.

    When every other feature is stepped too, some must stay in the score: the stepped
    channels that are not pulses do (``_pulses``). Spacecraft telemetry is often that: a
    channel that holds one level for tens or hundreds of readings, noise-free, beside
    command channels that are 0 but for a one-reading 1 when a command is sent; scored,
    the pulses, which nothing announces, set the score's normal tail, and the channel's
    faults sat under it (issue #21, ``simulators.synthetic.stepped_telemetry``). When all
    of them are pulses, or none is, all stay in the score: a stream of one stepped channel
    is judged by its steps or not at all.
    """
    names = [name for name in features if name not in constants]
    arrays = [np.asarray(segment, dtype=np.float64) for segment in segments if len(segment) >= 2]
    moved = segment_changes(arrays)
    if not moved:
        return ()
    changes = sum((diff != 0).sum(axis=0) for diff in moved)
    pairs = sum(len(diff) for diff in moved)
    counts = {name: int(changes[features.index(name)]) for name in names}
    stepped = tuple(name for name, count in counts.items() if count > 0 and count * window < pairs)
    if len(stepped) == len(names):
        pulses = tuple(
            name for name in stepped if _pulses([r[:, features.index(name)] for r in arrays])
        )
        return pulses if 0 < len(pulses) < len(stepped) else ()
    return stepped


_COMMAND_SHARE = 0.4  # of a stepped input's changes, that came with a scored channel's step
_STEP_DEVIATIONS = 4.0  # a scored channel's step: its change beyond this many robust sds
# median |change| x this = the standard deviation of normal changes (the judge's
# MAD_TO_SIGMA, sentinel.judge.relations; the model does not import the judge)
_MAD_TO_SIGMA = 1.4826


def commanding_features(
    segments: Sequence[np.ndarray],
    features: Sequence[str],
    stepped: Sequence[str],
    constants: Container[str] = (),
) -> tuple[str, ...]:
    """The stepped features whose changes came, in training, with a step of a scored
    channel at the same reading: commands whose channel moves at the command's reading.
    Nothing before such a step announces it, so the forecaster misses it however well it
    learnt the command; the pipeline lets such a step open no alert by itself
    (``sentinel.worker.pipeline``, ``Verdict.joint``). A scored channel steps where it
    changes by more than ``_STEP_DEVIATIONS`` robust deviations of its reading-to-reading
    changes (any change, for a channel that does not move between steps); a stepped
    feature commands when at least ``_COMMAND_SHARE`` of its changes came with one (a
    pulse's return is a change too, so a pulse train that moves its channel at every pulse
    is at a half). Learnt from training only: a command that moves nothing, or only later,
    is not one, and a fault that happens to come with it still alerts."""
    scored = [i for i, n in enumerate(features) if n not in stepped and n not in constants]
    inputs = [features.index(n) for n in stepped]
    diffs = [np.diff(np.asarray(x, dtype=np.float64), axis=0) for x in segments if len(x) > 1]
    if not scored or not inputs or not diffs:
        return ()
    change = np.concatenate(diffs)
    moves = np.abs(change[:, scored])
    limit = _STEP_DEVIATIONS * _MAD_TO_SIGMA * np.nanmedian(moves, axis=0)
    steps = (moves > limit).any(axis=1)
    out = []
    for i in inputs:
        changed = change[:, i] != 0
        count = int(changed.sum())
        if count and int((changed & steps).sum()) >= _COMMAND_SHARE * count:
            out.append(features[i])
    return tuple(out)


COUNTER_CHANGES = 4  # a stepped feature changed at least this often, always the same way


def counter_features(
    segments: Sequence[np.ndarray], features: Sequence[str], stepped: Sequence[str]
) -> tuple[str, ...]:
    """The stepped features that are counters: in training they changed at least
    ``COUNTER_CHANGES`` times within its segments, every time the same way -- a disk's used
    space, an energy meter, a job counter ticking up. Nobody sets them, and nothing follows
    them: the pipeline reads no channel's error as a response to their ticks
    (``Verdict.response``), which a set point or a command may explain. A server's disk
    usage ticking by 0.1 GB every hundred readings put a tick in a third of its windows,
    and a runaway process that began beside one was read as a response until its tick left
    the window (``simulators.synthetic.wide_server``, seed 1: found 19 readings after its
    onset, 7 without). A set point raised that often in a row and never lowered is taken
    for a counter."""
    diffs = [np.diff(np.asarray(x, dtype=np.float64), axis=0) for x in segments if len(x) > 1]
    if not diffs or not stepped:
        return ()
    change = np.concatenate(diffs)
    out = []
    for name in stepped:
        moved = change[:, features.index(name)]
        moved = moved[moved != 0]
        if len(moved) >= COUNTER_CHANGES and (bool((moved > 0).all()) or bool((moved < 0).all())):
            out.append(name)
    return tuple(out)


_PULSE_SHARE = 0.8  # of a channel's excursions, that are pulses: a pulse channel
_PULSE_VALUES = 16  # a pulse train reaching more values than this is no command channel


def _pulses(columns: Sequence[np.ndarray]) -> bool:
    """Whether a channel's readings (one column per segment) are a pulse train: it rests
    at one value and leaves it in excursions of at most ``PULSE_READINGS`` readings, at
    least ``_PULSE_SHARE`` of them -- a command sent as a pulse, a trigger, a counter's
    tick -- rather than moving between levels that it holds."""
    return _pulse_shape(columns) is not None


def _pulse_shape(columns: Sequence[np.ndarray]) -> tuple[float, ...] | None:
    """(rest, *pulse values) of a pulse train (``_pulses``), or None: the value it rests at
    and the finite values its short excursions went to, sorted."""
    values = np.concatenate(columns)
    levels, counts = np.unique(values[np.isfinite(values)], return_counts=True)
    if levels.size < 2:
        return None
    rest = levels[int(np.argmax(counts))]
    short = total = 0
    pulsed = []  # the readings of the short excursions
    for column in columns:
        away = column != rest
        edges = np.flatnonzero(np.diff(np.r_[False, away, False].astype(np.int8)))
        lengths = edges[1::2] - edges[::2]
        # the away readings are the excursions' readings in order: each its excursion's length
        pulsed.append(column[away][np.repeat(lengths, lengths) <= PULSE_READINGS])
        short += int((lengths <= PULSE_READINGS).sum())
        total += len(lengths)
    if total == 0 or short < _PULSE_SHARE * total:
        return None
    reached = np.unique(np.concatenate(pulsed))
    return (float(rest), *(float(v) for v in reached[np.isfinite(reached)]))


def pulse_features(
    segments: Sequence[np.ndarray],
    features: Sequence[str],
    constants: Container[str] = (),
) -> dict[str, tuple[float, ...]]:
    """The features that are pulse trains in the training data (``_pulses``), each with
    (rest, *pulse values): one-hot command channels, 0 but for a one-reading 1 when their
    command is sent, as spacecraft telemetry comes. A channel beside them that never
    pulsed in training (constant there: a command the training data happened not to
    hold) is judged by the constant check, which reads its first pulse from the rest its
    siblings share to a value they pulse to as one of theirs
    (``sentinel.judge.constants``; issue #21), not as a departure. Constant features are
    left out, and so is a train reaching more than ``_PULSE_VALUES`` values (a counter's
    ticks, not a command); segments are read one by one (a gap between them is no
    excursion)."""
    arrays = [np.asarray(s, dtype=np.float64) for s in segments if len(s)]
    if not arrays:
        return {}
    out = {}
    for i, name in enumerate(features):
        if name in constants:
            continue
        shape = _pulse_shape([a[:, i] for a in arrays])
        if shape is not None and 2 <= len(shape) <= _PULSE_VALUES + 1:
            out[name] = shape
    return out


def _window_starts(lengths: Sequence[int], window: int, stride: int) -> IntArray:
    """Row offsets, into the concatenated segments, of windows that stay inside one segment.

    Training gathers windows from these offsets batch by batch instead of materialising
    all (M, window, F) windows, which with stride 1 is ``window`` times the data size.
    """
    starts: list[IntArray] = []
    offset = 0
    for n in lengths:
        if n >= window:
            starts.append(offset + np.arange(0, n - window + 1, stride, dtype=np.int64))
        offset += n
    return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)


def _split_starts(
    lengths: Sequence[int], window: int, stride: int, fraction: float
) -> tuple[IntArray, IntArray]:
    """Training and validation window offsets: the last ``fraction`` of every segment is
    held back, and no training window shares a row with a validation window.

    A shuffled split of stride-1 windows would put near-copies of every validation window
    into training, and the calibration quantiles -- the threshold every device starts
    with -- would come out optimistic. A training too short for ``fraction`` to hold back
    ``MIN_HELD_BACK_WINDOWS`` windows' worth of rows holds back that share instead, at
    most half.
    """
    train: list[IntArray] = []
    val: list[IntArray] = []
    offset = 0
    total = sum(lengths)
    if total > 0:  # a short training holds back a larger share, at most half
        fraction = max(fraction, min(0.5, MIN_HELD_BACK_WINDOWS * window / total))
    for n in lengths:
        cut = n - round(n * fraction)
        if cut >= window and n - cut >= window:
            train.append(offset + np.arange(0, cut - window + 1, stride, dtype=np.int64))
            val.append(offset + np.arange(cut, n - window + 1, stride, dtype=np.int64))
        elif n >= window:
            train.append(offset + np.arange(0, n - window + 1, stride, dtype=np.int64))
        offset += n
    empty = np.zeros(0, dtype=np.int64)
    return (
        np.concatenate(train) if train else empty,
        np.concatenate(val) if val else empty,
    )


@dataclass(frozen=True)
class TrainingData:
    """What every LSTM detector's training starts from: the checked, scaled readings on the
    device, where training and held-back windows start, and what the model keeps about the
    data (scaler, level statistics, constant features).

    ``prepare_training`` builds it; ``gather`` turns window offsets into a (B, window, F)
    batch with relative features centred per window, as scoring sees them.
    """

    rows: np.ndarray
    lengths: tuple[int, ...]
    n_windows: int
    constants: dict[str, float]
    # Features that hold their value for longer than a window between changes: read by the
    # model, left out of its score (``stepped_features``)
    stepped: tuple[str, ...]
    # Of them, those whose changes came with a scored channel's step (``commanding_features``)
    commanding: tuple[str, ...]
    # Of them, those that only ever moved one way: counters (``counter_features``)
    counters: tuple[str, ...]
    # The pulse trains, each with (rest, *pulse values) (``pulse_features``)
    pulses: dict[str, tuple[float, ...]]
    scaler: Scaler
    # Least normal error per feature of the channels that hold their value (calibration's
    # ``held_level_floor``; 0 for the others)
    held_floor: npt.NDArray[np.float64]
    levels: LevelStats
    # Longest run of identical raw readings per feature (sentinel.model.stuck)
    stuck: RunStats
    # Roughest window per feature in the raw readings (sentinel.model.noise)
    noise: NoiseStats
    # Cycles longer than a window, with training's most unusual one (sentinel.model.periods)
    periods: PeriodStats
    data: torch.Tensor
    offsets: torch.Tensor
    rel_idx: tuple[int, ...]
    # The features judged relative: the config's and those found drifting (_with_drifting)
    relative: tuple[str, ...]
    train_starts: IntArray
    val_starts: IntArray
    # Seeded by model.seed; the fallback split drew from it, training shuffles with it.
    rng: np.random.Generator

    def fresh(self) -> TrainingData:
        """The same data with its own copy of the shuffled state (training windows' order,
        generator): ``fit_module`` shuffles both in place, so each of two networks fitted
        on one preparation (``sentinel.model.lstm_ensemble``) takes a fresh copy and trains
        exactly as it would alone."""
        return replace(self, train_starts=self.train_starts.copy(), rng=copy.deepcopy(self.rng))

    def unscored(self, features: Sequence[str]) -> list[int]:
        """Indices of the features the model's score leaves out: constant or stepped."""
        return [features.index(name) for name in (*self.constants, *self.stepped)]

    def gather(self, batch_starts: IntArray) -> torch.Tensor:
        index = torch.from_numpy(batch_starts).to(self.data.device).unsqueeze(1) + self.offsets
        batch = self.data[index]  # (B, window, F)
        if self.rel_idx:
            rel = list(self.rel_idx)
            # The lower median, as ``center_relative`` takes it for scoring.
            batch[:, :, rel] -= batch[:, :, rel].median(dim=1, keepdim=True).values
        return batch


def prepare_training(
    segments: Sequence[np.ndarray], options: TrainOptions, device: torch.device
) -> TrainingData:
    """Check the segments, fit the scaler, level and run statistics, find constant features and
    split the windows into training and held-back ones (see ``_split_starts``).

    Raises DataError when the data cannot give ``MIN_WINDOWS`` windows.
    """
    stream, features, window, config = (
        options.stream,
        options.features,
        options.window,
        options.model,
    )
    rows = _check_segments(segments, len(features))
    lengths = [len(s) for s in segments]
    starts = _window_starts(lengths, window, config.train_stride)
    if len(starts) < MIN_WINDOWS:
        raise DataError(
            f"too little data to train: {len(starts)} windows of {window} readings "
            f"(stride {config.train_stride}) from {sum(lengths)} readings in "
            f"{len(lengths)} segments; need at least {MIN_WINDOWS} windows"
        )

    relative = options.relative
    unknown = set(relative) - set(features)
    if unknown:
        raise DataError(f"relative features {sorted(unknown)} are not among the features")
    if config.score_steps > window:
        raise DataError(f"score_steps {config.score_steps} exceeds the window of {window}")
    constants = constant_features([rows], features)
    for name, value in constants.items():
        log.warning(
            "training_feature_constant",
            stream=stream,
            feature=name,
            value=value,
            hint=CONSTANT_FEATURE_HINT,
        )
    stepped = stepped_features(segments, features, window, constants)
    for name in stepped:
        log.info(
            "training_feature_stepped",
            stream=stream,
            feature=name,
            hint="it holds its value between steps nothing announces (a set point, a "
            "command): the model reads it but leaves it out of its score",
        )
    commanding = commanding_features(segments, features, stepped, constants)
    counters = counter_features(segments, features, stepped)
    pulses = pulse_features(segments, features, constants)
    relative = _with_drifting(segments, options, constants)
    rel_idx = [features.index(name) for name in relative]
    scaler = _fit_scaler(rows, segments, window, rel_idx)
    scaled = scaler.transform(rows)
    bounds = np.cumsum([0, *lengths])
    levels = LevelStats.fit([scaled[a:b] for a, b in itertools.pairwise(bounds)], window, rel_idx)
    # Raw readings, segment by segment: a repetition is of the sensor's own value, and a gap
    # between segments is not one. Constant features are the constant check's.
    stuck = RunStats.fit(
        [rows[a:b] for a, b in itertools.pairwise(bounds)],
        [features.index(name) for name in constants],
    )
    noise = NoiseStats.fit(
        [rows[a:b] for a, b in itertools.pairwise(bounds)],
        window,
        [features.index(name) for name in constants],
    )
    periods = PeriodStats.fit(
        [rows[a:b] for a, b in itertools.pairwise(bounds)],
        window,
        [features.index(name) for name in constants],
    )

    rng = np.random.default_rng(config.seed)
    train_starts, val_starts = _split_starts(
        lengths, window, config.train_stride, config.validation_fraction
    )
    if len(val_starts) == 0 or len(train_starts) == 0:
        # Segments too short to hold back a time-ordered tail: fall back to a shuffle.
        order = rng.permutation(len(starts))
        n_val = max(1, round(len(starts) * config.validation_fraction))
        val_starts = starts[order[:n_val]]
        train_starts = starts[order[n_val:]]
    return TrainingData(
        rows=rows,
        lengths=tuple(lengths),
        n_windows=len(starts),
        constants=constants,
        stepped=stepped,
        commanding=commanding,
        counters=counters,
        pulses=pulses,
        scaler=scaler,
        held_floor=held_level_floor(
            segments, scaler.scale, [features.index(name) for name in constants]
        ),
        levels=levels,
        stuck=stuck,
        noise=noise,
        periods=periods,
        data=torch.from_numpy(scaled).to(device),
        offsets=torch.arange(window, device=device),
        rel_idx=tuple(rel_idx),
        relative=tuple(relative),
        train_starts=train_starts,
        val_starts=val_starts,
        rng=rng,
    )


@dataclass(frozen=True)
class FitResult:
    epochs_run: int
    train_loss: float  # of the epoch whose weights were kept
    val_loss: float


def _epoch_order(starts: IntArray, count: int, rng: np.random.Generator) -> IntArray:
    """``count`` training windows for one epoch: ``starts`` shuffled in place, and where
    they are fewer, shuffled again and appended until there are enough (each window
    drawn as evenly as the count allows). With ``count == len(starts)`` the one shuffle
    of every epoch before there was a minimum, so larger trainings are unchanged."""
    rng.shuffle(starts)
    if count <= len(starts):
        return starts
    rounds = [starts.copy()]
    drawn = len(starts)
    while drawn < count:
        rng.shuffle(starts)
        rounds.append(starts.copy())
        drawn += len(starts)
    return np.concatenate(rounds)[:count]


def fit_module(
    module: nn.Module,
    loss: Callable[[torch.Tensor], torch.Tensor],
    validate: Callable[[], float],
    prepared: TrainingData,
    options: TrainOptions,
    *,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
) -> FitResult:
    """Adam with gradient clipping over shuffled training windows, early stopping on the
    held-back loss ``validate()``; ``module`` ends with the best epoch's weights.

    ``loss(batch)`` is the training loss of one (B, window, F) batch. Raises
    ModelError("training cancelled") once ``stop`` is set, and ModelError when the
    validation loss stops being finite.
    """
    stream, config = options.stream, options.model
    rng = prepared.rng  # the split's generator, seeded by model.seed
    train_starts = prepared.train_starts
    optimizer = torch.optim.Adam(module.parameters(), lr=config.learning_rate)
    log.info(
        "training_started",
        stream=stream,
        readings=len(prepared.rows),
        segments=len(prepared.lengths),
        train_windows=len(train_starts),
        val_windows=len(prepared.val_starts),
        device=str(prepared.data.device),
        epochs=config.epochs,
    )
    best_val = float("inf")
    best_train = float("inf")
    best_state = _snapshot(module)
    stale = 0
    epochs_run = 0
    per_epoch = max(len(train_starts), MIN_EPOCH_WINDOWS)
    for epoch in range(1, config.epochs + 1):
        module.train()
        seen = _epoch_order(train_starts, per_epoch, rng)
        total = 0.0
        for i in range(0, len(seen), config.batch_size):
            if stop is not None and stop.is_set():
                log.info("training_cancelled", stream=stream, epoch=epoch)
                raise ModelError("training cancelled")
            batch = prepared.gather(seen[i : i + config.batch_size])
            optimizer.zero_grad(set_to_none=True)
            batch_loss = loss(batch)
            torch.autograd.backward(batch_loss)
            nn.utils.clip_grad_norm_(module.parameters(), _GRAD_CLIP)
            optimizer.step()
            total += float(batch_loss.detach()) * len(batch)
        train_loss = total / len(seen)
        val_loss = validate()
        epochs_run = epoch
        log.debug("training_epoch", epoch=epoch, train_loss=train_loss, val_loss=val_loss)
        if progress is not None:
            progress(epoch, config.epochs, val_loss)
        if not np.isfinite(val_loss):
            raise ModelError(f"training diverged: validation loss {val_loss} at epoch {epoch}")
        if val_loss < best_val * (1 - _MIN_IMPROVEMENT):
            best_val, best_train, stale = val_loss, train_loss, 0
            best_state = _snapshot(module)
        else:
            stale += 1
            if stale >= PATIENCE:
                break
    module.load_state_dict(best_state)
    return FitResult(epochs_run=epochs_run, train_loss=best_train, val_loss=best_val)


def training_record(
    prepared: TrainingData,
    fit: FitResult,
    started: float,
    seed: int,
    first_ts: float | None,
    last_ts: float | None,
) -> dict[str, float | int | str]:
    """``DetectorMeta.training`` of an LSTM detector just fitted."""
    training: dict[str, float | int | str] = {
        "n_readings": len(prepared.rows),
        "n_windows": prepared.n_windows,
        "epochs_run": fit.epochs_run,
        "train_loss": fit.train_loss,
        "val_loss": fit.val_loss,
        "seconds": round(time.monotonic() - started, 3),
        "seed": seed,
    }
    if first_ts is not None:
        training["first_ts"] = first_ts
    if last_ts is not None:
        training["last_ts"] = last_ts
    return training


def train_detector(
    segments: Sequence[np.ndarray],
    options: TrainOptions,
    *,
    device: torch.device,
    first_ts: float | None = None,
    last_ts: float | None = None,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
) -> LstmAeDetector:
    """Train an autoencoder on contiguous runs of normal raw readings, one (N_i, F) each.

    Windows never straddle two segments. The last ``model.validation_fraction`` of each
    segment is held back for early stopping and calibration (see ``_split_starts``).
    Torch's global thread count is left alone (the caller owns it), and so is its global
    RNG state. Raises DataError when the data cannot give ``MIN_WINDOWS`` windows and
    ModelError("training cancelled") when ``stop`` is set.
    """
    started = time.monotonic()
    prepared = prepare_training(segments, options, device)
    return fit_autoencoder(
        prepared,
        options,
        device=device,
        started=started,
        first_ts=first_ts,
        last_ts=last_ts,
        progress=progress,
        stop=stop,
    )


def fit_autoencoder(
    prepared: TrainingData,
    options: TrainOptions,
    *,
    device: torch.device,
    started: float,
    first_ts: float | None = None,
    last_ts: float | None = None,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
) -> LstmAeDetector:
    """``train_detector`` after the data preparation: fit and calibrate an autoencoder on
    ``prepared`` (which it shuffles; pass ``prepared.fresh()`` to fit another network on
    the same data). ``started`` is the ``time.monotonic()`` the run's seconds count from."""
    stream, features, window, config = (
        options.stream,
        options.features,
        options.window,
        options.model,
    )
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        module = LstmAutoencoder(
            len(features), config.hidden_size, config.latent_size, config.num_layers
        ).to(device)
    loss_fn = nn.MSELoss()
    gather, val_starts = prepared.gather, prepared.val_starts
    fit = fit_module(
        module,
        lambda batch: loss_fn(module(batch), batch),
        lambda: float(_errors(module, gather, val_starts, config.score_batch_max)[0].mean()),
        prepared,
        options,
        progress=progress,
        stop=stop,
    )
    # Early stopping watches the whole reconstruction (what is trained); the calibration,
    # what the scores will be compared with, judges what scoring judges.
    _, feature_errors = _errors(
        module, gather, val_starts, config.score_batch_max, config.score_steps
    )
    calibration = Calibration.from_errors(
        feature_errors,
        prepared.unscored(features),
        balance=config.balance_tails,
        floor=prepared.held_floor,
    )

    now = datetime.now(UTC)
    training = training_record(prepared, fit, started, config.seed, first_ts, last_ts)
    meta = LstmAeMeta(
        version=new_version(now),
        stream=stream,
        features=features,
        window=window,
        hidden_size=config.hidden_size,
        latent_size=config.latent_size,
        num_layers=config.num_layers,
        scaler=prepared.scaler,
        calibration=calibration,
        created=now.isoformat(timespec="seconds"),
        training=training,
        relative_features=prepared.relative,
        relative_centre="median",
        score_steps=config.score_steps,
        levels=prepared.levels,
        stuck=prepared.stuck,
        noise=prepared.noise,
        periods=prepared.periods,
        interval=options.interval,
        constant_features=prepared.constants,
        stepped_features=prepared.stepped,
        commanding_features=prepared.commanding,
        counter_features=prepared.counters,
        pulse_features=prepared.pulses,
    )
    log.info(
        "training_finished",
        stream=stream,
        version=meta.version,
        epochs_run=fit.epochs_run,
        train_loss=fit.train_loss,
        val_loss=fit.val_loss,
        threshold_q999=calibration.quantiles["0.999"],
        seconds=training["seconds"],
    )
    return LstmAeDetector(meta, module, device, max_batch=config.score_batch_max)


def _with_drifting(
    segments: Sequence[np.ndarray], options: TrainOptions, constants: dict[str, float]
) -> tuple[str, ...]:
    """The configured relative features plus those whose level drifts through the training
    data (``sentinel.model.drifting``), in feature order; a feature declared absolute, or
    constant in training, is never added."""
    undecided = set(options.features) - set(options.relative) - set(options.absolute)
    drifting = drifting_features(
        segments,
        options.features,
        options.model.drift_ratio,
        options.window,
        options.model.slow_ratio,
    )
    added = {n: v for n, v in drifting.items() if n in undecided and n not in constants}
    for name, (drift, slowness) in added.items():
        log.info(
            "training_feature_drifting",
            stream=options.stream,
            feature=name,
            drift=round(drift, 2),
            slowness=round(slowness, 2),
            hint=DRIFTING_FEATURE_HINT,
        )
    chosen = set(options.relative) | set(added)
    return tuple(name for name in options.features if name in chosen)


def _fit_scaler(
    rows: np.ndarray, segments: Sequence[np.ndarray], window: int, rel_idx: list[int]
) -> Scaler:
    """Per-feature mean and spread of the rows; for relative features the spread of their
    window-centred values, which is what the model sees of them. A slow channel's spread
    over the whole training run is mostly its drift and would shrink its changes to
    nothing."""
    scaler = Scaler.fit(rows)
    if not rel_idx:
        return scaler
    scale = scaler.scale.astype(np.float64).copy()
    # Stride-1 windows of each segment on its own: none straddles two segments.
    windows = [make_windows(np.asarray(seg, dtype=np.float64), window, 1) for seg in segments]
    stacked = np.concatenate([w[:, :, rel_idx] for w in windows if len(w)])
    centred = stacked - window_centre(stacked)
    spread = centred.reshape(-1, len(rel_idx)).std(axis=0)
    scale[rel_idx] = np.where(spread > 1e-12, spread, scale[rel_idx])
    return Scaler(mean=scaler.mean, scale=scale.astype(np.float32))


def _check_segments(segments: Sequence[np.ndarray], n_features: int) -> np.ndarray:
    """All rows of all segments as one float32 (N, F) array, after checking them."""
    if n_features < 1:
        raise DataError("at least one feature is needed")
    parts = []
    for i, segment in enumerate(segments):
        arr = np.asarray(segment, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != n_features:
            raise DataError(f"segment {i} has shape {arr.shape}; expected (N, {n_features})")
        if not np.all(np.isfinite(arr)):
            raise DataError(f"segment {i} contains NaN or infinite values")
        parts.append(arr)
    if not parts:
        raise DataError("no training data: no segments")
    return np.concatenate(parts)


def _errors(
    module: LstmAutoencoder,
    gather: Callable[[IntArray], torch.Tensor],
    starts: IntArray,
    chunk: int,
    score_steps: int = 0,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    module.eval()
    scores, feature_errors = [], []
    with torch.inference_mode():
        for i in range(0, len(starts), chunk):
            s, f = reconstruction_errors(module, gather(starts[i : i + chunk]), score_steps)
            scores.append(s)
            feature_errors.append(f)
    return np.concatenate(scores), np.concatenate(feature_errors)


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
