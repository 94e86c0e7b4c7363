"""The ``senml`` format: an RFC 8428 SenML pack in JSON, one reading per resolved time.

``timestamp_field`` and ``timestamp_unit`` do not apply: SenML times are always seconds.
Records are grouped by resolved time and each time becomes one reading that needs every
feature; readings come back sorted by time. A feature's path (or its name) is matched
whole against a record's resolved SenML name.
"""

from __future__ import annotations

from math import isfinite
from typing import Any, Final

from sentinel.config import StreamConfig
from sentinel.ingest.formats import decode
from sentinel.ingest.formats.base import YEAR_10000, Problem, json_problem, short, type_name
from sentinel.records import Reading, RejectReason

__all__ = ["SenmlFormat"]

# RFC 8428 §4.5.3: SenML times below 2**28 are relative to now.
SENML_RELATIVE_BELOW: Final = float(2**28)
SENML_VERSION: Final = 10


class _PackError(Exception):
    """A SenML pack that cannot be resolved; only ever caught inside this module."""


class SenmlFormat:
    """A SenML stream's name lookup, prepared once; see the module docstring."""

    __slots__ = ("index", "name", "names")

    def __init__(self, stream: StreamConfig) -> None:
        self.name = stream.name
        self.names = stream.feature_names
        # SenML names are matched whole: the feature's path (or name) is one SenML name.
        self.index = {(f.path or f.name): i for i, f in enumerate(stream.features)}

    def parse(
        self, payload: bytes | bytearray, device: str, received_at: float
    ) -> tuple[list[Reading], list[Problem]]:
        try:
            doc = decode.json_document(payload)
        except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
            return [], [json_problem(err)]
        if type(doc) is not list:
            return [], [Problem(RejectReason.UNPARSABLE, "SenML pack is not an array")]
        try:
            groups, problems = self._group(doc, received_at)
        except _PackError as err:
            return [], [Problem(RejectReason.UNPARSABLE, str(err))]
        readings: list[Reading] = []
        for ts in sorted(groups):
            values: list[float] = []
            missing: list[str] = []
            bad: Problem | None = None
            for name, slot in zip(self.names, groups[ts], strict=True):
                if isinstance(slot, float):
                    values.append(slot)
                elif slot is None:
                    missing.append(name)
                elif bad is None:
                    bad = slot
            if bad is not None:
                problems.append(bad)
            elif missing:
                detail = f"time {ts:.3f}: missing feature(s): {', '.join(missing)}"
                problems.append(Problem(RejectReason.MISSING_FEATURE, detail))
            else:
                readings.append(Reading(self.name, device, ts, tuple(values)))
        return readings, problems

    def _group(
        self, records: list[Any], received_at: float
    ) -> tuple[dict[float, list[float | Problem | None]], list[Problem]]:
        """Resolve the pack (RFC 8428 §4.6) into feature slots per resolved time.

        A slot holds the float value, None when no record gave it, or the problem with the
        record that did. Feature records whose time is unusable come back as problems.
        Raises _PackError when the pack as a whole cannot be resolved.
        """
        index = self.index
        n_features = len(self.names)
        groups: dict[float, list[float | Problem | None]] = {}
        problems: list[Problem] = []
        bn = ""
        bt = 0.0
        bv = 0.0
        for i, record in enumerate(records):
            if type(record) is not dict:
                raise _PackError(f"record {i} is {type_name(record)}, not an object")
            for key in record:
                if key.endswith("_"):
                    # §4.4: an unknown must-understand field rejects the whole pack.
                    raise _PackError(f"record {i}: unsupported must-understand field {key!r}")
            if "bver" in record:
                bver = record["bver"]
                if type(bver) is not int or bver > SENML_VERSION:
                    raise _PackError(f"record {i}: unsupported bver {short(bver)}")
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
                problems.append(Problem(RejectReason.BAD_TIMESTAMP, detail))
                continue
            value: float | Problem
            if v is not None:
                value = bv + v
                if not isfinite(value):
                    value = Problem(
                        RejectReason.NON_FINITE, f"record {i}: feature {feature!r} is {value!r}"
                    )
            elif "vs" in record or "vb" in record or "vd" in record:
                value = Problem(
                    RejectReason.NON_NUMERIC,
                    f"record {i}: feature {feature!r} has a string, boolean or data value",
                )
            else:
                value = Problem(
                    RejectReason.NON_NUMERIC, f"record {i}: feature {feature!r} has no v"
                )
            slots = groups.get(time)
            if slots is None:
                slots = groups[time] = [None] * n_features
            slots[slot] = value  # the same name twice at one time: the last record wins
        return groups, problems


def _field_str(record: dict[str, Any], key: str, i: int) -> str:
    value = record[key]
    if type(value) is not str:
        raise _PackError(f"record {i}: {key} is {type_name(value)}, not a string")
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
    raise _PackError(f"record {i}: {key} is {type_name(value)}, not a number")
