"""Scoring without torch (issue #23, memory): ``NumpyLstmDetector`` must give the torch LSTM
detectors' scores, per-feature errors and per-reading ratios on every network shape the config
allows, read the same files with the same checks, and load in a process that never imports
torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from sentinel.config import ModelConfig, SentinelConfig
from sentinel.errors import ModelError
from sentinel.model import (
    LstmAeDetector,
    LstmForecastDetector,
    NumpyLstmDetector,
    TrainOptions,
    load_detector,
    make_windows,
    scoring_device,
)
from sentinel.model.device import gpu_present
from sentinel.model.lstm_meta import WEIGHTS_FILE
from sentinel.model.numpy_lstm import for_scoring

CPU = torch.device("cpu")
WINDOW = 16
FEATURES = ("a", "b", "flat", "drift")
REPO = Path(__file__).resolve().parents[2]


def series(rows: int, seed: int = 0) -> np.ndarray:
    """A sine, a channel following it, one constant in training and one that drifts
    (judged relative to its window)."""
    rng = np.random.default_rng(seed)
    a = np.sin(2 * np.pi * np.arange(rows) / 20) + 0.05 * rng.standard_normal(rows)
    b = 5 + 2 * a + 0.05 * rng.standard_normal(rows)
    flat = np.full(rows, 3.0)
    drift = 20 + np.cumsum(rng.standard_normal(rows)) * 0.05
    return np.stack([a, b, flat, drift], axis=1).astype(np.float32)


def train(detector: str, **model: Any) -> LstmAeDetector | LstmForecastDetector:
    config = ModelConfig.model_validate(
        {"detector": detector, "epochs": 2, "hidden_size": 12, "latent_size": 4}
        | {"batch_size": 64, **model}
    )
    options = TrainOptions("pump", FEATURES, WINDOW, config, relative=("drift",))
    trained = (LstmForecastDetector if detector == "lstm_forecast" else LstmAeDetector).train(
        [series(900)], options, device=CPU
    )
    assert isinstance(trained, LstmAeDetector | LstmForecastDetector)
    return trained


def scored_windows(count: int = 300) -> np.ndarray:
    windows = np.array(make_windows(series(count + WINDOW - 1, seed=7), WINDOW, 1))
    windows[100:120, -3, 0] += 6.0  # a spike among the scored readings
    windows[200:210, :, 2] = 7.0  # the constant feature moves
    return windows


SHAPES = [
    ("lstm_forecast", {}),
    ("lstm_forecast", {"num_layers": 2, "forecast_horizon": 3}),
    ("lstm_forecast", {"residual_coupling": False}),
    ("lstm_ae", {}),
    ("lstm_ae", {"num_layers": 2, "score_steps": 4}),
]


@pytest.mark.parametrize(("detector", "model"), SHAPES)
def test_numpy_scores_as_torch_does(detector: str, model: dict[str, Any], tmp_path: Path) -> None:
    trained = train(detector, **model)
    if isinstance(trained, LstmForecastDetector):  # coupled unless the shape says otherwise
        coupled = trained.meta.residual_coupling is not None
        assert coupled == model.get("residual_coupling", True)
    twin = NumpyLstmDetector.from_detector(trained)
    windows = scored_windows()
    scores, errors = trained.score(windows)
    np_scores, np_errors = twin.score(windows)
    np.testing.assert_allclose(np_scores, scores, rtol=2e-5, atol=1e-9)
    np.testing.assert_allclose(np_errors, errors, rtol=2e-5, atol=1e-7)
    # Not a comparison of near-equal numbers: the scores spread, the spikes stand out.
    assert scores[100:120].mean() > 2 * np.median(scores)
    ratios, np_ratios = trained.step_ratios(windows), twin.step_ratios(windows)
    if detector == "lstm_forecast":
        assert ratios is not None
        assert np_ratios is not None
        np.testing.assert_allclose(np_ratios, ratios, rtol=2e-5, atol=1e-6)
    else:  # the autoencoder's per-reading errors are not each reading's own
        assert ratios is None
        assert np_ratios is None
    # Chunks of any size score the same windows alike (torch pads; NumPy need not).
    small = NumpyLstmDetector(twin.meta, twin._weights, max_batch=7)
    np.testing.assert_allclose(small.score(windows)[0], np_scores, rtol=1e-6)
    # The same files: saved by either, loaded by either, the same scores.
    trained.save(tmp_path / "torch")
    twin.save(tmp_path / "numpy")
    loaded = load_detector(tmp_path / "torch", None)
    assert isinstance(loaded, NumpyLstmDetector)
    np.testing.assert_allclose(loaded.score(windows)[0], np_scores, rtol=1e-6)
    back = load_detector(tmp_path / "numpy", CPU)
    assert type(back) is type(trained)
    np.testing.assert_allclose(back.score(windows)[0], scores, rtol=1e-6)
    assert loaded.levels(windows) is not None
    np.testing.assert_array_equal(loaded.levels(windows), trained.levels(windows))
    assert loaded.constant_values() == trained.constant_values() == {2: 3.0}
    assert loaded.run_stats() == trained.run_stats()


def test_empty_batches_and_wrong_shapes() -> None:
    twin = NumpyLstmDetector.from_detector(train("lstm_forecast"))
    scores, errors = twin.score(np.zeros((0, WINDOW, len(FEATURES)), dtype=np.float32))
    assert scores.shape == (0,)
    assert errors.shape == (0, len(FEATURES))
    with pytest.raises(ModelError):
        twin.score(np.zeros((3, WINDOW + 1, len(FEATURES)), dtype=np.float32))


def test_bad_weight_files_are_refused_as_torch_refuses_them(tmp_path: Path) -> None:
    trained = train("lstm_forecast")
    trained.save(tmp_path / "m")
    path = tmp_path / "m" / WEIGHTS_FILE
    good = load_file(str(path))
    version = {"version": trained.version}

    def refused(weights: dict[str, np.ndarray], metadata: dict[str, str], match: str) -> None:
        save_file(weights, str(path), metadata=metadata)
        with pytest.raises(ModelError, match=match):
            NumpyLstmDetector.load(tmp_path / "m")
        with pytest.raises(ModelError):
            LstmForecastDetector.load(tmp_path / "m", CPU)

    refused({**good, "head.bias": np.zeros(3, np.float32)}, version, "shapes")
    refused({k: v for k, v in good.items() if k != "head.bias"}, version, "shapes")
    nan = good["head.weight"].copy()
    nan[0, 0] = np.nan
    refused({**good, "head.weight": nan}, version, "NaN")
    refused(good, {"version": "someone-else"}, "belong to version")
    path.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="safetensors"):
        NumpyLstmDetector.load(tmp_path / "m")


def test_scoring_device_picks_numpy_on_the_cpu_and_torch_where_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert scoring_device(ModelConfig(device="cpu")) is None
    assert scoring_device(ModelConfig(device="cpu", detector="lstm_ae")) is None
    assert scoring_device(ModelConfig(device="cpu", runtime="torch")) == CPU
    # Detectors with no NumPy twin keep torch on the CPU.
    assert scoring_device(ModelConfig(device="cpu", detector="lstm_ensemble")) == CPU
    with pytest.raises(ModelError, match="runtime = 'numpy'"):
        scoring_device(ModelConfig(runtime="numpy", detector="lstm_ensemble"))
    with pytest.raises(ValueError, match="runtime = 'numpy' scores on the CPU"):
        ModelConfig(runtime="numpy", device="cuda")
    # device auto: no GPU device node, no torch needed to know there is no CUDA.
    monkeypatch.setattr("sentinel.model.device.gpu_present", lambda: False)
    assert scoring_device(ModelConfig()) is None
    # A GPU node but torch sees no CUDA (this machine): torch says CPU, NumPy takes it.
    monkeypatch.setattr("sentinel.model.device.gpu_present", lambda: True)
    if not torch.cuda.is_available():
        assert scoring_device(ModelConfig()) is None


def test_gpu_present_reads_device_nodes(tmp_path: Path) -> None:
    assert not gpu_present(str(tmp_path))
    (tmp_path / "nvhost-ctrl-gpu").touch()  # a Jetson's
    assert gpu_present(str(tmp_path))


def test_for_scoring_converts_only_the_lstms() -> None:
    trained = train("lstm_ae")
    assert isinstance(for_scoring(trained), NumpyLstmDetector)
    from tests.model.helpers import train as train_any

    zscore = train_any("zscore")
    assert for_scoring(zscore) is zscore


def test_a_process_scoring_with_numpy_never_imports_torch(tmp_path: Path) -> None:
    """The daemon's modules, the model loaded and windows scored: torch stays out."""
    train("lstm_forecast").save(tmp_path / "m")
    config = SentinelConfig.model_validate(
        {
            "streams": [
                {
                    "name": "pump",
                    "topic": "p/{device}",
                    "features": [*FEATURES[:3], {"name": "drift", "level": "relative"}],
                }
            ],
            "model": {"device": "cpu"},
        }
    )
    code = f"""
import json, sys
import numpy as np
import sentinel.cli.main, sentinel.daemon.app
from sentinel.config import ModelConfig
from sentinel.model import load_detector, scoring_device
model = json.loads({json.dumps(config.model.model_dump())!r})
device = scoring_device(ModelConfig.model_validate(model))
detector = load_detector({str(tmp_path / "m")!r}, device)
scores, _ = detector.score(np.zeros((5, {WINDOW}, {len(FEATURES)}), dtype=np.float32))
torch = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
print(type(detector).__name__, len(scores), torch)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out.splitlines()[-1] == "NumpyLstmDetector 5 []"
