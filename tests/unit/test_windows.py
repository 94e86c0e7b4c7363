from __future__ import annotations

import numpy as np

from sentinel.config import WindowConfig
from sentinel.records import Reading
from sentinel.worker.windows import WindowAssembler


def reading(device: str, ts: float, value: float) -> Reading:
    return Reading("pump", device, ts, (value, -value))


def test_windows_are_emitted_every_hop_in_time_order() -> None:
    assembler = WindowAssembler("pump", 2, WindowConfig(length=4, hop=2, max_gap=10))
    windows = [w for t in range(10) if (w := assembler.add(reading("a", float(t), float(t))))]
    # Full at t=3 (4 readings, 4 since start >= hop), then every 2 readings: t=5, 7, 9.
    assert [w.end_ts for w in windows] == [3.0, 5.0, 7.0, 9.0]
    last = windows[-1]
    assert last.start_ts == 6.0
    np.testing.assert_array_equal(last.values[:, 0], [6, 7, 8, 9])
    np.testing.assert_array_equal(last.values[:, 1], [-6, -7, -8, -9])


def test_emitted_windows_do_not_alias_the_ring_buffer() -> None:
    assembler = WindowAssembler("pump", 2, WindowConfig(length=4, hop=1, max_gap=10))
    windows = [w for t in range(8) if (w := assembler.add(reading("a", float(t), float(t))))]
    np.testing.assert_array_equal(windows[0].values[:, 0], [0, 1, 2, 3])


def test_devices_have_independent_windows() -> None:
    assembler = WindowAssembler("pump", 2, WindowConfig(length=4, hop=4, max_gap=10))
    out = []
    for t in range(4):
        out.append(assembler.add(reading("a", float(t), 1.0)))
        out.append(assembler.add(reading("b", float(t), 2.0)))
    emitted = [w for w in out if w is not None]
    assert {w.device for w in emitted} == {"a", "b"}
    assert all(float(w.values[0, 0]) == (1.0 if w.device == "a" else 2.0) for w in emitted)


def test_a_long_gap_restarts_the_window() -> None:
    assembler = WindowAssembler("pump", 2, WindowConfig(length=4, hop=1, max_gap=5))
    for t in (0.0, 1.0, 2.0):
        assert assembler.add(reading("a", t, t)) is None
    # 100 s later: the old readings must not be joined with new ones.
    for t in (101.0, 102.0, 103.0):
        assert assembler.add(reading("a", t, 0.0)) is None
    window = assembler.add(reading("a", 104.0, 0.0))
    assert window is not None
    assert window.start_ts == 101.0
    assert assembler.gap_resets == 1
