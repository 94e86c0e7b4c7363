"""Payload formats: the registry matches the config, and every format keeps the contract.

What each format accepts and rejects is tested through the parser in test_parse.py; here,
one contract test parametrized over the registry, as river runs its checks over every
estimator.
"""

from __future__ import annotations

from typing import Any, get_args

import pytest

from sentinel.config import StreamConfig
from sentinel.ingest.formats import FORMATS, Problem, decode
from sentinel.ingest.parse import MessageParser
from sentinel.records import Reading, RejectReason

NOW = 1_700_000_000.0

# One valid payload per format, carrying temp = 21.5 and flow = 3.0 at NOW.
GOOD: dict[str, bytes] = {
    "json": b'{"ts": 1700000000.0, "temp": 21.5, "flow": 3}',
    "senml": b'[{"bt": 1700000000.0, "n": "temp", "v": 21.5}, {"n": "flow", "v": 3}]',
}

HOSTILE = [
    b"",
    b"\x00\xff\xfe",
    b"\x80" * 64,
    b"[" * 100_000,
    b"{" * 10 + b"}",
    b"null",
    b"[1, 2, 3]",
    '{"ts": 1}'.encode("utf-16"),
]


def _stream(fmt: str) -> StreamConfig:
    return StreamConfig.model_validate(
        {
            "name": "pump",
            "topic": "plant/{device}/pump",
            "features": ["temp", "flow"],
            "format": fmt,
        }
    )


def test_the_registry_offers_exactly_the_formats_the_config_accepts() -> None:
    choices = get_args(StreamConfig.model_fields["format"].annotation)
    assert set(FORMATS) == set(choices)


def test_every_format_has_a_sample_here() -> None:
    assert set(GOOD) == set(FORMATS)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_a_good_payload_becomes_a_reading(fmt: str, kind: type[Any]) -> None:
    payload = kind(GOOD[fmt])
    parser = FORMATS[fmt](_stream(fmt))
    readings, problems = parser.parse(payload, "d1", NOW + 5)
    assert problems == []
    assert readings == [Reading("pump", "d1", NOW, (21.5, 3.0))]
    assert all(type(v) is float for v in readings[0].values)
    assert parser.parse(payload, "d1", NOW + 5) == (readings, [])  # no state between calls


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("payload", HOSTILE)
def test_bad_bytes_are_problems_not_exceptions(fmt: str, payload: bytes) -> None:
    readings, problems = FORMATS[fmt](_stream(fmt)).parse(payload, "d1", NOW)
    assert readings == []
    assert problems
    for problem in problems:
        assert isinstance(problem, Problem)
        assert isinstance(problem.reason, RejectReason)
        assert problem.detail


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_a_message_is_decoded_once(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two patterns match the topic; the first stream wins and only its format decodes.
    first = _stream(fmt)
    second = StreamConfig.model_validate(
        {"name": "all", "topic": "plant/{device}/#", "features": ["temp"], "format": fmt}
    )
    parser = MessageParser([first, second], max_payload_bytes=65_536)
    json_document = decode.json_document
    calls: list[object] = []

    def counting(payload: bytes | bytearray) -> Any:
        calls.append(payload)
        return json_document(payload)

    monkeypatch.setattr(decode, "json_document", counting)
    readings, rejected = parser.parse("plant/d1/pump", GOOD[fmt], NOW + 5)
    assert rejected == []
    assert [r.stream for r in readings] == ["pump"]
    assert len(calls) == 1
