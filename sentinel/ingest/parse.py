"""Turn MQTT payloads into readings: plain JSON objects or SenML packs (RFC 8428).

The parser runs on the MQTT network thread, so it is built for speed and never raises:
every problem becomes a :class:`~sentinel.records.Rejected` with a reason and a short
detail. Per-stream lookups (feature key paths, timestamp path) are prepared once in the
constructor.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from math import inf, isfinite
from typing import Any, Final

import structlog

from sentinel.config import StreamConfig
from sentinel.ingest.topics import TopicRouter
from sentinel.records import Reading, Rejected, RejectReason

__all__ = ["MessageParser"]

# The database column's size: a longer name would fail every write that carries it.
MAX_DEVICE_NAME = 128

log = structlog.get_logger(__name__)

HEAD_CHARS: Final = 200
# Numeric epochs above this are milliseconds when the unit is "auto" (1e11 s is year 5138).
AUTO_MS_ABOVE: Final = 1e11
# 10000-01-01T00:00:00Z: datetime, and so every ISO 8601 timestamp we accept, ends before it.
YEAR_10000: Final = 253_402_300_800.0
# RFC 8428 §4.5.3: SenML times below 2**28 are relative to now.
SENML_RELATIVE_BELOW: Final = float(2**28)
SENML_VERSION: Final = 10

_MISSING: Final = object()

# (reason, detail) pairs; parse() turns them into Rejected once it has the payload head.
_Problem = tuple[RejectReason, str]


def _head(payload: bytes | bytearray) -> str:
    # 200 characters take at most 800 UTF-8 bytes; a replacement character is one byte.
    return payload[: HEAD_CHARS * 4].decode("utf-8", errors="replace")[:HEAD_CHARS]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _get(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at a dotted path, or _MISSING when a level is absent or not an object."""
    node: Any = obj
    for key in path:
        if type(node) is not dict:
            return _MISSING
        node = node.get(key, _MISSING)
        if node is _MISSING:
            return _MISSING
    return node


def _epoch(value: Any, unit: str) -> float | str:
    """Epoch seconds from a JSON timestamp value, or a message saying why it is not one."""
    kind = type(value)
    if kind is int or kind is float:
        try:
            ts = float(value)
        except OverflowError:
            return "timestamp out of range"
        if unit == "ms" or (unit == "auto" and ts > AUTO_MS_ABOVE):
            ts /= 1000.0
    elif kind is str:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return f"timestamp {_short(value)} is not ISO 8601"
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        try:
            ts = parsed.timestamp()
        except (OverflowError, ValueError):
            return f"timestamp {_short(value)} out of range"
    else:
        return f"timestamp is {_type_name(value)}, not a number or ISO 8601 string"
    if not isfinite(ts) or ts < 0.0 or ts >= YEAR_10000:
        return f"timestamp {_short(value)} out of range"
    return ts


def _number(value: Any) -> float | _Problem:
    """A finite float from a JSON value, or the problem with it."""
    kind = type(value)
    if kind is float:
        if isfinite(value):
            return float(value)
        return RejectReason.NON_FINITE, f"is {value!r}"
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            return RejectReason.NON_FINITE, "is too large for a float"
    if kind is str:
        return RejectReason.NON_NUMERIC, (
            f"is a string ({_short(value)}); numeric strings are not accepted"
        )
    return RejectReason.NON_NUMERIC, f"is {_type_name(value)}, not a number"


class _JsonPlan:
    """A JSON stream's lookups, prepared once."""

    __slots__ = ("features", "name", "ts_field", "ts_key", "ts_path", "ts_unit")

    def __init__(self, stream: StreamConfig) -> None:
        self.name = stream.name
        # (feature name, top-level key or None, full key path); the single-key case skips
        # the path walk, which is what almost every flat payload needs.
        self.features = tuple(
            (f.name, f.key_path[0] if len(f.key_path) == 1 else None, f.key_path)
            for f in stream.features
        )
        self.ts_field = stream.timestamp_field
        self.ts_path = tuple(self.ts_field.split(".")) if self.ts_field is not None else None
        self.ts_key = (
            self.ts_path[0] if self.ts_path is not None and len(self.ts_path) == 1 else None
        )
        self.ts_unit = stream.timestamp_unit

    def parse(
        self, doc: Any, device: str, received_at: float
    ) -> tuple[list[Reading], list[_Problem]]:
        if type(doc) is dict:  # the common case: one reading per message
            result = self._one(doc, device, received_at)
            if isinstance(result, Reading):
                return [result], []
            return [], [result]
        if type(doc) is not list:
            return [], [(RejectReason.UNPARSABLE, "top level is neither object nor array")]
        readings: list[Reading] = []
        problems: list[_Problem] = []
        for i, obj in enumerate(doc):
            if type(obj) is not dict:
                detail = f"element {i}: is {_type_name(obj)}, not an object"
                problems.append((RejectReason.UNPARSABLE, detail))
                continue
            result = self._one(obj, device, received_at)
            if isinstance(result, Reading):
                readings.append(result)
            else:
                problems.append((result[0], f"element {i}: {result[1]}"))
        return readings, problems

    def _one(self, obj: dict[str, Any], device: str, received_at: float) -> Reading | _Problem:
        if self.ts_path is None:
            ts = received_at
        else:
            key = self.ts_key
            raw = obj.get(key, _MISSING) if key is not None else _get(obj, self.ts_path)
            if raw is _MISSING:
                return RejectReason.MISSING_TIMESTAMP, f"no {self.ts_field!r} field"
            epoch = _epoch(raw, self.ts_unit)
            if isinstance(epoch, str):
                return RejectReason.BAD_TIMESTAMP, epoch
            ts = epoch
        values: list[float] = []
        missing: list[str] = []
        for name, key, path in self.features:
            value = obj.get(key, _MISSING) if key is not None else _get(obj, path)
            if type(value) is float and value - value == 0.0:  # finite: the common case
                values.append(value)
                continue
            if value is _MISSING:
                missing.append(name)
                continue
            number = _number(value)
            if isinstance(number, float):
                values.append(number)
            elif not missing:  # the first problem in feature order decides the reason
                return number[0], f"feature {name!r} {number[1]}"
        if missing:
            return RejectReason.MISSING_FEATURE, f"missing feature(s): {', '.join(missing)}"
        return Reading(self.name, device, ts, tuple(values))


class _SenmlPlan:
    """A SenML stream's name lookup, prepared once."""

    __slots__ = ("index", "name", "names")

    def __init__(self, stream: StreamConfig) -> None:
        self.name = stream.name
        self.names = stream.feature_names
        # SenML names are matched whole: the feature's path (or name) is one SenML name.
        self.index = {(f.path or f.name): i for i, f in enumerate(stream.features)}

    def parse(
        self, doc: Any, device: str, received_at: float
    ) -> tuple[list[Reading], list[_Problem]]:
        if type(doc) is not list:
            return [], [(RejectReason.UNPARSABLE, "SenML pack is not an array")]
        try:
            groups, problems = self._group(doc, received_at)
        except _PackError as err:
            return [], [(RejectReason.UNPARSABLE, str(err))]
        readings: list[Reading] = []
        for ts in sorted(groups):
            values: list[float] = []
            missing: list[str] = []
            bad: _Problem | None = None
            for name, slot in zip(self.names, groups[ts], strict=True):
                if type(slot) is float:
                    values.append(slot)
                elif slot is None:
                    missing.append(name)
                elif bad is None:
                    bad = slot
            if bad is not None:
                problems.append(bad)
            elif missing:
                detail = f"time {ts:.3f}: missing feature(s): {', '.join(missing)}"
                problems.append((RejectReason.MISSING_FEATURE, detail))
            else:
                readings.append(Reading(self.name, device, ts, tuple(values)))
        return readings, problems

    def _group(
        self, records: list[Any], received_at: float
    ) -> tuple[dict[float, list[Any]], list[_Problem]]:
        """Resolve the pack (RFC 8428 §4.6) into feature slots per resolved time.

        A slot holds the float value, None when no record gave it, or the problem with the
        record that did. Feature records whose time is unusable come back as problems.
        Raises _PackError when the pack as a whole cannot be resolved.
        """
        index = self.index
        n_features = len(self.names)
        groups: dict[float, list[Any]] = {}
        problems: list[_Problem] = []
        bn = ""
        bt = 0.0
        bv = 0.0
        for i, record in enumerate(records):
            if type(record) is not dict:
                raise _PackError(f"record {i} is {_type_name(record)}, not an object")
            for key in record:
                if key.endswith("_"):
                    # §4.4: an unknown must-understand field rejects the whole pack.
                    raise _PackError(f"record {i}: unsupported must-understand field {key!r}")
            if "bver" in record:
                bver = record["bver"]
                if type(bver) is not int or bver > SENML_VERSION:
                    raise _PackError(f"record {i}: unsupported bver {_short(bver)}")
            # Base fields apply to this record and every later one until changed (§4.1).
            if "bn" in record:
                bn = _field_str(record, "bn", i)
            if "bt" in record:
                bt = _field_num(record, "bt", i)
            if "bv" in record:
                bv = _field_num(record, "bv", i)
            n = _field_str(record, "n", i) if "n" in record else None
            t = _field_num(record, "t", i) if "t" in record else 0.0
            v = _field_num(record, "v", i) if "v" in record else None
            slot = index.get(bn + n if n is not None else bn)
            if slot is None and n is not None:
                slot = index.get(n)
            if slot is None:
                continue  # not one of our features
            feature = self.names[slot]
            time = bt + t
            if time < SENML_RELATIVE_BELOW:
                time += received_at  # §4.5.3: relative to "roughly now"
            if not isfinite(time) or time < 0.0 or time >= YEAR_10000:
                detail = f"record {i} ({feature}): time {bt + t!r} out of range"
                problems.append((RejectReason.BAD_TIMESTAMP, detail))
                continue
            value: float | _Problem
            if v is not None:
                value = bv + v
                if not isfinite(value):
                    value = (
                        RejectReason.NON_FINITE,
                        f"record {i}: feature {feature!r} is {value!r}",
                    )
            elif "vs" in record or "vb" in record or "vd" in record:
                value = (
                    RejectReason.NON_NUMERIC,
                    f"record {i}: feature {feature!r} has a string, boolean or data value",
                )
            else:
                value = (RejectReason.NON_NUMERIC, f"record {i}: feature {feature!r} has no v")
            slots = groups.get(time)
            if slots is None:
                slots = groups[time] = [None] * n_features
            slots[slot] = value  # the same name twice at one time: the last record wins
        return groups, problems


class _PackError(Exception):
    """A SenML pack that cannot be resolved; only ever caught inside this module."""


def _field_str(record: dict[str, Any], key: str, i: int) -> str:
    value = record[key]
    if type(value) is not str:
        raise _PackError(f"record {i}: {key} is {_type_name(value)}, not a string")
    return value


def _field_num(record: dict[str, Any], key: str, i: int) -> float:
    value = record[key]
    kind = type(value)
    if kind is float:
        return float(value)
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            return float("inf") if value > 0 else float("-inf")
    raise _PackError(f"record {i}: {key} is {_type_name(value)}, not a number")


class MessageParser:
    """Parse one MQTT message into readings and rejections; never raises.

    Checks run in this order: payload size (before decoding), topic, then the stream's
    format. JSON streams take an object, or an array of objects for several readings in
    one message; each bad element is rejected on its own and the good ones still count.
    Feature values must be JSON numbers: numeric strings such as ``"21.5"`` are rejected
    as NON_NUMERIC, as are booleans, null, objects and arrays. A JSON timestamp that is
    present but null is BAD_TIMESTAMP, not MISSING_TIMESTAMP.

    SenML streams take an RFC 8428 JSON pack and ignore ``timestamp_field`` and
    ``timestamp_unit``: SenML times are always seconds. Records are grouped by resolved
    time and each time becomes one reading that needs every feature.

    A reading more than ``max_future_skew`` seconds ahead of ``received_at`` is
    FUTURE_TIMESTAMP: accepted, it would become its device's last timestamp and every
    genuine reading after it would be out of order (issue #19). The default, no limit, is
    for callers without a clock of their own to compare with.
    """

    __slots__ = ("_max_bytes", "_max_skew", "_plans", "_router")

    def __init__(
        self,
        streams: Sequence[StreamConfig],
        *,
        max_payload_bytes: int,
        max_future_skew: float = inf,
    ) -> None:
        self._router = TopicRouter(streams)
        self._max_bytes = max_payload_bytes
        self._max_skew = max_future_skew
        # Keyed by identity: the router hands back these same StreamConfig objects.
        self._plans: dict[int, _JsonPlan | _SenmlPlan] = {
            id(s): _JsonPlan(s) if s.format == "json" else _SenmlPlan(s) for s in streams
        }

    def parse(
        self, topic: str, payload: bytes | bytearray, received_at: float
    ) -> tuple[list[Reading], list[Rejected]]:
        """Readings in ``payload`` (sorted by time for SenML) and what was rejected."""
        try:
            return self._parse(topic, payload, received_at)
        except Exception as err:  # network-thread boundary: a parser bug must not raise
            log.exception("parser_failed", topic=topic)
            detail = f"parser error: {type(err).__name__}"
            return [], [Rejected(RejectReason.UNPARSABLE, topic, detail, _head(payload))]

    def _parse(
        self, topic: str, payload: bytes | bytearray, received_at: float
    ) -> tuple[list[Reading], list[Rejected]]:
        size = len(payload)
        if size > self._max_bytes:
            detail = f"{size} bytes, limit {self._max_bytes}"
            return [], [Rejected(RejectReason.OVERSIZED, topic, detail, _head(payload))]
        route = self._router.match(topic)
        if route is None:
            detail = "topic matches no configured stream"
            return [], [Rejected(RejectReason.UNKNOWN_TOPIC, topic, detail, _head(payload))]
        stream, device = route
        if len(device) > MAX_DEVICE_NAME:
            detail = f"device name of {len(device)} characters, limit {MAX_DEVICE_NAME}"
            return [], [Rejected(RejectReason.BAD_DEVICE, topic, detail, _head(payload))]
        try:
            doc = json.loads(payload.decode("utf-8"))
        except UnicodeDecodeError as err:
            detail = f"not UTF-8 at byte {err.start}"
            return [], [Rejected(RejectReason.UNPARSABLE, topic, detail, _head(payload))]
        except ValueError as err:  # JSONDecodeError, or an integer with too many digits
            detail = f"not JSON: {err}"[:200]
            return [], [Rejected(RejectReason.UNPARSABLE, topic, detail, _head(payload))]
        except RecursionError:
            detail = "not JSON: nested too deeply"
            return [], [Rejected(RejectReason.UNPARSABLE, topic, detail, _head(payload))]
        readings, problems = self._plans[id(stream)].parse(doc, device, received_at)
        horizon = received_at + self._max_skew
        for reading in readings:  # a loop, not any(): this runs for every message
            if reading.ts > horizon:
                problems.extend(self._future(r, received_at) for r in readings if r.ts > horizon)
                readings = [r for r in readings if r.ts <= horizon]
                break
        if not problems:
            return readings, []
        head = _head(payload)
        return readings, [Rejected(reason, topic, detail, head) for reason, detail in problems]

    def _future(self, reading: Reading, received_at: float) -> _Problem:
        when = datetime.fromtimestamp(reading.ts, UTC).isoformat()
        return RejectReason.FUTURE_TIMESTAMP, (
            f"timestamp {when} is {reading.ts - received_at:.0f} s ahead of the receiving "
            f"clock; the limit is ingest.max_future_skew = {self._max_skew:g} s"
        )
