"""Retraining in replay follows the data's own timestamps."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from sentinel.offline.csvdata import RecordedData
from sentinel.offline.replay import replay
from tests.retrain.helpers import FEATURES, make_config, normal

pytestmark = pytest.mark.slow

# The creep, 9 noise standard deviations: the control below needs one the first model
# cannot follow. An autoencoder trained to convergence on the 600 rows (an epoch draws at
# least MIN_EPOCH_WINDOWS windows) reconstructs a 6-sigma creep: 1 % of the stale run's
# last rows anomalous, against 50 % when 6 epochs were 6 passes; at 9 sigma 36 % (35 %).
DRIFT = 0.45


def test_replay_retrains_on_the_schedule_in_data_time(tmp_path: Path) -> None:
    # 1 reading per 10 s: 600 to train on, then 2000 more (5.6 h) whose level creeps up
    # by DRIFT: slow drift to a new normal that the first model never saw.
    values = normal(2600, seed=5)
    values += np.clip((np.arange(2600) - 600) / 2000, 0, 1)[:, None].astype(np.float32) * DRIFT
    ts = 1_750_000_000.0 + 10.0 * np.arange(len(values))
    config = make_config(tmp_path / "unused", every=2400.0, reservoir_age=4800.0)
    # The autoencoder, which judges the level its training saw: the forecaster predicts each
    # reading from the last one and follows so slow a creep without any retraining, which
    # would leave the stale control below nothing to show.
    config = config.model_copy(
        update={"model": config.model.model_copy(update={"detector": "lstm_ae"})}
    )
    data = RecordedData(values, ts, tuple(FEATURES), 100.0)  # 10x the config's max_gap
    out = tmp_path / "scores.csv"

    summary = replay(
        config.model_copy(update={"windows": config.windows.model_copy(update={"max_gap": 30})}),
        config.streams[0],
        data,
        out,
        device="d1",
        train_rows=600,
        torch_device=torch.device("cpu"),
        show_progress=False,
        retrain=True,
    )

    # Fire times every 40 minutes of data time after the first scored reading: 2000
    # readings * 10 s = 5.6 h -> 8 runs, none late, none doubled.
    assert summary.retrain_runs == 8
    assert summary.retrain_promoted >= 1
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    late = [r for r in rows[-400:] if r["score"]]
    # Retrained every hour of data, the model kept up: the drifted level is normal.
    assert sum(r["is_anomaly"] == "1" for r in late) / len(late) < 0.05
    # The same replay without retraining: the first model calls the new normal anomalous.
    # Its device threshold is held at the model's calibration (a warm-up longer than the
    # run): since issue #21 a device warms up in 200 windows and would follow this drift
    # on its own, and this control is about the model.
    frozen = config.threshold.model_copy(update={"warmup": 2000, "history": 2000})
    stale = replay(
        config.model_copy(
            update={
                "windows": config.windows.model_copy(update={"max_gap": 30}),
                "threshold": frozen,
            }
        ),
        config.streams[0],
        data,
        tmp_path / "stale.csv",
        device="d1",
        train_rows=600,
        torch_device=torch.device("cpu"),
        show_progress=False,
    )
    assert stale.retrain_runs == 0
    with (tmp_path / "stale.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sum(r["is_anomaly"] == "1" for r in rows[-400:]) / 400 > 0.25
    assert not (tmp_path / "unused").exists()  # replay used a scratch state directory
