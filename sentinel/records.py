"""Typed records that pipeline stages hand to each other.

Data flows ingest -> windows -> model -> threshold -> alerts -> store; every hop carries one of
these small frozen dataclasses, never a bare tuple or dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "Ack",
    "Alert",
    "AlertReason",
    "AlertStatus",
    "AuditEvent",
    "ConstantHit",
    "Delivery",
    "DeviceJudgeState",
    "DeviceProgress",
    "DeviceReset",
    "FeatureContribution",
    "LevelHit",
    "NoiseHit",
    "PeriodHit",
    "Reading",
    "RejectReason",
    "Rejected",
    "RelationHit",
    "Score",
    "ScoreBucket",
    "Severity",
    "SpikeHit",
    "StuckHit",
    "ThresholdState",
    "Verdict",
    "Window",
    "WriteBatch",
]

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Reading:
    """One timestamped sample of all features of one device of one stream."""

    stream: str
    device: str
    ts: float  # event time, epoch seconds UTC
    values: tuple[float, ...]  # ordered as the stream's configured features


class RejectReason(StrEnum):
    """Why an input was skipped; each reason has its own counter."""

    OVERSIZED = "oversized"
    UNPARSABLE = "unparsable"
    UNKNOWN_TOPIC = "unknown_topic"
    BAD_DEVICE = "bad_device"
    MISSING_TIMESTAMP = "missing_timestamp"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    MISSING_FEATURE = "missing_feature"
    NON_NUMERIC = "non_numeric"
    NON_FINITE = "non_finite"
    OUT_OF_ORDER = "out_of_order"
    DUPLICATE = "duplicate"
    QUEUE_FULL = "queue_full"
    DEVICE_LIMIT = "device_limit"  # a new device beyond its stream's max_devices


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input that was skipped, with enough context to log it."""

    reason: RejectReason
    topic: str
    detail: str
    payload_head: str = ""  # first bytes of the payload, decoded leniently, for logs


@dataclass(frozen=True, slots=True)
class Ack:
    """What the source needs to acknowledge one message, tagged with its connection.

    Opaque to everything but the source that made it (``sentinel.ingest.source``): the
    worker and the writer only carry acks, in arrival order, back to the source after the
    commit. ``token`` is the source's own handle (MQTT: the packet id); ``epoch`` the
    connection it arrived on, because a handle may be meaningful only within one (after an
    MQTT reconnect the broker resends what we did not acknowledge, and an old packet id may
    by then name another message), so the source drops acks of an earlier epoch. A daemon
    runs one source, so an ack does not name it. ``partition``: the NATS partition the
    message came from (None from MQTT), so a cluster member's writer can leave the acks of
    a partition it was fenced off unsent (sentinel.cluster.fence).
    """

    token: int
    epoch: int
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message from the source after parsing: what it carried and how to acknowledge it.

    A message may carry several readings (SenML packs, JSON arrays) and may be partly
    rejected. ``ack`` is sent once everything the message carried is committed; ``None``
    when there is nothing to acknowledge (MQTT QoS 0).
    """

    topic: str
    readings: tuple[Reading, ...]
    rejected: tuple[Rejected, ...]
    ack: Ack | None
    received_at: float


@dataclass(frozen=True, slots=True)
class Window:
    """A contiguous run of readings of one device, ready to be scored."""

    stream: str
    device: str
    start_ts: float
    end_ts: float
    values: FloatArray  # shape (length, n_features), raw units (the detector scales)
    # (length,) each reading's timestamp; None where a window was built without them (the
    # readings are then taken as evenly spaced from start_ts to end_ts)
    times: npt.NDArray[np.float64] | None = None  # epoch seconds: float32 would round them

    def time_of(self, index: int) -> float:
        """The timestamp of reading ``index`` (negative counts from the newest)."""
        length = len(self.values)
        index = index % length
        if self.times is not None:
            return float(self.times[index])
        if length == 1:
            return self.end_ts
        return self.start_ts + (self.end_ts - self.start_ts) * index / (length - 1)


@dataclass(frozen=True, slots=True)
class Score:
    """Reconstruction error of one window, total and per feature."""

    window: Window
    value: float  # mean squared error over the window in scaled units
    feature_errors: tuple[float, ...]  # mean squared error per feature, same order as features
    model_version: str


@dataclass(frozen=True, slots=True)
class ThresholdState:
    """What a device's threshold was when it judged a window: the "why" of an alert."""

    method: str  # "quantile" or "spot" (what was in force, after any fallback)
    value: float  # the threshold, in score units
    history: int  # normal windows it has learnt from (quantile: warm-up count; spot: n)
    risk: float | None  # spot: the configured risk q; quantile: None
    warm: bool  # False while the quantile method still uses the model's fallback


@dataclass(frozen=True, slots=True)
class SpikeHit:
    """A window's most extreme spiking reading (sentinel.judge.spikes)."""

    feature: int  # index into the stream's features
    z: float  # |reading - local median| / the device's noise scale for that feature
    age: int  # readings between it and the window's newest reading

    @property
    def exceedance(self) -> float:
        """Chance that normal Gaussian noise of the learnt scale is at least this far off
        its median, for this one reading (two-sided)."""
        return math.erfc(self.z / math.sqrt(2.0))


@dataclass(frozen=True, slots=True)
class LevelHit:
    """A window's feature whose level is furthest off training's (sentinel.judge.levels), or
    that stepped alone against its own recent past (sentinel.judge.shifts)."""

    feature: int  # index into the stream's features
    # levels: |window mean - training's mean of window means| / their standard deviation;
    # shifts: |the step statistic| / its spread over the device's normal readings
    z: float
    # shifts: the step's first reading, as readings before the window's newest (its
    # evidence, sentinel.judge.evidence); None: the window's newest reading
    age: int | None = None

    @property
    def exceedance(self) -> float:
        """Chance that a Gaussian window mean with training's spread is this far off (two-sided)."""
        return math.erfc(self.z / math.sqrt(2.0))


@dataclass(frozen=True, slots=True)
class ConstantHit:
    """A window's feature, constant in training, found away from every value accepted for
    it on the device (sentinel.judge.constants)."""

    feature: int  # index into the stream's features
    value: float  # the departing reading furthest from the expected value
    expected: float  # the value it held in training
    # Chance that a normal reading departs: under 1 in the training readings, none of
    # which did (1 / (n + 1)).
    exceedance: float
    # The newest departing reading of that feature (sentinel.judge.evidence), as readings
    # before the window's newest; None: the newest
    age: int | None = None


@dataclass(frozen=True, slots=True)
class StuckHit:
    """A window's feature whose newest readings repeat one value for longer than training
    ever held one (sentinel.judge.stuck)."""

    feature: int  # index into the stream's features
    run: int  # identical readings ending at the window's newest
    limit: int  # the feature's limit: max(min_run, factor x training's longest run)
    # Chance that a normal window holds such a run: under 1 in the training readings, none
    # of which did (1 / (n + 1)).
    exceedance: float


@dataclass(frozen=True, slots=True)
class NoiseHit:
    """A window's feature whose readings are rougher than training's roughest window by
    more than ``[noise] factor`` (sentinel.judge.noise)."""

    feature: int  # index into the stream's features
    ratio: float  # the window's roughness / training's largest (> factor)
    # Chance that a normal window is this rough: under 1 in the training readings, none of
    # whose windows was (1 / (n + 1)).
    exceedance: float
    # The newest reading that a step beyond the limit led to (sentinel.judge.evidence), as
    # readings before the window's newest; None: the newest
    age: int | None = None


@dataclass(frozen=True, slots=True)
class PeriodHit:
    """A window's feature whose newest period is further from every earlier one than
    training's periods ever were, by more than ``[periods] factor`` (sentinel.judge.periods):
    a daily schedule that did not run."""

    feature: int  # index into the stream's features
    ratio: float  # distance to the nearest earlier period / training's largest (> factor)
    # Chance that a normal period is this far off: under 1 in the training readings, none
    # of whose periods was (1 / (n + 1)).
    exceedance: float
    # The end of the newest block that differed from the neighbour's (sentinel.judge.evidence),
    # as readings before the window's newest (at most the window's oldest); None: the newest
    age: int | None = None


@dataclass(frozen=True, slots=True)
class RelationHit:
    """A window's feature whose mean no longer follows the device's other features as its
    normal windows did (sentinel.judge.relations)."""

    feature: int  # index into the stream's features
    z: float  # |residual| / the device's normal residual scale for the feature (> k)
    # Chance that a Gaussian residual whose ``quantile`` is that scale is this far off.
    exceedance: float
    # The newest of the readings that carry the window's residual (sentinel.judge.evidence),
    # as readings before the window's newest; None: the newest
    age: int | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """A score judged against its device's threshold."""

    score: Score
    threshold: float
    is_anomaly: bool
    # Probability that a normal window of this device scores at least this high: the SPOT
    # tail (GPD) or the quantile method's empirical tail. Only computed for anomalous
    # windows; 1.0 for normal ones.
    exceedance: float = 1.0
    state: ThresholdState | None = None
    # Set when a reading of the window is a spike (sentinel.judge.spikes): the window is then
    # anomalous whatever its score, and ``exceedance`` is the spike's where that is lower.
    spike: SpikeHit | None = None
    # Set when the window's level of a feature is beyond ``[levels] k`` (sentinel.judge.levels):
    # the window is then anomalous whatever its score, as for a spike.
    level: LevelHit | None = None
    # Set when a feature constant in training left its value (sentinel.judge.constants):
    # anomalous whatever the score, as for a spike.
    constant: ConstantHit | None = None
    # Set when a feature's newest readings repeat one value for at least its limit
    # (sentinel.judge.stuck): anomalous whatever the score, as for a spike.
    stuck: StuckHit | None = None
    # Set when a feature's readings are rougher than training ever held them
    # (sentinel.judge.noise): anomalous whatever the score.
    noise: NoiseHit | None = None
    # Set when a feature's window mean left the relations the device's normal windows
    # showed with its other features (sentinel.judge.relations): anomalous whatever the score.
    relation: RelationHit | None = None
    # True when the score was above the threshold in an excursion that recurs with the
    # device's learnt period (sentinel.judge.recurring): judged normal for that reason.
    recurring: bool = False
    # (first, last) timestamps of the readings that made an anomalous window anomalous
    # (sentinel.judge.evidence): what an alert's start and end are taken from. None for a
    # normal window; the window's newest reading where nothing finer is known.
    evidence: tuple[float, float] | None = None
    # True when an anomalous window's only evidence, by the score alone, is one reading
    # or a span of readings which the device's channels took together: at least two
    # features its relations judge moved across it and none of their residuals did
    # (sentinel.judge.relations.Relations.moved_together), as at a pump's load step or
    # ramp, or, with the missed feature among those that moved, across the readings from
    # a quarter of a window before it (Relations.ramped_together: a ramp's end, read every
    # second); or one reading at which one of the detector's commanding inputs changed (a
    # command whose channel moved at its reading in training: Detector.command_indices).
    # Such windows open no alert by themselves (sentinel.judge.alerts).
    joint: bool = False
    # True when an anomalous window is so by the score alone (or beside it only the noise
    # check, on a channel moving one way: sentinel.judge.noise.directed_roughness) and one
    # of the detector's inputs that step (a set point, a command: Detector.stepped_indices,
    # and the commands of sentinel.worker.pipeline.command_channels) changed within the
    # window and its scored readings before the change are normal: the channels' response
    # to that change (sentinel.worker.pipeline._responding); or where the feature that made
    # the score is held at the level its last command's sends set
    # (sentinel.judge.command_levels); or, set by the alert tracker, where it goes on from
    # such windows, scoring lower than the one before (settling:
    # sentinel.judge.alerts._settle); or where the noise check alone, on a channel moving
    # one way, made it anomalous in a window holding such a change (its score normal). A
    # run of such windows opens no alert (sentinel.judge.alerts).
    response: bool = False
    # True when an anomalous window is so by the score alone and its only evidence is one
    # reading of the feature that made the score, and at most the spike check's neighbours
    # readings after it (the forecaster predicted them from it), where that reading's
    # excursion is one the spike check remembers as the device's normal (it recurs as
    # often as normal, or on its period: sentinel.judge.spikes). The spike check judges
    # single readings with the device's memory; a run of such windows opens no alert
    # (sentinel.judge.alerts).
    usual: bool = False
    # Set when a feature's newest period is unlike every earlier one (sentinel.judge.periods):
    # anomalous whatever the score.
    period: PeriodHit | None = None
    # The threshold without what the device's own normal scores taught it: the model's
    # calibration threshold times the device's re-baseline factor (quantile method; None
    # under spot). The unit the recurring-excursion memory measures peaks in, which the
    # device's warm-up does not move (sentinel.judge.recurring).
    baseline: float | None = None

    @property
    def by_score_alone(self) -> bool:
        """Whether the window is judged by its score alone: no check beside it hit."""
        return (
            self.spike is None
            and self.level is None
            and self.constant is None
            and self.stuck is None
            and self.noise is None
            and self.relation is None
            and self.period is None
        )


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"
    RESOLVED = "resolved"  # closed by an operator (sentinel alerts resolve); final


class Severity(StrEnum):
    """How far past the threshold an alert's worst window went, by exceedance probability."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


@dataclass(frozen=True, slots=True)
class FeatureContribution:
    feature: str
    share: float  # fraction of the window's error this feature carried, 0..1


@dataclass(frozen=True, slots=True)
class Alert:
    """State of one alert after a change; the store upserts it by ``uid``."""

    uid: str
    stream: str
    device: str
    status: AlertStatus
    started_at: float
    updated_at: float
    ended_at: float | None
    peak_score: float
    threshold: float  # threshold in force when the alert fired
    top_features: tuple[FeatureContribution, ...]
    model_version: str
    windows: int  # anomalous windows so far
    severity: Severity = Severity.INFO  # the highest reached so far
    reason: AlertReason | None = None  # why it fired: threshold state at opening, config


@dataclass(frozen=True, slots=True)
class AlertReason:
    """Why an alert fired, fixed at opening (contributions and model live on the alert)."""

    threshold: ThresholdState
    exceedance: float  # the opening windows' smallest exceedance probability
    config_hash: str  # sentinel.config.config_hash of the config in force
    # The strongest spike among the opening windows, if any: (feature, z).
    spike: tuple[str, float] | None = None
    # The feature whose level was furthest off among the opening windows, if the level
    # check fired: (feature, z).
    level: tuple[str, float] | None = None
    # The feature constant in training that left its value among the opening windows, if
    # the constant check fired: (feature, reading, training value).
    constant: tuple[str, float, float] | None = None
    # The feature whose readings froze longest among the opening windows, if the stuck
    # check fired: (feature, run of identical readings, its limit).
    stuck: tuple[str, int, int] | None = None
    # The feature furthest off the device's relations among the opening windows, if the
    # relation check fired: (feature, residual in units of its normal scale).
    relation: tuple[str, float] | None = None
    # The feature whose readings were roughest among the opening windows, if the noise
    # check fired: (feature, roughness over training's roughest).
    noise: tuple[str, float] | None = None
    # The feature whose newest period was furthest from every earlier one among the opening
    # windows, if the period check fired: (feature, distance over training's largest).
    period: tuple[str, float] | None = None

    def to_dict(self) -> dict[str, object]:
        t = self.threshold
        data: dict[str, object] = {
            "threshold_method": t.method,
            "threshold_value": t.value,
            "threshold_history": t.history,
            "threshold_risk": t.risk,
            "threshold_warm": t.warm,
            "exceedance": self.exceedance,
            "config_hash": self.config_hash,
        }
        if self.spike is not None:
            data["spike_feature"], data["spike_z"] = self.spike
        if self.level is not None:
            data["level_feature"], data["level_z"] = self.level
        if self.constant is not None:
            name, value, expected = self.constant
            data["constant_feature"], data["constant_value"] = name, value
            data["constant_expected"] = expected
        if self.stuck is not None:
            data["stuck_feature"], data["stuck_run"], data["stuck_limit"] = self.stuck
        if self.relation is not None:
            data["relation_feature"], data["relation_z"] = self.relation
        if self.noise is not None:
            data["noise_feature"], data["noise_ratio"] = self.noise
        if self.period is not None:
            data["period_feature"], data["period_ratio"] = self.period
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> AlertReason:
        risk = data.get("threshold_risk")
        return cls(
            threshold=ThresholdState(
                method=str(data["threshold_method"]),
                value=float(data["threshold_value"]),  # type: ignore[arg-type]
                history=int(data["threshold_history"]),  # type: ignore[call-overload]
                risk=None if risk is None else float(risk),  # type: ignore[arg-type]
                warm=bool(data.get("threshold_warm", True)),
            ),
            exceedance=float(data["exceedance"]),  # type: ignore[arg-type]
            config_hash=str(data["config_hash"]),
            spike=(
                (str(data["spike_feature"]), float(data["spike_z"]))  # type: ignore[arg-type]
                if "spike_feature" in data
                else None
            ),
            level=(
                (str(data["level_feature"]), float(data["level_z"]))  # type: ignore[arg-type]
                if "level_feature" in data
                else None
            ),
            constant=(
                (
                    str(data["constant_feature"]),
                    float(data["constant_value"]),  # type: ignore[arg-type]
                    float(data["constant_expected"]),  # type: ignore[arg-type]
                )
                if "constant_feature" in data
                else None
            ),
            stuck=(
                (
                    str(data["stuck_feature"]),
                    int(data["stuck_run"]),  # type: ignore[call-overload]
                    int(data["stuck_limit"]),  # type: ignore[call-overload]
                )
                if "stuck_feature" in data
                else None
            ),
            relation=(
                (str(data["relation_feature"]), float(data["relation_z"]))  # type: ignore[arg-type]
                if "relation_feature" in data
                else None
            ),
            noise=(
                (str(data["noise_feature"]), float(data["noise_ratio"]))  # type: ignore[arg-type]
                if "noise_feature" in data
                else None
            ),
            period=(
                (str(data["period_feature"]), float(data["period_ratio"]))  # type: ignore[arg-type]
                if "period_feature" in data
                else None
            ),
        )


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """Something the daemon decided that changes how later windows are judged (e.g. a
    threshold re-baselined after a lasting level change); committed with the alerts."""

    stream: str
    device: str
    at: float  # event time, epoch seconds UTC
    kind: str  # "threshold_rebaselined", "alert_resolved", ...
    detail: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceJudgeState:
    """What the judge learnt of one device on ``model_version`` (its part of
    ``thresholds.json``), as it moves with its partition between daemons (issue #24)."""

    stream: str
    device: str
    model_version: str
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeviceProgress:
    """How far ingest got for one device; committed with the alerts it caused.

    ``last_ts`` lets a restarted daemon recognise redelivered messages as duplicates;
    ``readings`` is the running total of readings taken in.
    """

    stream: str
    device: str
    last_ts: float
    readings: int


@dataclass(frozen=True, slots=True)
class ScoreBucket:
    """One device's scored windows of one minute, downsampled for the score history
    (issue #25): committed with the readings whose windows they are.

    A window counts in the minute of its newest reading (event time). ``threshold`` is the
    threshold the highest-scoring window was judged against; ``max_ratio`` is the highest
    score / threshold of any window, which may be another window when the threshold moved.
    """

    stream: str
    device: str
    start: int  # the minute's first second, epoch seconds UTC (a multiple of 60)
    windows: int
    anomalous: int  # windows judged anomalous (by score or by any check)
    max_score: float
    threshold: float
    max_ratio: float

    def merged(self, other: ScoreBucket) -> ScoreBucket:
        """Both buckets' windows as one (same device and minute); what the database's
        upsert does with a row already stored."""
        top = other if other.max_score > self.max_score else self
        return ScoreBucket(
            stream=self.stream,
            device=self.device,
            start=self.start,
            windows=self.windows + other.windows,
            anomalous=self.anomalous + other.anomalous,
            max_score=top.max_score,
            threshold=top.threshold,
            max_ratio=max(self.max_ratio, other.max_ratio),
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-safe, with the minute also as ISO 8601 text."""
        return {
            "stream": self.stream,
            "device": self.device,
            "start": self.start,
            "start_at": datetime.fromtimestamp(self.start, UTC).isoformat(),
            "windows": self.windows,
            "anomalous": self.anomalous,
            "max_score": self.max_score,
            "threshold": self.threshold,
            "max_ratio": self.max_ratio,
        }


@dataclass(frozen=True, slots=True)
class DeviceReset:
    """An operator's ``sentinel devices reset``: the device's stored progress is deleted,
    so its next reading is taken whatever its last timestamp was (a far-future one, say).
    Committed in order with the progress around it, with a ``device_reset`` audit row."""

    stream: str
    device: str
    at: float  # wall clock, epoch seconds UTC
    note: str | None = None


@dataclass(frozen=True, slots=True)
class WriteBatch:
    """What one pass of the pipeline worker asks the writer to commit atomically.

    ``acks`` are sent once the transaction has committed, in the order the messages arrived.
    """

    alerts: tuple[Alert, ...] = ()
    progress: tuple[DeviceProgress, ...] = ()
    acks: tuple[Ack, ...] = field(default=())
    audit: tuple[AuditEvent, ...] = ()
    resets: tuple[DeviceReset, ...] = ()  # applied before this batch's progress
    history: tuple[ScoreBucket, ...] = ()  # this pass's windows, per device and minute
