"""Exports for edge runtimes reproduce the detector's scores; CUDA where there is one."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sentinel.cli.main import main
from sentinel.config import config_to_toml
from sentinel.errors import ModelError
from sentinel.model import ModelRegistry, resolve_device
from sentinel.model.calibration import ResidualCoupling
from sentinel.model.export import export_detector
from tests.model.lstm_helpers import (
    CUDA_MISSING,
    FEATURES,
    make_detector,
    make_forecaster,
    windows,
)


def test_torchscript_export_scores_like_the_detector(tmp_path: Path) -> None:
    detector = make_detector()
    path = export_detector(detector, "torchscript", tmp_path / "m.pt")
    loaded = torch.jit.load(str(path))
    data = windows(9, seed=5)  # a batch size other than the traced one
    with torch.inference_mode():
        scores, feature_errors = loaded(torch.from_numpy(data))
    want, want_features = detector.score(data)
    np.testing.assert_allclose(scores.numpy(), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(feature_errors.numpy(), want_features, rtol=1e-4, atol=1e-6)
    meta = json.loads((tmp_path / "m.pt.json").read_text())
    assert meta["features"] == list(FEATURES)
    assert meta["input"]["shape"] == ["batch", detector.window, len(FEATURES)]


def test_export_keeps_relative_features_and_score_steps(tmp_path: Path) -> None:
    """The export is the whole scoring rule: window-centred features and the newest-steps
    error included (a model with either used to fail its own export check)."""
    detector = make_detector(relative_features=(FEATURES[1],), score_steps=3)
    path = export_detector(detector, "torchscript", tmp_path / "m.pt")
    loaded = torch.jit.load(str(path))
    data = windows(7, seed=8)
    data[:, :, 1] += np.linspace(0, 50, detector.window, dtype=np.float32)  # a drifting level
    with torch.inference_mode():
        scores, _ = loaded(torch.from_numpy(data))
    np.testing.assert_allclose(scores.numpy(), detector.score(data)[0], rtol=1e-4, atol=1e-6)
    sidecar = json.loads((tmp_path / "m.pt.json").read_text())
    assert sidecar["relative_features"] == [FEATURES[1]]
    assert sidecar["score_steps"] == 3


def test_export_holds_constant_features_and_leaves_them_out_of_the_score(
    tmp_path: Path,
) -> None:
    """A feature constant in training is held at its value and not scored (issue #21), in
    the exported graph as in the detector: a departure in it changes no score."""
    detector = make_detector(constant_features={FEATURES[2]: 3.0})
    path = export_detector(detector, "torchscript", tmp_path / "m.pt")
    loaded = torch.jit.load(str(path))
    data = windows(7, seed=9)
    data[:, :, 2] = 3.0
    moved = data.copy()
    moved[:, 5:, 2] = 40.0
    with torch.inference_mode():
        held, _ = loaded(torch.from_numpy(data))
        departed, _ = loaded(torch.from_numpy(moved))
    np.testing.assert_allclose(departed.numpy(), held.numpy(), rtol=1e-6)
    np.testing.assert_allclose(held.numpy(), detector.score(moved)[0], rtol=1e-4, atol=1e-6)


def test_onnx_export_scores_like_the_detector(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx", reason="pip install 'sentinel-iot[onnx]'")
    from onnx.reference import ReferenceEvaluator

    detector = make_detector()
    path = export_detector(detector, "onnx", tmp_path / "m.onnx")
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["windows"]
    data = windows(6, seed=7)
    outputs = ReferenceEvaluator(model).run(None, {"windows": data})
    assert isinstance(outputs, list)  # a dict only for intermediate=True
    scores, feature_errors = outputs
    want, want_features = detector.score(data)
    np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(feature_errors, want_features, rtol=1e-4, atol=1e-6)


def test_onnx_without_the_onnx_package_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ModelError, match=r"pip install 'sentinel-iot\[onnx\]'"):
        export_detector(make_detector(), "onnx", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_models_export_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    detector = make_detector(version="20250101T000000Z-export")
    registry = ModelRegistry(tmp_path / "state" / "models")
    registry.save(detector)
    config = tmp_path / "sentinel.toml"
    config.write_text(
        config_to_toml(
            {
                "state_dir": str(tmp_path / "state"),
                "windows": {"length": detector.window, "hop": 4},
                "cold_start": {"readings": 64, "span": 0},
                "logging": {"format": "json", "level": "warning"},
                "streams": [{"name": "pump", "topic": "p/{device}", "features": list(FEATURES)}],
            }
        )
    )
    out = tmp_path / "exports" / "pump.pt"
    args = ["models", "export", detector.version, "--config", str(config)]
    assert main([*args, "--format", "torchscript", "--out", str(out)]) == 0
    assert "exported as torchscript" in capsys.readouterr().out
    assert out.is_file()
    assert main(["models", "export", "nope", "--config", str(config), "--format", "onnx"]) == 2
    assert "no model version 'nope'" in capsys.readouterr().err


def _run_export(path: Path, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores and per-feature errors of an exported file, run as a runtime would."""
    if path.suffix == ".onnx":
        import onnx
        from onnx.reference import ReferenceEvaluator

        outputs = ReferenceEvaluator(onnx.load(str(path))).run(None, {"windows": data})
        assert isinstance(outputs, list)
        return np.asarray(outputs[0]), np.asarray(outputs[1])
    loaded = torch.jit.load(str(path))
    with torch.inference_mode():
        scores, feature_errors = loaded(torch.from_numpy(data))
    return scores.numpy(), feature_errors.numpy()


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_forecaster_export_scores_like_the_detector(fmt: str, tmp_path: Path) -> None:
    """``lstm_forecast`` exports as the LSTM-AE does: the graph is its whole scoring rule,
    one-step prediction errors of the newest ``score_steps`` readings and their coupling
    (``model.residual_coupling``, on by default) included."""
    if fmt == "onnx":
        pytest.importorskip("onnx", reason="pip install 'sentinel-iot[onnx]'")
    # b explains half of a and of c, a bound that clips the larger explained parts
    coupling = ResidualCoupling(
        weights=((0.0, 0.3, 0.0), (0.5, 0.0, 0.5), (0.0, 0.3, 0.0)), bounds=(0.4, 0.2, 0.4)
    )
    detector = make_forecaster(residual_coupling=coupling)
    plain = make_forecaster().score(windows(9, seed=5))[1]
    assert not np.allclose(detector.score(windows(9, seed=5))[1], plain)
    path = detector.export("onnx" if fmt == "onnx" else "torchscript", tmp_path / f"m.{fmt}")
    data = windows(9, seed=5)  # a batch size other than the traced one
    scores, feature_errors = _run_export(path, data)
    want, want_features = detector.score(data)
    np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(feature_errors, want_features, rtol=1e-4, atol=1e-6)
    sidecar = json.loads((tmp_path / f"m.{fmt}.json").read_text())
    assert sidecar["detector"] == "lstm_forecast"
    assert sidecar["score_steps"] == detector.meta.score_steps
    assert sidecar["features"] == list(FEATURES)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_forecaster_export_predicts_as_many_steps_ahead_as_the_model(
    fmt: str, tmp_path: Path
) -> None:
    """A forecaster with ``horizon`` 3 exports its own rule: errors of readings predicted
    from 3 steps before, not the one-step errors a graph without the horizon would give."""
    if fmt == "onnx":
        pytest.importorskip("onnx", reason="pip install 'sentinel-iot[onnx]'")
    detector = make_forecaster(horizon=3, score_steps=5)
    path = detector.export("onnx" if fmt == "onnx" else "torchscript", tmp_path / f"m.{fmt}")
    data = windows(6, seed=2)
    scores, feature_errors = _run_export(path, data)
    want, want_features = detector.score(data)
    np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(feature_errors, want_features, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("centre", ["median", "mean"])
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_forecaster_export_holds_constant_and_centres_relative_features(
    fmt: str, centre: str, tmp_path: Path
) -> None:
    """A feature constant in training is held at its value and not scored, a relative one
    is judged by its changes within the window, in the forecaster's graph as in its own
    ``score``: a drifting level or a departure in the constant changes nothing exported."""
    if fmt == "onnx":
        pytest.importorskip("onnx", reason="pip install 'sentinel-iot[onnx]'")
    detector = make_forecaster(
        relative_features=(FEATURES[1],),
        constant_features={FEATURES[2]: 3.0},
        score_steps=3,
        relative_centre=centre,
    )
    path = detector.export("onnx" if fmt == "onnx" else "torchscript", tmp_path / f"m.{fmt}")
    data = windows(7, seed=8)
    data[:, :, 2] = 3.0
    moved = data.copy()
    moved[:, :, 1] += 50.0  # another level, the same shape
    moved[:, 5:, 2] = 40.0  # the constant departs
    moved[:, -1, 1] += 9.0  # a spike: what the median is for
    data[:, -1, 1] += 9.0
    held, _ = _run_export(path, data)
    departed, _ = _run_export(path, moved)
    np.testing.assert_allclose(departed, held, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(held, detector.score(data)[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(departed, detector.score(moved)[0], rtol=1e-4, atol=1e-6)
    assert json.loads((tmp_path / f"m.{fmt}.json").read_text())["relative_features"] == [
        FEATURES[1]
    ]


def test_models_export_command_on_a_forecaster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sentinel models export`` loads a saved ``lstm_forecast`` model and exports it."""
    pytest.importorskip("onnx", reason="pip install 'sentinel-iot[onnx]'")
    detector = make_forecaster(version="20250101T000000Z-fcexpt")
    ModelRegistry(tmp_path / "state" / "models").save(detector)
    config = tmp_path / "sentinel.toml"
    config.write_text(
        config_to_toml(
            {
                "state_dir": str(tmp_path / "state"),
                "windows": {"length": detector.window, "hop": 4},
                "cold_start": {"readings": 64, "span": 0},
                "model": {"detector": "lstm_forecast"},
                "logging": {"format": "json", "level": "warning"},
                "streams": [{"name": "pump", "topic": "p/{device}", "features": list(FEATURES)}],
            }
        )
    )
    out = tmp_path / "exports" / "pump.onnx"
    args = ["models", "export", detector.version, "--config", str(config), "--format", "onnx"]
    assert main([*args, "--out", str(out)]) == 0
    assert "exported as onnx" in capsys.readouterr().out
    scores, _ = _run_export(out, windows(5, seed=3))
    np.testing.assert_allclose(scores, detector.score(windows(5, seed=3))[0], rtol=1e-4)
    assert json.loads((tmp_path / "exports" / "pump.onnx.json").read_text())["detector"] == (
        "lstm_forecast"
    )


def test_auto_falls_back_to_the_cpu_when_cuda_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Jetson whose CUDA libraries do not match torch: a device is reported, then fails."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real_zeros = torch.zeros

    def broken_zeros(*args: Any, **kwargs: Any) -> torch.Tensor:
        if kwargs.get("device") == "cuda":
            raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version")
        return real_zeros(*args, **kwargs)

    monkeypatch.setattr(torch, "zeros", broken_zeros)
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(CUDA_MISSING, reason="needs a CUDA device (run on a GPU machine or Jetson)")
def test_cuda_inference_and_export_of_a_gpu_model(tmp_path: Path) -> None:
    """On a GPU: auto picks CUDA, scores match the CPU's, and a GPU model exports."""
    device = resolve_device("auto")
    assert device.type == "cuda"
    cpu = make_detector()
    cpu.save(tmp_path / "m")
    from sentinel.model import LstmAeDetector

    gpu = LstmAeDetector.load(tmp_path / "m", device)
    data = windows(256, seed=11)
    got, _ = gpu.score(data)
    want, _ = cpu.score(data)
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-5)  # TF32 in cuDNN's LSTM
    path = export_detector(gpu, "torchscript", tmp_path / "gpu.pt")
    assert path.is_file()


@pytest.mark.skipif(CUDA_MISSING, reason="needs a CUDA device (run on a GPU machine or Jetson)")
def test_a_forecaster_on_the_gpu_exports(tmp_path: Path) -> None:
    """A forecaster scoring on CUDA exports a CPU graph that reproduces its scores."""
    from sentinel.model import LstmForecastDetector

    cpu = make_forecaster()
    cpu.save(tmp_path / "m")
    gpu = LstmForecastDetector.load(tmp_path / "m", resolve_device("auto"))
    path = export_detector(gpu, "torchscript", tmp_path / "gpu.pt")
    scores, _ = _run_export(path, windows(16, seed=12))
    np.testing.assert_allclose(scores, cpu.score(windows(16, seed=12))[0], rtol=1e-4, atol=1e-6)
