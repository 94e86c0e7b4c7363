"""The on-disk training reservoir: survives restarts, stays bounded, leaves anomalies out."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
from structlog.testing import capture_logs

from sentinel.records import Alert, AlertStatus, Reading, Window
from sentinel.retrain.reservoir import Reservoir, ReservoirTap


def _reservoir(
    path: Path, *, max_rows: int = 10_000, max_age: float = 1e9, margin: float = 5.0
) -> Reservoir:
    return Reservoir(path, 2, max_rows=max_rows, max_age=max_age, margin=margin).open()


def _readings(device: str, start: float, n: int) -> list[Reading]:
    return [Reading("pump", device, start + i, (float(i), -float(i))) for i in range(n)]


def test_readings_survive_a_restart_and_redeliveries_are_stored_once(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    res = _reservoir(path)
    res.add(_readings("d1", 0, 100))
    res.close()
    res = _reservoir(path)  # a restart
    assert res.count == 100
    res.add(_readings("d1", 50, 100))  # 50 redelivered, 50 new
    assert res.count == 150
    data = res.clean_data(window=8, max_gap=2, holdout_fraction=0.2)
    res.close()
    assert data.rows == 150
    runs = sorted(data.train + data.holdout, key=lambda r: r.ts[0])
    values = np.concatenate([r.values for r in runs])
    assert values[:, 0].tolist() == [float(i) for i in range(100)] + [
        float(i) for i in range(50, 100)
    ]


def test_bounded_by_rows_and_by_age(tmp_path: Path) -> None:
    res = _reservoir(tmp_path / "rows.sqlite", max_rows=300)
    for k in range(10):
        res.add(_readings("d1", k * 100, 100))
    res.prune()
    assert res.count == 300
    data = res.clean_data(window=8, max_gap=2, holdout_fraction=0.2)
    assert data.first_ts == 700.0  # the oldest went first
    res.close()

    res = _reservoir(tmp_path / "age.sqlite", max_age=250)
    res.add(_readings("d1", 0, 1000))
    res.prune()
    data = res.clean_data(window=8, max_gap=2, holdout_fraction=0.2)
    assert data.first_ts == 999 - 250
    res.close()


def test_anomalous_windows_and_alerts_are_left_out_with_a_margin(tmp_path: Path) -> None:
    res = _reservoir(tmp_path / "r.sqlite", margin=5.0)
    res.add(_readings("d1", 0, 400) + _readings("d2", 0, 400))
    window = Window("pump", "d1", 100.0, 115.0, np.zeros((16, 2), np.float32))
    alert = Alert(
        uid="u",
        stream="pump",
        device="d2",
        status=AlertStatus.CLOSED,
        started_at=200.0,
        updated_at=250.0,
        ended_at=260.0,
        peak_score=9.0,
        threshold=1.0,
        top_features=(),
        model_version="v",
        windows=3,
    )
    res.add([], [window], [alert])
    data = res.clean_data(window=4, max_gap=2, holdout_fraction=0.25)
    res.close()
    kept = {
        device: np.concatenate([r.ts for r in data.train + data.holdout if r.device == device])
        for device in ("d1", "d2")
    }
    assert not np.any((kept["d1"] >= 95) & (kept["d1"] <= 120))
    assert np.any(kept["d1"] == 94)
    assert np.any(kept["d1"] == 121)
    assert not np.any((kept["d2"] >= 195) & (kept["d2"] <= 265))
    assert data.rows == 800 - 26 - 71
    # A quarter is held back, in blocks spread over the span, the newest among them, the
    # same periods for every device.
    held = sum(len(r.ts) for r in data.holdout)
    assert 0.2 < held / data.rows < 0.3
    assert max(r.ts[-1] for r in data.holdout) == 399
    assert min(r.ts[0] for r in data.holdout) < 200
    assert {r.device for r in data.holdout} == {"d1", "d2"}
    # The same readings unsplit: each device's runs whole (cut only at the excluded
    # spans), in time order, for a first model to train on.
    assert [(r.device, r.ts[0], r.ts[-1]) for r in data.runs] == [
        ("d1", 0, 94),
        ("d1", 121, 399),
        ("d2", 0, 194),
        ("d2", 266, 399),
    ]
    for device, ts in kept.items():
        whole = np.concatenate([r.ts for r in data.runs if r.device == device])
        np.testing.assert_array_equal(whole, np.sort(ts))


def _disk_full(res: Reservoir) -> None:
    """SQLite's own "database or disk is full" (SQLITE_FULL) on the real file: the
    connection may not grow it by a page."""
    conn = res._db()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_disk_costs_only_its_streams_readings_counted_and_logged_sparingly(
    tmp_path: Path,
) -> None:
    """Issue #19: the reservoir missed readings with nothing but a log line per pass.
    Now every lost reading is counted (for /metrics), the other streams keep theirs, and
    the log says so at most once a minute per stream, with how much it left out."""
    pump, fan = _reservoir(tmp_path / "pump.sqlite"), _reservoir(tmp_path / "fan.sqlite")
    now = [0.0]
    tap = ReservoirTap({"pump": pump, "fan": fan}, clock=lambda: now[0])
    _disk_full(pump)

    def readings(stream: str, start: float) -> list[Reading]:
        return [Reading(stream, "d1", start + i, (1.0, 2.0)) for i in range(500)]

    with capture_logs() as logs:
        for k in range(4):
            tap.observe([*readings("pump", k * 500), *readings("fan", k * 500)], [], [])
            now[0] += 10 if k < 2 else 60  # passes at 0, 10, 20, then one at 80 s
    assert fan.count == 2000
    assert pump.count == 0
    assert tap.lost == {"pump": 2000, "fan": 0}
    failed = [e for e in logs if e["event"] == "reservoir_write_failed"]
    assert [(e["stream"], e["lost_total"], e["suppressed_since_last"]) for e in failed] == [
        ("pump", 500, 0),
        ("pump", 2000, 2),
    ]
    assert "database or disk is full" in failed[0]["error"]
    assert failed[0]["path"] == str(tmp_path / "pump.sqlite")
    pump.close()
    fan.close()


def test_exclusions_a_full_disk_refused_are_written_once_it_has_room(tmp_path: Path) -> None:
    """A flagged window also covers readings that earlier passes stored. When the pass
    that flagged it cannot be written, its exclusion waits for the next write that can:
    dropped with the pass's readings, it let anomalous readings train the next model."""
    res = _reservoir(tmp_path / "pump.sqlite", margin=0.0)
    tap = ReservoirTap({"pump": res})
    tap.observe(_readings("d1", 0, 100), [], [])  # stored before the disk filled
    pages = res._db().execute("PRAGMA max_page_count").fetchone()[0]
    _disk_full(res)
    flagged = Window("pump", "d1", 80.0, 99.0, np.zeros((20, 2), np.float32))
    tap.observe(_readings("d1", 100, 1000), [flagged], [])
    assert tap.lost == {"pump": 1000}
    res._db().execute(f"PRAGMA max_page_count = {pages}")  # room again
    tap.observe(_readings("d1", 1100, 50), [], [])
    data = res.clean_data(window=4, max_gap=2, holdout_fraction=0.25)
    res.close()
    kept = np.concatenate([r.ts for r in data.train + data.holdout])
    assert not np.any((kept >= 80) & (kept <= 99)), "the flagged readings would train a model"
    assert np.any(kept == 79)
    assert np.any(kept == 1100)


def test_latest_gives_each_device_its_newest_readings_in_order(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    res = _reservoir(path)
    res.add(_readings("d1", 0, 100) + _readings("d2", 1000, 5))
    res.close()
    res = _reservoir(path)  # what a restarted daemon reads back
    latest = res.latest("pump", 10)
    d1 = [r for r in latest if r.device == "d1"]
    assert [r.ts for r in d1] == [float(t) for t in range(90, 100)]
    assert d1[-1].values == (99.0, -99.0)
    assert [r.ts for r in latest if r.device == "d2"] == [1000.0 + i for i in range(5)]
    assert res.latest("pump", 0) == []
    tap = ReservoirTap({"pump": res})
    assert len(tap.latest("pump", 3)) == 6
    assert tap.latest("other", 3) == []
    res.close()
    assert tap.latest("pump", 3) == []  # unreadable: nothing, never an error


_DEVICE_FIRST = """
CREATE TABLE readings (
    device TEXT NOT NULL, ts REAL NOT NULL, vals BLOB NOT NULL, PRIMARY KEY (device, ts)
) WITHOUT ROWID;
CREATE INDEX readings_ts ON readings (ts);
CREATE TABLE excluded (device TEXT NOT NULL, start REAL NOT NULL, "end" REAL NOT NULL);
CREATE INDEX excluded_end ON excluded ("end");
CREATE TABLE accepted (device TEXT NOT NULL, start REAL NOT NULL, "end" REAL NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('n_features', '2');
"""


def _key(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return {
            name: rank
            for _, name, _, _, _, rank in conn.execute("PRAGMA table_info(readings)").fetchall()
        }


def test_a_reservoir_in_the_device_first_layout_is_rekeyed_by_time_keeping_everything(
    tmp_path: Path,
) -> None:
    """A reservoir written before readings were keyed by time first (each insert of a
    fleet's pass went to another page of two B-trees) opens re-keyed, nothing lost: its
    readings, exclusions and redelivery dedupe as before; a new file starts keyed by time."""
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(_DEVICE_FIRST)
        conn.executemany(
            "INSERT INTO readings (device, ts, vals) VALUES (?, ?, ?)",
            [
                (r.device, r.ts, np.asarray(r.values, dtype=np.float32).tobytes())
                for r in _readings("d1", 0, 200) + _readings("d2", 0, 200)
            ],
        )
        conn.execute("INSERT INTO excluded (device, start, \"end\") VALUES ('d1', 50, 59)")
    conn.close()
    assert _key(path) == {"device": 1, "ts": 2, "vals": 0}

    with capture_logs() as logs:
        res = _reservoir(path, margin=0.0)
    assert [e["readings"] for e in logs if e["event"] == "reservoir_rekeyed"] == [400]
    assert _key(path) == {"device": 2, "ts": 1, "vals": 0}
    assert res.count == 400
    res.add(_readings("d2", 150, 100))  # 50 redelivered, 50 new
    assert res.count == 450
    data = res.clean_data(window=8, max_gap=2, holdout_fraction=0.2)
    runs = sorted(data.train + data.holdout, key=lambda r: (r.device, r.ts[0]))
    d1 = np.concatenate([r.ts for r in runs if r.device == "d1"])
    d2 = np.concatenate([r.ts for r in runs if r.device == "d2"])
    assert d1.tolist() == [float(t) for t in range(200) if not 50 <= t <= 59]  # excluded kept
    assert d2.tolist() == [float(t) for t in range(250)]
    assert [r.ts for r in res.latest("pump", 2)] == [198.0, 199.0, 248.0, 249.0]
    res.close()
    with sqlite3.connect(path) as conn:
        indexes = [row[1] for row in conn.execute("PRAGMA index_list(readings)").fetchall()]
    conn.close()
    assert "readings_ts" not in indexes

    with capture_logs() as logs:
        _reservoir(path).close()  # opened again: nothing left to re-key
    assert not [e for e in logs if e["event"] == "reservoir_rekeyed"]
    _reservoir(tmp_path / "new.sqlite").close()
    assert _key(tmp_path / "new.sqlite") == {"device": 2, "ts": 1, "vals": 0}


def test_a_daemons_tap_holds_readings_a_second_and_writes_them_in_one_transaction(
    tmp_path: Path,
) -> None:
    """With ``hold``, readings wait in memory and go to disk together once the oldest has
    waited that long, or at once with an exclusion (which must be durable before its
    pass's alerts), or when the idle worker ticks, a warm start reads, or the tap closes."""
    now = [0.0]
    path = tmp_path / "r.sqlite"
    res = _reservoir(path, margin=0.0)
    tap = ReservoirTap({"pump": res}, clock=lambda: now[0], hold=1.0)
    tap.observe(_readings("d1", 0, 10), (), ())
    now[0] = 0.6
    tap.observe(_readings("d1", 10, 10), (), ())
    assert tap.count("pump") == 0  # both passes held
    tap.tick()
    assert tap.count("pump") == 0
    now[0] = 1.0
    tap.tick()  # the oldest held for the hold: both passes in one write
    assert tap.count("pump") == 20

    now[0] = 1.2
    tap.observe(_readings("d1", 20, 5), (), ())
    window = Window("pump", "d1", 22.0, 24.0, np.zeros((3, 2), np.float32), np.arange(22.0, 25.0))
    now[0] = 1.3
    tap.observe(_readings("d1", 25, 5), [window], ())  # an exclusion: written at once
    assert tap.count("pump") == 30
    data = res.clean_data(window=2, max_gap=2, holdout_fraction=0.2)
    assert sorted(float(t) for run in data.train + data.holdout for t in run.ts) == [
        float(t) for t in range(30) if not 22 <= t <= 24
    ]

    tap.observe(_readings("d1", 30, 5), (), ())
    assert [r.ts for r in tap.latest("pump", 2)] == [33.0, 34.0]  # held, written first
    tap.observe(_readings("d1", 35, 5), (), ())
    tap.close()  # a stop writes what is held
    res = _reservoir(path)
    assert res.count == 40
    res.close()


def test_the_span_a_reservoir_covers_follows_adds_prunes_and_restarts(tmp_path: Path) -> None:
    path = tmp_path / "span.sqlite"
    res = _reservoir(path, max_rows=300)
    assert res.span == 0.0
    res.add(_readings("d1", 1000, 100))
    res.add(_readings("d2", 500, 10))  # late and out of order
    assert res.first_seen() == {"d1": 1000.0, "d2": 500.0}
    # Each device on its own clock: d2's 9 s, not the 599 s from its first reading to d1's
    # last (with two devices, both must cover the span).
    assert res.span == 9.0
    res.add(_readings("d2", 510, 90))
    assert res.span == 99.0
    res.close()
    res = _reservoir(path, max_rows=300)  # a restart reads it back
    assert res.span == 99.0
    res.add(_readings("d1", 1100, 300))
    res.prune()  # the oldest rows go: the span shrinks with them, d2's go whole
    assert res.count == 300
    assert res.oldest == 1100.0
    assert res.first_seen() == {"d1": 1100.0}
    assert res.span == 299.0
    res.close()
    assert _reservoir(path, max_rows=300).span == 299.0


def test_a_device_whose_clock_is_far_behind_does_not_stretch_the_reservoirs_span(
    tmp_path: Path,
) -> None:
    res = _reservoir(tmp_path / "clock.sqlite", max_rows=100_000)
    for pump in range(4):
        behind = 86_400.0 if pump == 2 else 0.0  # a day behind the others
        res.add([replace(r, ts=r.ts - behind) for r in _readings(f"p{pump}", 100_000, 60)])
    assert res.span == 59.0  # a minute of the plant, not the day between the clocks
    res.close()


def test_a_device_whose_readings_are_all_older_than_the_reservoir_keeps_is_named(
    tmp_path: Path,
) -> None:
    res = _reservoir(tmp_path / "old.sqlite", max_age=3600.0)
    res.add(_readings("d1", 0, 100))
    res.prune()
    res.add(_readings("d2", 10_000, 100))
    with capture_logs() as logs:
        res.prune()  # d1 stopped sending and ages out: nothing to say
    assert res.first_seen() == {"d2": 10_000.0}
    assert not [e for e in logs if e["event"] == "reservoir_readings_too_old"]
    # a pump whose clock is three hours behind the others: every reading of it is pruned
    res.add(_readings("late", 10_100 - 3 * 3600, 50))
    with capture_logs() as logs:
        res.prune()
    [named] = [e for e in logs if e["event"] == "reservoir_readings_too_old"]
    assert named["log_level"] == "warning"
    assert (named["devices"], named["examples"]) == (1, ["late"])
    # from the oldest reading kept (d2's first) back to the late pump's newest
    assert named["behind_s"] == 10_000.0 - (10_100 - 3 * 3600 + 49)
    assert "clock" in named["fix"]
    assert res.first_seen() == {"d2": 10_000.0}
    res.close()
