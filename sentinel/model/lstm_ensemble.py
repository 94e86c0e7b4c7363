"""The LSTM ensemble (``lstm_ensemble``): the autoencoder and the forecaster trained on the
same data, a window judged by both.

The two see different faults (docs/BENCHMARKS.md, "LSTM forecaster beside the LSTM-AE"): the
autoencoder's reconstruction error stays up through a lasting offset or a broken relation
between channels, but also moves when a slow channel wanders outside its training range;
the forecaster predicts each reading from the one before, so it is quiet on slow wander and
sees a lasting offset only where it starts and ends. Here each member's per-feature error is
first divided by that member's own normal error (its calibration, floored as its own score
is: ``score_floor``), which puts the two on one scale -- multiples of normal -- although one
is a reconstruction MSE over the whole window and the other a one-step MSE over its newest
half. The two ratios of a feature are then combined (``model.ensemble_combine``: by default
the smaller, so a feature alarms when both members see it), and the combined ratios are
calibrated once more on the held-back windows like any detector's errors, so the window's
score is again the worst feature's multiple of its normal (``window_scores``) and
thresholds, alerts and promotion judge it as any other.

On disk a model is one version: its meta.json, plus each member's own model directory
(``lstm_ae/``, ``lstm_forecast/``: meta.json and weights, under the ensemble's version),
loaded by the members' own code. Training costs both members' training (the data is
prepared once); export is refused (one graph per member is what the exporters build).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import structlog
import torch

from sentinel.atomic import fsync_dir
from sentinel.errors import ModelError
from sentinel.model.base import (
    META_FILE,
    Detector,
    DetectorMeta,
    ExportFormat,
    ProgressFn,
    TrainOptions,
    fsync_file,
    load_meta,
    new_version,
)
from sentinel.model.calibration import Calibration, Float64Array, score_floor, window_scores
from sentinel.model.fields import string
from sentinel.model.lstm_detector import LstmAeDetector, LstmDetector
from sentinel.model.lstm_forecast import LstmForecastDetector
from sentinel.model.noise import NoiseStats
from sentinel.model.periods import PeriodStats
from sentinel.model.stuck import RunStats
from sentinel.model.train import TrainingData, fit_autoencoder, prepare_training

__all__ = ["COMBINES", "Combine", "LstmEnsembleDetector", "LstmEnsembleMeta", "combine_ratios"]

log = structlog.get_logger(__name__)

Combine = Literal["max", "mean", "geomean", "min"]
COMBINES: tuple[str, ...] = get_args(Combine)
# Each member's model directory inside the ensemble's, named by its detector key.
AE_DIR = LstmAeDetector.type_key
FORECAST_DIR = LstmForecastDetector.type_key


def combine_ratios(autoencoder: Float64Array, forecaster: Float64Array, how: str) -> Float64Array:
    """(B, F) combined per-feature ratios of the two members' (B, F) ratios to their normal
    error: the larger of the two (either member's alarm is the ensemble's), their mean or
    geometric mean (one member's alarm is damped unless the other agrees), or the smaller
    (both must see it). NaN in either stays NaN.

    docs/BENCHMARKS.md ("LSTM ensemble") measured all four: the autoencoder's false alarms
    on slow wander are several times its normal error for long stretches, so only ``min``
    keeps them out; it is the default."""
    if how == "max":
        combined: Float64Array = np.maximum(autoencoder, forecaster)
    elif how == "mean":
        combined = (autoencoder + forecaster) / 2.0
    elif how == "geomean":
        combined = np.sqrt(autoencoder * forecaster)
    elif how == "min":
        combined = np.minimum(autoencoder, forecaster)
    else:
        raise ModelError(f"unknown ensemble combination {how!r}: use {' or '.join(COMBINES)}")
    return combined


@dataclass(frozen=True, kw_only=True)
class LstmEnsembleMeta(DetectorMeta):
    """The common keys -- the calibration being that of the combined ratios -- and how the
    members' ratios are combined. Each member's own meta (scaler, sizes, its calibration)
    lives in its directory."""

    detector: str = "lstm_ensemble"
    combine: str = "min"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.combine not in COMBINES:
            raise ModelError(f"combine must be one of {list(COMBINES)}, got {self.combine!r}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "combine": self.combine}

    @classmethod
    def from_json(cls, text: str) -> LstmEnsembleMeta:
        """Parse and check meta.json; any problem is a ModelError saying which key."""
        obj, common = DetectorMeta.parse(text, "lstm_ensemble")
        return cls(**common, combine=string(obj.get("combine"), "combine"))


class LstmEnsembleDetector(Detector):
    """Scores raw windows by both LSTM members' errors, each over its own normal error,
    combined per feature; per-feature errors are those combined ratios (unitless)."""

    type_key: ClassVar[str] = "lstm_ensemble"

    def __init__(
        self,
        meta: LstmEnsembleMeta,
        autoencoder: LstmAeDetector,
        forecaster: LstmForecastDetector,
    ) -> None:
        for member in (autoencoder, forecaster):
            m = member.meta
            if (m.version, m.stream, m.features, m.window) != (
                meta.version,
                meta.stream,
                meta.features,
                meta.window,
            ):
                raise ModelError(
                    f"member {m.detector} {m.version!r} of stream {m.stream!r} "
                    f"({m.features}, window {m.window}) does not belong to ensemble "
                    f"{meta.version!r} of {meta.stream!r} ({meta.features}, window {meta.window})"
                )
        if autoencoder.meta.constant_features != forecaster.meta.constant_features:
            raise ModelError("the members were trained on different data: constant features differ")
        self._meta = meta
        self._autoencoder = autoencoder
        self._forecaster = forecaster

    @property
    def meta(self) -> LstmEnsembleMeta:
        return self._meta

    @property
    def autoencoder(self) -> LstmAeDetector:
        return self._autoencoder

    @property
    def forecaster(self) -> LstmForecastDetector:
        return self._forecaster

    def member_ratios(self, windows: np.ndarray) -> tuple[Float64Array, Float64Array]:
        """Each member's (B, F) per-feature errors of raw windows over its own floored
        normal error; 0 for features no member judges (constant in training)."""
        self._check_shape(windows)
        return (
            _ratios(self._autoencoder, self._autoencoder.score(windows)[1]),
            _ratios(self._forecaster, self._forecaster.score(windows)[1]),
        )

    def score(self, windows: np.ndarray) -> tuple[Float64Array, Float64Array]:
        """Scores (B,) and combined per-feature ratios (B, F) of raw windows (B, window, F):
        a score is the worst feature's combined ratio over its normal on held-back data."""
        combined = combine_ratios(*self.member_ratios(windows), self._meta.combine)
        meta = self._meta
        skip = self._forecaster.meta.unscored_indices
        return window_scores(combined, meta.calibration.feature_mean_errors, skip), combined

    def levels(self, windows: np.ndarray) -> Float64Array | None:
        """The members' level statistics, which are the same: one scaler, one training run."""
        return self._forecaster.levels(windows)

    def constant_values(self) -> dict[int, float]:
        return self._forecaster.constant_values()

    def command_indices(self) -> tuple[int, ...]:
        return self._forecaster.command_indices()

    def stepped_indices(self) -> tuple[int, ...]:
        return self._forecaster.stepped_indices()

    def counter_indices(self) -> tuple[int, ...]:
        return self._forecaster.counter_indices()

    def pulse_indices(self) -> tuple[int, ...]:
        return self._forecaster.pulse_indices()

    def pulse_shapes(self) -> tuple[tuple[float, float], ...]:
        return self._forecaster.pulse_shapes()

    def run_stats(self) -> RunStats | None:
        """The members' longest runs of identical readings, the same for both (one
        training run): the stuck check judges the ensemble as either."""
        return self._forecaster.run_stats()

    def noise_stats(self) -> NoiseStats | None:
        """The forecaster member's roughest training windows (the AE keeps none)."""
        return self._forecaster.noise_stats()

    def period_stats(self) -> PeriodStats | None:
        """The forecaster member's cycles (the AE keeps none)."""
        return self._forecaster.period_stats()

    def level_slowness(self) -> Float64Array | None:
        return self._forecaster.level_slowness()

    @classmethod
    def train(
        cls,
        segments: Sequence[np.ndarray],
        options: TrainOptions,
        *,
        device: torch.device,
        first_ts: float | None = None,
        last_ts: float | None = None,
        progress: ProgressFn | None = None,
        stop: threading.Event | None = None,
    ) -> LstmEnsembleDetector:
        """Prepare the data once, fit each member on it exactly as it would be fitted alone
        (same split, shuffles and seed: ``TrainingData.fresh``), then calibrate the
        combined ratios on the held-back windows."""
        started = time.monotonic()
        prepared = prepare_training(segments, options, device)
        epochs = options.model.epochs

        def stage(offset: int) -> ProgressFn | None:
            if progress is None:
                return None
            report = progress
            return lambda epoch, _total, loss: report(offset + epoch, 2 * epochs, loss)

        autoencoder = fit_autoencoder(
            prepared.fresh(),
            options,
            device=device,
            started=time.monotonic(),
            first_ts=first_ts,
            last_ts=last_ts,
            progress=stage(0),
            stop=stop,
        )
        forecaster = LstmForecastDetector.fit(
            prepared.fresh(),
            options,
            device=device,
            started=time.monotonic(),
            first_ts=first_ts,
            last_ts=last_ts,
            progress=stage(epochs),
            stop=stop,
        )
        how = options.model.ensemble_combine
        combined = combine_ratios(
            _ratios(autoencoder, _held_back(autoencoder, prepared, options.model.score_batch_max)),
            _ratios(forecaster, _held_back(forecaster, prepared, options.model.score_batch_max)),
            how,
        )
        calibration = Calibration.from_errors(
            combined,
            forecaster.meta.unscored_indices,
            robust=True,
            balance=options.model.balance_tails,
        )
        now = datetime.now(UTC)
        version = new_version(now)
        training: dict[str, float | int | str] = {
            "n_readings": len(prepared.rows),
            "n_windows": prepared.n_windows,
            "seconds": round(time.monotonic() - started, 3),
            "seed": options.model.seed,
        }
        for member in (autoencoder, forecaster):
            for key in ("epochs_run", "val_loss", "seconds"):
                training[f"{member.type_key}_{key}"] = member.meta.training[key]
        if first_ts is not None:
            training["first_ts"] = first_ts
        if last_ts is not None:
            training["last_ts"] = last_ts
        meta = LstmEnsembleMeta(
            version=version,
            stream=options.stream,
            features=options.features,
            window=options.window,
            calibration=calibration,
            created=now.isoformat(timespec="seconds"),
            training=training,
            interval=options.interval,
            combine=how,
        )
        log.info(
            "training_finished",
            stream=options.stream,
            version=version,
            detector=cls.type_key,
            combine=how,
            seconds=training["seconds"],
            threshold_q999=calibration.quantiles["0.999"],
        )
        # The members under the ensemble's version, so their weights files say whose they are.
        batch = options.model.score_batch_max
        return cls(
            meta,
            LstmAeDetector(
                replace(autoencoder.meta, version=version), autoencoder.module, device, batch
            ),
            LstmForecastDetector(
                replace(forecaster.meta, version=version), forecaster.module, device, batch
            ),
        )

    def _write_files(self, directory: Path) -> None:
        """Each member's model directory (its meta.json and weights) beside meta.json."""
        for name, member in ((AE_DIR, self._autoencoder), (FORECAST_DIR, self._forecaster)):
            sub = directory / name
            sub.mkdir()
            member._write_files(sub)
            (sub / META_FILE).write_text(member.meta.to_json(), encoding="utf-8")
            fsync_file(sub / META_FILE)
            fsync_dir(sub)

    @classmethod
    def load(
        cls, directory: Path, device: torch.device, max_batch: int = 512
    ) -> LstmEnsembleDetector:
        """Rebuild an ensemble from a directory written by :meth:`save`, each member by its
        own ``load``; never unpickles."""
        directory = Path(directory)
        meta = load_meta(directory, LstmEnsembleMeta.from_json)
        autoencoder = LstmAeDetector.load(directory / AE_DIR, device, max_batch=max_batch)
        forecaster = LstmForecastDetector.load(directory / FORECAST_DIR, device, max_batch)
        try:
            return cls(meta, autoencoder, forecaster)
        except ModelError as err:
            raise ModelError(f"{directory}: {err}") from err

    def export(self, fmt: ExportFormat, out: Path | None = None) -> Path:
        """Refused: the exporters build one network's scoring graph, and this score needs
        both networks and the combination between them."""
        raise ModelError(
            f"a {self.type_key} model cannot be exported as {fmt}: its score combines two "
            f"networks, and export writes one network's scoring graph; train "
            f'model.detector = "lstm_forecast" or "lstm_ae" for an edge runtime'
        )


def _ratios(member: LstmDetector[Any, Any], errors: Float64Array) -> Float64Array:
    """A member's (B, F) errors over its floored normal error, as its own score divides
    them (``window_scores``); 0 for the features it does not judge."""
    meta = member.meta
    floor, judged = score_floor(meta.calibration.feature_mean_errors, meta.unscored_indices)
    ratios: Float64Array = np.where(judged, errors / floor, 0.0)
    return ratios


def _held_back(member: LstmDetector[Any, Any], prepared: TrainingData, chunk: int) -> Float64Array:
    """A member's (B, F) errors on the held-back windows, as its score computes them."""
    parts = []
    starts = prepared.val_starts
    member.module.eval()
    with torch.inference_mode():
        for i in range(0, len(starts), chunk):
            parts.append(member._feature_errors(prepared.gather(starts[i : i + chunk])))
    return np.concatenate(parts)
