"""The command-level check: a channel that settles away from the level its command sets.

Spacecraft and plant telemetry often comes as channels beside the commands that drive them:
one-hot command channels, 0 but for a one-reading 1 when a command is sent, each moving a
channel to a level of its own (a mode, a valve position, a heater state). A channel that
settles at the wrong level after a command -- often another command's normal level --
shows nothing any other check can see: every reading is one the channel normally holds,
its steps, noise and relations to the others are normal, and the window holds no memory of
which command came last (``simulators.synthetic.telemetry_modes``' first fault, missed
until this check; issue #21).

Each device remembers its last *send* -- the command channels that changed at one reading,
and the values they changed to -- and, per send, the level every other channel settled at:
the median of its readings from ``settle`` readings after the command for ``span``
readings (or until the next command), where they had settled (the medians of their halves
within three times their step noise of each other: a channel still approaching its level
over a lag longer than ``settle`` is not, and its level then depends on where it came
from). Once a send has ``min_sends`` settled records, a channel's settled level after it
is judged: its median over the last ``span`` settled readings, where those have settled
too, against the records' median, in units of the records' spread (at least the channel's
noise over that many readings), and by at least ``separation`` of the smallest distance
between two sends' levels of that channel. Only channels whose level the sends set are
judged: settled in three quarters of their records, and their levels after different
sends lying at least ``explained`` times the largest spread within one send apart (a
channel that wanders by itself, or sits at one level whatever is sent, is someone else's
to judge). A wrong level is judged in every window until the next command; its record
joins the others, so a response that changed for good is learnt once it is the median.
A channel found at its send's level instead, in a window wholly after the send (or holding
the next one's reading, after such windows), is *held* there: the pipeline reads a score
excess on it as the command's response (``Verdict.response``), so a mode the training
never saw alerts at its first sends only.

A command's return to rest within two readings (the end of a pulse) is not a send. The
records belong to the device, not the model: they carry over a model swap (unless its
commands differ, which drops them), are learnt from the warm start's training rows as from
live ones, are set aside while the device is parked, and are saved in ``thresholds.json``
(``command_levels``) across a restart; the send a device was in is not, so its first
send after a restart or a return is the first judged.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from sentinel.config import CommandLevelsConfig
from sentinel.records import RelationHit

__all__ = ["CommandLevelCheck"]

log = structlog.get_logger(__name__)

# A send is a tuple of (command feature, value it changed to) pairs, sorted.
Send = tuple[tuple[int, float], ...]

_RETURN_WITHIN = 2  # a change back within this many readings ends a pulse, it sends nothing
_MIN_SETTLED = 8  # settled readings a level is measured from, at least
_MAD = 1.4826  # median absolute deviation to a Gaussian standard deviation
_TREND = 3.0  # settled: its halves' medians within this many step noises of each other
_HELD = 0.75  # a channel held at levels by its commands: settled in this share of records
# at its send's level: within this many spreads of its records' median, or this share of
# the smallest gap between two sends' levels
_HELD_Z, _HELD_GAP = 3.0, 0.1


@dataclass
class _Record:
    # per feature, the median settled reading; NaN where the channel was still moving
    level: npt.NDArray[np.float64]
    noise: npt.NDArray[np.float64]  # per feature, 1.4826 x the readings' MAD about it


@dataclass
class _DeviceCommands:
    # the features judged (not commands) when the records were taken: a model whose
    # commands differ makes them a different record, and they are dropped
    judged: tuple[int, ...] = ()
    clock: int = 0  # readings seen
    send: Send | None = None  # the last send, None before the first
    since: int = 0  # readings since it
    settled: list[npt.NDArray[np.float64]] = field(default_factory=list)  # readings after settle
    recorded: bool = False  # the current send's record is taken
    # per command feature, (reading index of its last change, the value it changed from)
    changed: dict[int, tuple[int, float]] = field(default_factory=dict)
    records: dict[Send, deque[_Record]] = field(default_factory=dict)
    # the features the newest window wholly after the current send held at its level, and
    # those of the send before (what a window holding both sends held before the change)
    held: tuple[int, ...] = ()
    held_before: tuple[int, ...] = ()
    taken: int = 0  # records taken in all: what the cached reference was computed at
    # ((taken, send, recorded), the reference the current send is judged against or None)
    cached: tuple[tuple[int, Send, bool], _Reference | None] | None = None


@dataclass(frozen=True)
class _Reference:
    """What a send's settled levels are judged against, per judged feature."""

    mean: npt.NDArray[np.float64]  # the median of its earlier records
    spread: npt.NDArray[np.float64]  # their spread (0 where unknown)
    noise: npt.NDArray[np.float64]  # the median of their readings' noise
    gaps: npt.NDArray[np.float64]  # the smallest distance between two sends' levels
    judged: npt.NDArray[np.bool_]  # features the sends hold at levels, this send's known


class CommandLevelCheck:
    """Per (stream, device) settled levels after each command, and windows judged by them."""

    def __init__(self, config: CommandLevelsConfig, hop: int) -> None:
        self.config = config
        self.hop = hop
        self._devices: dict[tuple[str, str], _DeviceCommands] = {}
        # (stream, device) -> ``snapshot`` data of a device gone quiet (``park``)
        self._parked: dict[tuple[str, str], dict[str, Any]] = {}

    def reconfigure(self, config: CommandLevelsConfig, hop: int) -> None:
        self.config = config
        self.hop = hop

    def check(
        self,
        stream: str,
        devices: Sequence[str],
        values: np.ndarray,
        commands: Sequence[int],
    ) -> tuple[list[RelationHit | None], list[tuple[int, ...]]]:
        """Learn from and judge a batch of one stream's windows (B, T, F), in arrival order.
        ``commands``: the feature indices that are commands (``command_channels``); the
        others are judged. Per window, its hit, and the features it holds at the level
        its send sets: a window wholly after a send whose records judge them, each still,
        within 3 spreads or a tenth of the gap between two sends' levels of its level
        (the pipeline reads a score excess on one of them as the send's, ``Verdict.response``)."""
        count = len(devices)
        none: tuple[list[RelationHit | None], list[tuple[int, ...]]] = (
            [None] * count,
            [()] * count,
        )
        if not self.config.enabled or not commands or count == 0:
            return none
        inputs = set(commands)
        judged = np.array([f for f in range(values.shape[2]) if f not in inputs])
        if judged.size == 0:
            return none
        fresh = min(self.hop, values.shape[1] - 1)
        tail = np.asarray(values[:, -fresh - 1 :], dtype=np.float64)  # (B, fresh + 1, F)
        channels = np.asarray(commands, dtype=np.intp)
        pulses = tail[:, :, channels]
        # (B, fresh, C): which command channels changed at each fresh reading
        moved = (pulses[:, 1:] != pulses[:, :-1]) & np.isfinite(pulses[:, 1:])
        moved &= np.isfinite(pulses[:, :-1])
        hits: list[RelationHit | None] = []
        held: list[tuple[int, ...]] = []
        sending = moved.any(axis=2)  # (B, fresh)
        judged_key = tuple(judged.tolist())
        for i, device in enumerate(devices):
            state = self._state(stream, device, judged_key)
            if not sending[i].any():  # the common case: no command changed
                self._advance(state, tail[i, 1:][:, judged])
            else:
                for t in range(fresh):
                    changed = channels[moved[i, t]].tolist()
                    self._step(state, tail[i, t + 1], tail[i, t], changed, judged)
            hit, at_level = self._judge(state, judged, values.shape[1])
            hits.append(hit)
            held.append(at_level)
        return hits, held

    def _state(self, stream: str, device: str, judged: tuple[int, ...]) -> _DeviceCommands:
        """The device's state, taken back from ``park`` if it has some; its records are
        dropped where the judged features are not theirs (a model of other commands)."""
        key = (stream, device)
        state = self._devices.get(key)
        if state is None:
            parked = self._parked.pop(key, None)
            memory = self.config.memory
            state = _DeviceCommands(judged) if parked is None else _from_data(parked, memory)
            self._devices[key] = state
        if state.judged != judged:
            if state.records:
                log.info(
                    "command_levels_relearnt",
                    stream=stream,
                    device=device,
                    sends=len(state.records),
                )
            self._devices[key] = state = _DeviceCommands(judged=judged)
        return state

    def _step(
        self,
        state: _DeviceCommands,
        reading: npt.NDArray[np.float64],
        before: npt.NDArray[np.float64],
        changed: list[int],
        judged: npt.NDArray[np.intp],
    ) -> None:
        """One fresh reading, with the command channels that ``changed`` (to a finite value
        from one) at it: a new send, or one more reading after the last."""
        sent: list[tuple[int, float]] = []
        for c in changed:
            now, was = reading[c], before[c]
            last = state.changed.get(c)
            state.changed[c] = (state.clock, float(was))
            if last is not None and state.clock - last[0] <= _RETURN_WITHIN and now == last[1]:
                continue  # a pulse's end: back to where it came from
            sent.append((c, float(now)))
        if sent:
            state.clock += 1
            self._record(state)
            state.send, state.since = tuple(sorted(sent)), 0
            state.settled, state.recorded = [], False
            state.held_before, state.held = state.held, ()
            return
        self._advance(state, reading[judged][None])

    def _advance(self, state: _DeviceCommands, rows: npt.NDArray[np.float64]) -> None:
        """Readings (N, judged features) at which no command was sent: after a send's
        ``settle``, its settled readings (the finite ones); its record at ``span`` of them."""
        cfg = self.config
        state.clock += len(rows)
        if state.send is None:
            return
        skip = max(0, cfg.settle - state.since - 1)  # rows before the settled ones
        state.since += len(rows)
        rows = rows[skip:]
        if len(rows) == 0:
            return
        rows = rows[np.isfinite(rows).all(axis=1)]
        if not state.recorded and len(state.settled) + len(rows) >= cfg.span:
            first = cfg.span - len(state.settled)
            state.settled.extend(rows[:first])
            self._record(state)
            rows = rows[first:]
        state.settled.extend(rows)
        if len(state.settled) > cfg.span:
            del state.settled[: len(state.settled) - cfg.span]

    def _record(self, state: _DeviceCommands) -> None:
        """Take the current send's record, once, from its first ``span`` settled readings."""
        if state.send is None or state.recorded or len(state.settled) < _MIN_SETTLED:
            return
        rows = np.array(state.settled)
        level = _median(rows)
        noise = _MAD * _median(np.abs(rows - level))
        level = np.where(_still(rows, level), level, np.nan)
        past = state.records.get(state.send)
        if past is None:
            past = state.records[state.send] = deque(maxlen=self.config.memory)
        past.append(_Record(level, noise))
        state.recorded = True
        state.taken += 1

    def _judge(
        self, state: _DeviceCommands, judged: npt.NDArray[np.intp], length: int
    ) -> tuple[RelationHit | None, tuple[int, ...]]:
        """The window's hit, and the features it holds at the level of the send it lies
        in (``check``), for a window of ``length`` readings; a window that holds the send's
        reading, those the windows before it held (the readings before the change were at
        their command's level, those after it are the response to the new one)."""
        cfg = self.config
        straddling = state.send is not None and state.since < length - 1
        before = state.held_before if straddling else ()
        if state.send is None or len(state.settled) < _MIN_SETTLED:
            return None, before
        key = (state.taken, state.send, state.recorded)
        if state.cached is None or state.cached[0] != key:
            state.cached = (key, self._reference(state))
        reference = state.cached[1]
        if reference is None:
            return None, before
        rows = np.array(state.settled)
        level = _median(rows)
        scale = np.maximum(reference.spread, reference.noise / math.sqrt(len(rows)))
        scale = np.maximum(scale, np.maximum(1e-6 * np.maximum(1.0, np.abs(reference.mean)), 1e-12))
        off = np.abs(level - reference.mean)
        judged_here = reference.judged & (off >= cfg.separation * reference.gaps)
        if not judged_here.any():
            if straddling:  # the window holds readings from before the send
                return None, before
            near = off <= np.maximum(_HELD_Z * scale, _HELD_GAP * reference.gaps)
            held = reference.judged & near
            if held.any():
                held &= _still(rows, level)
            state.held = tuple(judged[held].tolist())
            return None, state.held
        judged_here &= _still(rows, level)
        z = np.where(judged_here, off / scale, 0.0)
        f = int(z.argmax())
        state.held = ()
        if z[f] <= cfg.k:
            return None, before
        return RelationHit(
            int(judged[f]), float(z[f]), math.erfc(float(z[f]) / math.sqrt(2.0)), None
        ), ()

    def _reference(self, state: _DeviceCommands) -> _Reference | None:
        """What the current send is judged against, or None where nothing is judged yet:
        its own earlier records, and per feature whether the sends hold it at levels."""
        cfg = self.config
        assert state.send is not None
        past = list(state.records.get(state.send, ()))
        if state.recorded:
            past = past[:-1]  # the send being judged is not its own reference
        if len(past) < cfg.min_sends:
            return None
        known = [
            ref
            for records in state.records.values()
            if (ref := _levels(list(records), cfg.min_sends)) is not None
        ]
        if len(known) < 2:  # one send: nothing says the command sets the level
            return None
        own = _levels(past, cfg.min_sends)
        if own is None:
            return None
        means = np.array([m for m, _ in known])  # NaN: too few settled records
        spreads = np.array([s for _, s in known])
        # per feature, over the sends with enough settled records: the smallest distance
        # between two sends' levels, and whether they lie apart beyond their spreads
        settled = np.isfinite(means)
        enough = settled.sum(axis=0) >= 2
        ordered = np.sort(np.where(settled, means, np.inf), axis=0)
        steps = np.diff(ordered, axis=0)
        gaps = np.where(np.isfinite(steps) & (steps > 0), steps, np.inf).min(axis=0)
        gaps = np.where(enough & np.isfinite(gaps), gaps, 0.0)
        width = np.where(settled, means, -np.inf).max(axis=0) - ordered[0]
        widest = np.where(settled, spreads, 0.0).max(axis=0)
        explained = enough & (width >= cfg.explained * widest) & _held(state.records)
        own_mean, own_spread = own
        judged = explained & np.isfinite(own_mean) & (gaps > 0)
        if not judged.any():
            return None
        noise = _median([r.noise for r in past])
        return _Reference(np.nan_to_num(own_mean), np.nan_to_num(own_spread), noise, gaps, judged)

    def park(self, keep: Container[tuple[str, str]]) -> int:
        """Set aside the records of every device not in ``keep`` (quiet ones), as in a
        snapshot, until they return; the send they were in is forgotten."""
        gone = [key for key in self._devices if key not in keep]
        for key in gone:
            state = self._devices.pop(key)
            if state.records:
                self._parked[key] = _to_data(state)
        return len(gone)

    def snapshot(self, stream: str) -> dict[str, Any]:
        """Each device's records (parked ones included), for ``thresholds.json``: enough to
        judge the next send of a known command at once after a restart."""
        data = {device: parked for (s, device), parked in self._parked.items() if s == stream}
        for (s, device), state in self._devices.items():
            if s == stream and state.records:
                data[device] = _to_data(state)
        return data

    def restore(self, stream: str, devices: Mapping[str, Any]) -> int:
        """Take back ``snapshot``'s records; raises ValueError/TypeError/KeyError on a
        malformed one (the caller reports it and starts afresh)."""
        memory = self.config.memory
        restored = {(stream, str(d)): _from_data(data, memory) for d, data in devices.items()}
        self._devices.update(restored)
        return len(restored)


def _levels(
    records: list[_Record], least: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """(median level, spread) per feature of a send's settled records, NaN for a feature
    with fewer than ``least`` of them; None when no feature has that many. The spread is
    1.4826 x the levels' MAD (the caller floors it: three records' MAD can be ~0 by
    chance)."""
    if len(records) < least:
        return None
    levels = np.array([r.level for r in records])
    enough = np.isfinite(levels).sum(axis=0) >= least
    if not enough.any():
        return None
    mean = _nanmedian(levels)
    spread = _MAD * _nanmedian(np.abs(levels - mean))
    return np.where(enough, mean, np.nan), np.where(enough, spread, np.nan)


def _median(rows: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Per column, the median of finite ``rows`` (N, F), read off one sort (``np.median``
    costs ~15 µs a call in its checks; this is called every window)."""
    ordered = np.sort(np.asarray(rows, dtype=np.float64), axis=0)
    n = len(ordered)
    return np.asarray((ordered[(n - 1) // 2] + ordered[n // 2]) / 2, dtype=np.float64)


def _nanmedian(rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Per column, the median of the finite values (NaN where none): ``np.nanmedian``
    without the masked arrays it takes for small inputs (~0.4 ms a call here)."""
    ordered = np.sort(rows, axis=0)  # NaN sort last
    count = np.isfinite(rows).sum(axis=0)
    columns = np.arange(rows.shape[1])
    low = ordered[np.maximum(count - 1, 0) // 2, columns]
    high = ordered[np.maximum(count, 1) // 2 - (count == 0), columns]
    return np.where(count > 0, (low + high) / 2, np.nan)


def _held(records: dict[Send, deque[_Record]]) -> npt.NDArray[np.bool_]:
    """Per feature, whether the channel is one the commands hold at levels: settled in
    at least ``_HELD`` of all its records. A channel that moves by itself (an orbit's
    cycle beside the commands) is still now and then, at its peaks and troughs, and a
    few such records of a send can agree by chance (``rare_commands`` seed 4: seven false
    alerts before this test)."""
    levels = np.array([r.level for past in records.values() for r in past])
    return np.asarray(np.isfinite(levels).mean(axis=0) >= _HELD, dtype=np.bool_)


def _still(rows: npt.NDArray[np.float64], level: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Per feature, whether the readings (N, F) had settled: the medians of their halves
    lie within ``_TREND`` times the noise of their reading-to-reading changes of each other
    (which a steady ramp or a slow lag's approach does not move). A set point's temperature
    approaching its new level over a lag longer than ``settle`` is still moving, and its
    levels after a send depend on where it came from (``setpoint_steps``, a lag of 20
    readings: one false alert before this test)."""
    half = len(rows) // 2
    trend = np.abs(_median(rows[half:]) - _median(rows[:half]))
    steps = np.diff(rows, axis=0)
    noise = _MAD * _median(np.abs(steps - _median(steps))) / math.sqrt(2.0)
    floor = 1e-6 * np.maximum(1.0, np.abs(level))
    return np.asarray(trend <= _TREND * np.maximum(noise, floor), dtype=np.bool_)


def _to_data(state: _DeviceCommands) -> dict[str, Any]:
    """A device's records as JSON: NaN levels (not settled) as null."""
    return {
        "judged": list(state.judged),
        "records": [
            {
                "send": [[c, v] for c, v in send],
                "records": [[_nullable(r.level), r.noise.tolist()] for r in past],
            }
            for send, past in state.records.items()
        ],
    }


def _from_data(data: Mapping[str, Any], memory: int) -> _DeviceCommands:
    judged = tuple(int(f) for f in data["judged"])
    state = _DeviceCommands(judged=judged)
    for entry in data["records"]:
        send: Send = tuple((int(c), float(v)) for c, v in entry["send"])
        past: deque[_Record] = deque(maxlen=memory)
        for level, noise in entry["records"]:
            record = _Record(
                np.array([np.nan if x is None else float(x) for x in level], dtype=np.float64),
                np.asarray(noise, dtype=np.float64),
            )
            if record.level.shape != (len(judged),) or record.noise.shape != (len(judged),):
                raise ValueError(f"command level records do not fit {len(judged)} features")
            past.append(record)
        state.records[send] = past
    return state


def _nullable(values: npt.NDArray[np.float64]) -> list[float | None]:
    return [None if math.isnan(x) else x for x in values.tolist()]
