"""The replay output's ``check`` column: which check made a window anomalous."""

from __future__ import annotations

import numpy as np

from sentinel.offline.replay import why_anomalous
from sentinel.records import LevelHit, Score, SpikeHit, StuckHit, Verdict, Window

FEATURES = ("flow", "pressure")


def verdict(
    value: float,
    anomalous: bool,
    spike: SpikeHit | None = None,
    level: LevelHit | None = None,
    stuck: StuckHit | None = None,
) -> Verdict:
    window = Window("pump", "p1", 0.0, 1.0, np.zeros((4, 2), dtype=np.float32))
    return Verdict(
        Score(window, value, (value, value), "v1"),
        threshold=1.0,
        is_anomaly=anomalous,
        spike=spike,
        level=level,
        stuck=stuck,
    )


def test_a_normal_window_has_no_check() -> None:
    assert why_anomalous(verdict(0.5, False), FEATURES) == ""


def test_a_score_above_the_threshold() -> None:
    assert why_anomalous(verdict(2.0, True), FEATURES) == "score"


def test_forced_windows_name_the_check_and_feature() -> None:
    level = LevelHit(feature=0, z=9.0)
    spike = SpikeHit(feature=1, z=12.0, age=3)
    assert why_anomalous(verdict(0.5, True, level=level), FEATURES) == "level:flow"
    assert why_anomalous(verdict(0.5, True, spike=spike), FEATURES) == "spike:pressure"
    both = verdict(2.0, True, spike=spike, level=level)
    assert why_anomalous(both, FEATURES) == "score+spike:pressure+level:flow"
    frozen = StuckHit(feature=1, run=40, limit=24, exceedance=1e-4)
    assert why_anomalous(verdict(0.2, True, stuck=frozen), FEATURES) == "stuck:pressure"


def test_an_anomaly_from_the_threshold_rule_alone_is_put_down_to_the_score() -> None:
    """SPOT may call a score anomalous at its own threshold (equal to the reported one)."""
    assert why_anomalous(verdict(1.0, True), FEATURES) == "score"
