"""The score_history table: per device and minute, written with the readings, pruned by age.

The writer merges each commit's buckets into the table inside the transaction that records
the readings' progress (``AlertStore.write``), so the counts are exactly once: a reading the
broker redelivers after a crash is a duplicate the daemon skips. A minute that several
commits touch is one row; the upsert adds the counts and keeps the larger maximum, the same
rule as ``ScoreBucket.merged`` (issue #25).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Engine, case, delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from sentinel.records import ScoreBucket
from sentinel.store.schema import ScoreHistoryRow

__all__ = ["merge_buckets", "prune_history", "read_history", "record_history"]

_CHUNK = 500  # rows per INSERT statement


def merge_buckets(buckets: Iterable[ScoreBucket]) -> list[ScoreBucket]:
    """One bucket per device and minute: a statement may not touch one row twice."""
    merged: dict[tuple[str, str, int], ScoreBucket] = {}
    for bucket in buckets:
        key = (bucket.stream, bucket.device, bucket.start)
        earlier = merged.get(key)
        merged[key] = bucket if earlier is None else earlier.merged(bucket)
    return list(merged.values())


@cache  # built once per dialect: building it cost the writer more than running it
def _upsert(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(ScoreHistoryRow)
    new, row = stmt.excluded, ScoreHistoryRow
    higher = new.max_score > row.max_score
    # Every SET expression reads the row as it was before the update (SQL semantics on
    # both databases), so max_score's own update does not disturb threshold's.
    return stmt.on_conflict_do_update(
        index_elements=[row.stream, row.device, row.bucket],
        set_={
            "windows": row.windows + new.windows,
            "anomalous": row.anomalous + new.anomalous,
            "max_score": case((higher, new.max_score), else_=row.max_score),
            "threshold": case((higher, new.threshold), else_=row.threshold),
            "max_ratio": case((new.max_ratio > row.max_ratio, new.max_ratio), else_=row.max_ratio),
        },
    )


def record_history(conn: Connection, buckets: Iterable[ScoreBucket]) -> int:
    """Merge ``buckets`` into the table in the caller's transaction; returns the rows."""
    rows = [
        {
            "stream": b.stream,
            "device": b.device,
            "bucket": b.start,
            "windows": b.windows,
            "anomalous": b.anomalous,
            "max_score": b.max_score,
            "threshold": b.threshold,
            "max_ratio": b.max_ratio,
        }
        for b in merge_buckets(buckets)
    ]
    stmt = _upsert(conn.dialect.name)
    for start in range(0, len(rows), _CHUNK):
        conn.execute(stmt, rows[start : start + _CHUNK])
    return len(rows)


def prune_history(conn: Connection, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` of the oldest minutes that started before ``before``, in the
    caller's transaction; returns how many. Bounded, so that a long backlog (a lowered
    retention, a clock jump) is worked off in short transactions between the writer's
    commits."""
    cutoff = int(before.timestamp())
    row = ScoreHistoryRow
    oldest = (
        select(row.stream, row.device, row.bucket)
        .where(row.bucket < cutoff)
        .order_by(row.bucket)
        .limit(limit)
    )
    stmt = delete(row).where(tuple_(row.stream, row.device, row.bucket).in_(oldest))
    return int(conn.execute(stmt).rowcount)


def read_history(
    engine: Engine,
    stream: str,
    device: str,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50_000,
) -> list[ScoreBucket]:
    """The device's minutes that start in [since, until), oldest first, at most ``limit``
    (the newest of them when there are more)."""
    row = ScoreHistoryRow
    query = select(row).where(row.stream == stream, row.device == device)
    if since is not None:
        query = query.where(row.bucket >= _epoch_ceil(since))
    if until is not None:
        query = query.where(row.bucket < _epoch_ceil(until))
    query = query.order_by(row.bucket.desc()).limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        ScoreBucket(
            stream=r.stream,
            device=r.device,
            start=int(r.bucket),
            windows=int(r.windows),
            anomalous=int(r.anomalous),
            max_score=float(r.max_score),
            threshold=float(r.threshold),
            max_ratio=float(r.max_ratio),
        )
        for r in reversed(rows)
    ]


def _epoch_ceil(at: datetime) -> int:
    """Whole epoch seconds at or after ``at`` (naive means UTC)."""
    seconds = (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).timestamp()
    whole = int(seconds)
    return whole if whole == seconds else whole + 1
