"""Whether a commit survives a power cut: the daemon acknowledges a reading to the broker
once the transaction holding its effects committed, so a commit the database can still
roll back loses readings the broker has already forgotten (issue #22).

SQLite is made durable by the daemon itself (``[database] sqlite_durability``, see
``sentinel/store/db.py``). A PostgreSQL server's settings are its administrator's: Sentinel
keeps them, but says at start, in the log and in ``audit_events``, when the server runs
with ``synchronous_commit = off`` (the last commits can vanish on a server crash) or
``fsync = off`` (a crash can corrupt the database)
(https://www.postgresql.org/docs/current/runtime-config-wal.html).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import structlog
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from sentinel.records import AuditEvent, WriteBatch
from sentinel.store.db import AlertStore

__all__ = [
    "AUDIT_KIND",
    "postgres_durability_problems",
    "read_postgres_settings",
    "warn_not_durable",
]

log = structlog.get_logger(__name__)

AUDIT_KIND = "database_not_durable"
_SETTINGS = ("synchronous_commit", "fsync")


def postgres_durability_problems(settings: Mapping[str, str]) -> list[str]:
    """What in ``settings`` (as ``SHOW`` prints them) lets a committed, acknowledged
    reading be lost; empty when nothing does. ``synchronous_commit`` = local, remote_write,
    on or remote_apply all flush the commit to the server's own disk first."""
    problems = []
    if settings.get("synchronous_commit", "on").lower() == "off":
        problems.append(
            "synchronous_commit = off: a server crash can lose the last commits, whose "
            "readings were already acknowledged to the broker"
        )
    if settings.get("fsync", "on").lower() == "off":
        problems.append(
            "fsync = off: a server crash or power cut can lose commits or corrupt the database"
        )
    return problems


def read_postgres_settings(conn: Connection) -> dict[str, str]:
    """The settings that decide durability, as this connection sees them."""
    return {name: str(conn.execute(text(f"SHOW {name}")).scalar_one()) for name in _SETTINGS}


def warn_not_durable(store: AlertStore) -> list[str]:
    """At start: warn (log and audit event) when a PostgreSQL server would lose
    acknowledged commits; returns the problems found. A failed check is logged, never
    fatal: the database works, only this diagnosis is missing."""
    if store.dialect != "postgresql":
        return []
    try:
        with store.engine.connect() as conn:
            settings = read_postgres_settings(conn)
    except SQLAlchemyError as err:
        log.warning("database_durability_unknown", url=store.url, error=str(err))
        return []
    problems = postgres_durability_problems(settings)
    for problem in problems:
        log.warning("database_not_durable", url=store.url, problem=problem)
    if problems:
        # Store-wide, so no stream or device: both are empty.
        event = AuditEvent(
            stream="",
            device="",
            at=time.time(),
            kind=AUDIT_KIND,
            detail={"settings": settings, "problems": problems},
        )
        store.write([WriteBatch(audit=(event,))])
    return problems
