from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from sentinel.errors import ModelError
from sentinel.model import LstmAeDetector, LstmAeMeta, resolve_device
from sentinel.model.base import META_FILE
from sentinel.model.lstm_detector import WEIGHTS_FILE
from tests.model.lstm_helpers import CPU, CUDA_MISSING, WINDOW, make_detector, windows

# -- device ---------------------------------------------------------------------------------


def test_resolve_device_cpu_and_auto() -> None:
    assert resolve_device("cpu") == CPU
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_resolve_cuda_without_cuda_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto") == CPU


# -- scoring --------------------------------------------------------------------------------


def test_batches_are_padded_to_a_few_shapes_and_score_as_unpadded() -> None:
    """oneDNN keeps a compiled LSTM per batch shape (issue #23, memory): any number of
    windows reaches the module in a power-of-two batch, at most max_batch, and each
    window's score is the one it gets in a batch of exactly that size."""
    det = make_detector(max_batch=48)
    seen: list[int] = []
    module = det._module
    hook = module.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    try:
        batch = windows(100, seed=2)
        full_scores, full_errors = det.score(batch[:48])
        for n in (1, 3, 5, 17, 33, 48, 50, 100):
            scores, errors = det.score(batch[:n])
            assert scores.shape == (n,)
            assert errors.shape == (n, 3)
            k = min(n, 48)
            np.testing.assert_allclose(scores[:k], full_scores[:k], rtol=1e-6)
            np.testing.assert_allclose(errors[:k], full_errors[:k], rtol=1e-6)
    finally:
        hook.remove()
    assert set(seen) <= {1, 2, 4, 8, 16, 32, 48}
    assert seen.count(48) >= 4


def test_score_is_the_worst_features_error_over_its_normal_level() -> None:
    det = make_detector()
    scores, feature_errors = det.score(windows(5))
    assert scores.shape == (5,)
    assert feature_errors.shape == (5, 3)
    assert scores.dtype == feature_errors.dtype == np.float64
    # Per-feature errors are the MSE over time in scaled units, computed here by hand ...
    x = torch.from_numpy(det.meta.scaler.transform(windows(5)))
    with torch.inference_mode():
        mse = ((det.module(x) - x) ** 2).mean(dim=1).numpy()
    np.testing.assert_allclose(feature_errors, mse, rtol=1e-5)
    # ... and the score is the largest of them relative to its calibration mean.
    baseline = np.asarray(det.meta.calibration.feature_mean_errors)
    np.testing.assert_allclose(scores, (mse / baseline).max(axis=1), rtol=1e-5)


def test_score_of_empty_batch() -> None:
    scores, feature_errors = make_detector().score(np.zeros((0, WINDOW, 3), dtype=np.float32))
    assert scores.shape == (0,)
    assert feature_errors.shape == (0, 3)


@pytest.mark.parametrize("shape", [(2, WINDOW + 1, 3), (2, WINDOW, 2), (WINDOW, 3), (1, 2, 3, 4)])
def test_score_rejects_wrong_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ModelError, match=r"expects windows shaped \(B, 12, 3\)"):
        make_detector().score(np.zeros(shape, dtype=np.float32))


def test_chunked_scoring_matches_one_batch() -> None:
    data = windows(23)
    whole = make_detector(max_batch=512).score(data)
    chunked = make_detector(max_batch=5).score(data)
    np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-6)
    np.testing.assert_allclose(chunked[1], whole[1], rtol=1e-6)


def test_score_switches_the_module_to_eval_mode() -> None:
    det = make_detector()
    det.module.train()  # score must switch to eval mode itself
    det.score(windows(2))
    assert not det.module.training


# -- save / load ----------------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_scores(tmp_path: Path) -> None:
    det = make_detector()
    det.save(tmp_path / "m")
    again = LstmAeDetector.load(tmp_path / "m", CPU)
    assert again.meta == det.meta
    assert again.meta.training == {"n_readings": 100, "first_ts": 1.5, "seed": 0, "note": "test"}
    np.testing.assert_array_equal(again.score(windows(7))[0], det.score(windows(7))[0])
    np.testing.assert_array_equal(again.score(windows(7))[1], det.score(windows(7))[1])


def test_saved_model_is_safetensors_and_json_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_detector().save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [META_FILE, WEIGHTS_FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp dir left behind
    raw = (tmp_path / "m" / WEIGHTS_FILE).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert header["__metadata__"] == {"version": "20250101T000000Z-abc123"}
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"F32"}
    json.loads((tmp_path / "m" / META_FILE).read_text())

    def no_pickle(*args: object, **kwargs: object) -> None:
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    LstmAeDetector.load(tmp_path / "m", CPU)


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    det = make_detector()
    det.save(tmp_path / "m")
    with pytest.raises(ModelError, match="cannot save"):
        det.save(tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def edit_meta(directory: Path, **changes: object) -> None:
    path = directory / META_FILE
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    make_detector().save(tmp_path / "m")
    return tmp_path / "m"


def test_load_refuses_missing_weights(saved: Path) -> None:
    (saved / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelError, match=rf"{WEIGHTS_FILE}: missing"):
        LstmAeDetector.load(saved, CPU)


def test_load_refuses_missing_meta(saved: Path) -> None:
    (saved / META_FILE).unlink()
    with pytest.raises(ModelError, match=rf"{META_FILE}: cannot read"):
        LstmAeDetector.load(saved, CPU)


@pytest.mark.parametrize("keep", [0.5, 0.99, 10])
def test_load_refuses_truncated_weights(saved: Path, keep: float) -> None:
    path = saved / WEIGHTS_FILE
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)] if keep < 1 else raw[: int(keep)])
    with pytest.raises(ModelError, match=rf"{WEIGHTS_FILE}: not a readable safetensors file"):
        LstmAeDetector.load(saved, CPU)


def test_load_refuses_wrong_schema_version(saved: Path) -> None:
    edit_meta(saved, schema_version=2)
    with pytest.raises(ModelError, match=rf"{META_FILE}: schema_version is 2"):
        LstmAeDetector.load(saved, CPU)


def test_load_refuses_shape_mismatch(saved: Path) -> None:
    edit_meta(saved, hidden_size=16)
    with pytest.raises(ModelError, match=rf"{WEIGHTS_FILE}: weights do not fit the shapes"):
        LstmAeDetector.load(saved, CPU)


def test_load_refuses_weights_of_another_version(saved: Path) -> None:
    edit_meta(saved, version="20250101T000000Z-ffffff")
    with pytest.raises(ModelError, match="weights belong to version"):
        LstmAeDetector.load(saved, CPU)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "meta must be a JSON object"),
        (None, "features must be a list of strings"),
    ],
)
def test_load_refuses_bad_meta(saved: Path, text: str | None, reason: str) -> None:
    if text is None:
        edit_meta(saved, features="abc")
    else:
        (saved / META_FILE).write_text(text)
    with pytest.raises(ModelError, match=reason):
        LstmAeDetector.load(saved, CPU)


def test_load_refuses_inconsistent_meta(saved: Path) -> None:
    edit_meta(saved, features=["a", "b"])
    with pytest.raises(ModelError, match="scaler has 3 features, meta lists 2"):
        LstmAeDetector.load(saved, CPU)


# -- CUDA (Jetson) --------------------------------------------------------------------------


@pytest.mark.skipif(CUDA_MISSING, reason="needs a CUDA device")
def test_cuda_scores_match_cpu(tmp_path: Path) -> None:
    cpu = make_detector(max_batch=7)
    cpu.save(tmp_path / "m")
    cuda = LstmAeDetector.load(tmp_path / "m", torch.device("cuda"), max_batch=7)
    assert next(cuda.module.parameters()).device.type == "cuda"
    data = windows(20)
    got, got_features = cuda.score(data)
    want, want_features = cpu.score(data)
    # cuDNN may use TF32 inside the LSTM, hence the loose tolerance.
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-5)
    np.testing.assert_allclose(got_features, want_features, rtol=1e-2, atol=1e-5)
    # Weights saved from the GPU load on the CPU.
    cuda.save(tmp_path / "from_cuda")
    back = LstmAeDetector.load(tmp_path / "from_cuda", CPU)
    np.testing.assert_array_equal(back.score(data)[0], want)


def test_relative_features_round_trip_and_old_meta_reads_as_none(saved: Path) -> None:
    meta = LstmAeMeta.from_json((saved / META_FILE).read_text())
    with_relative = dataclasses.replace(meta, relative_features=(meta.features[0],))
    assert LstmAeMeta.from_json(with_relative.to_json()).relative_features == (meta.features[0],)
    raw = json.loads(meta.to_json())
    del raw["relative_features"]  # as written before the key existed
    assert LstmAeMeta.from_json(json.dumps(raw)).relative_features == ()
    with pytest.raises(ModelError, match="not among the features"):
        dataclasses.replace(meta, relative_features=("nonexistent",))


def test_score_steps_average_the_newest_steps_only() -> None:
    whole = make_detector()
    newest = make_detector(score_steps=3)
    data = windows(5, seed=4)
    scaled = torch.from_numpy(whole.meta.scaler.transform(data))
    with torch.inference_mode():
        per_step = ((whole.module(scaled) - scaled) ** 2).double().numpy()  # (B, T, F)
    _, features_whole = whole.score(data)
    _, features_newest = newest.score(data)
    np.testing.assert_allclose(features_whole, per_step.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(features_newest, per_step[:, -3:, :].mean(axis=1), rtol=1e-6)
    # All of the window is the same as the default.
    np.testing.assert_array_equal(
        make_detector(score_steps=WINDOW).score(data)[0], whole.score(data)[0]
    )


def test_score_steps_round_trip_old_meta_reads_as_zero_and_range_is_checked(
    saved: Path,
) -> None:
    meta = LstmAeMeta.from_json((saved / META_FILE).read_text())
    assert LstmAeMeta.from_json(dataclasses.replace(meta, score_steps=4).to_json()).score_steps == 4
    raw = json.loads(meta.to_json())
    del raw["score_steps"]  # as written before the key existed
    assert LstmAeMeta.from_json(json.dumps(raw)).score_steps == 0
    for bad in (-1, meta.window + 1):
        with pytest.raises(ModelError, match="score_steps must be between 0 and the window"):
            dataclasses.replace(meta, score_steps=bad)
    raw["score_steps"] = "4"
    with pytest.raises(ModelError, match="score_steps must be an integer"):
        LstmAeMeta.from_json(json.dumps(raw))


def test_levels_round_trip_and_old_meta_has_none(saved: Path) -> None:
    from sentinel.model.levels import LevelStats

    meta = LstmAeMeta.from_json((saved / META_FILE).read_text())
    levels = LevelStats(mean=(0.0, 0.5, -0.5), sd=(0.1, 0.0, 0.2))
    assert LstmAeMeta.from_json(dataclasses.replace(meta, levels=levels).to_json()).levels == levels
    raw = json.loads(meta.to_json())
    raw.pop("levels", None)  # as written before the key existed
    old = LstmAeMeta.from_json(json.dumps(raw))
    assert old.levels is None
    assert make_detector(levels=None).levels(windows(2)) is None
    with pytest.raises(ModelError, match="levels has 1 features, meta lists 3"):
        dataclasses.replace(meta, levels=LevelStats(mean=(0.0,), sd=(1.0,)))


def test_run_statistics_round_trip_and_old_meta_has_none(saved: Path) -> None:
    from sentinel.model.stuck import RunStats

    meta = LstmAeMeta.from_json((saved / META_FILE).read_text())
    stuck = RunStats(longest=(3, 0, 12))
    with_runs = dataclasses.replace(meta, stuck=stuck)
    assert json.loads(with_runs.to_json())["stuck"] == {"longest_run": [3, 0, 12]}
    assert LstmAeMeta.from_json(with_runs.to_json()).stuck == stuck
    assert make_detector(stuck=stuck).run_stats() == stuck
    raw = json.loads(meta.to_json())
    raw.pop("stuck", None)  # as written before the key existed
    old = LstmAeMeta.from_json(json.dumps(raw))
    assert old.stuck is None
    assert make_detector(stuck=None).run_stats() is None  # the stuck check leaves it alone
    with pytest.raises(ModelError, match="stuck has 1 features, meta lists 3"):
        dataclasses.replace(meta, stuck=RunStats(longest=(1,)))
    raw["stuck"] = {"longest_run": [1, "2", 3]}
    with pytest.raises(ModelError, match="non-negative integers"):
        LstmAeMeta.from_json(json.dumps(raw))
