"""LSTM autoencoder detector: scaling, training, scoring, and versioned storage on disk."""

from __future__ import annotations

from sentinel.model.detector import Calibration, Detector, ModelMeta, resolve_device
from sentinel.model.lstm_ae import LstmAutoencoder
from sentinel.model.registry import ModelRegistry
from sentinel.model.scaler import Scaler
from sentinel.model.train import (
    CONSTANT_FEATURE_HINT,
    TrainOptions,
    constant_features,
    make_windows,
    train_detector,
    training_options,
)

__all__ = [
    "CONSTANT_FEATURE_HINT",
    "Calibration",
    "Detector",
    "LstmAutoencoder",
    "ModelMeta",
    "ModelRegistry",
    "Scaler",
    "TrainOptions",
    "constant_features",
    "make_windows",
    "resolve_device",
    "train_detector",
    "training_options",
]
