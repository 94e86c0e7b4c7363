"""The LSTM forecaster detector (``lstm_forecast``): an LSTM reads a window and predicts each
next reading; a window scores by how badly its newest readings were predicted.

Sequence prediction as in telemanom (Hundman et al., "Detecting Spacecraft Anomalies Using
LSTMs and Nonparametric Dynamic Thresholding", KDD 2018, https://arxiv.org/abs/1802.04431),
issue #21 cause 8: an autoencoder's reconstruction error is a weak score on univariate
series, where a forecaster sees a subtle change of shape as soon as it breaks the pattern.
To stay stateless per window, the network runs over the whole window, predicting every
step's next reading one step ahead, and the window's per-feature error is the mean squared
error of its newest ``score_steps`` predictions: telemanom's smoothing of the error, inside
one window. By default the newest half of the window is scored and the older half is the
context the LSTM's state builds up on (its first predictions, from a few readings, are
the noisiest); docs/BENCHMARKS.md measured a quarter, half and all of it. Each
feature's error is divided by its median on held-back training windows (floored, see
``sentinel.model.calibration.score_floor``), and the window's score is the worst feature's.

With ``model.residual_coupling`` (the default) the errors are first *coupled*: at each
reading, each scored feature's signed error less what the other scored features' errors
predict of it, a linear map fitted on the training windows
(``sentinel.model.calibration.fit_residual_coupling``). The forecaster cannot know when
a pump's load will change; when it does, flow, current and pressure all jump at once and
every one of their forecasts misses, so each feature alone scored the change like a fault
(issue #21: most of the simulated fleet's false alerts). Coupled, a joint move of the kind
training held leaves little error, while a single sensor leaving the others -- or features
moving against their usual relation -- keeps its error in full (docs/BENCHMARKS.md,
"Coupled residuals").

``model.forecast_horizon`` h (default 1) predicts each reading from the readings up to h
steps before it instead of the one before (telemanom predicts ``l_p`` steps ahead). A one-step
error sees a lasting offset only at the reading where it starts -- one large error diluted in
the mean over ``score_steps`` -- where an h-step error carries it for h readings, the ones
predicted from context that does not hold it yet (docs/BENCHMARKS.md, "Lasting offsets").

It shares the LSTM-AE's inputs (scaler, relative and constant features: ``LstmMeta``),
training data and loop (``sentinel.model.train``), weights file and export
(``sentinel.model.export``, of the scoring graph ``ForecasterGraph``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
import structlog
import torch
from torch import nn

from sentinel.errors import DataError, ModelError
from sentinel.model.base import ProgressFn, TrainOptions, load_meta, new_version
from sentinel.model.calibration import (
    Calibration,
    Float64Array,
    ResidualCoupling,
    fit_residual_coupling,
)
from sentinel.model.lstm_detector import LstmDetector, load_weights
from sentinel.model.lstm_graph import LstmScoringGraph, cpu_copy
from sentinel.model.lstm_meta import LstmForecastMeta, default_score_steps
from sentinel.model.train import TrainingData, fit_module, prepare_training, training_record

__all__ = [
    "ForecasterGraph",
    "LstmForecastDetector",
    "LstmForecastMeta",
    "LstmForecaster",
    "default_score_steps",
    "forecast_errors",
]

log = structlog.get_logger(__name__)


class LstmForecaster(nn.Module):
    """(B, T, F) -> (B, T - h, F): the prediction of readings h..T-1, each from the readings
    up to h steps before it (``horizon`` h, 1 by default). It predicts the change from the
    last reading it sees (persistence plus a learnt correction), which a short training fits
    faster than the level itself."""

    def __init__(
        self, n_features: int, hidden_size: int, num_layers: int = 1, horizon: int = 1
    ) -> None:
        super().__init__()
        if horizon < 1:
            raise ModelError(f"a forecast horizon must be at least 1 step, got {horizon}")
        self.n_features = n_features
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.horizon = horizon
        self.lstm = nn.LSTM(n_features, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        past = x[:, : -self.horizon, :]
        hidden, _ = self.lstm(past)
        out: torch.Tensor = past + self.head(hidden)
        return out


Coupling = tuple[torch.Tensor, torch.Tensor]  # ResidualCoupling's weights and bounds


def coupling_tensors(coupling: ResidualCoupling | None, device: torch.device) -> Coupling | None:
    """``ResidualCoupling`` as float32 tensors on ``device`` for ``forecast_squared``."""
    if coupling is None:
        return None
    weights, bounds = coupling.arrays()
    return torch.from_numpy(weights).to(device), torch.from_numpy(bounds).to(device)


def couple(error: torch.Tensor, weights: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """``sentinel.model.calibration.couple`` in torch (and in an exported graph)."""
    explained = torch.maximum(torch.minimum(error @ weights, bounds), -bounds)
    return error - explained


def forecast_errors(
    module: LstmForecaster,
    scaled: torch.Tensor,
    steps: int,
    coupling: Coupling | None = None,
) -> tuple[Float64Array, Float64Array]:
    """Per-window and per-feature mean squared errors of already-scaled windows'
    ``module.horizon``-step predictions, over the newest ``steps`` of them (0: all), coupled
    by ``coupling`` (see ``forecast_squared``). The caller is responsible for
    ``eval()``/``inference_mode()`` and for chunking."""
    feature_errors: Float64Array = (
        forecast_squared(module, scaled, steps, coupling).mean(dim=1).double().cpu().numpy()
    )
    return feature_errors.mean(axis=1), feature_errors


def forecast_residuals(module: LstmForecaster, scaled: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, S, F) signed errors (prediction - reading) of already-scaled windows'
    ``module.horizon``-step predictions, over the newest ``steps`` of them (0: all of them,
    S = window - horizon)."""
    error: torch.Tensor = module(scaled) - scaled[:, module.horizon :, :]
    return error[:, -steps:, :] if steps else error


def forecast_squared(
    module: LstmForecaster,
    scaled: torch.Tensor,
    steps: int,
    coupling: Coupling | None = None,
) -> torch.Tensor:
    """(B, S, F) squared errors of already-scaled windows' ``module.horizon``-step
    predictions, reading by reading, over the newest ``steps`` of them (0: all of them,
    S = window - horizon); with ``coupling`` each reading's errors are first coupled
    (``couple``, ``LstmForecastMeta.residual_coupling``)."""
    error = forecast_residuals(module, scaled, steps)
    if coupling is not None:
        error = couple(error, *coupling)
    squared: torch.Tensor = error**2
    return squared


class LstmForecastDetector(LstmDetector[LstmForecastMeta, LstmForecaster]):
    """Scores raw windows by the one-step prediction error of their newest readings;
    per-feature errors are mean squared one-step errors in scaled units."""

    type_key: ClassVar[str] = "lstm_forecast"

    def __init__(
        self,
        meta: LstmForecastMeta,
        module: LstmForecaster,
        device: torch.device,
        max_batch: int = 512,
    ) -> None:
        shapes = (module.n_features, module.hidden_size, module.num_layers, module.horizon)
        expected = (len(meta.features), meta.hidden_size, meta.num_layers, meta.horizon)
        if shapes != expected:
            raise ModelError(f"module shape {shapes} does not match meta {expected}")
        super().__init__(meta, module, device, max_batch)
        self._coupling = coupling_tensors(meta.residual_coupling, device)

    def _feature_errors(self, scaled: torch.Tensor) -> Float64Array:
        return forecast_errors(self._module, scaled, self._meta.score_steps, self._coupling)[1]

    def _step_errors(self, scaled: torch.Tensor) -> Float64Array:
        squared = forecast_squared(self._module, scaled, self._meta.score_steps, self._coupling)
        errors: Float64Array = squared.double().cpu().numpy()
        return errors

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
    ) -> LstmForecastDetector:
        """Fit on contiguous runs of normal raw readings with the LSTM-AE's data preparation
        and training loop (``sentinel.model.train``); calibrate on the held-back windows."""
        started = time.monotonic()
        if options.window < 2:
            raise DataError("a forecaster needs windows of at least 2 readings")
        prepared = prepare_training(segments, options, device)
        return cls.fit(
            prepared,
            options,
            device=device,
            started=started,
            first_ts=first_ts,
            last_ts=last_ts,
            progress=progress,
            stop=stop,
        )

    @classmethod
    def fit(
        cls,
        prepared: TrainingData,
        options: TrainOptions,
        *,
        device: torch.device,
        started: float,
        first_ts: float | None = None,
        last_ts: float | None = None,
        progress: ProgressFn | None = None,
        stop: threading.Event | None = None,
    ) -> LstmForecastDetector:
        """``train`` after the data preparation: fit and calibrate a forecaster on
        ``prepared`` (which it shuffles; pass ``prepared.fresh()`` to fit another network
        on the same data). ``started`` is the ``time.monotonic()`` the run's seconds count
        from."""
        config, features, window = options.model, options.features, options.window
        horizon = config.forecast_horizon
        if window <= horizon:
            raise DataError(
                f"a forecaster predicting {horizon} step(s) ahead needs windows of at least "
                f"{horizon + 1} readings, got {window}"
            )
        steps = min(config.score_steps or default_score_steps(window), window - horizon)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(config.seed)
            module = LstmForecaster(
                len(features), config.hidden_size, config.num_layers, horizon
            ).to(device)
        loss_fn = nn.MSELoss()

        coupled: list[Coupling | None] = [None]  # fitted after the network

        def held_back(score_steps: int) -> Float64Array:
            module.eval()
            parts = []
            with torch.inference_mode():
                val = prepared.val_starts
                for i in range(0, len(val), config.score_batch_max):
                    batch = prepared.gather(val[i : i + config.score_batch_max])
                    parts.append(forecast_errors(module, batch, score_steps, coupled[0])[1])
            return np.concatenate(parts)

        fit = fit_module(
            module,
            lambda batch: loss_fn(module(batch), batch[:, horizon:, :]),
            lambda: float(held_back(0).mean()),
            prepared,
            options,
            progress=progress,
            stop=stop,
        )
        coupling = None
        if config.residual_coupling:
            coupling = _fit_coupling(module, prepared, steps, config.score_batch_max, features)
            coupled[0] = coupling_tensors(coupling, device)
        calibration = Calibration.from_errors(
            held_back(steps),
            prepared.unscored(features),
            robust=True,
            balance=config.balance_tails,
            floor=prepared.held_floor,
            in_sample=_in_sample_errors(module, prepared, steps, config.score_batch_max, coupled[0])
            if config.balance_tails
            else None,
        )
        now = datetime.now(UTC)
        meta = LstmForecastMeta(
            version=new_version(now),
            stream=options.stream,
            features=features,
            window=window,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            scaler=prepared.scaler,
            calibration=calibration,
            created=now.isoformat(timespec="seconds"),
            training=training_record(prepared, fit, started, config.seed, first_ts, last_ts),
            relative_features=prepared.relative,
            relative_centre="median",
            score_steps=steps,
            horizon=horizon,
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
            residual_coupling=coupling,
        )
        log.info(
            "training_finished",
            stream=options.stream,
            version=meta.version,
            detector=cls.type_key,
            epochs_run=fit.epochs_run,
            val_loss=fit.val_loss,
            threshold_q999=calibration.quantiles["0.999"],
        )
        return cls(meta, module, device, max_batch=config.score_batch_max)

    @classmethod
    def load(
        cls, directory: Path, device: torch.device, max_batch: int = 512
    ) -> LstmForecastDetector:
        """Rebuild a detector from a directory written by :meth:`save`; never unpickles."""
        directory = Path(directory)
        meta = load_meta(directory, LstmForecastMeta.from_json)
        module = LstmForecaster(len(meta.features), meta.hidden_size, meta.num_layers, meta.horizon)
        load_weights(directory, meta, module)
        log.info("model_loaded", version=meta.version, stream=meta.stream, path=str(directory))
        return cls(meta, module, device, max_batch=max_batch)

    def scoring_module(self) -> ForecasterGraph:
        """The whole scoring rule as one CPU torch module, for export."""
        return ForecasterGraph(self._meta, self._module)


# Training windows the coupling is fitted on, at most (evenly spread over them): ~10^4-10^5
# readings' errors, plenty for an (F, F) map and a second or two of inference.
_COUPLING_WINDOWS = 4096


def _spread_starts(prepared: TrainingData) -> np.ndarray:
    """The training windows' starts, at most ``_COUPLING_WINDOWS`` of them, evenly spread."""
    starts = prepared.train_starts
    if len(starts) > _COUPLING_WINDOWS:
        starts = starts[np.linspace(0, len(starts) - 1, _COUPLING_WINDOWS).astype(np.int64)]
    return starts


def _in_sample_errors(
    module: LstmForecaster,
    prepared: TrainingData,
    steps: int,
    batch: int,
    coupling: Coupling | None,
) -> Float64Array:
    """(B, F) per-feature errors of the fitted network on training windows (at most
    ``_COUPLING_WINDOWS``, evenly spread), coupled as scores are: where the held-back tail
    of a short training holds none of a feature's rare normal events, its training does."""
    starts = _spread_starts(prepared)
    module.eval()
    parts = []
    with torch.inference_mode():
        for i in range(0, len(starts), batch):
            scaled = prepared.gather(starts[i : i + batch])
            parts.append(forecast_errors(module, scaled, steps, coupling)[1])
    return np.concatenate(parts) if parts else np.zeros((0, module.n_features))


def _fit_coupling(
    module: LstmForecaster,
    prepared: TrainingData,
    steps: int,
    batch: int,
    features: Sequence[str],
) -> ResidualCoupling | None:
    """``fit_residual_coupling`` on the fitted network's errors over the training windows
    (not the held-back ones, which then calibrate the coupled errors out of sample); None
    where fewer than two features are scored (nothing to couple)."""
    if len(features) - len(set(prepared.unscored(features))) < 2:
        return None
    starts = _spread_starts(prepared)
    module.eval()
    parts = []
    with torch.inference_mode():
        for i in range(0, len(starts), batch):
            error = forecast_residuals(module, prepared.gather(starts[i : i + batch]), steps)
            parts.append(error.double().cpu().numpy().reshape(-1, len(features)))
    residuals = np.concatenate(parts) if parts else np.zeros((0, len(features)))
    return fit_residual_coupling(residuals, prepared.unscored(features))


class ForecasterGraph(LstmScoringGraph):
    """The forecaster's scoring rule for export: the prediction error of the newest
    ``score_steps`` readings, as ``forecast_errors``."""

    coupling_weights: torch.Tensor
    coupling_bounds: torch.Tensor

    def __init__(self, meta: LstmForecastMeta, module: LstmForecaster) -> None:
        super().__init__(meta)
        self.forecaster = LstmForecaster(
            module.n_features, module.hidden_size, module.num_layers, module.horizon
        )
        cpu_copy(self.forecaster, module)
        self.horizon = module.horizon
        self.coupled = meta.residual_coupling is not None
        if meta.residual_coupling is not None:
            weights, bounds = meta.residual_coupling.arrays()
            self.register_buffer("coupling_weights", torch.from_numpy(weights))
            self.register_buffer("coupling_bounds", torch.from_numpy(bounds))

    def feature_errors(self, scaled: torch.Tensor) -> torch.Tensor:
        error = self.forecaster(scaled) - scaled[:, self.horizon :, :]
        error = error[:, -self.score_steps :, :]
        if self.coupled:
            error = couple(error, self.coupling_weights, self.coupling_bounds)
        errors: torch.Tensor = (error**2).mean(dim=1)
        return errors
