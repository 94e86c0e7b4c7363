"""Replay end to end, default config: a pump that runs every morning at six stops alerting
once the score's excursions are known to recur; one that runs at three in the afternoon
still alerts (sentinel.judge.recurring, issue #21)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulators.synthetic import EPOCH, LabelledSeries, generate
from tests.offline.helpers import replay_series

pytestmark = pytest.mark.slow


def alerts_per_label(tmp_path: Path, recurring: bool) -> tuple[set[str], set[str]]:
    """Replay the synthetic daily_pulse series (two training days, a normal 06:00 pulse on
    each of the next two days and an abnormal one at 15:00 on the last); the alert ids
    that touch the labelled pulse, and those that do not."""
    series = generate("daily_pulse")
    out = tmp_path / f"out-{recurring}.csv"
    rows = replay_series(series, out, "meter", {"threshold": {"recurring": recurring}})
    labelled = {row["alert_id"] for row, y in zip(rows, series.labels, strict=True) if y}
    other = {row["alert_id"] for row in rows} - labelled - {""}
    return labelled - {""}, other


def test_the_daily_pulse_alerts_only_off_its_hour(tmp_path: Path) -> None:
    hit, false = alerts_per_label(tmp_path, recurring=True)
    assert hit
    assert not false


def test_without_the_memory_every_morning_pulse_alerts(tmp_path: Path) -> None:
    hit, false = alerts_per_label(tmp_path, recurring=False)
    assert hit
    assert len(false) == 2


def false_alerts_after_a_short_training(tmp_path: Path, frequent: int) -> tuple[int, bool]:
    """Replay bursty_counts (requests a minute, Poisson(3) with a normal burst every 2-6
    hours and one labelled surge) trained on its first 600 rows, ten hours that hold two or
    three bursts: the false alerts, and whether the surge alerted."""
    series = generate("bursty_counts")
    settings = {"threshold": {"recurring_frequent": frequent}, "model": {"seed": 0}}
    out = tmp_path / f"out-{frequent}.csv"
    rows = replay_series(series, out, "web", settings, train_rows=600)
    labelled = {row["alert_id"] for row, y in zip(rows, series.labels, strict=True) if y}
    other = {row["alert_id"] for row in rows} - labelled - {""}
    return len(other), bool(labelled - {""})


@pytest.mark.parametrize("frequent", [3, 0])
def test_bursts_a_short_training_missed_stop_alerting_once_they_recur_often(
    tmp_path: Path, frequent: int
) -> None:
    """Score excursions as frequent as normal are normal (threshold.recurring_frequent, 3 by
    default): trained on 600 rows, every later burst alerted (13 false alerts); now the
    first few, and the surge still does (docs/BENCHMARKS.md, "Short trainings")."""
    false, surge = false_alerts_after_a_short_training(tmp_path, frequent)
    assert surge
    if frequent:
        assert false <= 4
    else:
        assert false >= 10


def test_a_noiseless_square_waves_daily_steps_stay_normal_as_its_threshold_falls(
    tmp_path: Path,
) -> None:
    """A daily schedule every 5 minutes with no noise at all (20 at night, 80 by day),
    trained on its first two days: the steps score the same every day while the windows
    between them score near zero, so the device's threshold falls (1.5 -> 0.58 in three
    days) and, measured against it, the same step read as twice the one remembered and
    alerted on the third and fourth day (with the model's default seed, 0; seeds 1-3 pass
    either way). Peaks are also kept in the baseline's unit (docs/BENCHMARKS.md,
    "Recurring excursions in the model's units too")."""
    day, days = 288, 14
    phase = (np.arange(day * days) % day) / day
    values = np.where((phase >= 0.3) & (phase < 0.7), 80.0, 20.0)
    series = LabelledSeries(
        "square",
        EPOCH + 300.0 * np.arange(day * days, dtype=np.float64),
        values.reshape(-1, 1),
        ("value",),
        np.zeros(day * days, dtype=np.int8),
        300.0,
        int(day * days * 0.15),
        "a noiseless daily square wave",
    )
    rows = replay_series(series, tmp_path / "out.csv", "schedule", {"model": {"seed": 0}})
    assert {row["alert_id"] for row in rows} == {""}
