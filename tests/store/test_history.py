"""The score history (issue #25): merged per minute, read by range, pruned in bounded passes,
its views and documented queries, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect

from sentinel.errors import StoreError
from sentinel.records import ScoreBucket, WriteBatch
from sentinel.store import AlertStore, AlertWriter
from sentinel.store.db import MIGRATIONS_DIR
from tests.store.helpers import T0, documented_queries, make_alert, make_progress, run_sql

M0 = int(T0) // 60 * 60  # a minute's first second


def bucket(
    start: int = M0,
    *,
    device: str = "p1",
    stream: str = "pump",
    windows: int = 1,
    anomalous: int = 0,
    max_score: float = 0.5,
    threshold: float = 1.0,
    max_ratio: float | None = None,
) -> ScoreBucket:
    return ScoreBucket(
        stream=stream,
        device=device,
        start=start,
        windows=windows,
        anomalous=anomalous,
        max_score=max_score,
        threshold=threshold,
        max_ratio=max_score / threshold if max_ratio is None else max_ratio,
    )


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def test_a_minute_written_twice_is_one_merged_row(store: AlertStore) -> None:
    store.write([WriteBatch(history=(bucket(windows=3, anomalous=1, max_score=2.0),))])
    # A later commit touching the same minute: counts add up, the higher maximum wins
    # with its own threshold, the ratio is the higher of the two.
    store.write(
        [
            WriteBatch(
                history=(
                    bucket(windows=2, max_score=1.5, threshold=0.5, max_ratio=3.0),
                    bucket(M0 + 60, windows=4),
                )
            )
        ]
    )
    assert store.score_history("pump", "p1") == [
        bucket(windows=5, anomalous=1, max_score=2.0, threshold=1.0, max_ratio=3.0),
        bucket(M0 + 60, windows=4),
    ]
    store.write([WriteBatch(history=(bucket(windows=1, max_score=9.0, threshold=3.0),))])
    first = store.score_history("pump", "p1")[0]
    assert (first.windows, first.max_score, first.threshold, first.max_ratio) == (6, 9.0, 3.0, 3.0)


def test_one_commit_merges_the_same_minute_from_several_batches(store: AlertStore) -> None:
    # One INSERT may not touch a row twice on PostgreSQL: the store merges them first.
    batches = [
        WriteBatch(history=(bucket(windows=1, max_score=0.2),)),
        WriteBatch(history=(bucket(windows=2, anomalous=2, max_score=4.0, threshold=2.0),)),
        WriteBatch(history=(bucket(device="p2"),)),
    ]
    store.write(batches)
    assert store.score_history("pump", "p1") == [
        bucket(windows=3, anomalous=2, max_score=4.0, threshold=2.0)
    ]
    assert store.score_history("pump", "p2") == [bucket(device="p2")]
    assert store.score_history("fan", "p1") == []


def test_history_commits_with_the_progress_or_not_at_all(store: AlertStore) -> None:
    good = WriteBatch(progress=(make_progress(),), history=(bucket(windows=2),))
    store.write([good])
    # A commit whose history fails (NULL in a NOT NULL column), written after its alert
    # and progress, leaves none of them behind.
    failing = WriteBatch(
        alerts=(make_alert("a-2"),),
        progress=(make_progress(last_ts=T0 + 60, readings=9),),
        history=(bucket(windows=7), bucket(M0 + 60, max_score=None, max_ratio=1.0)),  # type: ignore[arg-type]
    )
    with pytest.raises(StoreError, match="write to"):
        store.write([failing])
    assert store.list_alerts() == []
    assert store.score_history("pump", "p1") == [bucket(windows=2)]
    assert store.device_progress()[("pump", "p1")].readings == 1


def test_read_by_range_and_limit(store: AlertStore) -> None:
    minutes = [M0 + 60 * i for i in range(10)]
    store.write(
        [WriteBatch(history=tuple(bucket(m, windows=i + 1) for i, m in enumerate(minutes)))]
    )
    got = store.score_history("pump", "p1", since=_utc(M0 + 120), until=_utc(M0 + 300))
    assert [b.start for b in got] == [M0 + 120, M0 + 180, M0 + 240]
    # A since inside a minute starts at the next one; naive datetimes are UTC.
    naive = _utc(M0 + 90).replace(tzinfo=None)
    assert store.score_history("pump", "p1", since=naive)[0].start == M0 + 120
    # More than the limit: the newest ones, still oldest first.
    assert [b.start for b in store.score_history("pump", "p1", limit=3)] == minutes[-3:]
    with pytest.raises(ValueError, match="limit"):
        store.score_history("pump", "p1", limit=0)
    assert got[0].to_dict() == {
        "stream": "pump",
        "device": "p1",
        "start": M0 + 120,
        "start_at": _utc(M0 + 120).isoformat(),
        "windows": 3,
        "anomalous": 0,
        "max_score": 0.5,
        "threshold": 1.0,
        "max_ratio": 0.5,
    }


def test_prune_deletes_the_oldest_in_bounded_passes(store: AlertStore) -> None:
    old = [bucket(M0 + 60 * i, device=f"p{i % 3}") for i in range(250)]
    recent = [bucket(M0 + 86_400 + 60 * i) for i in range(5)]
    store.write([WriteBatch(history=(*old, *recent))])
    cutoff = _utc(M0 + 86_400)
    assert store.prune_history(cutoff, 100) == 100
    # The oldest went first: what is left of the old ones is the newest 150.
    left = [b.start for d in ("p0", "p1", "p2") for b in store.score_history("pump", d)]
    assert min(s for s in left if s < M0 + 86_400) == M0 + 60 * 100
    assert store.prune_history(cutoff, 100) == 100
    assert store.prune_history(cutoff, 100) == 50
    assert store.prune_history(cutoff, 100) == 0
    assert [b.start for b in store.score_history("pump", "p1")] == [b.start for b in recent]


def test_writer_prunes_by_retention(store: AlertStore) -> None:
    now = int(time.time()) // 60 * 60
    stale = [bucket(now - 7200 - 60 * i) for i in range(30)]
    fresh = bucket(now - 60)
    store.write([WriteBatch(history=(*stale, fresh))])
    # Prunes at start, then at once again while a pass deletes a full batch.
    writer = AlertWriter(store, history_retention=3600, prune_batch=10)
    writer.start()
    try:
        deadline = time.monotonic() + 30
        while store.score_history("pump", "p1") != [fresh]:
            assert time.monotonic() < deadline, "the writer did not prune the stale minutes"
            time.sleep(0.05)
    finally:
        writer.stop()
    assert writer.history_pruned == 30


def test_views_and_documented_queries(store: AlertStore) -> None:
    now = int(time.time()) // 60 * 60
    alert_at = now - 600
    store.write(
        [
            WriteBatch(
                alerts=(make_alert("h1", started_at=alert_at, updated_at=alert_at + 30),),
                history=(
                    bucket(M0, windows=4, anomalous=1, max_score=3.0, threshold=2.0),
                    bucket(M0 + 60, windows=2, max_score=1.0, threshold=2.0, max_ratio=0.75),
                    bucket(M0 + 3600, windows=1),
                    bucket(alert_at - 1200, windows=15),  # before the ten minutes
                    bucket(alert_at - 120, windows=15, anomalous=3, max_score=1.8),
                    bucket(alert_at, windows=15, anomalous=15, max_score=4.0, threshold=2.0),
                    bucket(alert_at - 60, device="p2", windows=15, max_score=0.9),
                ),
            )
        ]
    )
    rows = run_sql(store, "SELECT * FROM score_history_minutes ORDER BY minute LIMIT 1")
    assert rows == [
        {"stream": "pump", "device": "p1", "minute": _utc(M0), "windows": 4, "anomalous": 1,
         "max_score": 3.0, "threshold": 2.0, "max_ratio": 1.5},
    ]  # fmt: skip
    hourly = run_sql(store, "SELECT * FROM score_history_hourly ORDER BY hour LIMIT 2")
    hour = M0 - M0 % 3600
    assert hourly == [
        {"stream": "pump", "device": "p1", "hour": _utc(hour), "windows": 6, "anomalous": 1,
         "max_score": 3.0, "max_ratio": 1.5, "minutes": 2},
        {"stream": "pump", "device": "p1", "hour": _utc(hour + 3600), "windows": 1,
         "anomalous": 0, "max_score": 0.5, "max_ratio": 0.5, "minutes": 1},
    ]  # fmt: skip

    alert_id = store.list_alerts()[0].id
    queries = documented_queries(store.dialect)
    expected = {
        "device_score_last_hour": [
            {"minute": _utc(alert_at - 1200), "windows": 15, "anomalous": 0, "max_score": 0.5,
             "threshold": 1.0, "max_ratio": 0.5},
            {"minute": _utc(alert_at - 120), "windows": 15, "anomalous": 3, "max_score": 1.8,
             "threshold": 1.0, "max_ratio": 1.8},
            {"minute": _utc(alert_at), "windows": 15, "anomalous": 15, "max_score": 4.0,
             "threshold": 2.0, "max_ratio": 2.0},
        ],
        "closest_to_threshold_day": [
            {"stream": "pump", "device": "p1", "max_ratio": 2.0, "anomalous": 18,
             "windows": 45},
            {"stream": "pump", "device": "p2", "max_ratio": 0.9, "anomalous": 0,
             "windows": 15},
        ],
        "before_open_alerts": [
            {"id": alert_id, "minute": _utc(alert_at - 120), "windows": 15, "anomalous": 3,
             "max_ratio": 1.8},
            {"id": alert_id, "minute": _utc(alert_at), "windows": 15, "anomalous": 15,
             "max_ratio": 2.0},
        ],
    }  # fmt: skip
    for name, rows in expected.items():
        assert run_sql(store, queries[name]) == rows, name


def test_downgrade_to_0004_drops_the_table_and_views(store: AlertStore) -> None:
    store.write([WriteBatch(history=(bucket(),))])
    with store.engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
    insp = inspect(store.engine)
    assert "score_history" not in insp.get_table_names()
    assert not {"score_history_minutes", "score_history_hourly"} & set(insp.get_view_names())
    store.migrate()  # and up again, empty
    assert store.score_history("pump", "p1") == []


def test_history_survives_a_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    first = AlertStore(url)
    first.open()
    first.migrate()
    first.write([WriteBatch(history=(bucket(windows=2),))])
    first.close()
    second = AlertStore(url)
    second.open()
    try:
        second.check_schema()
        assert second.score_history("pump", "p1") == [bucket(windows=2)]
    finally:
        second.close()


def _migrate(store: AlertStore, revision: str) -> None:
    with store.engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection"] = conn
        if revision < "0008":
            command.downgrade(cfg, revision)
        else:
            command.upgrade(cfg, revision)


def test_0008_keys_the_history_by_minute_and_keeps_every_row(store: AlertStore) -> None:
    """History written under 0007's (stream, device, bucket) key is all there after 0008
    re-keys it (bucket, stream, device), reads and merges as before, and goes back."""
    rows = [bucket(M0 + 60 * m, device=d, windows=m + 1) for m in range(3) for d in ("p2", "p1")]
    _migrate(store, "0007")
    assert inspect(store.engine).get_pk_constraint("score_history")["constrained_columns"] == [
        "stream",
        "device",
        "bucket",
    ]
    store.write([WriteBatch(history=tuple(rows))])
    _migrate(store, "0008")
    insp = inspect(store.engine)
    assert insp.get_pk_constraint("score_history")["constrained_columns"] == [
        "bucket",
        "stream",
        "device",
    ]
    assert {ix["name"] for ix in insp.get_indexes("score_history")} == {"ix_score_history_device"}
    assert {"score_history_minutes", "score_history_hourly"} <= set(insp.get_view_names())
    assert store.score_history("pump", "p1") == [r for r in rows if r.device == "p1"]
    store.write([WriteBatch(history=(bucket(M0, device="p2", windows=5),))])  # merged in
    assert store.score_history("pump", "p2")[0].windows == 1 + 5
    assert run_sql(store, "SELECT SUM(minutes) AS n FROM score_history_hourly") == [{"n": 6}]
    _migrate(store, "0007")
    assert inspect(store.engine).get_pk_constraint("score_history")["constrained_columns"] == [
        "stream",
        "device",
        "bucket",
    ]
    assert len(store.score_history("pump", "p1")) == 3
    store.migrate()
