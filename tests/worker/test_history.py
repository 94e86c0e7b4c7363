"""The pipeline's per-minute score history (issue #25): what a pass hands the writer, and
that a crash between two commits neither loses nor double-counts a window."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sentinel.records import Score, ScoreBucket, Verdict, Window, WriteBatch
from sentinel.store import AlertStore
from sentinel.worker.history import HistoryBuckets
from sentinel.worker.pipeline import Pipeline
from tests.fakes import FakeDetector, Harness, delivery, make_config

T0 = 1_700_000_040  # a minute's first second


def _all(batches: list[WriteBatch]) -> list[ScoreBucket]:
    return [b for batch in batches for b in batch.history]


def test_each_live_window_counts_once_in_the_minute_of_its_newest_reading() -> None:
    h = Harness({"pump": FakeDetector()})
    # 150 readings 1 s apart across three minutes; two spikes in the second minute.
    values = [0.1] * 150
    values[70] = values[90] = 9.0
    h.run([delivery("a", T0 + t, v) for t, v in enumerate(values)])
    merged: dict[int, ScoreBucket] = {}
    for b in _all(h.batches):
        merged[b.start] = merged[b.start].merged(b) if b.start in merged else b
    assert sorted(merged) == [T0, T0 + 60, T0 + 120]
    stats = h.pipeline.stats
    assert sum(b.windows for b in merged.values()) == stats.scored == 150 - 3
    assert sum(b.anomalous for b in merged.values()) == stats.anomalous > 0
    # Windows of length 4 end at every reading from the fourth on.
    assert [merged[m].windows for m in sorted(merged)] == [57, 60, 30]
    second = merged[T0 + 60]
    assert second.anomalous == stats.anomalous  # the spikes' windows, all in that minute
    assert second.max_score == 9.0
    assert second.max_ratio == second.max_score / second.threshold
    assert merged[T0].max_score == pytest.approx(0.1)


def test_a_zero_threshold_caps_the_ratio_and_drain_starts_over() -> None:
    window = Window("pump", "a", T0, T0 + 3, np.zeros((4, 2), dtype=np.float32))
    buckets = HistoryBuckets()
    buckets.add(Verdict(Score(window, 2.0, (2.0, 0.0), "v1"), threshold=0.0, is_anomaly=True))
    buckets.add(Verdict(Score(window, 1.0, (1.0, 0.0), "v1"), threshold=2.0, is_anomaly=False))
    assert buckets.drain() == (
        ScoreBucket("pump", "a", int(T0), 2, 1, max_score=2.0, threshold=0.0, max_ratio=1e30),
    )
    assert buckets.drain() == ()


def test_history_off_records_nothing() -> None:
    h = Harness({"pump": FakeDetector()}, make_config(history={"enabled": False}))
    h.run([delivery("a", T0 + t, 0.1) for t in range(20)])
    assert h.pipeline.stats.scored == 17
    assert _all(h.batches) == []


def _pipeline(store: AlertStore) -> Pipeline:
    return Pipeline(
        make_config(),
        sink=lambda batch: None,
        request_training=lambda job: None,
        models={"pump": FakeDetector()},
        recall=store.device_progress,
    )


def _windows(store: AlertStore) -> Counter[int]:
    return Counter({b.start: b.windows for b in store.score_history("pump", "a")})


def test_a_crash_between_commits_double_counts_no_window(tmp_path: Path) -> None:
    readings = [delivery("a", T0 + t, 0.1 if t != 95 else 9.0) for t in range(180)]
    passes = [readings[i : i + 10] for i in range(0, 180, 10)]

    # Uninterrupted: every pass committed.
    steady = AlertStore(f"sqlite:///{tmp_path / 'steady.db'}")
    steady.open()
    steady.migrate()
    run = _pipeline(steady)
    for chunk in passes:
        steady.write([run.process(chunk)])

    # Crashed: passes 0-7 committed, 8-9 processed but never committed (killed before
    # the writer's commit). The broker redelivers what was not acknowledged; here,
    # everything from the start, which the restarted daemon must skip where committed.
    crashed = AlertStore(f"sqlite:///{tmp_path / 'crashed.db'}")
    crashed.open()
    crashed.migrate()
    first = _pipeline(crashed)
    for chunk in passes[:8]:
        crashed.write([first.process(chunk)])
    for chunk in passes[8:10]:
        first.process(chunk)  # lost with the process
    restarted = _pipeline(crashed)
    for chunk in passes:
        crashed.write([restarted.process(chunk)])

    assert restarted.rejections.as_dict() == {"duplicate": 1, "out_of_order": 79}
    before, after = _windows(steady), _windows(crashed)
    # The restart loses only the windows of its first partial window (length 4: three),
    # all in the minute where it resumed; no minute has more windows than uninterrupted.
    assert sum(before.values()) - sum(after.values()) == 3
    assert all(after[m] <= before[m] for m in after)
    assert before - after == Counter({T0 + 60: 3})
    steady.close()
    crashed.close()
