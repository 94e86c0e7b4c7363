"""MessageParser: JSON and SenML payloads into readings, every problem a Rejected."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

import pytest

from sentinel.config import StreamConfig
from sentinel.ingest.parse import MessageParser
from sentinel.records import Reading, Rejected, RejectReason

NOW = 1_700_000_000.0
PUMP_TOPIC = "plant/d1/pump"
ENV_TOPIC = "senml/d7"


def _stream(**fields: Any) -> StreamConfig:
    """A stream as a config file gives it: features as names or tables (FeatureSpec)."""
    return StreamConfig.model_validate(fields)


def _json_stream(
    *,
    timestamp_field: str | None = "ts",
    timestamp_unit: Literal["auto", "s", "ms"] = "auto",
) -> StreamConfig:
    return _stream(
        name="pump",
        topic="plant/{device}/pump",
        features=["temp", {"name": "current", "path": "motor.current"}],
        timestamp_field=timestamp_field,
        timestamp_unit=timestamp_unit,
    )


def _senml_stream(features: list[Any]) -> StreamConfig:
    return _stream(name="env", topic="senml/{device}", features=features, format="senml")


def _parser(*streams: StreamConfig, max_payload_bytes: int = 65_536) -> MessageParser:
    return MessageParser(streams or [_json_stream()], max_payload_bytes=max_payload_bytes)


def _raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _parse(
    doc: Any, parser: MessageParser | None = None, topic: str = PUMP_TOPIC
) -> tuple[list[Reading], list[Rejected]]:
    payload = doc if isinstance(doc, bytes) else _raw(doc)
    return (parser or _parser()).parse(topic, payload, NOW)


def _one_reject(doc: Any, parser: MessageParser | None = None, topic: str = PUMP_TOPIC) -> Rejected:
    readings, rejected = _parse(doc, parser, topic)
    assert readings == []
    assert len(rejected) == 1, rejected
    assert rejected[0].topic == topic
    return rejected[0]


def _good(ts: Any = NOW, temp: Any = 21.5, current: Any = 3.0) -> dict[str, Any]:
    return {"ts": ts, "temp": temp, "motor": {"current": current}}


# --- JSON: the happy path -----------------------------------------------------------------


def test_single_object() -> None:
    readings, rejected = _parse(_good())
    assert rejected == []
    assert readings == [Reading("pump", "d1", NOW, (21.5, 3.0))]
    assert all(type(v) is float for v in readings[0].values)


def test_ints_become_floats_and_extra_fields_are_ignored() -> None:
    doc = {"ts": 1_700_000_000, "temp": 21, "motor": {"current": 3, "rpm": 900}, "fw": "1.2"}
    readings, rejected = _parse(doc)
    assert rejected == []
    assert readings[0].values == (21.0, 3.0)
    assert type(readings[0].ts) is float
    assert all(type(v) is float for v in readings[0].values)


def test_values_follow_configured_feature_order() -> None:
    doc = {"motor": {"current": 3.0}, "temp": 21.5, "ts": NOW}  # payload order differs
    readings, _ = _parse(doc)
    assert readings[0].values == (21.5, 3.0)


def test_deeply_nested_paths() -> None:
    stream = _stream(
        name="deep",
        topic="deep/{device}",
        features=[{"name": "x", "path": "a.b.c"}],
        timestamp_field="meta.time.epoch",
    )
    doc = {"meta": {"time": {"epoch": NOW}}, "a": {"b": {"c": 7}}}
    readings, rejected = _parse(doc, _parser(stream), "deep/dev")
    assert rejected == []
    assert readings == [Reading("deep", "dev", NOW, (7.0,))]


def test_path_through_a_non_object_is_missing() -> None:
    doc = {"ts": NOW, "temp": 1.0, "motor": 5}
    rejected = _one_reject(doc)
    assert rejected.reason is RejectReason.MISSING_FEATURE
    assert "current" in rejected.detail


def test_array_of_objects_gives_several_readings() -> None:
    doc = [_good(ts=NOW), _good(ts=NOW + 1, temp=22.0)]
    readings, rejected = _parse(doc)
    assert rejected == []
    assert [r.ts for r in readings] == [NOW, NOW + 1]
    assert readings[1].values == (22.0, 3.0)


def test_empty_array_carries_nothing() -> None:
    assert _parse([]) == ([], [])


def test_array_with_good_and_bad_elements() -> None:
    doc = [
        _good(ts=NOW),
        {"ts": NOW + 1, "temp": 1.0},  # no motor.current
        _good(ts=NOW + 2, temp="hot"),
        42,
        _good(ts=NOW + 4),
    ]
    readings, rejected = _parse(doc)
    assert [r.ts for r in readings] == [NOW, NOW + 4]
    assert [r.reason for r in rejected] == [
        RejectReason.MISSING_FEATURE,
        RejectReason.NON_NUMERIC,
        RejectReason.UNPARSABLE,
    ]
    assert rejected[0].detail.startswith("element 1: ")
    assert rejected[1].detail.startswith("element 2: ")
    assert rejected[2].detail.startswith("element 3: ")
    head = _raw(doc).decode()[:200]
    assert all(r.payload_head == head for r in rejected)


# --- JSON: timestamps ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "raw", "expected"),
    [
        ("s", 1_700_000_000, NOW),
        ("s", 1_700_000_000.25, NOW + 0.25),
        ("ms", 1_700_000_000_250, NOW + 0.25),
        ("ms", 5_000, 5.0),  # small values are still milliseconds when the unit says so
        ("auto", 1_700_000_000, NOW),
        ("auto", 1_700_000_000_250, NOW + 0.25),
        ("auto", 1e11, 1e11),  # the boundary itself is seconds
        ("auto", 100_000_000_001, 100_000_000.001),
        ("auto", 0, 0.0),
    ],
)
def test_numeric_epochs(unit: Literal["auto", "s", "ms"], raw: float, expected: float) -> None:
    parser = _parser(_json_stream(timestamp_unit=unit))
    readings, rejected = _parse(_good(ts=raw), parser)
    assert rejected == []
    assert readings[0].ts == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2023-11-14T22:13:20Z", NOW),
        ("2023-11-14T22:13:20.5Z", NOW + 0.5),
        ("2023-11-14T22:13:20+00:00", NOW),
        ("2023-11-15T00:13:20+02:00", NOW),
        ("2023-11-14T17:13:20-05:00", NOW),
        ("2023-11-14T22:13:20", NOW),  # naive means UTC
        ("2023-11-14 22:13:20", NOW),
        ("2023-11-14", NOW - (22 * 3600 + 13 * 60 + 20)),
    ],
)
def test_iso_timestamps(raw: str, expected: float) -> None:
    # ISO strings are accepted whatever the numeric unit says.
    parser = _parser(_json_stream(timestamp_unit="ms"))
    readings, rejected = _parse(_good(ts=raw), parser)
    assert rejected == []
    assert readings[0].ts == pytest.approx(expected)


def test_arrival_time_when_no_timestamp_field() -> None:
    parser = _parser(_json_stream(timestamp_field=None))
    readings, rejected = _parse({"temp": 1.0, "motor": {"current": 2.0}}, parser)
    assert rejected == []
    assert readings[0].ts == NOW


def test_arrival_time_ignores_a_ts_in_the_payload() -> None:
    parser = _parser(_json_stream(timestamp_field=None))
    readings, _ = _parse(_good(ts="garbage"), parser)
    assert readings[0].ts == NOW


def test_missing_timestamp() -> None:
    rejected = _one_reject({"temp": 1.0, "motor": {"current": 2.0}})
    assert rejected.reason is RejectReason.MISSING_TIMESTAMP
    assert rejected.detail == "no 'ts' field"


def test_missing_nested_timestamp_names_the_path() -> None:
    stream = _stream(name="n", topic="n/{device}", features=["x"], timestamp_field="meta.time")
    rejected = _one_reject({"meta": {}, "x": 1}, _parser(stream), "n/d")
    assert rejected.reason is RejectReason.MISSING_TIMESTAMP
    assert "meta.time" in rejected.detail


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (True, "boolean"),
        (False, "boolean"),
        (None, "null"),
        ({"s": 1}, "object"),
        ([1], "array"),
        ("yesterday", "not ISO 8601"),
        ("", "not ISO 8601"),
        ("1700000000", "not ISO 8601"),  # a numeric string is not a timestamp either
        (-1, "out of range"),
        (-1.5, "out of range"),
        ("1969-12-31T23:59:59Z", "out of range"),
        (253_402_300_800_000, "out of range"),  # year 10000 in milliseconds
        ("9999-12-31T23:00:00-05:00", "out of range"),
        (10**400, "out of range"),
    ],
)
def test_bad_timestamps(raw: Any, fragment: str) -> None:
    parser = _parser(_json_stream(timestamp_unit="auto"))
    rejected = _one_reject(_good(ts=raw), parser)
    assert rejected.reason is RejectReason.BAD_TIMESTAMP
    assert fragment in rejected.detail


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_timestamp(token: bytes) -> None:
    payload = b'{"ts": ' + token + b', "temp": 1, "motor": {"current": 2}}'
    rejected = _one_reject(payload)
    assert rejected.reason is RejectReason.BAD_TIMESTAMP
    assert "out of range" in rejected.detail


@pytest.mark.parametrize(
    ("unit", "raw"), [("s", 253_402_300_800), ("ms", 253_402_300_800_000), ("s", 1e300)]
)
def test_beyond_year_9999(unit: Literal["auto", "s", "ms"], raw: float) -> None:
    rejected = _one_reject(_good(ts=raw), _parser(_json_stream(timestamp_unit=unit)))
    assert rejected.reason is RejectReason.BAD_TIMESTAMP


def test_last_second_of_year_9999_is_accepted() -> None:
    readings, rejected = _parse(_good(ts="9999-12-31T23:59:59Z"))
    assert rejected == []
    assert readings[0].ts == 253_402_300_799.0


# --- timestamps ahead of the receiving clock (issue #19) -----------------------------------


def _skewed(skew: float = 300.0, *streams: StreamConfig) -> MessageParser:
    return MessageParser(
        streams or [_json_stream()], max_payload_bytes=65_536, max_future_skew=skew
    )


@pytest.mark.parametrize(
    "ts",
    ["9999-12-31T00:00:00Z", 99_999_999_999, NOW + 301],
    ids=["iso-9999", "epoch-year-5138", "just-past-the-skew"],
)
def test_a_timestamp_beyond_the_skew_is_rejected_as_future(ts: Any) -> None:
    rejected = _one_reject(_good(ts=ts), _skewed())
    assert rejected.reason is RejectReason.FUTURE_TIMESTAMP
    assert "ahead of the receiving clock" in rejected.detail
    assert "ingest.max_future_skew" in rejected.detail
    assert rejected.payload_head  # logged with the payload, like every rejection


def test_a_timestamp_within_the_skew_or_in_the_past_is_accepted() -> None:
    for ts in (NOW + 300, NOW, NOW - 86_400 * 365):
        readings, rejected = _parse(_good(ts=ts), _skewed())
        assert rejected == []
        assert [r.ts for r in readings] == [float(ts)]


def test_only_the_future_elements_of_an_array_are_rejected() -> None:
    doc = [_good(ts=NOW - 1), _good(ts="9999-12-31T00:00:00Z"), _good(ts=NOW)]
    readings, rejected = _parse(doc, _skewed())
    assert [r.ts for r in readings] == [NOW - 1, NOW]
    assert [r.reason for r in rejected] == [RejectReason.FUTURE_TIMESTAMP]


def test_a_future_senml_record_is_rejected_and_relative_times_count_from_arrival() -> None:
    stream = _senml_stream(["temp"])
    parser = _skewed(60.0, stream)
    future = [{"bn": "x", "n": "temp", "t": NOW + 3600, "v": 1.0}, {"n": "temp", "t": -5, "v": 2}]
    readings, rejected = parser.parse(ENV_TOPIC, _raw(future), NOW)
    assert [r.ts for r in readings] == [NOW - 5]  # relative: 5 s before arrival
    assert [r.reason for r in rejected] == [RejectReason.FUTURE_TIMESTAMP]
    ahead = [{"n": "temp", "t": 120, "v": 1.0}]  # relative, two minutes after arrival
    assert [r.reason for r in parser.parse(ENV_TOPIC, _raw(ahead), NOW)[1]] == [
        RejectReason.FUTURE_TIMESTAMP
    ]


# --- JSON: feature values -----------------------------------------------------------------


def test_missing_feature_names_it() -> None:
    rejected = _one_reject({"ts": NOW, "motor": {"current": 2.0}})
    assert rejected.reason is RejectReason.MISSING_FEATURE
    assert rejected.detail == "missing feature(s): temp"


def test_all_missing_features_are_named() -> None:
    rejected = _one_reject({"ts": NOW})
    assert rejected.reason is RejectReason.MISSING_FEATURE
    assert rejected.detail == "missing feature(s): temp, current"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (True, "boolean"),
        (False, "boolean"),
        (None, "null"),
        ({"v": 1}, "object"),
        ([1.0], "array"),
        ("hot", "string"),
    ],
)
def test_non_numeric_values(value: Any, fragment: str) -> None:
    rejected = _one_reject(_good(temp=value))
    assert rejected.reason is RejectReason.NON_NUMERIC
    assert rejected.detail.startswith("feature 'temp' ")
    assert fragment in rejected.detail


@pytest.mark.parametrize("value", ["21.5", "1e3", "0"])
def test_numeric_strings_are_rejected(value: str) -> None:
    rejected = _one_reject(_good(current=value))
    assert rejected.reason is RejectReason.NON_NUMERIC
    assert "'current'" in rejected.detail
    assert "numeric strings are not accepted" in rejected.detail


@pytest.mark.parametrize(
    ("token", "fragment"),
    [(b"NaN", "nan"), (b"Infinity", "inf"), (b"-Infinity", "-inf"), (b"1e999", "inf")],
)
def test_non_finite_values(token: bytes, fragment: str) -> None:
    payload = b'{"ts": 1700000000, "temp": ' + token + b', "motor": {"current": 2}}'
    rejected = _one_reject(payload)
    assert rejected.reason is RejectReason.NON_FINITE
    assert rejected.detail == f"feature 'temp' is {fragment}"


def test_integer_too_large_for_a_float_is_non_finite() -> None:
    rejected = _one_reject(_good(temp=10**400))
    assert rejected.reason is RejectReason.NON_FINITE
    assert "'temp'" in rejected.detail


def test_first_problem_in_feature_order_decides() -> None:
    # temp is bad and current is missing: temp comes first in the stream's features.
    rejected = _one_reject({"ts": NOW, "temp": "x"})
    assert rejected.reason is RejectReason.NON_NUMERIC
    rejected = _one_reject({"ts": NOW, "motor": {"current": "x"}})
    assert rejected.reason is RejectReason.MISSING_FEATURE


# --- whole-message rejections -------------------------------------------------------------


def test_oversized_is_checked_before_decoding_or_routing() -> None:
    payload = b"\xff" * 100 + b"x" * 400
    parser = _parser(max_payload_bytes=499)
    rejected = _one_reject(payload, parser, topic="not/a/known/topic")
    assert rejected.reason is RejectReason.OVERSIZED
    assert rejected.detail == "500 bytes, limit 499"
    assert rejected.payload_head == "\ufffd" * 100 + "x" * 100


def test_payload_at_the_limit_is_accepted() -> None:
    payload = _raw(_good())
    readings, rejected = _parser(max_payload_bytes=len(payload)).parse(PUMP_TOPIC, payload, NOW)
    assert rejected == []
    assert len(readings) == 1


def test_unknown_topic() -> None:
    rejected = _one_reject(_good(), topic="plant/d1/valve")
    assert rejected.reason is RejectReason.UNKNOWN_TOPIC
    assert rejected.detail == "topic matches no configured stream"
    assert rejected.payload_head.startswith('{"ts"')


def test_empty_device_level_is_an_unknown_topic() -> None:
    rejected = _one_reject(_good(), topic="plant//pump")
    assert rejected.reason is RejectReason.UNKNOWN_TOPIC


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"{'ts': 1}", "not JSON"),
        (b'{"ts": 1} trailing', "not JSON"),
        (b"\xef\xbb\xbf{}", "not JSON"),  # a UTF-8 byte-order mark is not JSON
        (b"[" * 100_000, "nested too deeply"),
        (b'{"temp": 1' + b"0" * 5000 + b"}", "not JSON"),  # over Python's int digit limit
        (b"42", "neither object nor array"),
        (b'"text"', "neither object nor array"),
        (b"null", "neither object nor array"),
        (b"true", "neither object nor array"),
    ],
)
def test_unparsable(payload: bytes, fragment: str) -> None:
    parser = _parser(max_payload_bytes=1_000_000)
    rejected = _one_reject(payload, parser)
    assert rejected.reason is RejectReason.UNPARSABLE
    assert fragment in rejected.detail


@pytest.mark.parametrize(
    "payload",
    [
        b'{"ts": 1, "temp": "\xff"}',
        '{"ts": 1}'.encode("utf-16"),
        b'{"ts": 1, "temp": "caf\xe9"}',  # Latin-1
    ],
)
def test_not_utf8(payload: bytes) -> None:
    rejected = _one_reject(payload)
    assert rejected.reason is RejectReason.UNPARSABLE
    assert rejected.detail.startswith("not UTF-8 at byte ")
    assert "\ufffd" in rejected.payload_head


def test_payload_head_is_200_characters() -> None:
    payload = ("é" * 300).encode()  # 2 bytes each
    rejected = _one_reject(payload)
    assert rejected.payload_head == "é" * 200


def test_payload_head_of_a_short_payload_is_all_of_it() -> None:
    assert _one_reject(b"oops").payload_head == "oops"


@pytest.mark.allow_log_exceptions
def test_parser_never_raises_on_a_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = _parser()

    def boom(*_: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(MessageParser, "_parse", boom)
    readings, rejected = parser.parse(PUMP_TOPIC, b"{}", NOW)
    assert readings == []
    assert rejected[0].reason is RejectReason.UNPARSABLE
    assert "RuntimeError" in rejected[0].detail


def test_streams_are_routed_by_topic() -> None:
    other = _stream(name="fan", topic="fans/{device}", features=["rpm"], timestamp_field=None)
    parser = _parser(_json_stream(), other)
    readings, _ = parser.parse("fans/f3", b'{"rpm": 900}', NOW)
    assert readings == [Reading("fan", "f3", NOW, (900.0,))]
    readings, _ = parser.parse(PUMP_TOPIC, _raw(_good()), NOW)
    assert readings[0].stream == "pump"


# --- SenML (RFC 8428) ---------------------------------------------------------------------


def _senml(pack: Any, *features: Any) -> tuple[list[Reading], list[Rejected]]:
    parser = _parser(_senml_stream(list(features)))
    payload = pack if isinstance(pack, bytes) else _raw(pack)
    return parser.parse(ENV_TOPIC, payload, NOW)


def test_rfc8428_single_datapoint() -> None:
    # §5.1.1: no time at all means "now".
    pack = [{"n": "urn:dev:ow:10e2073a01080063", "u": "Cel", "v": 23.1}]
    readings, rejected = _senml(pack, {"name": "temp", "path": "urn:dev:ow:10e2073a01080063"})
    assert rejected == []
    assert readings == [Reading("env", "d7", NOW, (23.1,))]


def test_rfc8428_multiple_datapoints() -> None:
    # §5.1.2: base name plus per-record names, matched by own name and by full name.
    pack = [
        {"bn": "urn:dev:ow:10e2073a01080063:", "n": "voltage", "u": "V", "v": 120.1},
        {"n": "current", "u": "A", "v": 1.2},
    ]
    readings, rejected = _senml(
        pack, "voltage", {"name": "current", "path": "urn:dev:ow:10e2073a01080063:current"}
    )
    assert rejected == []
    assert readings == [Reading("env", "d7", NOW, (120.1, 1.2))]


RFC_5_1_3 = [
    {
        "bn": "urn:dev:ow:10e2073a0108006:",
        "bt": 1.276020076001e09,
        "bu": "A",
        "bver": 5,
        "n": "voltage",
        "u": "V",
        "v": 120.1,
    },
    {"n": "current", "t": -5, "v": 1.2},
    {"n": "current", "t": -4, "v": 1.3},
    {"n": "current", "t": -3, "v": 1.4},
    {"n": "current", "t": -2, "v": 1.5},
    {"n": "current", "t": -1, "v": 1.6},
    {"n": "current", "v": 1.7},
]
BT = 1.276020076001e09


def test_rfc8428_multiple_measurements_one_feature() -> None:
    # §5.1.3: bt plus relative t; each distinct time is one reading, sorted by time.
    readings, rejected = _senml(RFC_5_1_3, "current")
    assert rejected == []
    assert [r.ts for r in readings] == [BT + t for t in (-5, -4, -3, -2, -1, 0)]
    assert [r.values for r in readings] == [(1.2,), (1.3,), (1.4,), (1.5,), (1.6,), (1.7,)]


def test_rfc8428_multiple_measurements_two_features() -> None:
    # Only bt itself has both voltage and current; the five earlier times lack voltage.
    readings, rejected = _senml(RFC_5_1_3, "voltage", "current")
    assert readings == [Reading("env", "d7", BT, (120.1, 1.7))]
    assert [r.reason for r in rejected] == [RejectReason.MISSING_FEATURE] * 5
    assert all("missing feature(s): voltage" in r.detail for r in rejected)
    assert rejected[0].detail.startswith(f"time {BT - 5:.3f}")


def test_rfc8428_multiple_data_types() -> None:
    # §5.1.4: string, boolean and data values are fine when they are not our features.
    pack = [
        {"bn": "urn:dev:ow:10e2073a01080063:", "n": "temperature", "u": "Cel", "v": 23.1},
        {"n": "label", "vs": "Machine Room"},
        {"n": "open", "vb": False},
        {"n": "nfc-reader", "vd": "aGkgCg"},
    ]
    readings, rejected = _senml(pack, "temperature")
    assert rejected == []
    assert readings[0].values == (23.1,)


@pytest.mark.parametrize(("name", "field"), [("label", "vs"), ("open", "vb"), ("nfc", "vd")])
def test_senml_non_numeric_value_on_a_feature(name: str, field: str) -> None:
    pack = [{"n": "temp", "v": 1.0}, {"n": name, field: "x" if field != "vb" else True}]
    readings, rejected = _senml(pack, "temp", name)
    assert readings == []
    assert len(rejected) == 1
    assert rejected[0].reason is RejectReason.NON_NUMERIC
    assert repr(name) in rejected[0].detail


def test_senml_feature_with_no_value() -> None:
    readings, rejected = _senml([{"n": "temp", "s": 12.0}], "temp")
    assert readings == []
    assert rejected[0].reason is RejectReason.NON_NUMERIC
    assert "has no v" in rejected[0].detail


def test_senml_relative_time() -> None:
    pack = [{"n": "temp", "t": -10, "v": 1.0}, {"n": "temp", "t": 2**28 - 1, "v": 2.0}]
    readings, rejected = _senml(pack, "temp")
    assert rejected == []
    assert [r.ts for r in readings] == [NOW - 10, NOW + 2**28 - 1]


def test_senml_absolute_time_from_2_pow_28() -> None:
    readings, _ = _senml([{"n": "temp", "t": 2**28, "v": 1.0}], "temp")
    assert readings[0].ts == 2**28


def test_senml_base_value_and_base_time_apply_until_changed() -> None:
    pack = [
        {"bn": "dev:", "bt": NOW, "bv": 100.0, "n": "temp", "v": 1.5},
        {"n": "temp", "t": 1, "v": -0.5},
        {"bv": 0, "bt": NOW + 10, "n": "temp", "v": 3.0},
        {"n": "temp", "t": 1, "v": 4.0},
    ]
    readings, rejected = _senml(pack, "temp")
    assert rejected == []
    assert [(r.ts, r.values) for r in readings] == [
        (NOW, (101.5,)),
        (NOW + 1, (99.5,)),
        (NOW + 10, (3.0,)),
        (NOW + 11, (4.0,)),
    ]


def test_senml_base_name_change_switches_devices_names() -> None:
    pack = [
        {"bn": "a:", "n": "temp", "v": 1.0},
        {"bn": "b:", "n": "temp", "v": 2.0},
    ]
    # Full-name features tell the two apart; own-name matching would let the last win.
    readings, _ = _senml(pack, {"name": "ta", "path": "a:temp"}, {"name": "tb", "path": "b:temp"})
    assert readings[0].values == (1.0, 2.0)
    readings, _ = _senml(pack, "temp")
    assert readings[0].values == (2.0,)


def test_senml_name_from_base_name_alone() -> None:
    readings, rejected = _senml(
        [{"bn": "urn:dev:x:temp", "v": 5.0}], {"name": "t", "path": "urn:dev:x:temp"}
    )
    assert rejected == []
    assert readings[0].values == (5.0,)


def test_senml_duplicate_name_at_one_time_last_wins() -> None:
    pack = [{"bt": NOW, "n": "temp", "v": 1.0}, {"n": "temp", "v": 2.0}]
    readings, rejected = _senml(pack, "temp")
    assert rejected == []
    assert readings == [Reading("env", "d7", NOW, (2.0,))]


def test_senml_duplicate_replaces_a_bad_value() -> None:
    pack = [{"bt": NOW, "n": "temp", "vs": "x"}, {"n": "temp", "v": 2.0}]
    readings, rejected = _senml(pack, "temp")
    assert rejected == []
    assert readings[0].values == (2.0,)


def test_senml_results_sorted_by_time() -> None:
    pack = [{"bt": NOW, "n": "temp", "t": t, "v": float(t)} for t in (3, 1, 2)]
    readings, _ = _senml(pack, "temp")
    assert [r.ts for r in readings] == [NOW + 1, NOW + 2, NOW + 3]


def test_senml_other_records_are_ignored() -> None:
    pack = [{"n": "temp", "v": 1.0}, {"n": "humidity", "v": 50}, {"n": "junk", "vs": "x"}]
    readings, rejected = _senml(pack, "temp")
    assert rejected == []
    assert len(readings) == 1


def test_senml_missing_features_named_per_time() -> None:
    pack = [{"bt": NOW, "n": "a", "v": 1.0}, {"n": "b", "t": 1, "v": 2.0}]
    readings, rejected = _senml(pack, "a", "b", "c")
    assert readings == []
    assert [r.detail for r in rejected] == [
        f"time {NOW:.3f}: missing feature(s): b, c",
        f"time {NOW + 1:.3f}: missing feature(s): a, c",
    ]


@pytest.mark.parametrize(
    ("token", "reason"),
    [(b"NaN", RejectReason.NON_FINITE), (b"1e999", RejectReason.NON_FINITE)],
)
def test_senml_non_finite_value(token: bytes, reason: RejectReason) -> None:
    payload = b'[{"n": "temp", "v": ' + token + b'}, {"n": "temp", "t": 1, "v": 2}]'
    readings, rejected = _senml(payload, "temp")
    assert [r.values for r in readings] == [(2.0,)]
    assert [r.reason for r in rejected] == [reason]
    assert "'temp'" in rejected[0].detail


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-1e999", b"1e300"])
def test_senml_bad_time(token: bytes) -> None:
    payload = b'[{"n": "temp", "t": ' + token + b', "v": 1}, {"n": "temp", "v": 2}]'
    readings, rejected = _senml(payload, "temp")
    assert [r.values for r in readings] == [(2.0,)]
    assert [r.reason for r in rejected] == [RejectReason.BAD_TIMESTAMP]


def test_senml_bad_time_on_other_records_is_ignored() -> None:
    payload = b'[{"n": "temp", "v": 1}, {"n": "other", "t": NaN, "v": 2}]'
    readings, rejected = _senml(payload, "temp")
    assert rejected == []
    assert len(readings) == 1


@pytest.mark.parametrize(
    ("pack", "fragment"),
    [
        ({"n": "temp", "v": 1}, "not an array"),
        ([{"n": "temp", "v": 1}, 5], "record 1 is int, not an object"),
        ([{"n": 5, "v": 1}], "n is int, not a string"),
        ([{"bn": None, "n": "temp", "v": 1}], "bn is null"),
        ([{"n": "temp", "v": "1.0"}], "v is a string"),
        ([{"n": "temp", "v": True}], "v is a boolean"),
        ([{"n": "temp", "t": "now", "v": 1}], "t is a string"),
        ([{"bt": [1], "n": "temp", "v": 1}], "bt is an array"),
        ([{"bv": False, "n": "temp", "v": 1}], "bv is a boolean"),
        ([{"bver": 11, "n": "temp", "v": 1}], "unsupported bver 11"),
        ([{"n": "temp", "v": 1, "foo_": 1}], "must-understand field 'foo_'"),
    ],
)
def test_senml_unparsable(pack: Any, fragment: str) -> None:
    readings, rejected = _senml(pack, "temp")
    assert readings == []
    assert len(rejected) == 1
    assert rejected[0].reason is RejectReason.UNPARSABLE
    assert fragment in rejected[0].detail


def test_senml_not_json() -> None:
    readings, rejected = _senml(b"[{", "temp")
    assert readings == []
    assert rejected[0].reason is RejectReason.UNPARSABLE


def test_senml_empty_pack() -> None:
    assert _senml([], "temp") == ([], [])


# --- throughput ---------------------------------------------------------------------------


def test_throughput_six_feature_json(capsys: pytest.CaptureFixture[str]) -> None:
    """Printed, not asserted: the number to compare with the network thread's budget."""
    names = ["temp", "pressure", "flow", "vibration", "current", "rpm"]
    stream = _stream(
        name="pump",
        topic="plant/{device}/pump",
        features=[*names[:4], {"name": "current", "path": "motor.current"}, "rpm"],
    )
    parser = MessageParser([stream], max_payload_bytes=65_536)
    payload = _raw(
        {
            "ts": 1_700_000_000.123,
            "temp": 21.57,
            "pressure": 101.325,
            "flow": 12.5,
            "vibration": 0.0031,
            "motor": {"current": 3.21},
            "rpm": 1480,
        }
    )
    readings, rejected = parser.parse("plant/dev42/pump", payload, NOW)
    assert rejected == []
    assert len(readings) == 1
    n = 50_000
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            parser.parse("plant/dev42/pump", payload, NOW)
        best = min(best, time.perf_counter() - start)
    with capsys.disabled():
        print(f"\n[throughput] 6-feature JSON: {n / best:,.0f} messages/s")


def test_device_names_longer_than_the_database_column_are_rejected() -> None:
    from sentinel.config import StreamConfig
    from sentinel.ingest.parse import MAX_DEVICE_NAME

    stream = StreamConfig.model_validate(
        {"name": "pump", "topic": "plant/{device}/pump", "features": ["flow"]}
    )
    parser = MessageParser([stream], max_payload_bytes=1024)
    long_name = "d" * (MAX_DEVICE_NAME + 1)
    readings, rejected = parser.parse(f"plant/{long_name}/pump", b'{"ts": 1, "flow": 1}', 0.0)
    assert readings == []
    assert [r.reason for r in rejected] == [RejectReason.BAD_DEVICE]
    ok, _ = parser.parse(f"plant/{'d' * MAX_DEVICE_NAME}/pump", b'{"ts": 1, "flow": 1}', 0.0)
    assert len(ok) == 1
