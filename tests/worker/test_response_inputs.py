"""Which inputs a channel's lagged error may be the response to (``response_inputs``,
``Verdict.response``): the commands and the stepped features, not the counters among them
(issue #21: a disk's used space ticking up every hundred readings put a tick in a third
of a server's windows, and read every fault beside one as a response)."""

from __future__ import annotations

import json

import pytest

from sentinel.errors import ModelError
from sentinel.model.lstm_meta import LstmForecastMeta
from sentinel.model.numpy_lstm import NumpyLstmDetector
from sentinel.worker.pipeline import response_inputs
from tests.model.lstm_helpers import FEATURES, make_forecaster


def test_a_counter_is_no_input_a_response_follows() -> None:
    setpoint, counter = FEATURES[0], FEATURES[2]
    detector = make_forecaster(stepped_features=(setpoint, counter), counter_features=(counter,))
    assert detector.stepped_indices() == (0, 2)
    assert detector.counter_indices() == (2,)
    assert response_inputs(detector, ()) == (0,)
    # a command is an input whatever else it is
    assert response_inputs(detector, (2,)) == (0, 2)
    # the NumPy twin reads the same meta
    assert response_inputs(NumpyLstmDetector.from_detector(detector), ()) == (0,)
    plain = make_forecaster(stepped_features=(setpoint, counter))
    assert response_inputs(plain, ()) == (0, 2)


def test_counter_features_round_trip_and_models_saved_before_read_none() -> None:
    counter = FEATURES[2]
    meta = make_forecaster(stepped_features=(counter,), counter_features=(counter,)).meta
    data = meta.to_dict()
    assert data["counter_features"] == [counter]
    assert LstmForecastMeta.from_json(json.dumps(data)).counter_features == (counter,)
    del data["counter_features"]  # a model saved before counters were learnt
    assert LstmForecastMeta.from_json(json.dumps(data)).counter_features == ()
    data["counter_features"] = [FEATURES[0]]  # not a stepped feature
    with pytest.raises(ModelError, match="counter_features"):
        LstmForecastMeta.from_json(json.dumps(data))


def test_a_feature_constant_in_training_is_an_input_a_response_follows() -> None:
    """A set point the training never moved is still a set point: its first departure is
    the constant check's alert, and the channel settling after it is no second one."""
    setpoint, counter = FEATURES[0], FEATURES[2]
    detector = make_forecaster(
        constant_features={setpoint: 50.0},
        stepped_features=(counter,),
        counter_features=(counter,),
    )
    assert detector.constant_values() == {0: 50.0}
    assert response_inputs(detector, ()) == (0,)
    assert response_inputs(NumpyLstmDetector.from_detector(detector), (1,)) == (0, 1)
