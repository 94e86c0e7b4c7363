"""The API's JSON bodies as pydantic models: they validate requests and document responses
in the OpenAPI document. Times are ISO 8601 in UTC; list endpoints return a page
(``items``, ``limit``, ``offset``, ``next_offset``) so that a UI can page through a fleet."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sentinel.store import AlertRecord, DeviceRecord

__all__ = [
    "DATABASE_DOWN",
    "Activation",
    "Alert",
    "AlertPage",
    "Device",
    "DevicePage",
    "HealthBody",
    "ModelDetail",
    "ModelPage",
    "ModelVersion",
    "NoteBody",
    "Problem",
    "ScoreHistory",
    "ScoreMinute",
    "Threshold",
    "epoch_to_utc",
]

AlertStatusName = Literal["open", "acknowledged", "closed", "resolved"]
DeviceState = Literal["alerting", "normal", "warming_up", "idle", "no_model", "unknown"]


class Problem(BaseModel):
    """Every error: what went wrong, in words; ``errors`` lists each invalid field."""

    detail: str
    errors: list[dict[str, Any]] | None = None


DATABASE_DOWN: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "The database cannot be reached."}
}


class HealthBody(BaseModel):
    status: Literal["ok", "degraded", "starting", "stopping"]
    problems: list[str]
    checks: dict[str, Any]


class Feature(BaseModel):
    feature: str
    share: float = Field(description="Its share of the alert's reconstruction error, 0..1.")


class Alert(BaseModel):
    """One alert, every stored column (``sentinel alerts show --format json``)."""

    id: int
    uid: str
    stream: str
    device: str
    status: AlertStatusName
    severity: Literal["info", "warning", "critical"]
    started_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    peak_score: float | None
    threshold: float | None = Field(description="The device's threshold when it fired.")
    windows: int = Field(description="Anomalous windows so far.")
    top_features: list[Feature]
    model_version: str
    acknowledged_at: datetime | None
    ack_note: str | None
    reason: dict[str, Any] | None = Field(
        description="Why it fired: threshold state and the checks that flagged it."
    )
    resolved_at: datetime | None
    resolve_note: str | None

    @classmethod
    def of(cls, record: AlertRecord) -> Alert:
        return cls.model_validate(record.to_dict())


class Page(BaseModel):
    limit: int
    offset: int
    next_offset: int | None = Field(description="The offset of the next page; null on the last.")


class AlertPage(Page):
    items: list[Alert] = Field(description="Newest first.")


class NoteBody(BaseModel):
    """An optional note kept with an acknowledgement or a resolution."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2000, pattern=r"^[^\x00]*$")


class Threshold(BaseModel):
    """The threshold the device's next window is judged by."""

    method: Literal["quantile", "spot"]
    value: float | None
    history: int = Field(description="Normal windows it has learnt from.")
    risk: float | None = Field(description="spot: the configured risk q.")
    warm: bool = Field(description="False while it is still the model's calibration one.")


class ScoreMinute(BaseModel):
    """One minute of a device's scored windows (the ``score_history`` table, docs/SQL.md)."""

    start: datetime = Field(description="The minute's first second (event time, UTC).")
    windows: int = Field(description="Windows whose newest reading fell in this minute.")
    anomalous: int = Field(description="Of those, judged anomalous (by score or any check).")
    max_score: float
    threshold: float = Field(description="The threshold the highest-scoring window met.")
    max_ratio: float = Field(description="The highest score / threshold of any window.")


class ScoreHistory(BaseModel):
    """A device's score history over a time range, oldest minute first; ``truncated`` when
    the range held more minutes than ``limit`` (the newest are returned)."""

    stream: str
    device: str
    items: list[ScoreMinute]
    limit: int
    truncated: bool


class Device(BaseModel):
    stream: str
    device: str
    state: DeviceState = Field(
        description="alerting: an open or acknowledged alert; normal; warming_up: its "
        "threshold is still the model's calibration one; idle: not in the daemon's memory "
        "(quiet, or not seen since the start); no_model: its stream is collecting or "
        "training; unknown: the pipeline did not answer in time, or the stream is no "
        "longer configured."
    )
    last_reading_at: datetime | None = Field(
        description="Event time of its newest accepted reading; null if beyond the calendar."
    )
    last_ts: float = Field(description="The same, epoch seconds.")
    ahead_of_clock: bool = Field(
        description="last_ts is ahead of the clock by more than ingest.max_future_skew: "
        "its genuine readings are dropped until it is reset (sentinel devices reset)."
    )
    readings: int
    updated_at: datetime = Field(description="When the daemon last stored its progress.")
    open_alerts: int
    threshold: Threshold | None = Field(description="Null while it is not in memory.")
    model_version: str | None = Field(description="The running model of its stream.")


class DevicePage(Page):
    items: list[Device] = Field(description="By stream, then device name.")


class ModelVersion(BaseModel):
    """One line of ``sentinel models list``."""

    stream: str
    version: str
    role: Literal["active", "previous", ""] = Field(
        description="previous: the version a rollback reactivates."
    )
    status: str = Field(description="The retraining verdict; trained for `sentinel train`'s.")
    data_from: datetime | None
    data_to: datetime | None
    rows: int | None = Field(description="Readings it was trained on.")
    merit: float | None
    parent: str | None


class ModelPage(Page):
    items: list[ModelVersion] = Field(description="Each stream's newest first.")


class ModelDetail(BaseModel):
    """``sentinel models show --format json``: metadata and status as stored, without the
    calibration scores."""

    stream: str
    version: str
    active: bool
    previous: bool = Field(description="The rollback target.")
    running: bool = Field(description="The version the running pipeline scores with.")
    status: dict[str, Any]
    meta: dict[str, Any]


class Activation(BaseModel):
    stream: str
    version: str = Field(description="The version now active in the registry.")
    swapped: bool = Field(
        description="The running daemon was handed the version and swaps it in between "
        "two passes (see running in the model's details)."
    )
    detail: str


def epoch_to_utc(ts: float | None) -> datetime | None:
    """Epoch seconds as an aware UTC datetime; None when beyond the calendar."""
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def device_fields(record: DeviceRecord) -> dict[str, Any]:
    """The stored half of a ``Device``."""
    return {
        "stream": record.stream,
        "device": record.device,
        "last_reading_at": epoch_to_utc(record.last_ts),
        "last_ts": record.last_ts,
        "readings": record.readings,
        "updated_at": record.updated_at,
        "open_alerts": record.open_alerts,
    }
