"""The LSTM ensemble (issue #21): both LSTM members trained on one preparation of the data,
each exactly as it trains alone, and a score that is their per-feature ratios combined. The
contract (test_contract.py) runs it like every detector; these check what is its own."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from sentinel.config import ModelConfig
from sentinel.errors import ModelError
from sentinel.model import (
    DETECTORS,
    LstmAeDetector,
    LstmEnsembleDetector,
    LstmForecastDetector,
    TrainOptions,
    load_detector,
    make_windows,
)
from sentinel.model.base import META_FILE
from sentinel.model.calibration import score_floor, window_scores
from sentinel.model.lstm_detector import WEIGHTS_FILE
from sentinel.model.lstm_ensemble import COMBINES, Combine, combine_ratios
from tests.model.helpers import CPU, FEATURES, WINDOW, signal


def options(combine: Combine | None = None) -> TrainOptions:
    """A tiny model; the config's default combination unless ``combine`` is given."""
    model = ModelConfig(epochs=2, hidden_size=8, latent_size=4, batch_size=64)
    if combine is not None:
        model = model.model_copy(update={"ensemble_combine": combine})
    return TrainOptions("pump", FEATURES, WINDOW, model)


def segments() -> list[np.ndarray]:
    return [signal(400), signal(300, seed=1)]


def windows(count: int = 20) -> np.ndarray:
    data = signal(count + WINDOW - 1, seed=7)
    data[count // 2 :, 1] += 3.0  # an offset on one channel from row count // 2 on
    return np.ascontiguousarray(make_windows(data, WINDOW, 1))


@pytest.fixture(scope="module")
def ensemble() -> LstmEnsembleDetector:
    trained = LstmEnsembleDetector.train(segments(), options(), device=CPU)
    assert isinstance(trained, LstmEnsembleDetector)
    return trained


def ratios(member: LstmAeDetector | LstmForecastDetector, data: np.ndarray) -> np.ndarray:
    floor, judged = score_floor(
        member.calibration.feature_mean_errors, member.meta.constant_indices
    )
    return np.where(judged, member.score(data)[1] / floor, 0.0)


def test_each_member_is_the_detector_it_would_be_alone(ensemble: LstmEnsembleDetector) -> None:
    """One data preparation, but each member's own shuffles: the same seed gives the same
    networks as training each alone (what the benchmarks compare the ensemble with)."""
    data = windows()
    alone = (
        DETECTORS["lstm_ae"].train(segments(), options(), device=CPU),
        DETECTORS["lstm_forecast"].train(segments(), options(), device=CPU),
    )
    for member, single in zip((ensemble.autoencoder, ensemble.forecaster), alone, strict=True):
        assert type(member) is type(single)
        assert member.calibration == single.calibration
        np.testing.assert_array_equal(member.score(data)[1], single.score(data)[1])
        assert member.version == ensemble.version  # its weights say whose they are


def test_the_checks_beside_the_score_get_the_members_training_statistics(
    ensemble: LstmEnsembleDetector,
) -> None:
    # one training run: the stuck, level and constant checks judge the ensemble as either
    member = ensemble.forecaster
    assert ensemble.run_stats() == member.run_stats() is not None
    assert ensemble.constant_values() == member.constant_values()
    np.testing.assert_array_equal(ensemble.levels(windows()), member.levels(windows()))
    assert ensemble.step_ratios(windows()) is None  # the autoencoder's share is not local


def test_the_score_is_the_worst_feature_of_the_members_ratios_combined(
    ensemble: LstmEnsembleDetector,
) -> None:
    """By default a feature's two ratios combine to the smaller: both members must see it."""
    assert ensemble.meta.combine == "min"
    data = windows()
    ae, fc = ratios(ensemble.autoencoder, data), ratios(ensemble.forecaster, data)
    scores, errors = ensemble.score(data)
    np.testing.assert_allclose(errors, np.minimum(ae, fc))
    expected = window_scores(errors, ensemble.calibration.feature_mean_errors)
    np.testing.assert_allclose(scores, expected)
    # Windows whose newest readings hold the offset's onset (windows 3-5 of rows 3-12,
    # the offset from row 10) score far above the clean ones before them.
    assert scores[3:6].min() > 3 * scores[:3].max()


@pytest.mark.parametrize(
    ("how", "expected"),
    [("max", np.maximum), ("mean", lambda a, b: (a + b) / 2)],
)
def test_another_combination_is_trained_and_scored_as_configured(
    how: Combine, expected: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> None:
    trained = LstmEnsembleDetector.train(segments(), options(how), device=CPU)
    assert trained.meta.combine == how
    data = windows()
    ae, fc = ratios(trained.autoencoder, data), ratios(trained.forecaster, data)
    np.testing.assert_allclose(trained.score(data)[1], expected(ae, fc))


def test_calibration_is_of_the_combined_ratios_on_held_back_windows(
    ensemble: LstmEnsembleDetector,
) -> None:
    """The combined ratios are normalised once more by their held-back median, so a normal
    window scores about 1 whatever the two members' error scales are."""
    baseline = np.asarray(ensemble.calibration.feature_mean_errors)
    assert np.all((baseline > 0.2) & (baseline < 5))
    assert 0.5 < ensemble.calibration.quantiles["0.5"] < 5
    assert ensemble.meta.training["lstm_ae_epochs_run"] == 2
    assert ensemble.meta.training["lstm_forecast_epochs_run"] == 2
    assert float(ensemble.meta.training["seconds"]) >= float(
        ensemble.meta.training["lstm_ae_seconds"]
    )


def test_one_version_on_disk_with_each_members_own_files(
    ensemble: LstmEnsembleDetector, tmp_path: Path
) -> None:
    ensemble.save(tmp_path / "m")
    saved = sorted(str(p.relative_to(tmp_path / "m")) for p in (tmp_path / "m").rglob("*"))
    assert saved == [
        "lstm_ae",
        f"lstm_ae/{META_FILE}",
        f"lstm_ae/{WEIGHTS_FILE}",
        "lstm_forecast",
        f"lstm_forecast/{META_FILE}",
        f"lstm_forecast/{WEIGHTS_FILE}",
        META_FILE,
    ]
    meta = json.loads((tmp_path / "m" / META_FILE).read_text())
    assert (meta["detector"], meta["combine"]) == ("lstm_ensemble", "min")
    again = load_detector(tmp_path / "m", CPU)
    assert isinstance(again, LstmEnsembleDetector)
    np.testing.assert_array_equal(again.score(windows())[1], ensemble.score(windows())[1])


def test_a_member_of_another_version_is_refused(
    ensemble: LstmEnsembleDetector, tmp_path: Path
) -> None:
    ensemble.save(tmp_path / "m")
    other = LstmEnsembleDetector.train(segments(), options(), device=CPU)
    other.save(tmp_path / "other")
    shutil.rmtree(tmp_path / "m" / "lstm_forecast")
    shutil.copytree(tmp_path / "other" / "lstm_forecast", tmp_path / "m" / "lstm_forecast")
    with pytest.raises(ModelError, match="does not belong to ensemble"):
        load_detector(tmp_path / "m", CPU)


def test_an_unknown_combination_in_meta_json_is_refused(
    ensemble: LstmEnsembleDetector, tmp_path: Path
) -> None:
    ensemble.save(tmp_path / "m")
    path = tmp_path / "m" / META_FILE
    meta = json.loads(path.read_text())
    meta["combine"] = "median"
    path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="combine must be one of"):
        load_detector(tmp_path / "m", CPU)


def test_export_is_refused_naming_the_detector(
    ensemble: LstmEnsembleDetector, tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match="lstm_ensemble model cannot be exported as onnx"):
        ensemble.export("onnx", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_progress_counts_both_members_epochs() -> None:
    seen: list[tuple[int, int]] = []
    LstmEnsembleDetector.train(
        segments(),
        options(),
        device=CPU,
        progress=lambda epoch, total, _loss: seen.append((epoch, total)),
    )
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("max", [4.0, 1.0, np.nan]),
        ("mean", [2.5, 0.625, np.nan]),
        ("geomean", [2.0, 0.5, np.nan]),
        ("min", [1.0, 0.25, np.nan]),
    ],
)
def test_each_combination_of_two_ratios(how: str, expected: list[float]) -> None:
    """A NaN ratio (a window holding a non-finite reading) stays NaN whatever the other."""
    got = combine_ratios(np.array([[4.0, 0.25, np.nan]]), np.array([[1.0, 1.0, 2.0]]), how)
    np.testing.assert_allclose(got, [expected])


def test_an_unknown_combination_is_refused() -> None:
    with pytest.raises(ModelError, match="unknown ensemble combination 'median'"):
        combine_ratios(np.ones((1, 2)), np.ones((1, 2)), "median")


def test_the_configs_combinations_are_the_ensembles() -> None:
    """``ModelConfig`` needs a static ``Literal``; it must list what ``combine_ratios`` does."""
    assert get_args(ModelConfig.model_fields["ensemble_combine"].annotation) == COMBINES
    assert ModelConfig().ensemble_combine == "min"
