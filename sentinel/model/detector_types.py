"""Every detector Sentinel knows, keyed by ``model.detector`` (Frigate's ``detector_types.py``).

A new detector is one module with a ``Detector`` subclass plus its line in ``_PLUGINS``, and
its key in ``ModelConfig.detector`` (a ``Literal``: pydantic needs it static; a test keeps the
two equal). What it can do -- be saved, be exported -- the class itself declares, and the
daemon, the CLI and replay ask it here instead of testing names.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sentinel.errors import ModelError
from sentinel.model.base import LEGACY_DETECTOR, META_FILE, Detector
from sentinel.model.baselines import HstDetector, ZScoreDetector
from sentinel.model.lstm_detector import LstmAeDetector
from sentinel.model.lstm_ensemble import LstmEnsembleDetector
from sentinel.model.lstm_forecast import LstmForecastDetector

__all__ = ["DETECTORS", "daemon_refusal", "detector_type", "load_detector"]

_PLUGINS: tuple[type[Detector], ...] = (
    LstmAeDetector,
    LstmForecastDetector,
    LstmEnsembleDetector,
    ZScoreDetector,
    HstDetector,
)

DETECTORS: dict[str, type[Detector]] = {cls.type_key: cls for cls in _PLUGINS}


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
    cls = detector_type(key)
    if not cls.cannot_save:
        return None
    usable = ", ".join(k for k, c in DETECTORS.items() if not c.cannot_save)
    return (
        f"model.detector = {key!r} cannot run in the daemon, which keeps its models on disk: "
        f"{key} models cannot be saved ({cls.cannot_save}); the daemon runs {usable}"
    )


def load_detector(directory: Path, device: torch.device, max_batch: int = 512) -> Detector:
    """The model saved in ``directory``, by the detector its meta.json names (``lstm_ae``
    when it names none: every model saved before the key existed); never unpickles."""
    path = Path(directory) / META_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        # The detector's own load says what is wrong with the file, as it always has.
        raw = {}
    key = raw.get("detector", LEGACY_DETECTOR) if isinstance(raw, dict) else LEGACY_DETECTOR
    if not isinstance(key, str) or key not in DETECTORS:
        raise ModelError(
            f"{path}: detector {key!r} is not one this Sentinel knows ({', '.join(DETECTORS)})"
        )
    return DETECTORS[key].load(directory, device, max_batch=max_batch)
