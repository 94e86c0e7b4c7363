"""The contract every registered detector keeps, checked on each (river's estimator checks).

A detector added to ``sentinel.model.detector_types`` is run through all of it without a
line here: training, the shapes of its scores, determinism under a seed, windows holding
NaN or infinite readings, the save/load round trip and export where it declares them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sentinel.errors import ModelError
from sentinel.model import DETECTORS, Detector, daemon_refusal, load_detector, make_windows
from sentinel.model.calibration import CALIBRATION_QUANTILES
from sentinel.worker.pipeline import _SCORE_CAP
from tests.model.helpers import CPU, FEATURES, WINDOW, signal, train

KEYS = sorted(DETECTORS)


def windows(count: int = 12) -> np.ndarray:
    return np.ascontiguousarray(make_windows(signal(count + WINDOW - 1, seed=7), WINDOW, 1))


@pytest.fixture(scope="module", params=KEYS)
def trained(request: pytest.FixtureRequest) -> Detector:
    return train(request.param)


def test_the_detector_is_what_its_key_says(trained: Detector) -> None:
    cls = type(trained)
    assert DETECTORS[cls.type_key] is cls
    meta = trained.meta
    assert meta.detector == cls.type_key
    assert (meta.stream, meta.features, meta.window) == ("pump", FEATURES, WINDOW)
    assert (trained.stream, trained.features, trained.window) == ("pump", FEATURES, WINDOW)
    assert trained.version == meta.version
    assert set(trained.calibration.quantiles) == set(CALIBRATION_QUANTILES)
    assert len(trained.calibration.feature_mean_errors) == len(FEATURES)
    assert meta.training["first_ts"] == 10.0
    assert meta.training["last_ts"] == 20.0


def test_scores_and_feature_errors_have_the_documented_shapes(trained: Detector) -> None:
    scores, errors = trained.score(windows(12))
    assert scores.shape == (12,)
    assert errors.shape == (12, len(FEATURES))
    assert scores.dtype == errors.dtype == np.float64
    assert np.all(np.isfinite(scores))
    assert np.all(np.isfinite(errors))
    empty = np.zeros((0, WINDOW, len(FEATURES)), dtype=np.float32)
    scores, errors = trained.score(empty)
    assert scores.shape == (0,)
    assert errors.shape == (0, len(FEATURES))
    with pytest.raises(ModelError, match="expects windows shaped"):
        trained.score(np.zeros((2, WINDOW + 1, len(FEATURES)), dtype=np.float32))


def test_levels_are_none_or_one_per_window_and_feature(trained: Detector) -> None:
    levels = trained.levels(windows(5))
    if levels is not None:
        assert levels.shape == (5, len(FEATURES))
        assert np.all(levels >= 0)


def test_the_same_seed_gives_the_same_scores(trained: Detector) -> None:
    again = train(trained.type_key)
    assert again.calibration == trained.calibration
    np.testing.assert_array_equal(again.score(windows())[0], trained.score(windows())[0])
    np.testing.assert_array_equal(again.score(windows())[1], trained.score(windows())[1])


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # 3e38, scaled
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 3e38])
def test_a_non_finite_window_neither_raises_nor_touches_the_others(
    trained: Detector, bad: float
) -> None:
    """What reaches a detector is finite (ingest refuses NaN), but a reading can still
    overflow float32 in the model; the pipeline takes whatever non-finite score comes
    back as the worst there is (``_SCORE_CAP``)."""
    data = windows(6)
    clean_scores, clean_errors = trained.score(data)
    data[2, -1, 0] = bad
    scores, errors = trained.score(data)
    assert scores.shape == (6,)
    assert errors.shape == (6, len(FEATURES))
    others = [0, 1, 3, 4, 5]
    np.testing.assert_array_equal(scores[others], clean_scores[others])
    np.testing.assert_array_equal(errors[others], clean_errors[others])
    # As the pipeline maps it: a finite number for the database, never NaN.
    capped = np.nan_to_num(scores, nan=_SCORE_CAP, posinf=_SCORE_CAP, neginf=0.0)
    assert np.all(np.isfinite(capped))


def test_save_and_load_give_the_same_scores(trained: Detector, tmp_path: Path) -> None:
    if trained.cannot_save:
        pytest.skip(f"{trained.type_key} declares it cannot be saved: {trained.cannot_save}")
    trained.save(tmp_path / "m")
    again = load_detector(tmp_path / "m", CPU)
    assert type(again) is type(trained)
    assert again.meta == trained.meta
    np.testing.assert_array_equal(again.score(windows())[0], trained.score(windows())[0])
    np.testing.assert_array_equal(again.score(windows())[1], trained.score(windows())[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp dir left behind


def test_a_detector_that_cannot_be_saved_says_why_and_the_daemon_refuses_it(
    trained: Detector, tmp_path: Path
) -> None:
    key = trained.type_key
    if not trained.cannot_save:
        assert daemon_refusal(key) is None
        return
    with pytest.raises(ModelError, match="cannot be saved"):
        trained.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()
    refusal = daemon_refusal(key)
    assert refusal is not None
    assert trained.cannot_save in refusal


def test_export_where_supported(trained: Detector, tmp_path: Path) -> None:
    if not trained.export_formats:
        with pytest.raises(ModelError, match="cannot be exported"):
            trained.export("torchscript", tmp_path / "m.pt")
        return
    # TorchScript needs nothing beyond torch; export itself checks the file reproduces the
    # detector's scores before it reports done (test_export.py covers ONNX).
    fmt = "torchscript" if "torchscript" in trained.export_formats else trained.export_formats[0]
    path = trained.export(fmt, tmp_path / f"m.{fmt}")
    assert path.is_file()
