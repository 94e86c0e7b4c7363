"""FloatHistory: a bounded deque of floats in one array; RankedHistory: a rolling quantile."""

from __future__ import annotations

import random
import tracemalloc
from collections import deque
from typing import Any

import numpy as np
import pytest
from river import stats

from sentinel.judge.history import FloatHistory, RankedHistory


@pytest.mark.parametrize("maxlen", [1, 2, 63, 64, 65, 100, 2000])
def test_holds_what_a_bounded_deque_holds_in_order(maxlen: int) -> None:
    rng = random.Random(maxlen)
    ours, theirs = FloatHistory(maxlen), deque[float](maxlen=maxlen)
    for _ in range(3 * maxlen + 7):
        value = rng.gauss(0.0, 1.0) * 10 ** rng.randint(-300, 300)
        ours.append(value)
        theirs.append(value)
        assert len(ours) == len(theirs)
    assert ours.tolist() == list(theirs)
    assert ours.values().tolist() == list(theirs)
    assert FloatHistory(maxlen, [1.0, 2.0, 3.0]).tolist() == [1.0, 2.0, 3.0][-maxlen:]


def test_values_is_a_copy() -> None:
    history = FloatHistory(4, [1.0, 2.0])
    history.values()[0] = 99.0
    assert history.tolist() == [1.0, 2.0]


def test_a_full_history_of_2000_costs_8_bytes_a_value() -> None:
    """The threshold's default history: 16 kB where the deque of floats took ~80 kB."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        history = FloatHistory(2000, (float(i) + 0.5 for i in range(2500)))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(history) == 2000
    assert held < 2000 * 8 + 1024


def test_maxlen_must_be_positive() -> None:
    with pytest.raises(ValueError, match="maxlen"):
        FloatHistory(0)


def test_the_append_count_tells_a_changed_history() -> None:
    """``appended`` counts every value ever appended, past ``maxlen`` too: the threshold's
    sorted copy of a device's normal scores is reused while it stands still (issue #23)."""
    history = FloatHistory(3, [1.0, 2.0])
    assert history.appended == 2
    for value in (3.0, 4.0, 5.0):
        history.append(value)
    assert history.appended == 5
    assert history.tolist() == [3.0, 4.0, 5.0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    ("q", "maxlen"), [(0.995, 2000), (0.9, 50), (0.51, 60), (0.99, 100), (0.75, 57), (0.6, 1)]
)
def test_quantile_equals_rivers_rolling_quantile_float_for_float(
    q: float, maxlen: int, dtype: type[np.floating[Any]]
) -> None:
    """The threshold's quantile read off the sorted history, as river's RollingQuantile
    gave it (issue #23): filling and full, with ties, zeros and wide magnitudes. In float32
    (what the threshold keeps) it is river's over the values as float32 holds them."""
    rng = random.Random(maxlen)
    ours = RankedHistory(maxlen, dtype=dtype)
    theirs = stats.RollingQuantile(q, window_size=maxlen)
    assert ours.quantile(q) is None
    assert theirs.get() is None
    for _ in range(4 * maxlen + 9):
        value = rng.choice(
            [rng.random(), rng.lognormvariate(0.0, 3.0), round(rng.random(), 1), 0.0, 1e-12]
        )
        ours.append(value)
        theirs.update(float(dtype(value)))
        assert ours.quantile(q) == theirs.get()
        assert ours.ranked().tolist() == sorted(ours.tolist())
    assert ours.values().dtype == np.float64


def test_the_thresholds_float32_history_of_2000_costs_8_bytes_a_score() -> None:
    """Ring and sorted copy in float32: 8 bytes a score where float64 took 16 (issue #23)."""
    RankedHistory(100, (float(i) for i in range(150)), dtype=np.float32)  # NumPy's own caches
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        history = RankedHistory(2000, (float(i) + 0.5 for i in range(2500)), dtype=np.float32)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(history) == 2000
    assert held < 2000 * 8 + 1024


def test_ranked_is_a_read_only_view() -> None:
    history = RankedHistory(3, [3.0, 1.0, 2.0, 0.5])
    assert history.ranked().tolist() == [0.5, 1.0, 2.0]
    assert history.tolist() == [1.0, 2.0, 0.5]
    with pytest.raises(ValueError, match="read-only"):
        history.ranked()[0] = 9.0
