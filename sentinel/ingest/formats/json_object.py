"""The ``json`` format: a JSON object per reading, or an array of them in one message.

Feature values must be JSON numbers: numeric strings such as ``"21.5"`` are rejected as
NON_NUMERIC, as are booleans, null, objects and arrays. In an array each bad element is
rejected on its own and the good ones still count. A timestamp that is present but null is
BAD_TIMESTAMP, not MISSING_TIMESTAMP. Key paths are split once in the constructor.
"""

from __future__ import annotations

from datetime import UTC, datetime
from math import isfinite
from typing import Any, Final

from sentinel.config import StreamConfig
from sentinel.ingest.formats import decode
from sentinel.ingest.formats.base import YEAR_10000, Problem, json_problem, short, type_name
from sentinel.records import Reading, RejectReason

__all__ = ["JsonObjectFormat"]

# Numeric epochs above this are milliseconds when the unit is "auto" (1e11 s is year 5138).
AUTO_MS_ABOVE: Final = 1e11

_MISSING: Final = object()


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
            return f"timestamp {short(value)} is not ISO 8601"
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        try:
            ts = parsed.timestamp()
        except (OverflowError, ValueError):
            return f"timestamp {short(value)} out of range"
    else:
        return f"timestamp is {type_name(value)}, not a number or ISO 8601 string"
    if not isfinite(ts) or ts < 0.0 or ts >= YEAR_10000:
        return f"timestamp {short(value)} out of range"
    return ts


def _number(value: Any) -> float | Problem:
    """A finite float from a JSON value, or the problem with it."""
    kind = type(value)
    if kind is float:
        if isfinite(value):
            return float(value)
        return Problem(RejectReason.NON_FINITE, f"is {value!r}")
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            return Problem(RejectReason.NON_FINITE, "is too large for a float")
    if kind is str:
        return Problem(
            RejectReason.NON_NUMERIC,
            f"is a string ({short(value)}); numeric strings are not accepted",
        )
    return Problem(RejectReason.NON_NUMERIC, f"is {type_name(value)}, not a number")


class JsonObjectFormat:
    """A JSON stream's lookups, prepared once; see the module docstring."""

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
        self, payload: bytes | bytearray, device: str, received_at: float
    ) -> tuple[list[Reading], list[Problem]]:
        try:
            doc = decode.json_document(payload)
        except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
            return [], [json_problem(err)]
        if type(doc) is dict:  # the common case: one reading per message
            result = self._one(doc, device, received_at)
            if isinstance(result, Reading):
                return [result], []
            return [], [result]
        if type(doc) is not list:
            return [], [Problem(RejectReason.UNPARSABLE, "top level is neither object nor array")]
        readings: list[Reading] = []
        problems: list[Problem] = []
        for i, obj in enumerate(doc):
            if type(obj) is not dict:
                detail = f"element {i}: is {type_name(obj)}, not an object"
                problems.append(Problem(RejectReason.UNPARSABLE, detail))
                continue
            result = self._one(obj, device, received_at)
            if isinstance(result, Reading):
                readings.append(result)
            else:
                problems.append(Problem(result.reason, f"element {i}: {result.detail}"))
        return readings, problems

    def _one(self, obj: dict[str, Any], device: str, received_at: float) -> Reading | Problem:
        if self.ts_path is None:
            ts = received_at
        else:
            key = self.ts_key
            raw = obj.get(key, _MISSING) if key is not None else _get(obj, self.ts_path)
            if raw is _MISSING:
                return Problem(RejectReason.MISSING_TIMESTAMP, f"no {self.ts_field!r} field")
            epoch = _epoch(raw, self.ts_unit)
            if isinstance(epoch, str):
                return Problem(RejectReason.BAD_TIMESTAMP, epoch)
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
                return Problem(number.reason, f"feature {name!r} {number.detail}")
        if missing:
            return Problem(
                RejectReason.MISSING_FEATURE, f"missing feature(s): {', '.join(missing)}"
            )
        return Reading(self.name, device, ts, tuple(values))
