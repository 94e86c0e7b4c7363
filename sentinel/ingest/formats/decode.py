"""JSON payload bytes to Python values: msgspec first, the standard library as the reference.

Decoding was a fifth to a third of a JSON format's parse (issue #23). msgspec's decoder
reads the bytes directly (UTF-8 checked, no ``bytes.decode`` copy); on every input it
accepts it returns what ``json.loads(payload.decode("utf-8"))`` returns: the same ints of
any size, correctly rounded floats, the last of duplicate keys. What it refuses, the
standard library decodes again, so that what Python's ``json`` accepts and msgspec does
not (``NaN``, ``Infinity``, ``1e999``, lone surrogate escapes) decodes as before, and a
rejection's detail is still the standard library's message. The one difference left is
the nesting limit: msgspec's is a few levels deeper than ``json``'s, whose own depends on
the caller's stack, so a payload nested within those few levels is rejected for its shape
rather than as "nested too deeply".
"""

from __future__ import annotations

import json
from typing import Any, Final

import msgspec

__all__ = ["json_document"]

_DECODE: Final = msgspec.json.Decoder().decode


def json_document(payload: bytes | bytearray) -> Any:
    """The JSON value in ``payload``, as ``json.loads(payload.decode("utf-8"))`` gives it.

    Raises what that expression raises (``UnicodeDecodeError``, ``JSONDecodeError``, the
    ``ValueError`` for an integer with too many digits, ``RecursionError``), for
    :func:`~sentinel.ingest.formats.base.json_problem`.
    """
    try:
        return _DECODE(payload)
    except (msgspec.DecodeError, RecursionError):
        return json.loads(payload.decode("utf-8"))
