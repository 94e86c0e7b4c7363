"""Every detector Sentinel knows, keyed by ``model.detector`` (Frigate's ``detector_types.py``).

A new detector is one module with a ``Detector`` subclass plus its line in ``_PLUGINS``, and
its key in ``ModelConfig.detector`` (a ``Literal``: pydantic needs it static; a test keeps the
two equal). What it can do -- be saved, be exported -- the class itself declares, and the
daemon, the CLI and replay ask it here instead of testing names.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from sentinel.errors import ModelError
from sentinel.model.base import META_FILE, Detector, saved_detector
from sentinel.model.numpy_lstm import NUMPY_DETECTORS, NumpyLstmDetector

if TYPE_CHECKING:
    import torch

__all__ = ["DETECTORS", "daemon_refusal", "detector_type", "load_detector"]

# key -> (module, class). Imported when first asked for: every detector's module imports
# torch, which a daemon scoring with NumPy never needs (sentinel.model.numpy_lstm).
_PLUGINS: dict[str, tuple[str, str]] = {
    "lstm_ae": ("sentinel.model.lstm_detector", "LstmAeDetector"),
    "lstm_forecast": ("sentinel.model.lstm_forecast", "LstmForecastDetector"),
    "lstm_ensemble": ("sentinel.model.lstm_ensemble", "LstmEnsembleDetector"),
    "zscore": ("sentinel.model.baselines", "ZScoreDetector"),
    "hst": ("sentinel.model.baselines", "HstDetector"),
}


class _Detectors(Mapping[str, type[Detector]]):
    """``model.detector`` key -> class, each module imported on first lookup."""

    def __getitem__(self, key: str) -> type[Detector]:
        module, name = _PLUGINS[key]
        cls: type[Detector] = getattr(importlib.import_module(module), name)
        return cls

    def __contains__(self, key: object) -> bool:  # Mapping's would import the class
        return key in _PLUGINS

    def __iter__(self) -> Iterator[str]:
        return iter(_PLUGINS)

    def __len__(self) -> int:
        return len(_PLUGINS)


DETECTORS: Mapping[str, type[Detector]] = _Detectors()


def detector_type(key: str) -> type[Detector]:
    """The detector class ``model.detector = key`` picks; ModelError for an unknown key."""
    try:
        return DETECTORS[key]
    except KeyError:
        raise ModelError(
            f"unknown detector {key!r}: this Sentinel knows {', '.join(DETECTORS)}"
        ) from None


def daemon_refusal(key: str) -> str | None:
    """Why the daemon cannot run detector ``key``, or None when it can.

    The daemon keeps every model on disk -- the cold start saves it, retraining judges and
    activates saved versions, a restart loads the active one -- so it runs only detectors
    that can be saved.
    """
    if key in NUMPY_DETECTORS:
        return None  # both LSTMs save, whichever runtime scores them; no torch to ask
    cls = detector_type(key)
    if not cls.cannot_save:
        return None
    usable = ", ".join(k for k, c in DETECTORS.items() if not c.cannot_save)
    return (
        f"model.detector = {key!r} cannot run in the daemon, which keeps its models on disk: "
        f"{key} models cannot be saved ({cls.cannot_save}); the daemon runs {usable}"
    )


def load_detector(directory: Path, device: torch.device | None, max_batch: int = 512) -> Detector:
    """The model saved in ``directory``, by the detector its meta.json names (``lstm_ae``
    when it names none: every model saved before the key existed); never unpickles.

    ``device`` None scores on the CPU with NumPy where the detector has a NumPy twin
    (``sentinel.model.device.scoring_device``), else with torch on the CPU."""
    path = Path(directory) / META_FILE
    key = saved_detector(directory)
    if not isinstance(key, str) or key not in DETECTORS:
        raise ModelError(
            f"{path}: detector {key!r} is not one this Sentinel knows ({', '.join(DETECTORS)})"
        )
    if device is None:
        if key in NUMPY_DETECTORS:
            return NumpyLstmDetector.load(directory, max_batch=max_batch)
        from sentinel.model.device import torch_device

        device = torch_device(None)
    return DETECTORS[key].load(directory, device, max_batch=max_batch)
