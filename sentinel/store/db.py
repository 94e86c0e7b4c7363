"""AlertStore: the engine, schema migrations, and every read and write of the alert database.

SQLite (the default, on the edge box) runs in WAL mode with a busy timeout so that readers
(the CLI, a dashboard) never block the daemon's single writer thread; PostgreSQL is reached
through psycopg 3. Both take the same statements: upserts use ``INSERT .. ON CONFLICT``,
which both dialects support.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import structlog
from sqlalchemy import (
    Engine,
    Select,
    and_,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session

from sentinel.errors import FencedError, StoreError
from sentinel.records import (
    Alert,
    AlertReason,
    AlertStatus,
    AuditEvent,
    DeviceProgress,
    DeviceReset,
    FeatureContribution,
    ScoreBucket,
    Severity,
    WriteBatch,
)
from sentinel.store.history import prune_history, read_history, record_history
from sentinel.store.outbox import (
    OutboxPolicy,
    record_acknowledgement,
    record_events,
    record_resolution,
)
from sentinel.store.schema import AlertRow, AuditEventRow, DeviceStateRow

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "MIGRATIONS_DIR",
    "AlertRecord",
    "AlertStore",
    "DeviceRecord",
    "SqliteDurability",
    "WriteFence",
    "normalize_url",
]

log = structlog.get_logger(__name__)


def _migrations_dir() -> Path:
    """The alembic scripts: at the top of the repository for source and editable installs;
    under ``<prefix>/share/sentinel/migrations`` for an installed wheel (pyproject's
    data-files), e.g. /opt/sentinel/venv from deploy/install.sh."""
    source = Path(__file__).resolve().parents[2] / "migrations"
    if (source / "env.py").is_file():
        return source
    return Path(sys.prefix) / "share" / "sentinel" / "migrations"


MIGRATIONS_DIR = _migrations_dir()
# The newest revision under MIGRATIONS_DIR (tests/store/test_migrations.py holds the two
# equal): a daemon whose database is already there skips alembic, and with it ~11 MB of RSS
# for its imports (issue #23, memory).
SCHEMA_HEAD = "0008"
# pg_advisory_xact_lock key held while migrating ("sentinel" in ASCII, a fixed number).
_MIGRATE_LOCK = 0x73656E74696E656C

_NO_SCHEMA_HINT = (
    "the daemon creates it at its first start (`sentinel run`), or `sentinel migrate` now"
)


def _alembic_config() -> Config:
    from alembic.config import Config  # only to migrate or check: see SCHEMA_HEAD

    cfg = Config()
    # Config values are %-interpolated; a path may contain '%'.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return cfg


_ACTIVE = (AlertStatus.OPEN.value, AlertStatus.ACKNOWLEDGED.value)
_ENDED = (AlertStatus.CLOSED.value, AlertStatus.RESOLVED.value)
# Among the uids of a commit (an expanding IN), those an operator resolved; built once.
_RESOLVED_AMONG = select(AlertRow.uid).where(
    AlertRow.uid.in_(bindparam("uids", expanding=True)),
    AlertRow.status == AlertStatus.RESOLVED.value,
)


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL; plain ``postgresql://`` (or ``postgres://``) gets psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise StoreError(f"not a database URL: {err}") from err
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(f"unsupported database {parsed.get_backend_name()!r}")
    return parsed


def to_datetime(ts: float) -> datetime:
    """Epoch seconds to an aware UTC datetime (microsecond precision)."""
    return datetime.fromtimestamp(ts, UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One stored alert as users see it: every column, datetimes aware and in UTC."""

    id: int
    uid: str
    stream: str
    device: str
    status: AlertStatus
    started_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    peak_score: float
    threshold: float
    windows: int
    top_features: tuple[FeatureContribution, ...]
    model_version: str
    acknowledged_at: datetime | None
    ack_note: str | None
    severity: Severity = Severity.INFO
    reason: dict[str, Any] | None = None  # AlertReason.to_dict(); None before revision 0004
    resolved_at: datetime | None = None
    resolve_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: datetimes as ISO 8601 strings, status as its string value."""
        return {
            "id": self.id,
            "uid": self.uid,
            "stream": self.stream,
            "device": self.device,
            "status": self.status.value,
            "started_at": self.started_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "ended_at": _iso(self.ended_at),
            "peak_score": self.peak_score,
            "threshold": self.threshold,
            "windows": self.windows,
            "top_features": [{"feature": f.feature, "share": f.share} for f in self.top_features],
            "model_version": self.model_version,
            "acknowledged_at": _iso(self.acknowledged_at),
            "ack_note": self.ack_note,
            "severity": self.severity.value,
            "reason": self.reason,
            "resolved_at": _iso(self.resolved_at),
            "resolve_note": self.resolve_note,
        }

    @classmethod
    def from_row(cls, row: AlertRow) -> AlertRecord:
        return cls(
            id=row.id,
            uid=row.uid,
            stream=row.stream,
            device=row.device,
            status=AlertStatus(row.status),
            started_at=as_utc(row.started_at),
            updated_at=as_utc(row.updated_at),
            ended_at=_opt_utc(row.ended_at),
            peak_score=row.peak_score,
            threshold=row.threshold,
            windows=row.windows,
            top_features=_features(row.top_features),
            model_version=row.model_version,
            acknowledged_at=_opt_utc(row.acknowledged_at),
            ack_note=row.ack_note,
            severity=Severity(row.severity),
            reason=row.reason,
            resolved_at=_opt_utc(row.resolved_at),
            resolve_note=row.resolve_note,
        )


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """One device's stored state as ``sentinel devices list`` shows it."""

    stream: str
    device: str
    last_ts: float  # its newest accepted reading (event time, epoch seconds)
    readings: int
    updated_at: datetime  # when the daemon last wrote this row (wall clock)
    open_alerts: int  # open or acknowledged

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "device": self.device,
            "last_ts": self.last_ts,
            "last_reading_at": _epoch_iso(self.last_ts),
            "readings": self.readings,
            "updated_at": self.updated_at.isoformat(),
            "open_alerts": self.open_alerts,
        }


def _epoch_iso(ts: float) -> str | None:
    try:
        return to_datetime(ts).isoformat()
    except (OverflowError, OSError, ValueError):  # beyond datetime's range
        return None


def _features(raw: Iterable[dict[str, Any]] | None) -> tuple[FeatureContribution, ...]:
    return tuple(
        FeatureContribution(feature=str(f["feature"]), share=float(f["share"])) for f in raw or ()
    )


def _alert_params(alert: Alert) -> dict[str, Any]:
    return {
        "uid": alert.uid,
        "stream": alert.stream,
        "device": alert.device,
        "status": AlertStatus(alert.status).value,
        "started_at": to_datetime(alert.started_at),
        "updated_at": to_datetime(alert.updated_at),
        "ended_at": None if alert.ended_at is None else to_datetime(alert.ended_at),
        "peak_score": alert.peak_score,
        "threshold": alert.threshold,
        "windows": alert.windows,
        "top_features": [{"feature": f.feature, "share": f.share} for f in alert.top_features],
        "model_version": alert.model_version,
        "severity": Severity(alert.severity).value,
        "reason": alert.reason.to_dict() if alert.reason is not None else None,
    }


def _to_alert(r: AlertRow) -> Alert:
    """A stored row back as the daemon's record (for restoring state at start)."""
    reason = None
    if r.reason:
        try:
            reason = AlertReason.from_dict(r.reason)
        except (KeyError, TypeError, ValueError):
            reason = None  # a reason the daemon cannot read is left as it is in the row
    return Alert(
        uid=r.uid,
        stream=r.stream,
        device=r.device,
        status=AlertStatus(r.status),
        started_at=as_utc(r.started_at).timestamp(),
        updated_at=as_utc(r.updated_at).timestamp(),
        ended_at=None if r.ended_at is None else as_utc(r.ended_at).timestamp(),
        peak_score=r.peak_score,
        threshold=r.threshold,
        top_features=_features(r.top_features),
        model_version=r.model_version,
        windows=r.windows,
        severity=Severity(r.severity),
        reason=reason,
    )


def _delete_progress(conn: Connection, resets: Iterable[DeviceReset], now: datetime) -> int:
    """Delete the reset devices' stored progress, each with a ``device_reset`` audit row
    saying what it was; returns how many rows there were."""
    deleted = 0
    for reset in resets:
        where = and_(DeviceStateRow.stream == reset.stream, DeviceStateRow.device == reset.device)
        row = conn.execute(
            select(DeviceStateRow.last_ts, DeviceStateRow.readings).where(where)
        ).first()
        if row is not None:
            conn.execute(delete(DeviceStateRow).where(where))
            deleted += 1
        event = AuditEvent(
            stream=reset.stream,
            device=reset.device,
            at=reset.at,
            kind="device_reset",
            detail={
                "last_ts": None if row is None else row.last_ts,
                "readings": None if row is None else row.readings,
                "note": reset.note,
            },
        )
        conn.execute(insert(AuditEventRow), [_audit_params(event, now)])
    return deleted


def _audit_params(event: AuditEvent, now: datetime) -> dict[str, Any]:
    return {
        "at": to_datetime(event.at),
        "kind": event.kind,
        "stream": event.stream,
        "device": event.device,
        "detail": dict(event.detail),
        "recorded_at": now,
    }


SqliteDurability = Literal["full", "unsafe-on-power-loss"]
# In WAL mode FULL syncs the WAL at every commit; NORMAL only at checkpoints, so a power cut
# can roll back the commits since the last one, which are durable against a crash of the
# process only (https://www.sqlite.org/pragma.html#pragma_synchronous). An ack follows a
# commit, so only FULL keeps an acknowledged reading through a power cut (issue #22).
_SYNCHRONOUS: dict[SqliteDurability, str] = {"full": "FULL", "unsafe-on-power-loss": "NORMAL"}


def _set_sqlite_pragmas(busy_timeout_ms: int, durability: SqliteDurability) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (see on_begin): the sqlite3 module's legacy
        # transaction control skips BEGIN before SELECT and DDL, so neither reads nor
        # migrations would be transactional.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute(f"PRAGMA synchronous={_SYNCHRONOUS[durability]}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    return on_connect


_IMMEDIATE = "sentinel_begin_immediate"


def _on_sqlite_begin(conn: Connection) -> None:
    # A transaction that reads before it writes must take the write lock up front: in WAL
    # mode, upgrading a read snapshot after another connection committed fails at once with
    # SQLITE_BUSY ("database is locked"), without waiting for busy_timeout.
    immediate = conn.get_execution_options().get(_IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class WriteFence(Protocol):
    """What a cluster member's writer checks before committing (sentinel.cluster.fence)."""

    def partition_of(self, device: str) -> int: ...

    def check(self, conn: Connection, devices: Iterable[str]) -> frozenset[int]:
        """The partitions among the devices' that may not be committed, after locking
        what keeps them so until the transaction ends."""
        ...


class AlertStore:
    """Engine, migrations, reads and writes. Thread-safe; writes come from one thread."""

    def __init__(
        self,
        url: str,
        *,
        busy_timeout_ms: int = 5000,
        sqlite_durability: SqliteDurability = "full",
        outbox: OutboxPolicy | None = None,
    ) -> None:
        self._url = normalize_url(url)
        self._busy_timeout_ms = busy_timeout_ms
        self._durability = sqlite_durability
        # With a policy, write() also records alert events for MQTT (sentinel/store/outbox.py).
        self._outbox = outbox
        self._engine: Engine | None = None
        self._alert_upsert_stmt: Any = None
        self._progress_upsert_stmt: Any = None

    @property
    def url(self) -> str:
        """The URL with any password hidden, safe to log."""
        return self._url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self._url.get_backend_name()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("AlertStore.open() has not been called")
        return self._engine

    def open(self, *, create: bool = True) -> None:
        """Connect. ``create=False`` (commands that read what the daemon wrote) refuses a
        SQLite file that does not exist instead of creating an empty one."""
        if self._engine is not None:
            return
        database = self._url.database
        if (
            not create
            and self.dialect == "sqlite"
            and database
            and database != ":memory:"
            and not database.startswith("file:")
            and not Path(database).expanduser().exists()
        ):
            raise StoreError(f"no database at {database} yet: {_NO_SCHEMA_HINT}")
        try:
            if self.dialect == "sqlite":
                self._engine = self._sqlite_engine()
            else:
                self._engine = create_engine(self._url, pool_pre_ping=True)
        except (SQLAlchemyError, OSError) as err:
            raise StoreError(f"cannot open database {self.url}: {err}") from err
        log.info("store_opened", url=self.url, dialect=self.dialect)

    def _sqlite_engine(self) -> Engine:
        database = self._url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(self._url, pool_pre_ping=True)
        event.listen(
            engine, "connect", _set_sqlite_pragmas(self._busy_timeout_ms, self._durability)
        )
        event.listen(engine, "begin", _on_sqlite_begin)
        return engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def check_schema(self) -> None:
        """Raise StoreError, saying what to run, unless the schema is at the newest
        revision: a command run before the daemon's first start, or after an upgrade the
        daemon has not started on yet, met raw SQL errors ("no such table: alerts")."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        try:
            with self.engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
        except SQLAlchemyError as err:
            raise StoreError(f"cannot read database {self.url}: {err}") from err
        scripts = ScriptDirectory.from_config(_alembic_config())
        head = scripts.get_current_head()
        if current == head:
            return
        if current is None:
            raise StoreError(f"{self.url} holds no Sentinel schema yet: {_NO_SCHEMA_HINT}")
        known = {rev.revision for rev in scripts.walk_revisions()}
        if current not in known:
            raise StoreError(
                f"{self.url} has schema revision {current}, which this version of sentinel "
                f"does not know (newest it knows: {head}): it was written by a newer sentinel"
            )
        raise StoreError(
            f"{self.url} has schema revision {current}; this version of sentinel needs "
            f"{head}: run `sentinel migrate` (the daemon also migrates at its start)"
        )

    def migrate(self, on_start: Callable[[], object] | None = None) -> None:
        """Bring the schema up to the newest revision (``alembic upgrade head``); a schema
        already at ``SCHEMA_HEAD`` is left alone without importing alembic. ``on_start`` is
        called first when there is something to migrate: a migration may copy a table
        (0008 re-keys the score history, ~2.5 s per million rows on a desktop core), and
        the daemon asks systemd for the time."""
        revisions = self._revisions()
        if revisions == [SCHEMA_HEAD]:
            log.info("store_current", url=self.url, revision=SCHEMA_HEAD)
            return
        log.info("store_migrating", url=self.url, revisions=revisions, to=SCHEMA_HEAD)
        if on_start is not None:
            on_start()
        from alembic import command
        from alembic.util import CommandError

        cfg = _alembic_config()
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    # Daemons sharing the database start together (sentinel.cluster): one
                    # migrates, the others wait here and then find the schema current.
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK})
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except (SQLAlchemyError, CommandError, OSError) as err:
            raise StoreError(f"cannot migrate database {self.url}: {err}") from err
        log.info("store_migrated", url=self.url)

    def _revisions(self) -> list[str]:
        """The revisions alembic has stamped (one, or none on a new database)."""
        try:
            with self.engine.connect() as conn:
                if not inspect(conn).has_table("alembic_version"):
                    return []
                rows = conn.execute(text("SELECT version_num FROM alembic_version"))
                return [str(row[0]) for row in rows]
        except SQLAlchemyError:
            return []  # alembic's upgrade reports what is wrong

    def write(self, batches: Sequence[WriteBatch], fence: WriteFence | None = None) -> set[str]:
        """Commit the alerts, device progress, audit events and score history of all batches
        in one transaction; returns the uids among the alerts that an operator has resolved.

        With a ``fence`` (a cluster member), the transaction first has the fence check the
        partitions of every device it touches; if some may not be committed, it writes
        nothing and raises FencedError naming them.

        A uid (or device) that appears more than once is written once, with its last state.
        A resolved alert's row is final: the daemon's updates of it are not applied, and the
        returned uids tell the daemon to treat those alerts as closed.
        """
        alerts: dict[str, Alert] = {}
        changes: list[Alert] = []  # every change, in order, for the outbox
        progress: dict[tuple[str, str], DeviceProgress] = {}
        resets: dict[tuple[str, str], DeviceReset] = {}
        audit: list[AuditEvent] = []
        history: list[ScoreBucket] = []
        for batch in batches:
            for alert in batch.alerts:
                alerts[alert.uid] = alert
                changes.append(alert)
            for reset in batch.resets:
                # Deleted before the progress is written: only progress after it counts.
                progress.pop((reset.stream, reset.device), None)
                resets[(reset.stream, reset.device)] = reset
            for p in batch.progress:
                progress[(p.stream, p.device)] = p
            audit.extend(batch.audit)
            history.extend(batch.history)
        if not alerts and not progress and not audit and not resets and not history:
            return set()
        now = datetime.now(UTC)
        resolved: set[str] = set()
        try:
            with (
                self.engine.connect().execution_options(**{_IMMEDIATE: True}) as conn,
                conn.begin(),
            ):
                if fence is not None:
                    touched = {a.device for a in alerts.values()}
                    touched.update(device for _, device in progress)
                    touched.update(device for _, device in resets)
                    touched.update(h.device for h in history)
                    stale = fence.check(conn, touched)
                    if stale:
                        raise FencedError(stale)  # rolls the transaction back
                if alerts:
                    uids = list(alerts)
                    for start in range(0, len(uids), 500):  # bound the IN list
                        chunk = {"uids": uids[start : start + 500]}
                        resolved.update(conn.scalars(_RESOLVED_AMONG, chunk))
                    conn.execute(self._alert_upsert(), [_alert_params(a) for a in alerts.values()])
                    if self._outbox is not None:
                        # A resolved alert's row is final, and its end was published when
                        # the operator resolved it.
                        published = [c for c in changes if c.uid not in resolved]
                        record_events(conn, published, self._outbox, now)
                if resets:
                    _delete_progress(conn, resets.values(), now)
                if progress:
                    conn.execute(
                        self._progress_upsert(),
                        [
                            {
                                "stream": p.stream,
                                "device": p.device,
                                "last_ts": p.last_ts,
                                "readings": p.readings,
                                "updated_at": now,
                            }
                            for p in progress.values()
                        ],
                    )
                if audit:
                    conn.execute(insert(AuditEventRow), [_audit_params(e, now) for e in audit])
                if history:
                    record_history(conn, history)
        except SQLAlchemyError as err:
            raise StoreError(f"write to {self.url} failed: {err}") from err
        return resolved

    def score_history(
        self,
        stream: str,
        device: str,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        limit: int = 50_000,
    ) -> list[ScoreBucket]:
        """A device's per-minute score history: the minutes starting in [since, until)
        (naive datetimes mean UTC), oldest first; the newest ``limit`` when there are more."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        try:
            return read_history(self.engine, stream, device, since, until, limit)
        except SQLAlchemyError as err:
            raise StoreError(f"read from {self.url} failed: {err}") from err

    def prune_history(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` of the oldest history minutes that started before
        ``before``; returns how many (the writer calls this between its commits)."""
        try:
            with (
                self.engine.connect().execution_options(**{_IMMEDIATE: True}) as conn,
                conn.begin(),
            ):
                return prune_history(conn, before, limit)
        except SQLAlchemyError as err:
            raise StoreError(f"prune of {self.url} failed: {err}") from err

    def _insert(self, table: Any) -> Any:
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        return insert(table)

    def _alert_upsert(self) -> Any:
        # Built once: building a statement cost the writer more than running it (issue #23).
        if self._alert_upsert_stmt is None:
            self._alert_upsert_stmt = self._build_alert_upsert()
        return self._alert_upsert_stmt

    def _progress_upsert(self) -> Any:
        if self._progress_upsert_stmt is None:
            self._progress_upsert_stmt = self._build_progress_upsert()
        return self._progress_upsert_stmt

    def _build_alert_upsert(self) -> Any:
        stmt = self._insert(AlertRow)
        new = stmt.excluded
        closed = AlertStatus.CLOSED.value
        return stmt.on_conflict_do_update(
            index_elements=[AlertRow.uid],
            # A resolved alert belongs to the operator who resolved it: left alone.
            where=AlertRow.status != AlertStatus.RESOLVED.value,
            set_={
                "updated_at": new.updated_at,
                "ended_at": new.ended_at,
                "peak_score": new.peak_score,
                "windows": new.windows,
                "top_features": new.top_features,
                "model_version": new.model_version,
                # The daemon only ever opens or closes; "acknowledged" belongs to the user
                # and must survive the daemon's later updates of the same alert. A closed
                # alert the daemon reopens (alerts.cooldown) takes the daemon's status.
                "status": case(
                    (new.status == closed, closed),
                    (AlertRow.status == closed, new.status),
                    else_=AlertRow.status,
                ),
                "severity": new.severity,
            },
        )

    def _build_progress_upsert(self) -> Any:
        stmt = self._insert(DeviceStateRow)
        new = stmt.excluded
        return stmt.on_conflict_do_update(
            index_elements=[DeviceStateRow.stream, DeviceStateRow.device],
            set_={
                "last_ts": case(
                    (new.last_ts > DeviceStateRow.last_ts, new.last_ts),
                    else_=DeviceStateRow.last_ts,
                ),
                "readings": new.readings,
                "updated_at": new.updated_at,
            },
        )

    def open_alerts(self) -> list[Alert]:
        """Alerts still open or acknowledged, oldest first, as the daemon's records."""
        query = (
            select(AlertRow)
            .where(AlertRow.status.in_(_ACTIVE))
            .order_by(AlertRow.started_at, AlertRow.id)
        )
        try:
            with Session(self.engine) as session:
                rows = session.scalars(query).all()
        except SQLAlchemyError as err:
            raise StoreError(f"read from {self.url} failed: {err}") from err
        return [_to_alert(r) for r in rows]

    def last_ended_alerts(self) -> list[Alert]:
        """Per stream and device, the alert that ended last (closed or resolved): what the
        daemon needs at start to keep honouring ``alerts.cooldown`` across a restart."""
        latest = (
            select(
                AlertRow.stream,
                AlertRow.device,
                func.max(AlertRow.ended_at).label("ended_at"),
            )
            .where(AlertRow.status.in_(_ENDED), AlertRow.ended_at.is_not(None))
            .group_by(AlertRow.stream, AlertRow.device)
            .subquery()
        )
        query = (
            select(AlertRow)
            .join(
                latest,
                (AlertRow.stream == latest.c.stream)
                & (AlertRow.device == latest.c.device)
                & (AlertRow.ended_at == latest.c.ended_at),
            )
            .where(AlertRow.status.in_(_ENDED))
            .order_by(AlertRow.id)
        )
        try:
            with Session(self.engine) as session:
                rows = session.scalars(query).all()
        except SQLAlchemyError as err:
            raise StoreError(f"read from {self.url} failed: {err}") from err
        return [_to_alert(r) for r in rows]

    def device_progress(
        self, stream: str | None = None, devices: Collection[str] | None = None
    ) -> dict[tuple[str, str], DeviceProgress]:
        """Stored progress of every device, or of ``devices`` of ``stream`` (what the
        daemon recalls when a device it does not hold sends a reading)."""
        query = select(
            DeviceStateRow.stream,
            DeviceStateRow.device,
            DeviceStateRow.last_ts,
            DeviceStateRow.readings,
        )
        if stream is not None:
            query = query.where(DeviceStateRow.stream == stream)
        names = None if devices is None else list(devices)
        try:
            with self.engine.connect() as conn:
                if names is None:
                    rows = conn.execute(query).all()
                else:
                    rows = []
                    for start in range(0, len(names), 500):  # bound the IN list
                        chunk = names[start : start + 500]
                        rows += conn.execute(query.where(DeviceStateRow.device.in_(chunk))).all()
        except SQLAlchemyError as err:
            raise StoreError(f"read from {self.url} failed: {err}") from err
        return {
            (r.stream, r.device): DeviceProgress(
                stream=r.stream, device=r.device, last_ts=r.last_ts, readings=r.readings
            )
            for r in rows
        }

    def devices(
        self,
        stream: str | None = None,
        *,
        device: str | None = None,
        ahead_of: float | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[DeviceRecord]:
        """Every device's stored state with its count of open alerts, by stream and name;
        with ``device``, that one; with ``ahead_of``, only those whose last timestamp is
        later than it; ``limit`` and ``offset`` page through them (the REST API)."""
        active = (
            select(AlertRow.stream, AlertRow.device, func.count().label("open_alerts"))
            .where(AlertRow.status.in_(_ACTIVE))
            .group_by(AlertRow.stream, AlertRow.device)
            .subquery()
        )
        query = select(DeviceStateRow, func.coalesce(active.c.open_alerts, 0)).outerjoin(
            active,
            and_(
                active.c.stream == DeviceStateRow.stream, active.c.device == DeviceStateRow.device
            ),
        )
        if stream is not None:
            query = query.where(DeviceStateRow.stream == stream)
        if device is not None:
            query = query.where(DeviceStateRow.device == device)
        if ahead_of is not None:
            query = query.where(DeviceStateRow.last_ts > ahead_of)
        query = query.order_by(DeviceStateRow.stream, DeviceStateRow.device).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        try:
            with Session(self.engine) as session:
                return [
                    DeviceRecord(
                        stream=row.stream,
                        device=row.device,
                        last_ts=row.last_ts,
                        readings=row.readings,
                        updated_at=as_utc(row.updated_at),
                        open_alerts=int(count),
                    )
                    for row, count in session.execute(query)
                ]
        except SQLAlchemyError as err:
            raise StoreError(f"read from {self.url} failed: {err}") from err

    def reset_devices(self, stream: str, devices: Iterable[str], note: str | None = None) -> int:
        """Delete devices' stored progress with a ``device_reset`` audit row each, for when
        no daemon runs (a running one is asked through its control socket, and commits
        the same through its writer); returns how many had stored progress."""
        now = datetime.now(UTC)
        resets = [DeviceReset(stream, d, now.timestamp(), note) for d in devices]
        try:
            with (
                self.engine.connect().execution_options(**{_IMMEDIATE: True}) as conn,
                conn.begin(),
            ):
                return _delete_progress(conn, resets, now)
        except SQLAlchemyError as err:
            raise StoreError(f"reset in {self.url} failed: {err}") from err

    def list_alerts(
        self,
        *,
        since: datetime | None = None,
        device: str | None = None,
        stream: str | None = None,
        status: str | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[AlertRecord]:
        """Alerts newest first; ``since`` bounds ``started_at`` (naive means UTC); ``offset``
        skips that many (the REST API's pages)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if offset < 0:
            raise ValueError("offset must not be negative")
        query = select(AlertRow)
        if since is not None:
            query = query.where(AlertRow.started_at >= as_utc(since))
        if device is not None:
            query = query.where(AlertRow.device == device)
        if stream is not None:
            query = query.where(AlertRow.stream == stream)
        if status is not None:
            query = query.where(AlertRow.status == AlertStatus(status).value)
        query = query.order_by(AlertRow.started_at.desc(), AlertRow.id.desc())
        return self._records(query.limit(limit).offset(offset))

    def get_alert(self, alert_id: int) -> AlertRecord | None:
        records = self._records(select(AlertRow).where(AlertRow.id == alert_id))
        return records[0] if records else None

    def _records(self, query: Select[Any]) -> list[AlertRecord]:
        try:
            with Session(self.engine) as session:
                return [AlertRecord.from_row(r) for r in session.scalars(query)]
        except SQLAlchemyError as err:
            raise StoreError(f"read from {self.url} failed: {err}") from err

    def acknowledge(
        self, alert_id: int, note: str | None = None, now: datetime | None = None
    ) -> AlertRecord:
        """Record a user's acknowledgement; raises KeyError when there is no such alert.

        An open alert becomes "acknowledged"; a closed one stays closed but keeps the record
        of who looked at it. A ``note`` of None keeps any earlier note.
        """
        values: dict[str, Any] = {
            "acknowledged_at": as_utc(now) if now is not None else datetime.now(UTC),
            "status": case(
                (AlertRow.status == AlertStatus.OPEN.value, AlertStatus.ACKNOWLEDGED.value),
                else_=AlertRow.status,
            ),
        }
        if note is not None:
            values["ack_note"] = note
        # UPDATE first, then read back: on SQLite a read that upgrades to a write can fail
        # with SQLITE_BUSY at once instead of waiting out the busy timeout.
        try:
            with self.engine.begin() as conn:
                stmt = update(AlertRow).where(AlertRow.id == alert_id).values(values)
                result = conn.execute(stmt)
                if result.rowcount == 0:
                    raise KeyError(alert_id)
                with Session(bind=conn) as session:
                    row = session.scalars(select(AlertRow).where(AlertRow.id == alert_id)).one()
                    record = AlertRecord.from_row(row)
                # Published alerts publish their acknowledgement too, in this transaction.
                record_acknowledgement(conn, record.to_dict(), datetime.now(UTC))
                return record
        except SQLAlchemyError as err:
            raise StoreError(f"acknowledge in {self.url} failed: {err}") from err

    def resolve(
        self, alert_id: int, note: str | None = None, now: datetime | None = None
    ) -> AlertRecord:
        """An operator closes an alert for good; raises KeyError when there is no such alert.

        The row becomes ``resolved`` with ``resolved_at`` (wall clock, the first resolve
        counts), ``ended_at`` (its last anomalous window, if it had not ended) and the note.
        The daemon's later updates of it are ignored (see ``write``), and it reopens no
        alert on that device within ``alerts.cooldown``. The resolve that changes the status
        writes an ``alert_resolved`` audit event in the same transaction; resolving it again
        only replaces the note (when one is given) and writes no second event.
        """
        at = as_utc(now) if now is not None else datetime.now(UTC)
        resolved = AlertStatus.RESOLVED.value
        values: dict[str, Any] = {
            "status": resolved,
            "resolved_at": at,
            "ended_at": func.coalesce(AlertRow.ended_at, AlertRow.updated_at),
        }
        if note is not None:
            values["resolve_note"] = note
        this = AlertRow.id == alert_id
        try:
            with self.engine.begin() as conn:
                # The status condition makes exactly one of two racing resolves the first.
                stmt = update(AlertRow).where(this, AlertRow.status != resolved)
                first = conn.execute(stmt.values(values)).rowcount == 1
                if not first and note is not None:
                    conn.execute(update(AlertRow).where(this).values(resolve_note=note))
                with Session(bind=conn) as session:
                    row = session.scalars(select(AlertRow).where(this)).one_or_none()
                    if row is None:
                        raise KeyError(alert_id)
                    record = AlertRecord.from_row(row)
                if not first:
                    return record
                event = AuditEvent(
                    stream=record.stream,
                    device=record.device,
                    at=at.timestamp(),
                    kind="alert_resolved",
                    detail={"alert_id": record.id, "uid": record.uid, "note": note},
                )
                conn.execute(insert(AuditEventRow), [_audit_params(event, at)])
                # Published alerts publish their end too, in this transaction.
                record_resolution(conn, record.to_dict(), datetime.now(UTC))
                return record
        except SQLAlchemyError as err:
            raise StoreError(f"resolve in {self.url} failed: {err}") from err

    def audit_events(
        self, *, stream: str | None = None, device: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Audit events, newest first, as plain JSON-safe dicts."""
        query = select(AuditEventRow)
        if stream is not None:
            query = query.where(AuditEventRow.stream == stream)
        if device is not None:
            query = query.where(AuditEventRow.device == device)
        query = query.order_by(AuditEventRow.at.desc(), AuditEventRow.id.desc()).limit(limit)
        try:
            with Session(self.engine) as session:
                return [
                    {
                        "id": r.id,
                        "at": as_utc(r.at).isoformat(),
                        "kind": r.kind,
                        "stream": r.stream,
                        "device": r.device,
                        "detail": r.detail,
                        "recorded_at": as_utc(r.recorded_at).isoformat(),
                    }
                    for r in session.scalars(query)
                ]
        except SQLAlchemyError as err:
            raise StoreError(f"read from {self.url} failed: {err}") from err
