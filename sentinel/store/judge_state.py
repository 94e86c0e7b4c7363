"""Per-device judge state in the shared database (``device_judge_state``, issue #24).

With ``[cluster]`` on, a partition moves between daemons with what the judge learnt of its
devices: the owner saves its devices' state here at the snapshot interval and when it
hands the partition over; the next owner loads the partition's rows before it reads a
message of it. ``thresholds.json`` stays the single daemon's way (a file one daemon owns).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from sentinel.errors import StoreError
from sentinel.records import DeviceJudgeState
from sentinel.store.db import AlertStore
from sentinel.store.schema import DeviceJudgeStateRow

__all__ = ["load_judge_state", "save_judge_state"]

_CHUNK = 500


def save_judge_state(
    store: AlertStore, rows: Sequence[DeviceJudgeState], partition_of: dict[str, int]
) -> int:
    """Upsert ``rows`` (``partition_of``: device -> its partition); returns how many."""
    if not rows:
        return 0
    now = datetime.now(UTC)
    insert = postgresql.insert if store.dialect == "postgresql" else sqlite.insert
    stmt = insert(DeviceJudgeStateRow)
    stmt = stmt.on_conflict_do_update(
        index_elements=[DeviceJudgeStateRow.stream, DeviceJudgeStateRow.device],
        set_={
            "partition": stmt.excluded.partition,
            "model_version": stmt.excluded.model_version,
            "state": stmt.excluded.state,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    params = [
        {
            "stream": r.stream,
            "device": r.device,
            "partition": partition_of[r.device],
            "model_version": r.model_version,
            "state": r.state,
            "updated_at": now,
        }
        for r in rows
    ]
    try:
        with store.engine.begin() as conn:
            for start in range(0, len(params), _CHUNK):
                conn.execute(stmt, params[start : start + _CHUNK])
    except SQLAlchemyError as err:
        raise StoreError(f"write to {store.url} failed: {err}") from err
    return len(params)


def load_judge_state(store: AlertStore, partition: int) -> list[DeviceJudgeState]:
    """The saved state of every device of ``partition``."""
    query = select(
        DeviceJudgeStateRow.stream,
        DeviceJudgeStateRow.device,
        DeviceJudgeStateRow.model_version,
        DeviceJudgeStateRow.state,
    ).where(DeviceJudgeStateRow.partition == partition)
    try:
        with store.engine.connect() as conn:
            return [
                DeviceJudgeState(r.stream, r.device, r.model_version, dict(r.state))
                for r in conn.execute(query)
            ]
    except SQLAlchemyError as err:
        raise StoreError(f"read from {store.url} failed: {err}") from err
