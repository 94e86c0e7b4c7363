"""A scheduled retraining run trains only on data that is new enough (retrain.min_new_rows).

Real reservoir, real training, real registry. A cadence in readings: an hourly meter's
daily run would otherwise retrain every 24 readings on the same data (41 trainings over
the 125 days of an hourly series in a replay), each swap a chance of a new transient.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sentinel.model import ModelRegistry, detector_type, training_options
from sentinel.retrain.job import run_retrain
from tests.retrain.helpers import active_model, fill, make_config, normal

CPU = torch.device("cpu")


def test_a_scheduled_run_waits_for_enough_new_readings_a_requested_one_does_not(
    tmp_path: Path,
) -> None:
    config, registry, first = active_model(tmp_path, min_new_rows=300)

    nothing_new = run_retrain(config, "pump", reason="schedule", device=CPU)
    assert nothing_new.status == "skipped"
    assert nothing_new.reason.startswith("too little new data: 0 readings since the newest")
    assert "need 300 (retrain.min_new_rows)" in nothing_new.reason
    assert registry.versions("pump") == [first], "nothing was trained"

    fill(config, normal(200, seed=5, start=1500), start=1500.0)
    assert run_retrain(config, "pump", reason="schedule", device=CPU).reason.startswith(
        "too little new data: 200 readings"
    )
    asked = run_retrain(config, "pump", reason="manual", device=CPU)
    assert asked.status in ("accepted", "rejected"), "a requested run always trains"

    fill(config, normal(200, seed=6, start=1700), start=1700.0)
    due = run_retrain(config, "pump", reason="schedule", device=CPU)
    assert due.status in ("accepted", "rejected"), due.reason
    assert len(registry.versions("pump")) == 3


def test_a_model_without_a_run_record_counts_from_its_newest_training_reading(
    tmp_path: Path,
) -> None:
    # `sentinel train` and a replay's first model record no run, only their training range.
    config = make_config(tmp_path / "state", min_new_rows=600)
    rows = normal(1500, seed=4)
    fill(config, rows)
    detector = detector_type(config.model.detector).train(
        [rows[:1000]], training_options(config, "pump"), device=CPU, first_ts=0.0, last_ts=999.0
    )
    registry = ModelRegistry(config.models_dir)
    registry.save(detector)
    registry.activate("pump", detector.version)

    outcome = run_retrain(config, "pump", reason="schedule", device=CPU)
    assert outcome.status == "skipped"
    assert outcome.reason.startswith("too little new data: 500 readings")
    fill(config, normal(200, seed=5, start=1500), start=1500.0)
    due = run_retrain(config, "pump", reason="schedule", device=CPU)
    assert due.status in ("accepted", "rejected"), due.reason


def test_zero_trains_every_scheduled_run(tmp_path: Path) -> None:
    config, _, _ = active_model(tmp_path, min_new_rows=0)
    again = run_retrain(config, "pump", reason="schedule", device=CPU)
    assert again.status in ("accepted", "rejected")
