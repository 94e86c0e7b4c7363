"""Scores, a threshold bank with a model, and the numbers in its audit events: shared by
the judge, reload and retraining tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sentinel.judge.threshold import ThresholdBank
from sentinel.records import AuditEvent, Score, Window


def score(value: float, device: str = "a") -> Score:
    window = Window("pump", device, 0.0, 1.0, np.zeros((2, 1), dtype=np.float32))
    return Score(window, value, (value,), "v1")


def with_model(
    bank: ThresholdBank, fallback: float, held_back: Sequence[float] = ()
) -> ThresholdBank:
    """``bank`` with a model on stream "pump" whose calibration threshold is ``fallback``."""
    bank.set_model("pump", {"0.995": fallback / bank.config.multiplier}, held_back)
    return bank


def detail_number(event: AuditEvent, key: str) -> float:
    """A number from an audit event's detail, which is typed ``object``: it is free JSON."""
    value = event.detail[key]
    assert isinstance(value, int | float), f"{event.kind}: {key} is {value!r}"
    return float(value)
