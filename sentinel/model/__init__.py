"""Detectors: the contract every one implements, the LSTM autoencoder, forecaster and their
ensemble and the baselines behind it, training, and versioned storage on disk.

Names are imported from their modules on first use (PEP 562): most of this package imports
torch, which a daemon scoring with NumPy never loads (``sentinel.model.numpy_lstm``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentinel.model.base import Detector, DetectorMeta, TrainOptions, training_options
    from sentinel.model.baselines import HstDetector, ZScoreDetector
    from sentinel.model.calibration import Calibration
    from sentinel.model.detector_types import (
        DETECTORS,
        daemon_refusal,
        detector_type,
        load_detector,
    )
    from sentinel.model.device import resolve_device, scoring_device, torch_device
    from sentinel.model.lstm_ae import LstmAutoencoder
    from sentinel.model.lstm_detector import LstmAeDetector
    from sentinel.model.lstm_ensemble import LstmEnsembleDetector, LstmEnsembleMeta
    from sentinel.model.lstm_forecast import LstmForecastDetector, LstmForecaster
    from sentinel.model.lstm_meta import LstmAeMeta, LstmForecastMeta, LstmMeta
    from sentinel.model.numpy_lstm import NumpyLstmDetector
    from sentinel.model.registry import ModelRegistry, Registry
    from sentinel.model.scaler import Scaler
    from sentinel.model.train import (
        CONSTANT_FEATURE_HINT,
        constant_features,
        stepped_features,
        train_detector,
    )
    from sentinel.model.windowing import make_windows

_WHERE = {
    "CONSTANT_FEATURE_HINT": "train",
    "DETECTORS": "detector_types",
    "Calibration": "calibration",
    "Detector": "base",
    "DetectorMeta": "base",
    "HstDetector": "baselines",
    "LstmAeDetector": "lstm_detector",
    "LstmAeMeta": "lstm_meta",
    "LstmAutoencoder": "lstm_ae",
    "LstmEnsembleDetector": "lstm_ensemble",
    "LstmEnsembleMeta": "lstm_ensemble",
    "LstmForecastDetector": "lstm_forecast",
    "LstmForecastMeta": "lstm_meta",
    "LstmForecaster": "lstm_forecast",
    "LstmMeta": "lstm_meta",
    "ModelRegistry": "registry",
    "NumpyLstmDetector": "numpy_lstm",
    "Registry": "registry",
    "Scaler": "scaler",
    "TrainOptions": "base",
    "ZScoreDetector": "baselines",
    "constant_features": "train",
    "daemon_refusal": "detector_types",
    "detector_type": "detector_types",
    "load_detector": "detector_types",
    "make_windows": "windowing",
    "resolve_device": "device",
    "scoring_device": "device",
    "stepped_features": "train",
    "torch_device": "device",
    "train_detector": "train",
    "training_options": "base",
}

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
    "NumpyLstmDetector",
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
    "scoring_device",
    "stepped_features",
    "torch_device",
    "train_detector",
    "training_options",
]


def __getattr__(name: str) -> Any:
    try:
        module = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module 'sentinel.model' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"sentinel.model.{module}"), name)
    globals()[name] = value  # once found, a plain attribute
    return value
