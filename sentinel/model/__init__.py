"""Detectors: the contract every one implements, the LSTM autoencoder, forecaster and their
ensemble and the baselines behind it, training, and versioned storage on disk."""

from __future__ import annotations

from sentinel.model.base import Detector, DetectorMeta, TrainOptions, training_options
from sentinel.model.baselines import HstDetector, ZScoreDetector
from sentinel.model.calibration import Calibration
from sentinel.model.detector_types import (
    DETECTORS,
    daemon_refusal,
    detector_type,
    load_detector,
)
from sentinel.model.device import resolve_device
from sentinel.model.lstm_ae import LstmAutoencoder
from sentinel.model.lstm_detector import LstmAeDetector, LstmAeMeta, LstmMeta
from sentinel.model.lstm_ensemble import LstmEnsembleDetector, LstmEnsembleMeta
from sentinel.model.lstm_forecast import LstmForecastDetector, LstmForecaster, LstmForecastMeta
from sentinel.model.registry import ModelRegistry, Registry
from sentinel.model.scaler import Scaler
from sentinel.model.train import (
    CONSTANT_FEATURE_HINT,
    constant_features,
    make_windows,
    stepped_features,
    train_detector,
)

__all__ = [
    "CONSTANT_FEATURE_HINT",
    "DETECTORS",
    "Calibration",
    "Detector",
    "DetectorMeta",
    "HstDetector",
    "LstmAeDetector",
    "LstmAeMeta",
    "LstmAutoencoder",
    "LstmEnsembleDetector",
    "LstmEnsembleMeta",
    "LstmForecastDetector",
    "LstmForecastMeta",
    "LstmForecaster",
    "LstmMeta",
    "ModelRegistry",
    "Registry",
    "Scaler",
    "TrainOptions",
    "ZScoreDetector",
    "constant_features",
    "daemon_refusal",
    "detector_type",
    "load_detector",
    "make_windows",
    "resolve_device",
    "stepped_features",
    "train_detector",
    "training_options",
]
