"""TopicRouter: MQTT wildcard matching and {device} capture."""

from __future__ import annotations

import pytest

from sentinel.config import StreamConfig
from sentinel.ingest import topics
from sentinel.ingest.topics import TopicRouter


def _stream(name: str, topic: str) -> StreamConfig:
    return StreamConfig.model_validate({"name": name, "topic": topic, "features": ["x"]})


def _match(pattern: str, topic: str) -> str | None:
    result = TopicRouter([_stream("s", pattern)]).match(topic)
    return None if result is None else result[1]


@pytest.mark.parametrize(
    ("pattern", "topic", "device"),
    [
        # {device} last
        ("plant/{device}", "plant/pump-7", "pump-7"),
        ("plant/{device}", "plant/pump-7/x", None),
        ("plant/{device}", "plant", None),
        ("plant/{device}", "other/pump-7", None),
        # {device} in the middle
        ("plant/{device}/pump", "plant/d1/pump", "d1"),
        ("plant/{device}/pump", "plant/d1/fan", None),
        ("plant/{device}/pump", "plant/d1/pump/extra", None),
        ("plant/{device}/pump", "plant/d1", None),
        # {device} first
        ("{device}/telemetry", "d9/telemetry", "d9"),
        # + matches exactly one level
        ("+/{device}/pump", "site-a/d1/pump", "d1"),
        ("+/{device}/pump", "d1/pump", None),
        ("+/{device}/pump", "x/y/d1/pump", None),
        ("plant/{device}/+", "plant/d1/temp", "d1"),
        ("plant/{device}/+", "plant/d1", None),
        ("plant/{device}/+", "plant/d1/", "d1"),  # + matches an empty level, as in MQTT
        # # matches the rest: zero or more levels
        ("plant/{device}/#", "plant/d1", "d1"),
        ("plant/{device}/#", "plant/d1/a", "d1"),
        ("plant/{device}/#", "plant/d1/a/b/c", "d1"),
        ("plant/{device}/#", "plant", None),
        ("plant/{device}/#", "other/d1/a", None),
        ("+/{device}/#", "x/d1/y/z", "d1"),
        # empty device level never matches
        ("plant/{device}/pump", "plant//pump", None),
        ("plant/{device}", "plant/", None),
        ("plant/{device}/#", "plant//x", None),
        # literal levels are case-sensitive and exact
        ("plant/{device}/pump", "Plant/d1/pump", None),
        ("plant/{device}/pump", "plant/d1/pumps", None),
        # MQTT §4.7.2: a leading wildcard does not match $-topics; a literal $ level does
        ("{device}/x", "$SYS/x", None),
        ("+/{device}", "$SYS/broker", None),
        ("$share/{device}", "$share/d1", "d1"),
    ],
)
def test_match(pattern: str, topic: str, device: str | None) -> None:
    assert _match(pattern, topic) == device


def test_returns_the_stream_object() -> None:
    pump = _stream("pump", "plant/{device}/pump")
    fan = _stream("fan", "plant/{device}/fan")
    router = TopicRouter([pump, fan])
    found = router.match("plant/d2/fan")
    assert found is not None
    assert found[0] is fan
    assert found[1] == "d2"
    found = router.match("plant/d3/pump")
    assert found is not None
    assert found[0] is pump
    assert router.match("plant/d3/valve") is None


def test_first_configured_stream_wins_on_overlap() -> None:
    wide = _stream("wide", "plant/{device}/#")
    narrow = _stream("narrow", "plant/{device}/pump")
    found = TopicRouter([wide, narrow]).match("plant/d1/pump")
    assert found is not None
    assert found[0] is wide
    found = TopicRouter([narrow, wide]).match("plant/d1/pump")
    assert found is not None
    assert found[0] is narrow


def test_device_captured_from_its_own_level_when_others_are_wild() -> None:
    stream = _stream("s", "+/+/{device}/+/#")
    router = TopicRouter([stream])
    assert router.match("a/b/dev/c") == (stream, "dev")
    assert router.match("a/b/dev/c/d/e") == (stream, "dev")
    assert router.match("a/b/dev") is None


def test_no_streams_matches_nothing() -> None:
    assert TopicRouter([]).match("a/b") is None


def test_answers_stay_right_when_the_cache_starts_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topics, "CACHE_SIZE", 3)
    stream = _stream("s", "plant/{device}/pump")
    router = TopicRouter([stream])
    for round_ in range(3):
        for i in range(10):
            assert router.match(f"plant/d{i}/pump") == (stream, f"d{i}"), round_
            assert router.match(f"plant/d{i}/fan") is None
