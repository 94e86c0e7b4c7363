"""FloatHistory: a bounded deque of floats in one array; RankedHistory: a rolling quantile."""

from __future__ import annotations

import json
import random
import tracemalloc
from collections import deque
from typing import Any

import numpy as np
import pytest
from river import stats

from sentinel.judge.history import FloatHistory, RankedHistory, pack, unpack


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
    """``appended`` counts every value ever appended, past ``maxlen`` too: each value's
    number, by which ``forget`` removes it."""
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


def test_a_float32_history_ranks_floats_that_round_alike_as_it_holds_them() -> None:
    """Scores are searched for as the history holds them (float32), not as given: floats
    apart in float64 that round to one float32, and their neighbours, sort as that float32
    and its neighbours do."""
    base = float(np.float32(1.0))
    ulp = float(np.spacing(np.float32(1.0)))
    given = [base + ulp * k / 4 for k in (-3, 1, -1, 3, 0, 2, -2)] * 3
    history = RankedHistory(8, dtype=np.float32)
    for value in given:
        history.append(value)
        held = history.values()
        assert history.ranked().tolist() == np.sort(held).tolist()


@pytest.mark.parametrize("maxlen", [1, 63, 64, 65, 2000])
@pytest.mark.parametrize("count", [0, 1, 64, 65, 1999, 2000, 2500])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fill_leaves_what_appending_leaves(maxlen: int, count: int, dtype: Any) -> None:
    """A snapshot's history is taken back in one step (``fill``), not a search and a shift
    per score: the same values, sorted copy, quantile and further appends as appending."""
    rng = np.random.default_rng(count)
    values = rng.lognormal(0.0, 2.0, count)
    values[::7] = values[0] if count else 0.0  # ties
    appended = RankedHistory(maxlen, dtype=dtype)
    for value in values:
        appended.append(float(value))
    filled = RankedHistory(maxlen, dtype=dtype)
    filled.fill(values)
    for _ in range(2):
        assert filled.values().tolist() == appended.values().tolist()
        assert filled.ranked().tolist() == appended.ranked().tolist()
        assert filled.quantile(0.99) == appended.quantile(0.99)
        assert len(filled) == len(appended)
        assert filled.appended == appended.appended
        for value in rng.lognormal(0.0, 2.0, maxlen + 3):
            appended.append(float(value))
            filled.append(float(value))
    with pytest.raises(ValueError, match="empty"):
        filled.fill([1.0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_packed_floats_come_back_exactly(dtype: str) -> None:
    values = np.random.default_rng(1).normal(0.0, 1.0, 2000) * 1e3
    values = values.astype(dtype).astype(np.float64)  # what a history of that dtype holds
    assert unpack(pack(values, dtype)).tolist() == values.tolist()
    pairs = np.column_stack((1.7e9 + np.arange(5.0), [0.0, 1.0, 0.0, 0.0, 1.0]))
    assert unpack(pack(pairs), width=2).tolist() == pairs.tolist()
    assert unpack(pack([]), width=2).shape == (0, 2)
    history = RankedHistory(10, values[:15], dtype=np.float32)
    assert unpack(history.pack()).tolist() == history.values().tolist()


def test_a_packed_history_is_a_quarter_of_its_json_list() -> None:
    """What a device's 2,000 float32 scores cost in the worker's snapshot (issue #23)."""
    history = RankedHistory(2000, np.random.default_rng(2).lognormal(0.0, 1.0, 2000), np.float32)
    packed, plain = len(json.dumps(history.pack())), len(json.dumps(history.tolist()))
    assert packed < 2000 * 4 * 4 / 3 + 32
    assert packed * 3 < plain


def test_unpack_reads_the_lists_older_snapshots_hold() -> None:
    assert unpack([1.0, 2, 3.5]).tolist() == [1.0, 2.0, 3.5]
    assert unpack([]).tolist() == []
    pairs = [[1.7e9, 1], [1.7e9 + 1, 0]]
    assert unpack(pairs, width=2).tolist() == [[1.7e9, 1.0], [1.7e9 + 1, 0.0]]


@pytest.mark.parametrize(
    ("data", "width", "match"),
    [
        ("garbage", 1, "not floats"),
        (None, 1, "not floats"),
        (["x"], 1, "numbers"),
        ([[1.0, 2.0]], 1, "numbers"),
        ([1.0, 2.0], 2, "2-lists"),
        ([1.0, None], 1, "non-finite"),
        ({"float16": "AAAA"}, 1, "one key"),
        ({"float32": "AAAA", "float64": "AAAA"}, 1, "one key"),
        ({"float32": 12}, 1, "string"),
        ({"float32": "not base64!"}, 1, "packed floats"),
        ({"float32": "AAAAAAA="}, 1, "whole rows"),  # 5 bytes
        ({"float64": "A" * 32}, 2, "whole rows"),  # 24 bytes: three values, not pairs
        (pack([float("inf")]), 1, "non-finite"),
    ],
)
def test_unpack_refuses_what_is_not_floats(data: object, width: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        unpack(data, width)


@pytest.mark.parametrize("maxlen", [5, 8, 2000])
def test_forget_removes_values_by_their_append_number(maxlen: int) -> None:
    """The threshold forgets what a fault's milder windows taught it (issue #21): by the
    number each was appended as, those still held; the rest keep their order and the
    quantile is the one of a history that never held them."""
    values = [float(v) for v in range(1, 13)]  # numbered 1..12 as appended
    history = RankedHistory(maxlen, values)
    assert history.forget([2, 9, 10, 40]) == sum(1 for n in (2, 9, 10) if n > 12 - maxlen)
    held = range(12 - min(maxlen, 12) + 1, 13)  # the numbers still held
    kept = [values[n - 1] for n in held if n not in (2, 9, 10)]
    assert history.tolist() == kept
    assert history.ranked().tolist() == sorted(kept)
    assert history.quantile(0.5) == RankedHistory(maxlen, kept).quantile(0.5)
    # numbering goes on: the next value appended is number 13, and can be forgotten
    history.append(100.0)
    assert history.appended == 13
    assert history.forget([13]) == 1
    assert history.tolist() == kept
    assert history.forget([]) == 0
