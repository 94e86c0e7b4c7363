"""The training reservoir: a stream's recent readings on disk, and what to leave out of them.

One SQLite file per stream (``<state_dir>/reservoir/<stream>.sqlite``) holds the readings,
bounded by count and by age (event time, so a replay ages them exactly as the daemon
would; auto: 14 days or 10,000 readings of the stream's own interval, whichever is longer,
sentinel.timescale), and the intervals that must not train a model: every anomalous window and every
alert, widened by ``exclusion_margin`` (auto: 120 readings of the interval between the
anomalous windows' own readings, sentinel.timescale), and every fault whose milder
windows the threshold forgot when it ended (``threshold_spell_forgotten``: judged normal
under a threshold the fault had raised, they are the fault's). When the threshold re-baselines
after a lasting change (sentinel/judge/drift.py), the daemon has accepted the span since
the change as the new normal: that span is recorded as *accepted* and trains models again,
exclusions inside it included. Without that, a lasting step is excluded as a whole and
retraining could never learn it (the river #948 lock-out, at the model level). A restart
keeps all of it, so a kill during the cold start no longer starts the collection over.
Readings are keyed by (ts, device): a message the broker delivers again after a crash is
stored once.

The pipeline worker is the only writer (a transaction a second, ``ReservoirTap``); training runs,
possibly in another process, only read.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import structlog

from sentinel.errors import DataError
from sentinel.logs import Throttle
from sentinel.records import Alert, AuditEvent, Reading, Window
from sentinel.timescale import TimeScale, learn_interval, stream_span

__all__ = ["HOLD_SECONDS", "CleanData", "Reservoir", "ReservoirTap", "Run", "reservoir_path"]

log = structlog.get_logger(__name__)

_PRUNE_EVERY = 2_000  # inserts between prunes: bounds the overshoot, amortises the DELETE
_INTERVAL_SAMPLE = 5_000  # newest readings an auto age learns the interval from
# prunes between two such learnings: a stream's interval stays put, and reading the sample
# at every prune (5-9 ms every 2,000 inserts) cost 2.5-4.6 us a reading taken, a few per
# cent of the daemon's CPU in a drain (issue #23)
_INTERVAL_EVERY = 16
_LOSS_LOG_INTERVAL = 60.0  # seconds between reservoir_write_failed lines of one stream
_TOO_OLD_LOG_INTERVAL = 600.0  # seconds between reservoir_readings_too_old lines of one file
# Exclusion spans kept per stream while writes fail (~100 bytes each): a disk that stays full
# for days must not grow the worker without bound; the newest are kept.
_PENDING_MAX = 100_000
# Seconds a daemon's tap holds readings in memory before it writes them (``ReservoirTap``),
# and the most it holds: one transaction a second instead of one a pass.
HOLD_SECONDS = 1.0
_HOLD_MAX = 20_000

Span = tuple[str, float, float]  # (device, start, end) in reading time

# Readings are keyed by time first. A fleet's readings arrive in time order across its
# devices, so each insert lands at the end of one B-tree. Keyed by device first (the layout
# before 2026-12-07, with a second index on ts), each reading of a pass went to another
# page of two trees, a sixth of the daemon's CPU at 1,000 pumps read live (issue #23,
# docs/BENCHMARKS.md "The training reservoir keyed by time"). The reads by device
# (``clean_data``, ``latest``) sort instead, once per training run or restart. ``open``
# re-keys a file in the old layout (``_rekey``).
_READINGS = """
CREATE TABLE IF NOT EXISTS {name} (
    device TEXT NOT NULL, ts REAL NOT NULL, vals BLOB NOT NULL, PRIMARY KEY (ts, device)
) WITHOUT ROWID;
"""
_SCHEMA = (
    _READINGS.format(name="readings")
    + """CREATE TABLE IF NOT EXISTS excluded (
    device TEXT NOT NULL, start REAL NOT NULL, "end" REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS excluded_end ON excluded ("end");
CREATE TABLE IF NOT EXISTS accepted (
    device TEXT NOT NULL, start REAL NOT NULL, "end" REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
)


def reservoir_path(state_dir: Path, stream: str) -> Path:
    return Path(state_dir) / "reservoir" / f"{stream}.sqlite"


@dataclass(frozen=True)
class Run:
    """Consecutive clean readings of one device, no gap longer than ``max_gap``."""

    device: str
    ts: np.ndarray  # (N,) float64
    values: np.ndarray  # (N, F) float32


@dataclass(frozen=True)
class CleanData:
    """What a training run may use, split by time into training and held-back parts.

    ``runs`` is the same readings unsplit: each device's gap-free runs whole, in time
    order. A first model, with no champion to judge it against, trains on them: split at
    the held-back blocks, every device would hand training two or more pieces, and
    training, which holds back each piece's tail to calibrate on, would calibrate on one
    stretch of the day for every device (docs/BENCHMARKS.md, "Why the daemon raises 8
    false alerts on fleet seed 12").
    """

    train: list[Run]
    holdout: list[Run]
    rows: int  # clean readings in both
    stored: int  # readings in the reservoir
    first_ts: float | None
    last_ts: float | None
    interval: float | None = None  # seconds per reading, learnt from them (timescale)
    runs: list[Run] = field(default_factory=list)

    @property
    def train_rows(self) -> int:
        return sum(len(r.ts) for r in self.train)


class Reservoir:
    """One stream's reservoir. ``open()`` before use; ``close()`` at the end."""

    def __init__(
        self,
        path: Path,
        n_features: int,
        *,
        max_rows: int,
        max_age: float | None,
        margin: float | None,
    ) -> None:
        self._path = Path(path)
        self._n_features = n_features
        self._max_rows = max_rows
        self._max_age = max_age  # seconds; None: auto, from the readings' own interval
        self._margin = margin  # seconds; None: auto, EXCLUSION_MARGIN_READINGS readings
        self._interval: float | None = None  # learnt from the latest anomalous windows
        self._conn: sqlite3.Connection | None = None
        self._since_prune = 0
        # the interval an auto age was last learnt from, and prunes until it is learnt again
        self._stored: float | None = None
        self._stored_due = 0
        self.count = 0  # readings stored; read by other threads, written by the owner only
        # the oldest reading's time stored as of the last open or prune (None: none)
        self.oldest: float | None = None
        # per device, its oldest and newest reading's time stored (``span``); written by the
        # owner only, copied whole by readers on other threads
        self._bounds: dict[str, tuple[float, float]] = {}
        # the devices ``_bounds`` held after the last prune: one that comes after it and is
        # pruned whole at the next was too old when it came (``prune``)
        self._settled: frozenset[str] = frozenset()
        self._too_old = Throttle(_TOO_OLD_LOG_INTERVAL)

    @property
    def path(self) -> Path:
        return self._path

    def open(self, readonly: bool = False) -> Reservoir:
        """Create or open the file. ``readonly``: a training run's view, which never
        writes (the pipeline worker stays the only writer)."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, timeout=30.0, check_same_thread=False)
        if readonly:
            conn.execute("PRAGMA query_only=ON")
            self._conn = conn
            try:
                self.count = int(conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0])
            except sqlite3.OperationalError:  # never written yet: an empty reservoir
                conn.close()
                self._conn = None
                return self.open()
            return self
        conn.execute("PRAGMA journal_mode=WAL")
        # Readings alone are committed without an fsync (see ``add``): a power cut can roll
        # back the newest of them, which costs training data only, like a failed write.
        conn.execute("PRAGMA synchronous=NORMAL")
        self._rekey(conn)
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key = 'n_features'").fetchone()
        if row is not None and int(row[0]) != self._n_features:
            # The stream's features changed: old rows cannot train the new shape.
            log.warning(
                "reservoir_reset", path=str(self._path), was=int(row[0]), now=self._n_features
            )
            conn.execute("DELETE FROM readings")
            conn.execute("DELETE FROM excluded")
            conn.execute("DELETE FROM accepted")
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('n_features', ?)",
            (str(self._n_features),),
        )
        conn.commit()
        self._conn = conn
        self.count = int(conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0])
        self.oldest = conn.execute("SELECT MIN(ts) FROM readings").fetchone()[0]
        self._bounds = {
            device: (float(first), float(last))
            for device, first, last in conn.execute(
                "SELECT device, MIN(ts), MAX(ts) FROM readings GROUP BY device"
            )
        }
        self._settled = frozenset(self._bounds)
        return self

    @property
    def span(self) -> float:
        """Seconds of the stream's time the readings stored cover, each device's read off
        its own clock (``sentinel.timescale.stream_span``): the stream time a training run
        started now would find here (``cold_start.span``). A device whose clock is far
        behind the others does not stretch it."""
        # list() copies the dict in one step: the retrainer and /healthz ask from their threads
        return stream_span(last - first for first, last in list(self._bounds.values()))

    def first_seen(self) -> dict[str, float]:
        """Each device's oldest reading time stored (after a prune, at most an interval
        early: see ``prune``)."""
        return {device: first for device, (first, _) in list(self._bounds.items())}

    def _rekey(self, conn: sqlite3.Connection) -> None:
        """Copy a reservoir written in the device-first layout into the time-first one
        (``_READINGS``), in one transaction: a kill midway leaves the old layout whole, and
        the next open starts over."""
        key = {
            name: rank
            for _, name, _, _, _, rank in conn.execute("PRAGMA table_info(readings)").fetchall()
        }
        if not key or key.get("ts") == 1:
            return  # a new file, or already keyed by time
        started = time.monotonic()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DROP TABLE IF EXISTS readings_by_time")
            conn.execute(_READINGS.format(name="readings_by_time"))
            rows = conn.execute(
                "INSERT OR IGNORE INTO readings_by_time (device, ts, vals)"
                " SELECT device, ts, vals FROM readings"
            ).rowcount
            conn.execute("DROP TABLE readings")  # and its index on ts with it
            conn.execute("ALTER TABLE readings_by_time RENAME TO readings")
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        log.info(
            "reservoir_rekeyed",
            path=str(self._path),
            readings=rows,
            seconds=round(time.monotonic() - started, 3),
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DataError(f"{self._path}: reservoir is not open")
        return self._conn

    def latest(self, stream: str, per_device: int) -> list[Reading]:
        """Each device's newest ``per_device`` readings, every device's in time order: what
        a restarted daemon warms a stream's devices with while it still has no model
        (``sentinel.worker.warmup``). Excluded spans are not left out: the warm start
        judges readings, it does not train on them."""
        if per_device <= 0:
            return []
        rows = (
            self._db()
            .execute(
                "SELECT device, ts, vals FROM ("
                " SELECT device, ts, vals,"
                " ROW_NUMBER() OVER (PARTITION BY device ORDER BY ts DESC) AS newest"
                " FROM readings"
                ") WHERE newest <= ? ORDER BY device, ts",
                (per_device,),
            )
            .fetchall()
        )
        return [
            Reading(
                stream, device, float(ts), tuple(float(v) for v in np.frombuffer(vals, np.float32))
            )
            for device, ts, vals in rows
        ]

    # -- writing (the pipeline worker) ----------------------------------------------------

    def excluded_spans(self, flagged: Sequence[Window], alerts: Sequence[Alert]) -> list[Span]:
        """The (device, start, end) spans that anomalous windows and alerts leave out of
        training, each widened by the reservoir's margin."""
        # A window holds consecutive readings no further apart than max_gap: its span per
        # reading is the stream's interval, which scales an auto margin. Alerts come with
        # their windows, so the latest estimate serves them too.
        steps = [
            (w.end_ts - w.start_ts) / (len(w.values) - 1) for w in flagged if len(w.values) > 1
        ]
        if steps:
            self._interval = float(np.median(steps)) or self._interval
        m = self.margin()
        spans = [(w.device, w.start_ts - m, w.end_ts + m) for w in flagged]
        spans += [(a.device, a.started_at - m, (a.ended_at or a.updated_at) + m) for a in alerts]
        return spans

    def margin(self) -> float:
        """Seconds every excluded span is widened by either side: ``exclusion_margin``, or
        auto from the stream's interval as the anomalous windows show it."""
        return TimeScale(self._interval).exclusion_margin(self._margin)

    def add(
        self,
        readings: Sequence[Reading],
        flagged: Sequence[Window] = (),
        alerts: Sequence[Alert] = (),
        accepted: Sequence[Span] = (),
        excluded: Sequence[Span] = (),
    ) -> None:
        """Store readings, the spans to leave out (of ``flagged`` windows, ``alerts``, and
        ``excluded`` as given) and the (device, start, end) spans accepted as a new normal,
        in one transaction."""
        spans = [*excluded, *self.excluded_spans(flagged, alerts)]
        if not readings and not spans and not accepted:
            return
        conn = self._db()
        # Nothing acknowledged to the broker waits for the reservoir (it is best effort), so
        # a commit of readings alone is not fsynced: a power cut loses the newest readings,
        # and one fsync per pass is saved on an SD card. Spans are fsynced (synchronous=FULL
        # syncs the whole WAL, so every earlier commit too) before the pass's alerts are
        # committed and its readings acknowledged: an exclusion covers readings of earlier
        # passes, which must not survive a power cut without it and train a model on an
        # anomaly the alert table shows (issue #22).
        durable = bool(spans or accepted)
        if durable:
            conn.execute("PRAGMA synchronous=FULL")
        before = conn.total_changes
        try:
            with conn:
                conn.executemany(
                    "INSERT OR IGNORE INTO readings (device, ts, vals) VALUES (?, ?, ?)",
                    [
                        (r.device, r.ts, np.asarray(r.values, dtype=np.float32).tobytes())
                        for r in readings
                    ],
                )
                added = conn.total_changes - before
                if spans:
                    conn.executemany(
                        'INSERT INTO excluded (device, start, "end") VALUES (?, ?, ?)', spans
                    )
                if accepted:
                    conn.executemany(
                        'INSERT INTO accepted (device, start, "end") VALUES (?, ?, ?)', accepted
                    )
        finally:
            if durable:
                conn.execute("PRAGMA synchronous=NORMAL")
        self.count += added
        self._since_prune += added
        if added and readings:
            bounds = self._bounds
            for reading in readings:
                device, ts = reading.device, reading.ts
                known = bounds.get(device)
                if known is None:
                    bounds[device] = (ts, ts)
                elif ts > known[1]:
                    bounds[device] = (known[0], ts)
                elif ts < known[0]:
                    bounds[device] = (ts, known[1])
        if self._since_prune >= _PRUNE_EVERY or self.count > self._max_rows * 1.05:
            try:
                self.prune()
            except sqlite3.Error as err:  # the readings are stored; a later prune bounds them
                log.warning("reservoir_prune_failed", path=str(self._path), error=str(err))

    def withdraw(self, device: str, end: float) -> None:
        """Forget the accepted span of ``device`` that ended at ``end``: the re-baseline that
        accepted it was undone (the change was a fault that ended, not a new normal). Not
        fsynced itself: the tap excludes the span in the same pass, whose ``add`` is."""
        with self._db() as conn:
            conn.execute('DELETE FROM accepted WHERE device = ? AND "end" = ?', (device, end))

    def prune(self) -> None:
        """Drop readings beyond the row and age bounds, and exclusions nothing needs.

        Runs on the pipeline worker: every statement uses an index, and the row count is
        kept from SQLite's change counter instead of a COUNT(*) over the table."""
        conn = self._db()
        self._since_prune = 0
        with conn:
            newest = conn.execute("SELECT MAX(ts) FROM readings").fetchone()[0]
            if newest is None:
                self.oldest = None
                self._bounds = {}
                return
            before = conn.total_changes
            max_age = TimeScale(self._stored_interval(conn)).reservoir_age(self._max_age)
            conn.execute("DELETE FROM readings WHERE ts < ?", (float(newest) - max_age,))
            self.count -= conn.total_changes - before
            excess = self.count - self._max_rows
            if excess > 0:
                before = conn.total_changes
                # Everything older than the excess-th oldest timestamp: one index range.
                conn.execute(
                    "DELETE FROM readings WHERE ts < "
                    "(SELECT ts FROM readings ORDER BY ts LIMIT 1 OFFSET ?)",
                    (excess,),
                )
                self.count -= conn.total_changes - before
            oldest = conn.execute("SELECT MIN(ts) FROM readings").fetchone()[0]
            self.oldest = None if oldest is None else float(oldest)
            # Every prune drops whatever is older than a time, so a device's oldest reading
            # left is at or after it: taken as that time (at most an interval early), which
            # spares a scan of the table per prune.
            kept: dict[str, tuple[float, float]] = {}
            too_old: list[tuple[str, float]] = []
            for device, (first, last) in self._bounds.items():
                if self.oldest is not None and last >= self.oldest:
                    kept[device] = (max(first, self.oldest), last)
                elif device not in self._settled:
                    too_old.append((device, last))
            self._bounds, self._settled = kept, frozenset(kept)
            if too_old and self.oldest is not None:
                self._log_too_old(too_old, self.oldest)
            if oldest is not None:
                conn.execute('DELETE FROM excluded WHERE "end" < ?', (float(oldest),))
                conn.execute('DELETE FROM accepted WHERE "end" < ?', (float(oldest),))

    def _log_too_old(self, devices: list[tuple[str, float]], oldest: float) -> None:
        """Devices whose readings since the last prune were all older than what the
        reservoir keeps: a device's clock far behind the others' (a reset RTC, a gateway in
        another time zone), or readings delayed longer than the reservoir reaches back. They
        are judged, but never trained on nor warmed from at a restart, and nothing else
        would say so. A device that stopped sending ages out after a prune kept it, and is
        not named."""
        suppressed = self._too_old.allow("too_old")
        if suppressed is None:
            return
        devices.sort(key=lambda d: d[1])
        log.warning(
            "reservoir_readings_too_old",
            path=str(self._path),
            devices=len(devices),
            examples=[device for device, _ in devices[:5]],
            behind_s=round(oldest - devices[0][1], 1),
            suppressed_since_last=suppressed,
            effect="their readings are older than the reservoir keeps (retrain.reservoir_age "
            "behind the stream's newest, or retrain.reservoir_rows): judged, but never "
            "trained on, nor warmed from at a restart",
            fix="check those devices' clocks (their alerts carry the same times)",
        )

    def _stored_interval(self, conn: sqlite3.Connection) -> float | None:
        """The stream's interval, learnt from its newest ``_INTERVAL_SAMPLE`` readings (one
        index range) at every ``_INTERVAL_EVERY``-th prune and kept between; None where the
        age is set in seconds and nothing needs it."""
        if self._max_age is not None:
            return None
        if self._stored is not None and self._stored_due > 0:
            self._stored_due -= 1
            return self._stored
        self._stored = self._learn_stored_interval(conn)
        self._stored_due = _INTERVAL_EVERY - 1
        return self._stored

    def _learn_stored_interval(self, conn: sqlite3.Connection) -> float | None:
        rows = conn.execute(
            "SELECT device, ts FROM readings WHERE ts >= "
            "(SELECT ts FROM readings ORDER BY ts DESC LIMIT 1 OFFSET ?) ORDER BY device, ts",
            (_INTERVAL_SAMPLE,),
        ).fetchall()
        if not rows:  # fewer readings than the sample: all of them
            rows = conn.execute("SELECT device, ts FROM readings ORDER BY device, ts").fetchall()
        by_device: dict[str, list[float]] = {}
        for device, ts in rows:
            by_device.setdefault(device, []).append(ts)
        return learn_interval(np.asarray(ts, dtype=np.float64) for ts in by_device.values())

    # -- reading (training runs) ----------------------------------------------------------

    def readings_since(self, ts: float, until: float | None = None) -> int:
        """Readings stored (every device) newer than ``ts``, up to ``until`` if given."""
        limit = float("inf") if until is None else until
        row = (
            self._db()
            .execute("SELECT COUNT(*) FROM readings WHERE ts > ? AND ts <= ?", (ts, limit))
            .fetchone()
        )
        return int(row[0])

    def clean_data(
        self,
        *,
        window: int,
        max_gap: float | None,
        holdout_fraction: float,
        until: float | None = None,
    ) -> CleanData:
        """Readings outside every excluded span, as gap-free runs per device (split at gaps
        longer than ``max_gap`` seconds; None: auto, for the interval learnt from the
        readings, as at cold start), about
        ``holdout_fraction`` of them held back in time blocks spread over the reservoir's
        span (the newest block always among them). ``until`` ignores anything newer (a
        replay asks as of its own clock)."""
        conn = self._db()
        limit = float("inf") if until is None else until
        rows = conn.execute(
            "SELECT device, ts, vals FROM readings WHERE ts <= ? ORDER BY device, ts", (limit,)
        ).fetchall()
        spans: dict[str, list[tuple[float, float]]] = {}
        for device, start, end in conn.execute(
            'SELECT device, start, "end" FROM excluded WHERE start <= ?', (limit,)
        ):
            spans.setdefault(device, []).append((start, end))
        accepted: dict[str, list[tuple[float, float]]] = {}
        try:
            rows_accepted = conn.execute(
                'SELECT device, start, "end" FROM accepted WHERE start <= ?', (limit,)
            ).fetchall()
        except sqlite3.OperationalError:  # a file from before the table, opened read-only
            rows_accepted = []
        for device, start, end in rows_accepted:
            accepted.setdefault(device, []).append((start, end))
        runs: list[Run] = []
        stored = len(rows)
        by_device: dict[str, list[tuple[float, bytes]]] = {}
        for device, ts, vals in rows:
            by_device.setdefault(device, []).append((ts, vals))
        times = {
            device: np.fromiter((t for t, _ in items), dtype=np.float64, count=len(items))
            for device, items in by_device.items()
        }
        interval = learn_interval(times.values())
        gap = TimeScale(interval).max_gap(max_gap)
        for device, items in by_device.items():
            ts = times[device]
            values = np.frombuffer(b"".join(v for _, v in items), dtype=np.float32)
            values = values.reshape(len(items), self._n_features)
            keep = np.ones(len(ts), dtype=bool)
            for start, end in spans.get(device, ()):
                lo = int(np.searchsorted(ts, start, side="left"))
                hi = int(np.searchsorted(ts, end, side="right"))
                keep[lo:hi] = False
            for start, end in accepted.get(device, ()):  # a new normal trains again
                lo = int(np.searchsorted(ts, start, side="left"))
                hi = int(np.searchsorted(ts, end, side="right"))
                keep[lo:hi] = True
            runs.extend(_runs(device, ts, values, keep, gap))
        clean = [r for r in runs if len(r.ts) >= window]
        if not clean:
            return CleanData([], [], 0, stored, None, None, interval)
        all_ts = np.concatenate([r.ts for r in clean])
        first, last = float(all_ts.min()), float(all_ts.max())
        # Interleaved, not a tail: the span is cut into 5k time blocks and every k-th is
        # held back, the newest included. Under drift, a challenger judged on a tail newer
        # than all it trained on looks worse than a champion judged on windows it had
        # itself found normal; interleaving lets it train on the period it is judged on.
        k = max(2, round(1 / holdout_fraction))
        # 5k blocks, fewer (a multiple of k) when that would make them shorter than 8
        # windows per device; with little data this becomes a plain tail.
        per_device = len(all_ts) / max(1, len({r.device for r in clean}))
        n_blocks = k * max(1, min(5, int(per_device // (8 * window * k))))
        width = max((last - first) / n_blocks, 1e-9)
        train: list[Run] = []
        holdout: list[Run] = []
        for run in clean:
            block = np.minimum(((run.ts - first) // width).astype(np.int64), n_blocks - 1)
            held = (block % k) == (n_blocks - 1) % k
            edges = np.flatnonzero(np.diff(held.astype(np.int8))) + 1
            for part in np.split(np.arange(len(run.ts)), edges):
                if len(part) >= window:
                    into = holdout if held[part[0]] else train
                    into.append(Run(run.device, run.ts[part], run.values[part]))
        return CleanData(
            train=train,
            holdout=holdout,
            rows=len(all_ts),
            stored=stored,
            first_ts=first,
            last_ts=last,
            interval=interval,
            runs=clean,
        )


def _runs(
    device: str, ts: np.ndarray, values: np.ndarray, keep: np.ndarray, max_gap: float
) -> list[Run]:
    """Split at excluded readings and at gaps longer than ``max_gap``."""
    breaks = np.zeros(len(ts), dtype=bool)
    breaks[1:] = np.diff(ts) > max_gap
    runs: list[Run] = []
    start = None
    for i in range(len(ts) + 1):
        ends = i == len(ts) or not keep[i] or (breaks[i] and start is not None)
        if ends and start is not None:
            runs.append(Run(device, ts[start:i], values[start:i]))
            start = None
        if i < len(ts) and keep[i] and start is None:
            start = i
    return runs


class ReservoirTap:
    """What the pipeline feeds after every pass: each stream's readings go to its
    reservoir, with the anomalous windows and alert spans to leave out, and the spans a
    threshold re-baseline accepted as the new normal.

    A write that fails (a full disk, an unwritable state directory) costs that stream the
    readings it held and nothing else: they are counted in ``lost`` (``/metrics``), and
    logged at most once a minute per stream, since such a failure repeats every pass. The
    pass's exclusions and accepted spans are kept and written with the next write that
    succeeds: an anomalous window also covers readings stored by earlier passes, which
    would otherwise train the next model (up to ``_PENDING_MAX`` spans per stream).

    ``hold``: seconds a stream's readings wait in memory before they are written, all of
    them in one transaction (at most ``_HOLD_MAX`` of them; the daemon's ``HOLD_SECONDS``).
    At 1,000 pumps a pass comes every few milliseconds, and a transaction a pass was most of
    what the daemon wrote to disk (docs/BENCHMARKS.md, "The training reservoir keyed by
    time"). Exclusions and accepted spans are never held: they are written at once, with
    the readings held so far. The reservoir is best effort (its readings are not fsynced,
    nothing acknowledged waits for it), so a kill costs it the held readings, at most
    ``hold`` seconds' worth plus the worker's idle tick (``tick``). 0 (replay's data clock):
    every pass is written as it comes, so a retraining in the data's time reads them all.
    """

    def __init__(
        self,
        reservoirs: dict[str, Reservoir],
        *,
        clock: Callable[[], float] = time.monotonic,
        hold: float = 0.0,
    ) -> None:
        self._reservoirs = reservoirs
        self._clock = clock
        self._hold = hold
        # per stream: readings not written yet, and when the oldest of them was held
        self._held: dict[str, list[Reading]] = {}
        self._held_since: dict[str, float] = {}
        self._throttle = Throttle(_LOSS_LOG_INTERVAL, clock)
        # Readings per stream that a failed write left out; the keys never change, so
        # /metrics may read it from another thread.
        self.lost = dict.fromkeys(reservoirs, 0)
        # Per stream, the spans a failed write could not store: (excluded, accepted).
        self._pending: dict[str, tuple[list[Span], list[Span]]] = {}

    def count(self, stream: str) -> int:
        """Readings written to ``stream``'s reservoir (not those held): what a training run
        started now would find there."""
        reservoir = self._reservoirs.get(stream)
        return 0 if reservoir is None else reservoir.count

    def span(self, stream: str) -> float:
        """``Reservoir.span`` of ``stream``'s reservoir (written readings, not those held)."""
        reservoir = self._reservoirs.get(stream)
        return 0.0 if reservoir is None else reservoir.span

    def first_seen(self, stream: str) -> dict[str, float]:
        """``Reservoir.first_seen`` of ``stream``'s reservoir (written readings)."""
        reservoir = self._reservoirs.get(stream)
        return {} if reservoir is None else reservoir.first_seen()

    def latest(self, stream: str, per_device: int) -> list[Reading]:
        """``Reservoir.latest`` of ``stream``'s reservoir, the readings held written first;
        nothing where it has none or it cannot be read (a warm start is a help, never a
        reason not to start)."""
        reservoir = self._reservoirs.get(stream)
        if reservoir is None:
            return []
        self._write(stream, reservoir)
        try:
            return reservoir.latest(stream, per_device)
        except (sqlite3.Error, DataError) as err:
            log.warning("reservoir_latest_failed", stream=stream, error=str(err))
            return []

    def observe(
        self,
        readings: Sequence[Reading],
        flagged: Sequence[Window],
        alerts: Sequence[Alert],
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        for stream, reservoir in self._reservoirs.items():
            mine = [r for r in readings if r.stream == stream]
            windows = [w for w in flagged if w.stream == stream]
            spans = [a for a in alerts if a.stream == stream]
            accepted = [_accepted_span(e) for e in audit if e.stream == stream]
            new_normal = [a for a in accepted if a is not None]
            excluded, kept_normal = self._pending.pop(stream, ([], []))
            excluded += reservoir.excluded_spans(windows, spans)
            for event in audit:
                undone = _undone_span(event) if event.stream == stream else None
                if undone is not None:  # a fault after all: its span trains no model
                    new_normal = [a for a in new_normal if a[::2] != undone[::2]]
                    try:
                        reservoir.withdraw(undone[0], undone[2])
                    except sqlite3.Error as err:
                        log.warning("reservoir_withdraw_failed", stream=stream, error=str(err))
                    excluded.append((undone[0], undone[1], undone[3]))
                spell = _fault_span(event) if event.stream == stream else None
                if spell is not None:  # a fault's milder windows, judged normal: not clean
                    m = reservoir.margin()
                    excluded.append((spell[0], spell[1] - m, spell[2] + m))
            new_normal = kept_normal + new_normal
            if mine:
                held = self._held.setdefault(stream, [])
                if not held:
                    self._held_since[stream] = self._clock()
                held.extend(mine)
            if excluded or new_normal or self._due(stream):
                self._write(stream, reservoir, excluded, new_normal)

    def tick(self) -> None:
        """Write the readings held for ``hold`` seconds: the worker calls it while idle, so
        a stream that went quiet is not kept in memory until its next reading."""
        for stream, reservoir in self._reservoirs.items():
            if self._due(stream):
                self._write(stream, reservoir)

    def flush(self) -> None:
        """Write every reading held, and the spans a failed write left."""
        for stream, reservoir in self._reservoirs.items():
            self._write(stream, reservoir)

    def _due(self, stream: str) -> bool:
        held = self._held.get(stream)
        if not held:
            return False
        return len(held) >= _HOLD_MAX or self._clock() - self._held_since[stream] >= self._hold

    def _write(
        self,
        stream: str,
        reservoir: Reservoir,
        excluded: list[Span] | None = None,
        new_normal: list[Span] | None = None,
    ) -> None:
        """Write ``stream``'s held readings with these spans, or with those a failed
        write left (``_pending``) when none are given."""
        if excluded is None and new_normal is None:
            excluded, new_normal = self._pending.pop(stream, ([], []))
        excluded, new_normal = excluded or [], new_normal or []
        readings = self._held.pop(stream, [])
        if not readings and not excluded and not new_normal:
            return
        try:
            reservoir.add(readings, accepted=new_normal, excluded=excluded)
        except (sqlite3.Error, OSError, DataError) as err:
            self._pending[stream] = (excluded[-_PENDING_MAX:], new_normal[-_PENDING_MAX:])
            self._write_failed(stream, reservoir, len(readings), err)

    def _write_failed(self, stream: str, reservoir: Reservoir, lost: int, err: Exception) -> None:
        self.lost[stream] += lost
        suppressed = self._throttle.allow(stream)
        if suppressed is not None:
            log.error(
                "reservoir_write_failed",
                stream=stream,
                path=str(reservoir.path),
                error=str(err),
                lost_total=self.lost[stream],
                suppressed_since_last=suppressed,
            )

    def close(self) -> None:
        """Write what is held, then close the reservoirs; after the pipeline has stopped."""
        self.flush()
        for reservoir in self._reservoirs.values():
            reservoir.close()


def _undone_span(event: AuditEvent) -> tuple[str, float, float, float] | None:
    """(device, change, re-baseline, back under since) of an undone re-baseline
    (``threshold_rebaseline_reverted``); None for other events."""
    if event.kind != "threshold_rebaseline_reverted":
        return None
    times = [event.detail.get(k) for k in ("change_detected_at", "rebaselined_at", "under_since")]
    if not all(isinstance(t, int | float) for t in times):
        return None
    change, rebaselined, back = (float(t) for t in times)  # type: ignore[arg-type]
    return (event.device, change, rebaselined, back)


def _fault_span(event: AuditEvent) -> Span | None:
    """(device, start, end) of a fault whose milder windows the threshold forgot
    (``threshold_spell_forgotten``): judged normal under a threshold the fault had raised,
    its windows between the anomalous ones are the fault's, and train no model. None for
    other events."""
    if event.kind != "threshold_spell_forgotten":
        return None
    start, end = (event.detail.get(k) for k in ("spell_start", "spell_end"))
    if not isinstance(start, int | float) or not isinstance(end, int | float) or start > end:
        return None
    return (event.device, float(start), float(end))


def _accepted_span(event: AuditEvent) -> Span | None:
    """(device, change, re-baseline) of a threshold re-baseline; None for other events."""
    if event.kind != "threshold_rebaselined":
        return None
    since = event.detail.get("change_detected_at")
    if not isinstance(since, int | float) or since > event.at:
        return None
    return (event.device, float(since), event.at)
