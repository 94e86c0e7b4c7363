"""A lasting change the threshold accepted as the new normal trains models again.

Without this, every window after a step is anomalous, so all of it is left out of the
reservoir, and retraining could never learn the new level: the river #948 lock-out, at
the model level (docs/ARCHITECTURE.md, "Re-baselining")."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sentinel.records import AuditEvent, Delivery, Reading, Window
from sentinel.retrain.job import open_reservoir
from sentinel.retrain.reservoir import Reservoir, ReservoirTap
from sentinel.worker.pipeline import Pipeline
from tests.judge.helpers import detail_number
from tests.retrain.helpers import make_config, normal, train


def _reservoir(path: Path) -> Reservoir:
    return Reservoir(path, 1, max_rows=10_000, max_age=1e9, margin=5.0).open()


def _clean_ts(res: Reservoir) -> np.ndarray:
    data = res.clean_data(window=4, max_gap=2, holdout_fraction=0.25)
    return np.concatenate([r.ts for r in data.train + data.holdout])


def test_an_accepted_span_trains_again_and_outside_it_exclusions_hold(tmp_path: Path) -> None:
    res = _reservoir(tmp_path / "r.sqlite")
    res.add([Reading("pump", "d1", float(t), (float(t),)) for t in range(600)])
    flagged = [
        Window("pump", "d1", float(s), float(s + 15), np.zeros((16, 1), np.float32))
        for s in (100, 300)
    ]
    res.add([], flagged)
    assert not np.any((_clean_ts(res) >= 295) & (_clean_ts(res) <= 320))
    res.add([], accepted=[("d1", 290.0, 400.0)])  # the change from 290 was re-baselined at 400
    kept = _clean_ts(res)
    assert np.all(np.isin(np.arange(290, 401), kept))  # the new normal is clean again ...
    assert not np.any((kept >= 95) & (kept <= 120))  # ... an exclusion before it still holds
    res.close()
    reopened = _reservoir(tmp_path / "r.sqlite")  # kept across a restart
    assert np.array_equal(_clean_ts(reopened), kept)
    reopened.close()


def test_the_tap_takes_only_rebaseline_events_of_its_own_stream(tmp_path: Path) -> None:
    res = _reservoir(tmp_path / "r.sqlite")
    res.add([Reading("pump", "d1", float(t), (float(t),)) for t in range(200)])
    res.add([], [Window("pump", "d1", 50.0, 150.0, np.zeros((16, 1), np.float32))])
    tap = ReservoirTap({"pump": res})
    events = [
        AuditEvent("fan", "d1", 150.0, "threshold_rebaselined", {"change_detected_at": 40.0}),
        AuditEvent("pump", "d1", 150.0, "alert_resolved", {"alert_id": 1}),
        AuditEvent("pump", "d1", 150.0, "threshold_rebaselined", {"change_detected_at": "x"}),
    ]
    tap.observe([], [], [], events)
    assert not np.any((_clean_ts(res) >= 60) & (_clean_ts(res) <= 140))
    rebased = AuditEvent("pump", "d1", 150.0, "threshold_rebaselined", {"change_detected_at": 40.0})
    tap.observe([], [], [], [rebased])
    assert np.all(np.isin(np.arange(40, 141), _clean_ts(res)))
    res.close()


def test_after_a_level_shift_is_rebaselined_its_readings_can_train_a_model(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path / "state")
    config = config.model_copy(
        update={"threshold": config.threshold.model_copy(update={"rebaseline_after": 300.0})}
    )
    detector = train(config, [normal(2000, seed=1)])
    reservoir = open_reservoir(config, "pump")
    tap = ReservoirTap({"pump": reservoir})
    pipeline = Pipeline(
        config,
        sink=lambda batch: None,
        request_training=lambda job: None,
        models={"pump": detector},
        tap=tap,
    )
    before, after = normal(1500, seed=2, start=2000), normal(1500, seed=3, start=3500, shift=3.0)
    data = np.concatenate([before, after])
    shift_at = 1500.0  # one reading per second
    audit: list[AuditEvent] = []
    for start in range(0, len(data), 50):
        batch = pipeline.process(
            [
                Delivery(
                    "p/d1",
                    (Reading("pump", "d1", float(t), tuple(map(float, data[t]))),),
                    (),
                    None,
                    float(t),
                )
                for t in range(start, min(start + 50, len(data)))
            ]
        )
        audit.extend(batch.audit)
    assert [e.kind for e in audit][:1] == ["threshold_rebaselined"]
    change = detail_number(audit[0], "change_detected_at")
    assert shift_at <= change < shift_at + 60
    clean = reservoir.clean_data(window=16, max_gap=10, holdout_fraction=0.2)
    kept = np.concatenate([r.ts for r in clean.train + clean.holdout])
    # The span from the change to its re-baseline (300 s) is training data again.
    accepted = (kept >= change) & (kept <= audit[0].at)
    assert accepted.sum() >= 0.9 * (audit[0].at - change)
    reservoir.close()


def test_a_reservoir_from_before_accepted_spans_still_reads(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    res = _reservoir(path)
    res.add([Reading("pump", "d1", float(t), (float(t),)) for t in range(100)])
    res.close()
    with sqlite3.connect(path) as conn:  # as written by the version before this table
        conn.execute("DROP TABLE accepted")
    reader = Reservoir(path, 1, max_rows=10_000, max_age=1e9, margin=5.0).open(readonly=True)
    assert len(_clean_ts(reader)) > 90
    reader.close()


def test_an_undone_rebaseline_leaves_the_fault_out_of_training_again(tmp_path: Path) -> None:
    # A fault from 40 was re-baselined at 150 (accepted), went on unflagged under the raised
    # threshold, ended; the scores were back under the old threshold from 180 and the
    # re-baseline was undone: 40..180 trains no model.
    res = _reservoir(tmp_path / "r.sqlite")
    res.add([Reading("pump", "d1", float(t), (float(t),)) for t in range(400)])
    tap = ReservoirTap({"pump": res})
    rebased = AuditEvent("pump", "d1", 150.0, "threshold_rebaselined", {"change_detected_at": 40.0})
    tap.observe([], [], [], [rebased])
    assert np.all(np.isin(np.arange(40, 151), _clean_ts(res)))
    detail: dict[str, object] = {
        "change_detected_at": 40.0,
        "rebaselined_at": 150.0,
        "under_since": 180.0,
    }
    undone = AuditEvent("pump", "d1", 330.0, "threshold_rebaseline_reverted", detail)
    tap.observe([], [], [], [undone])
    kept = _clean_ts(res)
    assert not np.any((kept >= 40) & (kept <= 180))
    assert np.all(np.isin(np.arange(200, 400), kept))
    res.close()


def test_a_fault_whose_milder_windows_were_forgotten_trains_no_model(tmp_path: Path) -> None:
    # A fault from 100 to 260 straddled the threshold: its anomalous windows are excluded
    # as always, and the windows between them it had judged normal under the threshold it
    # raised were forgotten when it ended (threshold_spell_forgotten): the whole span, with
    # the margin, trains no model; other streams' and malformed events change nothing.
    res = _reservoir(tmp_path / "r.sqlite")
    res.add([Reading("pump", "d1", float(t), (float(t),)) for t in range(500)])
    tap = ReservoirTap({"pump": res})
    detail: dict[str, object] = {"forgotten": 12, "spell_start": 100.0, "spell_end": 260.0}
    events = [
        AuditEvent("fan", "d1", 300.0, "threshold_spell_forgotten", dict(detail)),
        AuditEvent("pump", "d1", 300.0, "threshold_spell_forgotten", {"spell_start": "x"}),
    ]
    tap.observe([], [], [], events)
    assert np.all(np.isin(np.arange(0, 500), _clean_ts(res)))
    tap.observe([], [], [], [AuditEvent("pump", "d1", 300.0, "threshold_spell_forgotten", detail)])
    kept = _clean_ts(res)
    assert not np.any((kept >= 95) & (kept <= 265))  # the span, widened by the margin of 5
    assert np.all(np.isin(np.arange(270, 500), kept))
    assert np.all(np.isin(np.arange(0, 90), kept))
    res.close()
