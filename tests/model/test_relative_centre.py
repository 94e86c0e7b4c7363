"""Relative features are centred on their window's median (issue #21): a reading's error
must be its own, or an alert's evidence, and with it its start, reaches back before a fault.

With the mean, one spiking reading moved every reading of its window by its share of the
mean; on the simulated fleet, alerts opened 1-3 readings before temperature spikes and
were counted false, the spikes missed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sentinel.config import ModelConfig
from sentinel.errors import ModelError
from sentinel.model import LstmForecastDetector, TrainOptions, make_windows
from sentinel.model.base import META_FILE
from sentinel.model.lstm_detector import center_relative, window_centre
from tests.model.lstm_helpers import FEATURES, WINDOW, make_forecaster, windows

CPU = torch.device("cpu")
WINDOW_16 = 16


def series(rows: int, seed: int = 0) -> np.ndarray:
    """A sine of period 20 with a little noise, and a second channel following it."""
    rng = np.random.default_rng(seed)
    a = np.sin(2 * np.pi * np.arange(rows) / 20) + 0.03 * rng.standard_normal(rows)
    b = 5 + 2 * a + 0.03 * rng.standard_normal(rows)
    return np.stack([a, b], axis=1).astype(np.float32)


def options() -> TrainOptions:
    model = ModelConfig(epochs=12, hidden_size=16, batch_size=32, seed=3)
    return TrainOptions("pump", ("a", "b"), WINDOW_16, model)


def normal_windows(count: int = 40) -> np.ndarray:
    return np.ascontiguousarray(make_windows(series(count + WINDOW_16 - 1, seed=9), WINDOW_16, 1))


def ramp() -> np.ndarray:
    """One (1, 32, 2) window: a slow ramp (a temperature) and a second channel."""
    t = np.arange(32, dtype=np.float32)
    return np.stack([0.1 * t, np.cos(t / 5)], axis=1)[None]


def test_a_spike_moves_no_other_reading_of_its_window() -> None:
    window = ramp()
    spiked = window.copy()
    spiked[0, -1, 0] += 100.0  # the newest reading, already above the median
    centred = center_relative(window, [0])
    moved = center_relative(spiked, [0])
    np.testing.assert_array_equal(moved[0, :-1], centred[0, :-1])
    # the mean took 100 / 32 of it into every reading
    by_mean = center_relative(spiked, [0], "mean") - center_relative(window, [0], "mean")
    np.testing.assert_allclose(by_mean[0, :-1, 0], -100.0 / 32, rtol=1e-5)


def test_the_centre_is_the_lower_median_as_torch_takes_it() -> None:
    data = np.array([[[4.0], [1.0], [3.0], [2.0]]], dtype=np.float32)
    assert window_centre(data).tolist() == [[[2.0]]]
    assert window_centre(data, "mean").tolist() == [[[2.5]]]


def test_a_spike_leaves_the_forecasters_errors_before_it_alone() -> None:
    """The readings before a spike are predicted from readings before them: with the median,
    their errors are exactly what they were without the spike."""
    detector = make_forecaster(relative_features=(FEATURES[0],), relative_centre="median")
    data = windows(6, seed=3)
    data[:, :, 0] = np.linspace(0.0, 3.0, WINDOW)  # a ramp, spike goes above its median
    spiked = data.copy()
    spiked[:, -1, 0] += 50.0
    before = detector.step_ratios(data)
    after = detector.step_ratios(spiked)
    assert before is not None
    assert after is not None
    np.testing.assert_allclose(after[:, :-1], before[:, :-1], rtol=1e-5, atol=1e-6)
    assert (after[:, -1, 0] > 10 * before[:, -1, 0]).all()
    by_mean = make_forecaster(relative_features=(FEATURES[0],), relative_centre="mean")
    moved, unmoved = by_mean.step_ratios(spiked), by_mean.step_ratios(data)
    assert moved is not None
    assert unmoved is not None
    assert not np.allclose(moved[:, :-1], unmoved[:, :-1], rtol=1e-3)


def test_trained_models_centre_on_the_median_and_say_so(tmp_path: Path) -> None:
    opts = dataclasses.replace(options(), relative=("b",))
    detector = LstmForecastDetector.train([series(600)], opts, device=CPU)
    assert detector.meta.relative_centre == "median"
    detector.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / META_FILE).read_text())["relative_centre"] == "median"


def test_a_model_saved_before_the_median_keeps_the_mean(tmp_path: Path) -> None:
    detector = make_forecaster(relative_features=(FEATURES[1],), relative_centre="median")
    detector.save(tmp_path / "m")
    path = tmp_path / "m" / META_FILE
    meta = json.loads(path.read_text())
    meta.pop("relative_centre")
    path.write_text(json.dumps(meta))
    old = LstmForecastDetector.load(tmp_path / "m", detector.device)
    assert old.meta.relative_centre == "mean"
    data = windows(5, seed=2)
    by_mean = make_forecaster(relative_features=(FEATURES[1],), relative_centre="mean")
    np.testing.assert_allclose(old.score(data)[0], by_mean.score(data)[0], rtol=1e-6)
    meta["relative_centre"] = "mode"
    path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="relative_centre"):
        LstmForecastDetector.load(tmp_path / "m", detector.device)


def test_normal_windows_of_a_trained_model_stay_near_calibration() -> None:
    """Training centres as scoring does: the held-back windows' scores (calibration) and
    fresh normal windows' agree."""
    opts = dataclasses.replace(options(), relative=("a",))
    detector = LstmForecastDetector.train([series(1200)], opts, device=CPU)
    scores, _ = detector.score(normal_windows())
    assert np.median(scores) < 3 * detector.meta.calibration.quantiles["0.5"]
