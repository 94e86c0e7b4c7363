"""NATS subjects for the stream topics, and the server mappings that partition them.

Kept apart from the NATS source (``sentinel.ingest.nats``) so that ``sentinel nats-mappings``
needs no NATS client. Why the partitioning is server config: docs/ARCHITECTURE.md, *NATS
JetStream source*.
"""

from __future__ import annotations

from collections.abc import Iterable

from sentinel.config import NatsConfig, StreamConfig

__all__ = ["device_partition", "server_mappings", "subject_to_topic", "topic_to_subject"]


def device_partition(device: str, partitions: int) -> int:
    """The partition the server's ``partition(P, i)`` mapping puts ``device`` in: FNV-1a
    (32 bit) of the token's bytes, modulo P, as nats-server's ``getHashPartition`` computes
    it. The daemon needs it to know which of its devices go with a partition it hands to
    another daemon; tests/ingest/test_subjects.py checks it against a real server."""
    value = 0x811C9DC5
    for byte in device.encode("utf-8"):
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value % partitions


def topic_to_subject(pattern: str) -> str:
    """A stream's topic pattern as a NATS subject filter: ``/`` -> ``.``, ``{device}`` and
    ``+`` -> ``*``, ``#`` -> ``>`` (the translation NATS's MQTT listener makes)."""
    tokens = {"{device}": "*", "+": "*", "#": ">"}
    return ".".join(tokens.get(level, level) for level in pattern.split("/"))


def subject_to_topic(subject: str) -> str:
    """The MQTT topic a (partition-stripped) subject stands for."""
    return subject.replace(".", "/")


def server_mappings(config: NatsConfig, streams: Iterable[StreamConfig]) -> dict[str, str]:
    """The account ``mappings`` the server needs: each stream's subjects to
    ``<prefix>.{{partition(P,i)}}.<subject>``, ``i`` being the device's wildcard, so the
    partition depends on the device level only (a device keeps its partition whatever
    the other ``+`` levels hold). A pattern ending in ``#`` gets a second mapping without
    that level, since MQTT's ``#`` also matches zero levels and NATS's ``>`` does not."""
    found: dict[str, str] = {}
    for stream in streams:
        levels = stream.topic.split("/")
        variants = [levels, levels[:-1]] if levels[-1] == "#" else [levels]
        for variant in variants:
            source: list[str] = []
            dest: list[str] = []
            device = 0
            wildcards = 0
            for level in variant:
                if level in ("{device}", "+"):
                    wildcards += 1
                    if level == "{device}":
                        device = wildcards
                    source.append("*")
                    dest.append(f"{{{{wildcard({wildcards})}}}}")
                elif level == "#":
                    source.append(">")
                    dest.append(">")
                else:
                    source.append(level)
                    dest.append(level)
            partition = f"{{{{partition({config.partitions},{device})}}}}"
            found[".".join(source)] = ".".join([config.subject_prefix, partition, *dest])
    return found
