"""SQLAlchemy 2 typed models of the alert database.

Alembic migrations in ``migrations/`` build this schema; ``create_all`` is never used, so a
change here needs a new revision (``alembic check`` in the tests catches drift).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ALERT_STATUSES",
    "OUTBOX_EVENTS",
    "SEVERITIES",
    "AlertOutboxRow",
    "AlertRow",
    "AuditEventRow",
    "Base",
    "DeviceJudgeStateRow",
    "DeviceStateRow",
    "PartitionEpochRow",
    "ScoreHistoryRow",
]

# Stable constraint names, so that later migrations can address them on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ALERT_STATUSES = ("open", "acknowledged", "closed", "resolved")
SEVERITIES = ("info", "warning", "critical")

# SQLite only autoincrements an INTEGER PRIMARY KEY, not a BIGINT one.
_BigId = BigInteger().with_variant(Integer(), "sqlite")
_Json = JSON().with_variant(JSONB(), "postgresql")
_Timestamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AlertRow(Base):
    """One alert; the daemon upserts it by ``uid``, users acknowledge it by ``id``."""

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint(
            "status IN ({})".format(", ".join(f"'{s}'" for s in ALERT_STATUSES)),
            name="status",
        ),
        CheckConstraint(
            "severity IN ({})".format(", ".join(f"'{s}'" for s in SEVERITIES)),
            name="severity",
        ),
        Index("ix_alerts_stream_device_started_at", "stream", "device", "started_at"),
        Index("ix_alerts_status", "status"),
        Index("ix_alerts_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    stream: Mapped[str] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(_Timestamp)
    updated_at: Mapped[datetime] = mapped_column(_Timestamp)
    ended_at: Mapped[datetime | None] = mapped_column(_Timestamp)
    peak_score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    windows: Mapped[int] = mapped_column(Integer)
    # [{"feature": str, "share": float}, ...], largest share first
    top_features: Mapped[list[dict[str, Any]]] = mapped_column(_Json)
    model_version: Mapped[str] = mapped_column(String(64))
    acknowledged_at: Mapped[datetime | None] = mapped_column(_Timestamp)
    ack_note: Mapped[str | None] = mapped_column(Text)
    # Revision 0004: severity (the highest reached), why it fired, operator resolution.
    severity: Mapped[str] = mapped_column(String(16), server_default="info")
    # {"threshold_method", "threshold_value", "threshold_history", "threshold_risk",
    #  "threshold_warm", "exceedance", "config_hash"}; NULL for alerts from before 0004
    reason: Mapped[dict[str, Any] | None] = mapped_column(_Json)
    resolved_at: Mapped[datetime | None] = mapped_column(_Timestamp)
    resolve_note: Mapped[str | None] = mapped_column(Text)


class DeviceStateRow(Base):
    """How far ingest got for one device; written in the same transaction as its alerts."""

    __tablename__ = "device_state"

    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    device: Mapped[str] = mapped_column(String(128), primary_key=True)
    # Epoch seconds as a float, not a timestamp: the daemon compares it exactly with incoming
    # event times to recognise messages the broker redelivers after a restart.
    last_ts: Mapped[float] = mapped_column(Float)
    readings: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(_Timestamp)


class DeviceJudgeStateRow(Base):
    """What the judge learnt of one device, for the daemon that takes its partition next
    (``[cluster]``, sentinel.store.judge_state); migration 0006."""

    __tablename__ = "device_judge_state"
    __table_args__ = (Index("ix_device_judge_state_partition", "partition"),)

    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    device: Mapped[str] = mapped_column(String(128), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer)
    model_version: Mapped[str] = mapped_column(String(64))
    state: Mapped[dict[str, Any]] = mapped_column(_Json)
    updated_at: Mapped[datetime] = mapped_column(_Timestamp)


class PartitionEpochRow(Base):
    """The fencing epoch of one partition of a cluster group (``[cluster]``, issue #24);
    migration 0007. Each new owner bumps it; a writer commits a partition's readings only
    under a share lock on this row, holding the epoch it acquired with
    (sentinel.cluster.fence)."""

    __tablename__ = "partition_epochs"

    group_key: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger)
    member: Mapped[str] = mapped_column(String(128))  # who took it last, for people
    updated_at: Mapped[datetime] = mapped_column(_Timestamp)


OUTBOX_EVENTS = ("new", "update", "end")


class AlertOutboxRow(Base):
    """One alert event to publish over MQTT, written in the transaction of the change.

    The publisher sends unpublished rows in ``id`` order and sets ``published_at`` once the
    broker acknowledged them; ``(uid, seq)`` lets consumers de-duplicate (docs/MQTT.md).
    """

    __tablename__ = "alert_outbox"
    __table_args__ = (
        CheckConstraint(
            "event IN ({})".format(", ".join(f"'{e}'" for e in OUTBOX_EVENTS)), name="event"
        ),
        UniqueConstraint("uid", "seq", name="uq_alert_outbox_uid_seq"),
        Index("ix_alert_outbox_published_at", "published_at"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(String(36))
    seq: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per alert
    event: Mapped[str] = mapped_column(String(8))
    stream: Mapped[str] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(_Json)  # the message, as published
    created_at: Mapped[datetime] = mapped_column(_Timestamp)
    published_at: Mapped[datetime | None] = mapped_column(_Timestamp)


class AuditEventRow(Base):
    """A decision of the daemon or an operator that changes how later data is judged, e.g.
    a threshold re-baselined after a lasting level change, or an alert resolved."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_stream_device_at", "stream", "device", "at"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(_Timestamp)  # event time (data time) of the decision
    kind: Mapped[str] = mapped_column(String(64))
    stream: Mapped[str] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(128))
    detail: Mapped[dict[str, Any]] = mapped_column(_Json)
    recorded_at: Mapped[datetime] = mapped_column(_Timestamp)  # wall clock of the write


class ScoreHistoryRow(Base):
    """One device's scored windows of one minute (issue #25), merged into by the writer in
    the transaction of the readings behind them; pruned after ``history.retention``.

    The key leads with the minute: every commit upserts the current minute of the devices
    it judged, and those rows then lie together at the end of the table. Keyed by device
    first, each lay on a page of its own, and at 1,000 pumps with a day of history a
    commit rewrote ~40 pages of it (docs/BENCHMARKS.md, "Score history keyed by time").
    The ``device`` index serves a device's time range (the REST API's device view); it
    changes only when a device's minute is new. On SQLite the table is WITHOUT ROWID: the
    key is the table, not a second copy of it (docs/BENCHMARKS.md, *Score history*).
    """

    __tablename__ = "score_history"
    __table_args__ = (
        PrimaryKeyConstraint("bucket", "stream", "device"),
        Index("ix_score_history_device", "stream", "device", "bucket"),
        {"sqlite_with_rowid": False},
    )

    stream: Mapped[str] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(128))
    # The minute's first second, epoch seconds UTC (event time): integers keep the key and
    # its index small; the score_history_minutes view shows it as a timestamp.
    bucket: Mapped[int] = mapped_column(BigInteger)
    windows: Mapped[int] = mapped_column(Integer)
    anomalous: Mapped[int] = mapped_column(Integer)
    max_score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)  # that of the max_score window
    max_ratio: Mapped[float] = mapped_column(Float)  # highest score / threshold
