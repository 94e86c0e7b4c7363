"""What every detector is to the rest of Sentinel: ``Detector``, its metadata, its training.

The pipeline, the model registry, the trainer, promotion and export speak to ``Detector``
and to nothing behind it, so a detector is one module with one subclass plus one line in
``sentinel.model.detector_types`` (Frigate's ``DetectionApi`` and ``detector_types.py``).
As in river's ``anomaly/base.py`` a higher score is more anomalous; unlike river's, scoring
takes a batch of whole windows, which is what the pipeline hands over.

On disk a model is a directory with ``meta.json`` -- ``DetectorMeta``'s keys, which every
detector has, beside the detector's own -- and whatever files the detector adds (the
LSTM-AE's weights). No format unpickles anything: a model directory from an untrusted disk
cannot run code.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import numpy as np
import structlog

from sentinel.atomic import fsync_dir
from sentinel.config import ModelConfig, SentinelConfig
from sentinel.errors import ModelError
from sentinel.model.calibration import Calibration, Float64Array
from sentinel.model.fields import as_object, integer, string
from sentinel.model.noise import NoiseStats
from sentinel.model.periods import PeriodStats
from sentinel.model.stuck import RunStats

if TYPE_CHECKING:
    import torch

__all__ = [
    "LEGACY_DETECTOR",
    "META_FILE",
    "PULSE_READINGS",
    "SCHEMA_VERSION",
    "Detector",
    "DetectorMeta",
    "ExportFormat",
    "ProgressFn",
    "TrainOptions",
    "fsync_file",
    "load_meta",
    "new_version",
    "saved_detector",
    "training_options",
]

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 1
# An excursion this short from a channel's usual value is a pulse (a command sent, a
# trigger): ``sentinel.model.train.pulse_features``, ``Detector.pulse_shapes``.
PULSE_READINGS = 2
META_FILE = "meta.json"
# What a meta.json without a "detector" key holds: every model saved before the key existed.
LEGACY_DETECTOR = "lstm_ae"

ExportFormat = Literal["torchscript", "onnx"]
ProgressFn = Callable[[int, int, float], None]  # (epoch, epochs, validation loss)


@dataclass(frozen=True)
class TrainOptions:
    """Everything besides the data and the hardware that decides what model is trained.

    Build it from a config with ``training_options``: the CLI, the cold start, every
    retraining run and replay all do, so a model trained by the daemon carries exactly what
    one trained with ``sentinel train --csv`` carries (issue #19: retraining once dropped
    ``level = "relative"``).
    """

    stream: str
    features: tuple[str, ...]
    window: int
    model: ModelConfig
    # Features judged by their changes within a window rather than their level
    # (``center_relative``); their scale is the spread of their window-centred values.
    relative: tuple[str, ...] = ()
    # Seconds between readings, learnt from the training data (sentinel.timescale); the
    # model keeps it in its meta. None: unknown.
    interval: float | None = None
    # Features whose level is judged even when it drifts through the training data
    # (``level = "absolute"``); the rest may be judged relative automatically
    # (``model.drift_ratio``, sentinel.model.drifting).
    absolute: tuple[str, ...] = ()

    def with_seed(self, seed: int) -> TrainOptions:
        """The same options with another model seed (a retraining run's next attempt)."""
        return replace(self, model=self.model.model_copy(update={"seed": seed}))


def training_options(
    config: SentinelConfig, stream: str, interval: float | None = None
) -> TrainOptions:
    """The training options the config gives ``stream``, whose readings come every
    ``interval`` seconds (learnt from the data); KeyError for an unknown stream."""
    stream_cfg = config.stream(stream)
    return TrainOptions(
        stream=stream_cfg.name,
        features=stream_cfg.feature_names,
        window=config.windows.length,
        model=config.model,
        relative=stream_cfg.relative_features,
        absolute=stream_cfg.absolute_features,
        interval=interval,
    )


def new_version(now: datetime) -> str:
    """A version name: the UTC second it was trained, then random hex.

    The suffix comes from secrets, not the seeded RNG: retraining with the same seed must
    still give a new version. The registry orders versions by the timestamp.
    """
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass(frozen=True, kw_only=True)
class DetectorMeta:
    """What every model records besides its own state: which detector it is, which version of
    which stream, what windows it reads, its calibration and its training.

    A detector keeps its own parameters in a subclass (the LSTM-AE's sizes and scaler in
    ``LstmAeMeta``); on disk they are keys of the same meta.json object, beside these.
    """

    detector: str
    version: str
    stream: str
    features: tuple[str, ...]
    window: int
    calibration: Calibration
    created: str  # ISO 8601, UTC
    # Numbers about the run: rows, losses, seconds, seed; first_ts/last_ts, the time range
    # of the readings it learnt from, where known.
    training: dict[str, float | int | str] = field(default_factory=dict)
    # Seconds between two readings of a device, learnt from the training data
    # (sentinel.timescale): auto time settings are counts of it. None for models saved
    # before it existed (an optional key, as ``levels``: schema 1 still reads them), which
    # keep the old scale of one reading per second.
    interval: float | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        n = len(self.features)
        if n == 0:
            raise ModelError("a model needs at least one feature")
        if len(self.calibration.feature_mean_errors) != n:
            raise ModelError(
                f"calibration has {len(self.calibration.feature_mean_errors)} feature errors, "
                f"meta lists {n} features"
            )
        if self.window < 1:
            raise ModelError("window must be positive")
        if self.interval is not None and not (math.isfinite(self.interval) and self.interval > 0):
            raise ModelError(f"interval must be a positive number of seconds, not {self.interval}")

    def to_dict(self) -> dict[str, Any]:
        """meta.json's common keys; a subclass adds its own to them."""
        data: dict[str, Any] = {
            "schema_version": self.schema_version,
            "detector": self.detector,
            "version": self.version,
            "stream": self.stream,
            "features": list(self.features),
            "window": self.window,
            "calibration": self.calibration.to_dict(),
            "created": self.created,
            "training": dict(self.training),
        }
        if self.interval is not None:
            data["interval"] = self.interval
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @staticmethod
    def parse(text: str, detector: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """meta.json of a ``detector`` model: the JSON object, and the common fields read
        from it as keyword arguments; any problem is a ModelError saying which key."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise ModelError(f"not valid JSON: {err}") from err
        obj = as_object(raw, "meta")
        schema = obj.get("schema_version")
        if schema != SCHEMA_VERSION:
            raise ModelError(
                f"schema_version is {schema!r}; this Sentinel reads schema {SCHEMA_VERSION}"
            )
        saved = obj.get("detector", LEGACY_DETECTOR)
        if saved != detector:
            raise ModelError(f"holds a {saved!r} model, not {detector!r}")
        features = obj.get("features")
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise ModelError("features must be a list of strings")
        training = as_object(obj.get("training", {}), "training")
        for key, value in training.items():
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ModelError(f"training.{key} must be a number or a string")
        interval = obj.get("interval")
        if interval is not None and (
            isinstance(interval, bool) or not isinstance(interval, int | float)
        ):
            raise ModelError("interval must be a number of seconds")
        common = {
            "interval": None if interval is None else float(interval),
            "schema_version": SCHEMA_VERSION,
            "detector": detector,
            "version": string(obj.get("version"), "version"),
            "stream": string(obj.get("stream"), "stream"),
            "features": tuple(features),
            "window": integer(obj.get("window"), "window"),
            "calibration": Calibration.from_dict(obj.get("calibration")),
            "created": string(obj.get("created"), "created"),
            "training": dict(training),
        }
        return obj, common


M = TypeVar("M", bound=DetectorMeta)


def saved_detector(directory: Path) -> object:
    """The detector a model directory's meta.json names (``LEGACY_DETECTOR`` when it names
    none, as every model saved before the key existed, or cannot be read: the detector's
    own load then says what is wrong with the file). Not checked: any JSON value."""
    try:
        raw = json.loads((Path(directory) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return LEGACY_DETECTOR
    return raw.get("detector", LEGACY_DETECTOR) if isinstance(raw, dict) else LEGACY_DETECTOR


def load_meta(directory: Path, parse: Callable[[str], M]) -> M:
    """A model directory's meta.json, parsed by ``parse``; a ModelError names the file."""
    path = Path(directory) / META_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ModelError(f"{path}: cannot read: {err}") from err
    try:
        return parse(text)
    except ModelError as err:
        raise ModelError(f"{path}: {err}") from err


def fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


class Detector(ABC):
    """A trained detector: scores raw windows of one stream; higher means more anomalous.

    A subclass sets ``type_key`` (the ``model.detector`` value that picks it) and implements
    ``meta``, ``score`` and ``train``. What else it can do it declares: ``load`` and
    ``_write_files`` overridden where it can be saved (``cannot_save`` empty, which the
    daemon needs), ``export`` where it can be exported (``export_formats``).
    """

    type_key: ClassVar[str]
    # Why a model of this kind cannot be saved, "" when it can. The daemon keeps every
    # model on disk (cold start, retraining, restarts), so it runs only those that can.
    cannot_save: ClassVar[str] = ""
    export_formats: ClassVar[tuple[ExportFormat, ...]] = ()

    @property
    @abstractmethod
    def meta(self) -> DetectorMeta: ...

    @property
    def version(self) -> str:
        return self.meta.version

    def pool_calibration(self, scores: Sequence[float]) -> None:
        """Pool ``scores`` -- this model's scores of held-back normal windows it never
        trained on, beside those it was calibrated on -- into its calibration
        (``Calibration.pooled``); what a score is does not change. Before the model is
        saved: retraining pools the reservoir's held-back blocks into an accepted
        challenger's calibration (``sentinel.retrain.job``)."""
        pooled = replace(self.meta, calibration=self.meta.calibration.pooled(scores))
        # Every detector keeps its meta in ``_meta``, which its ``meta`` property reads.
        self.__dict__["_meta"] = pooled
        if self.meta is not pooled:
            raise ModelError(f"{type(self).__name__} does not keep its meta in _meta")

    @property
    def stream(self) -> str:
        return self.meta.stream

    @property
    def features(self) -> tuple[str, ...]:
        return self.meta.features

    @property
    def window(self) -> int:
        return self.meta.window

    @property
    def calibration(self) -> Calibration:
        return self.meta.calibration

    @abstractmethod
    def score(self, windows: np.ndarray) -> tuple[Float64Array, Float64Array]:
        """Scores (B,) and per-feature errors (B, F) of raw windows shaped (B, window, F).

        A score is comparable with ``calibration``, the scores of held-back normal windows.
        A window holding NaN, infinite or float32-overflowing values may score NaN or
        infinite, never raise, and never change another window's score: the pipeline
        takes a non-finite score as the worst there is.
        """

    def _check_shape(self, windows: np.ndarray) -> None:
        """ModelError unless ``windows`` is shaped (B, window, F) for this model."""
        window, n_features = self.meta.window, len(self.meta.features)
        if windows.ndim != 3 or windows.shape[1] != window or windows.shape[2] != n_features:
            raise ModelError(
                f"model {self.version} expects windows shaped (B, {window}, "
                f"{n_features}), got {windows.shape}"
            )

    def levels(self, windows: np.ndarray) -> Float64Array | None:
        """(B, F) levels of raw windows (``sentinel.model.levels``), or None where the
        detector keeps no level statistics: the level check then leaves it alone."""
        return None

    def step_ratios(self, windows: np.ndarray) -> Float64Array | None:
        """(B, S, F) per-reading, per-feature errors of raw windows in the score's own
        units, for the newest S readings a score is made of, or None where the detector
        cannot tell which readings its score came from. A window's score is the worst
        feature's mean of these over the S readings, so the readings of an anomalous window
        that carry its error can be found (``sentinel.judge.evidence``). Called for
        anomalous windows only."""
        return None

    def run_stats(self) -> RunStats | None:
        """Training's longest run of identical consecutive readings per feature
        (``sentinel.model.stuck``), or None where the detector keeps none: the stuck check
        then leaves it alone."""
        return None

    def noise_stats(self) -> NoiseStats | None:
        """Training's roughest window per feature (``sentinel.model.noise``), or None where
        the detector keeps none: the noise check then leaves it alone."""
        return None

    def period_stats(self) -> PeriodStats | None:
        """Training's cycles longer than a window (``sentinel.model.periods``), or None
        where the detector keeps none: the period check then leaves it alone."""
        return None

    def level_slowness(self) -> Float64Array | None:
        """(F,) each feature's slowness in the training data (``LevelStats.slowness``), for
        ``[levels] max_slowness``; None where the detector keeps none."""
        return None

    def constant_values(self) -> dict[int, float]:
        """Feature index -> value, for the features the detector found constant in its
        training data and leaves out of its score: the constant check
        (``sentinel.judge.constants``) judges those by any departure. None by default."""
        return {}

    def command_indices(self) -> tuple[int, ...]:
        """The features the detector reads as inputs, leaves out of its score, and found
        in training to change at the very reading at which a scored channel stepped
        (commands whose channel moves at their reading;
        ``sentinel.model.train.commanding_features``). None by default."""
        return ()

    def stepped_indices(self) -> tuple[int, ...]:
        """The features the detector reads as inputs and leaves out of its score because
        they hold their value between steps nothing announces (set points, commands:
        ``sentinel.model.train.stepped_features``). None by default."""
        return ()

    def counter_indices(self) -> tuple[int, ...]:
        """Of ``stepped_indices``, the counters: features that only ever moved one way in
        training (``sentinel.model.train.counter_features``), whose ticks nothing follows.
        None by default."""
        return ()

    def pulse_indices(self) -> tuple[int, ...]:
        """The features that were pulse trains in training (``pulse_shapes``), by index:
        the command-level check reads a change of one as a command sent. None by default."""
        return ()

    def pulse_shapes(self) -> tuple[tuple[float, float], ...]:
        """(rest, pulse value) pairs of the features that were pulse trains in training
        (one-hot command channels, 0 but for a one-reading 1 when sent;
        ``sentinel.model.train.pulse_features``): the constant check reads a constant
        feature's short excursion from such a rest to such a value as a pulse of theirs.
        None by default."""
        return ()

    @classmethod
    @abstractmethod
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
    ) -> Detector:
        """Fit on contiguous runs of normal raw readings, one (N_i, F) array each, and
        calibrate on their held-back tails.

        Windows never straddle two segments. ``first_ts``/``last_ts`` are the readings'
        time range, kept in ``meta.training``. Raises DataError for unusable data and
        ModelError("training cancelled") once ``stop`` is set.
        """

    def save(self, directory: Path) -> None:
        """Write the model into ``directory``, which must not exist or be empty.

        Files go into a hidden sibling directory first and are fsynced; one rename then
        publishes the whole model, so a crash never leaves a half-written model behind.
        """
        if self.cannot_save:
            raise ModelError(f"a {self.type_key} model cannot be saved: {self.cannot_save}")
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            self._write_files(tmp)
            (tmp / META_FILE).write_text(self.meta.to_json(), encoding="utf-8")
            fsync_file(tmp / META_FILE)
            fsync_dir(tmp)
            os.replace(tmp, directory)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelError(f"{directory}: cannot save model: {err}") from err
        fsync_dir(directory.parent)
        log.info("model_saved", version=self.version, stream=self.stream, path=str(directory))

    def _write_files(self, directory: Path) -> None:  # noqa: B027 - a hook, not a duty
        """Write the files beside meta.json, fsynced; none for a detector whose meta.json
        holds all of it."""

    @classmethod
    def load(cls, directory: Path, device: torch.device, max_batch: int = 512) -> Detector:
        """Rebuild a model from a directory written by :meth:`save`; never unpickles."""
        raise ModelError(f"{directory}: a {cls.type_key} model cannot be loaded: {cls.cannot_save}")

    def export(self, fmt: ExportFormat, out: Path | None = None) -> Path:
        """Write the model for an edge runtime (one of ``export_formats``); returns its path."""
        raise ModelError(f"a {self.type_key} model cannot be exported as {fmt}")
