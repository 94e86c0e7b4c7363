"""Payload formats, keyed by a stream's ``format``: each turns payload bytes into readings.

Adding a format is one module with a class that satisfies :class:`PayloadFormat` and takes
its stream's config, one entry in :data:`FORMATS`, and its name in the ``Literal`` of
``StreamConfig.format`` (a test holds the two equal).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from sentinel.config import StreamConfig
from sentinel.ingest.formats.base import PayloadFormat, Problem
from sentinel.ingest.formats.json_object import JsonObjectFormat
from sentinel.ingest.formats.senml import SenmlFormat

__all__ = ["FORMATS", "JsonObjectFormat", "PayloadFormat", "Problem", "SenmlFormat"]

FORMATS: Final[Mapping[str, Callable[[StreamConfig], PayloadFormat]]] = {
    "json": JsonObjectFormat,
    "senml": SenmlFormat,
}
