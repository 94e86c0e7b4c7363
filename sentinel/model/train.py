"""Training the LSTM autoencoder on recorded normal data, with early stopping and calibration.

Also the windowing every detector's training shares: ``make_windows`` and the time-ordered
split into training and held-back windows (``_split_starts``).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import structlog
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

from sentinel.errors import DataError, ModelError
from sentinel.model.base import ProgressFn, TrainOptions, new_version
from sentinel.model.calibration import Calibration
from sentinel.model.drifting import DRIFTING_FEATURE_HINT, drifting_features
from sentinel.model.levels import LevelStats
from sentinel.model.lstm_ae import LstmAutoencoder
from sentinel.model.lstm_detector import LstmAeDetector, LstmAeMeta, reconstruction_errors
from sentinel.model.scaler import Scaler

__all__ = [
    "CONSTANT_FEATURE_HINT",
    "MIN_WINDOWS",
    "PATIENCE",
    "constant_features",
    "make_windows",
    "train_detector",
]

log = structlog.get_logger(__name__)

MIN_WINDOWS = 8  # fewer cannot give both a training set and a validation set
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


def make_windows(data: np.ndarray, window: int, stride: int) -> np.ndarray:
    """(N, F) -> (M, window, F): every ``stride``-th run of ``window`` consecutive rows.

    Returns a read-only strided view (no copy); fewer than ``window`` rows give M == 0.
    """
    if data.ndim != 2:
        raise DataError(f"expected an (N, F) array, got shape {data.shape}")
    if window < 1 or stride < 1:
        raise DataError("window and stride must be positive")
    if data.shape[0] < window:
        return np.empty((0, window, data.shape[1]), dtype=data.dtype)
    # sliding_window_view puts the window axis last: (N - window + 1, F, window).
    view = sliding_window_view(data, window, axis=0)[::stride]
    return view.transpose(0, 2, 1)


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
    with -- would come out optimistic.
    """
    train: list[IntArray] = []
    val: list[IntArray] = []
    offset = 0
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
    stream, features, window, config = (
        options.stream,
        options.features,
        options.window,
        options.model,
    )
    n_features = len(features)
    rows = _check_segments(segments, n_features)
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
    relative = _with_drifting(segments, options, constants)
    rel_idx = [features.index(name) for name in relative]
    scaler = _fit_scaler(rows, segments, window, rel_idx)
    scaled = scaler.transform(rows)
    bounds = np.cumsum([0, *lengths])
    levels = LevelStats.fit([scaled[a:b] for a, b in itertools.pairwise(bounds)], window, rel_idx)
    data = torch.from_numpy(scaled).to(device)
    offsets = torch.arange(window, device=device)

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

    def gather(batch_starts: IntArray) -> torch.Tensor:
        index = torch.from_numpy(batch_starts).to(device).unsqueeze(1) + offsets
        batch = data[index]  # (B, window, F)
        if rel_idx:
            batch[:, :, rel_idx] -= batch[:, :, rel_idx].mean(dim=1, keepdim=True)
        return batch

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        module = LstmAutoencoder(
            n_features, config.hidden_size, config.latent_size, config.num_layers
        ).to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=config.learning_rate)
    loss_fn = nn.MSELoss()

    log.info(
        "training_started",
        stream=stream,
        readings=len(rows),
        segments=len(lengths),
        train_windows=len(train_starts),
        val_windows=len(val_starts),
        device=str(device),
        epochs=config.epochs,
    )
    best_val = float("inf")
    best_train = float("inf")
    best_state = _snapshot(module)
    stale = 0
    epochs_run = 0
    for epoch in range(1, config.epochs + 1):
        module.train()
        rng.shuffle(train_starts)
        total = 0.0
        for i in range(0, len(train_starts), config.batch_size):
            if stop is not None and stop.is_set():
                log.info("training_cancelled", stream=stream, epoch=epoch)
                raise ModelError("training cancelled")
            batch = gather(train_starts[i : i + config.batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(module(batch), batch)
            loss.backward()
            nn.utils.clip_grad_norm_(module.parameters(), _GRAD_CLIP)
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        train_loss = total / len(train_starts)
        val_loss = float(_errors(module, gather, val_starts, config.score_batch_max)[0].mean())
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
    # Early stopping watches the whole reconstruction (what is trained); the calibration,
    # what the scores will be compared with, judges what scoring judges.
    _, feature_errors = _errors(
        module, gather, val_starts, config.score_batch_max, config.score_steps
    )
    calibration = Calibration.from_errors(
        feature_errors, [features.index(name) for name in constants]
    )

    now = datetime.now(UTC)
    training: dict[str, float | int | str] = {
        "n_readings": len(rows),
        "n_windows": len(starts),
        "epochs_run": epochs_run,
        "train_loss": best_train,
        "val_loss": best_val,
        "seconds": round(time.monotonic() - started, 3),
        "seed": config.seed,
    }
    if first_ts is not None:
        training["first_ts"] = first_ts
    if last_ts is not None:
        training["last_ts"] = last_ts
    meta = LstmAeMeta(
        version=new_version(now),
        stream=stream,
        features=features,
        window=window,
        hidden_size=config.hidden_size,
        latent_size=config.latent_size,
        num_layers=config.num_layers,
        scaler=scaler,
        calibration=calibration,
        created=now.isoformat(timespec="seconds"),
        training=training,
        relative_features=relative,
        score_steps=config.score_steps,
        levels=levels,
        interval=options.interval,
        constant_features=constants,
    )
    log.info(
        "training_finished",
        stream=stream,
        version=meta.version,
        epochs_run=epochs_run,
        train_loss=best_train,
        val_loss=best_val,
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
    centred = stacked - stacked.mean(axis=1, keepdims=True)
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
