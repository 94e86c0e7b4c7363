"""The payload-format contract, and the few helpers every JSON-based format shares.

A format turns one message's payload bytes into readings for one stream and says what it
could not use. It decodes the bytes itself, so a binary format or a faster JSON decoder is
one module behind :class:`PayloadFormat`, not a change to the shared path. Formats never
raise for bad input and never see the topic: :class:`~sentinel.ingest.parse.MessageParser`
routes, limits sizes, checks the future skew and turns each :class:`Problem` into a
:class:`~sentinel.records.Rejected` with the topic and the payload's head.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple, Protocol

from sentinel.records import Reading, RejectReason

__all__ = ["YEAR_10000", "PayloadFormat", "Problem", "json_problem", "short", "type_name"]

# 10000-01-01T00:00:00Z: datetime, and so every ISO 8601 timestamp we accept, ends before it.
YEAR_10000: Final = 253_402_300_800.0


class Problem(NamedTuple):
    """Why part of a payload was not used; the parser adds the topic and payload head."""

    reason: RejectReason
    detail: str


class PayloadFormat(Protocol):
    """One stream's payload format, built once from the stream's config.

    A registered format's class takes the :class:`~sentinel.config.StreamConfig` as its
    only argument and prepares its lookups there: ``parse`` runs on the network thread for
    every message.
    """

    def parse(
        self, payload: bytes | bytearray, device: str, received_at: float
    ) -> tuple[list[Reading], list[Problem]]:
        """Readings in ``payload`` for ``device``, and problems with the rest.

        ``received_at`` is the arrival time, for payloads whose times are missing or
        relative. Values are finite floats; a time read from the payload lies in
        [0, :data:`YEAR_10000`).
        """
        ...


def json_problem(err: Exception) -> Problem:
    """The rejection for a payload ``json.loads(payload.decode())`` raised ``err`` on."""
    if isinstance(err, UnicodeDecodeError):
        return Problem(RejectReason.UNPARSABLE, f"not UTF-8 at byte {err.start}")
    if isinstance(err, RecursionError):
        return Problem(RejectReason.UNPARSABLE, "not JSON: nested too deeply")
    # JSONDecodeError, or an integer with too many digits
    return Problem(RejectReason.UNPARSABLE, f"not JSON: {err}"[:200])


def short(value: Any) -> str:
    """``repr(value)``, cut to 40 characters for a rejection's detail."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def type_name(value: Any) -> str:
    """What a decoded JSON value is, in words for a rejection's detail."""
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
