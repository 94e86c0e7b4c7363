"""Replay end to end, default config: a temperature that follows a set point an operator
steps between a few values. The steps are normal, a larger one than most included; the
temperature holding 3 degrees under its set point for 150 readings is the fault
(sentinel.model.train.stepped_features, issue #21)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.offline.suite import SeriesScore, id_events, score_series
from simulators.synthetic import generate
from tests.offline.helpers import replay_series

pytestmark = pytest.mark.slow


def replayed(out: Path, seed: int = 0, train_rows: int | None = None) -> SeriesScore:
    """``setpoint_steps`` of ``seed`` replayed (the model's seed 0), trained on its own
    training rows or the first ``train_rows``, scored as the development suite scores it:
    an alert that opens on the step back up within a window of the fault's end belongs to
    the fault."""
    series = generate("setpoint_steps", seed=seed)
    rows = replay_series(series, out, "oven", {"model": {"seed": 0}}, train_rows=train_rows)
    spans, ids = id_events([row["alert_id"] for row in rows])
    return score_series(series.labels, spans, grace=32, keys=ids)


def test_the_heater_fault_alerts_and_the_set_point_steps_do_not(tmp_path: Path) -> None:
    score = replayed(tmp_path / "out.csv")
    assert score.detected == 1
    assert score.false_alerts == 0


def test_set_points_a_short_training_held_few_of_settle_without_alerting(tmp_path: Path) -> None:
    """Trained on its first 600 rows (a few of the set point's values, none of its large
    steps), the temperature's lag after each large step is rougher than any training
    window: the noise check fired beside the score, no response or settling excused it,
    and five steps alerted (``sentinel.judge.noise.directed_roughness``)."""
    score = replayed(tmp_path / "out.csv", seed=1, train_rows=600)
    assert score.detected == 1
    assert score.false_alerts == 0


def test_a_set_point_constant_in_training_is_followed_not_alerted_at_each_step(
    tmp_path: Path,
) -> None:
    """Trained on its first 300 rows, the set point never moved: each new value is the
    constant check's alert once, but the temperature stepping after it was a lone step for
    the shift check and its rough one-way settling the noise check's, and eight alerts
    opened. The set point is an input the temperature follows
    (``sentinel.worker.pipeline.response_inputs``, the shift check's drivers), and a noise
    hit on a channel moving one way in a window holding its change is a response. What
    is left: the constant check's first departures, and the temperature at set points no
    training held."""
    score = replayed(tmp_path / "out.csv", train_rows=300)
    assert score.detected == 1
    assert score.false_alerts <= 3
