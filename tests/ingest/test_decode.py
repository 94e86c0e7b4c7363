"""decode.json_document: what json.loads(payload.decode()) gives, or raises the same error.

Each payload is decoded by both and compared by repr (NaN is not equal to itself), or by
the exception's type and message; the ones msgspec refuses and the standard library
accepts are listed, so a msgspec upgrade that starts to accept them differently fails here.
"""

from __future__ import annotations

import json
import random
import struct
from typing import Any

import msgspec
import pytest

from sentinel.ingest.formats import decode

# Payloads msgspec refuses that Python's json accepts: the fallback must decode them.
ONLY_STDLIB = [
    b'{"temp": NaN}',
    b'{"temp": Infinity}',
    b'{"temp": -Infinity}',
    b'{"temp": 1e999}',
    b'{"temp": -1e999}',
    b'{"name": "\\ud800"}',  # a lone surrogate escape
]

SAME = [
    b'{"temp": 1, "temp": 2}',  # duplicate keys: the last wins
    b'{"temp": 123456789012345678901234567890}',
    b'{"temp": 18446744073709551616}',  # one above uint64
    b'{"temp": -9223372036854775809}',  # one below int64
    b'{"temp": -0}',
    b'{"temp": -0.0}',
    b'{"temp": 1.0000000000000000000001}',
    b'{"temp": 1e-400}',
    b'{"temp": 1E5}',
    b' \n{"temp": [1, {"a": null}, true, false, "x"]}\t',
    '{"caf\u00e9": "\U0010ffff"}'.encode(),
    b'{"a": "\\u00e9\\n\\"\\\\"}',
    b"[]",
    b"{}",
    b'"text"',
    b"12",
]

RAISE = [
    b"",
    b"   ",
    b"\xef\xbb\xbf{}",  # a byte-order mark
    b'{"temp": "\xff"}',
    b'{"temp": "\xed\xa0\x80"}',  # a UTF-8-encoded surrogate
    b'{"\xc0\x80": 1}',  # an overlong encoding
    b'{"temp": "\xf4\x90\x80\x80"}',  # above U+10FFFF
    b'{"temp": 1} \xff',
    b'{"temp": 01}',
    b'{"temp": "x\x01"}',
    b'{"temp": 1}\x00',
    b'{"temp": 1,}',
    b"{'temp': 1}",
    b'{"temp": ' + b"9" * 5000 + b"}",  # more digits than int() takes
    b"[" * 100_000,
    b"[" * 100_000 + b"]" * 100_000,
    '{"ts": 1}'.encode("utf-16"),
]


def _outcome(call: Any, payload: bytes | bytearray) -> tuple[str, str]:
    try:
        value = call(payload)
    except (ValueError, RecursionError) as err:
        return type(err).__name__, str(err)
    return type(value).__name__, repr(value)


def _stdlib(payload: bytes | bytearray) -> Any:
    return json.loads(payload.decode("utf-8"))


@pytest.mark.parametrize("payload", ONLY_STDLIB + SAME + RAISE)
def test_decodes_as_the_standard_library(payload: bytes) -> None:
    assert _outcome(decode.json_document, payload) == _outcome(_stdlib, payload)
    assert _outcome(decode.json_document, bytearray(payload)) == _outcome(_stdlib, payload)


@pytest.mark.parametrize("payload", ONLY_STDLIB)
def test_msgspec_still_refuses_what_the_fallback_decodes(payload: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(payload)


def test_numbers_decode_as_the_standard_library() -> None:
    # Random doubles by their bits, short and long decimals, exponents near the float
    # range's ends, and integers beyond 64 bits: the same type and value from both.
    rng = random.Random(23)
    texts: list[str] = []
    for _ in range(4_000):
        texts.append(repr(struct.unpack("<d", rng.randbytes(8))[0]))
        texts.append(f"{rng.uniform(-1e6, 1e6):.{rng.randint(1, 25)}g}")
        mantissa = rng.randrange(10 ** rng.randint(1, 30))
        texts.append(f"{mantissa}.{rng.randrange(10**20)}e{rng.randint(-330, 310)}")
        texts.append(str(rng.randrange(-(10**40), 10**40)))
    texts = [t for t in texts if t not in ("nan", "inf", "-inf")]
    payload = ("[" + ",".join(texts) + "]").encode()
    assert _outcome(decode.json_document, payload) == _outcome(_stdlib, payload)
