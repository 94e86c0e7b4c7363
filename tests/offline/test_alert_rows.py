"""Replay's alert column: an alert covers the rows of its evidence, from its first anomalous
window to its last (issue #21: an alert opens at the onset and closes when the evidence
does, and its onset time is what evaluation uses)."""

from __future__ import annotations

import numpy as np

from sentinel.config import AlertsConfig
from sentinel.judge.alerts import AlertTracker
from sentinel.offline.replay import AlertRows
from sentinel.records import Score, ThresholdState, Verdict, Window

FEATURES: dict[str, tuple[str, ...]] = {"pump": ("flow",)}
STATE = ThresholdState("quantile", 2.5, 500, None, True)


def verdict(t: float, anomalous: bool) -> Verdict:
    window = Window("pump", "a", t - 3, t, np.zeros((4, 1), dtype=np.float32))
    return Verdict(
        Score(window, 5.0 if anomalous else 0.5, (0.5 if anomalous else 0.1,), "v1"),
        threshold=2.5,
        is_anomaly=anomalous,
        exceedance=1e-3 if anomalous else 1.0,
        state=STATE,
    )


def replay_ids(pattern: str, **alerts: float) -> list[str]:
    """One window per row ('x' anomalous, '.' normal), through the real tracker; each
    row's alert id as replay writes it ('' none, else the alert's index in order)."""
    config = AlertsConfig.model_validate(alerts)
    tracker = AlertTracker(config, FEATURES)
    rows = AlertRows(config.window_span)
    for i, c in enumerate(pattern):
        v = verdict(float(i), c == "x")
        rows.observe(v, tracker.observe(v, (0.1,)))
    rows.finish()
    ids = rows.ids(np.arange(len(pattern), dtype=np.float64), first_row=0)
    names: dict[str, str] = {}
    return [names.setdefault(uid, str(len(names))) if uid else "" for uid in ids]


def test_an_alert_covers_its_first_to_its_last_anomalous_window() -> None:
    # open_after 2: the alert opens at row 3 but starts at row 2; close_after 3: it closes
    # at row 8 but its evidence ended at row 5.
    ids = replay_ids("..xxxx.....", open_after=2, close_after=3)
    assert ids == ["", "", "0", "0", "0", "0", "", "", "", "", ""]


def test_a_normal_blip_inside_an_alert_stays_in_it() -> None:
    ids = replay_ids(".xx.xx....", open_after=2, close_after=2)
    assert ids == ["", "0", "0", "0", "0", "0", "", "", "", ""]


def test_a_reopened_alert_keeps_its_id_but_not_the_stretch_between() -> None:
    ids = replay_ids("xx...x.xx...", open_after=2, close_after=2, open_within=3, cooldown=100)
    # Reopened by M of N (rows 5 and 7): that run starts at its first anomalous window.
    assert ids == ["0", "0", "", "", "", "0", "0", "0", "0", "", "", ""]


def test_an_alert_still_open_at_the_end_covers_its_evidence_so_far() -> None:
    ids = replay_ids("..xxx..", open_after=2, close_after=4)
    assert ids == ["", "", "0", "0", "0", "", ""]


def test_training_rows_hold_no_alert() -> None:
    rows = AlertRows(1)
    rows.spans.append((0.0, 5.0, "u"))
    assert rows.ids(np.arange(6, dtype=np.float64), first_row=3) == ["", "", "", "u", "u", "u"]
