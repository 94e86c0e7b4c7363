from __future__ import annotations

import json

import numpy as np
import pytest

from sentinel.errors import ModelError
from sentinel.model import Scaler


def test_fit_standardises_each_feature() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal([10.0, -3.0], [2.0, 0.5], size=(1000, 2))
    scaler = Scaler.fit(data)
    assert scaler.mean.dtype == np.float32
    assert scaler.scale.dtype == np.float32
    out = scaler.transform(data)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-4)


def test_constant_feature_gets_scale_one() -> None:
    data = np.column_stack([np.full(50, 7.0), np.arange(50.0)])
    scaler = Scaler.fit(data)
    assert scaler.scale[0] == 1.0
    out = scaler.transform(data)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[:, 0], 0.0)


def test_transform_accepts_windows() -> None:
    scaler = Scaler(mean=np.array([1.0, 2.0, 3.0]), scale=np.array([2.0, 2.0, 2.0]))
    windows = np.ones((4, 5, 3), dtype=np.float32)
    out = scaler.transform(windows)
    assert out.shape == (4, 5, 3)
    np.testing.assert_allclose(out[0, 0], [0.0, -0.5, -1.0])


def test_transform_rejects_wrong_feature_count() -> None:
    scaler = Scaler.fit(np.zeros((3, 2)))
    with pytest.raises(ModelError, match="2 features"):
        scaler.transform(np.zeros((3, 3)))


def test_dict_round_trip_through_json() -> None:
    scaler = Scaler.fit(np.random.default_rng(1).normal(size=(20, 4)))
    again = Scaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    np.testing.assert_array_equal(again.mean, scaler.mean)
    np.testing.assert_array_equal(again.scale, scaler.scale)


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"mean": [0.0]},
        {"mean": [0.0, 1.0], "scale": [1.0]},
        {"mean": [0.0], "scale": [0.0]},
        {"mean": ["x"], "scale": [1.0]},
    ],
)
def test_from_dict_rejects_bad_data(data: object) -> None:
    with pytest.raises(ModelError):
        Scaler.from_dict(data)


def test_fit_rejects_non_finite() -> None:
    with pytest.raises(ModelError, match="NaN"):
        Scaler.fit(np.array([[1.0], [np.nan]]))


def test_equality_compares_values() -> None:
    a = Scaler(mean=np.array([1.0, 2.0]), scale=np.array([1.0, 3.0]))
    b = Scaler(mean=np.array([1.0, 2.0], dtype=np.float32), scale=np.array([1.0, 3.0]))
    c = Scaler(mean=np.array([1.0, 2.5]), scale=np.array([1.0, 3.0]))
    assert a == b
    assert hash(a) == hash(b)
    assert a != c
