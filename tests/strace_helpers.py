"""Recording a process's syscalls with strace, and reading back what the durability tests
need: which file each fsync made durable, and which MQTT packets crossed the broker socket.

Lines come from ``strace -f -yy -xx -s 65535 -o FILE``: every fd is annotated with its
path or socket endpoints, every string is hex. Events are kept in file order, which is the
order strace saw them; a call split by another thread (``<unfinished ...>`` / ``<... resumed>``)
has a ``start`` (where it began) and an ``end`` (where it returned).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TRACED",
    "MqttPacket",
    "Syscall",
    "acks_before_sync",
    "mqtt_packets",
    "parse_trace",
    "strace_command",
    "strace_unusable",
]

STRACE = "/usr/bin/strace"
# What the durability test needs: syncs, the database's writes (SQLite writes with
# pwrite64), and both directions of the broker socket (paho sends with send() and receives
# with recv(), which are sendto() and recvfrom() on Linux). Not read() and write(): every
# module import would land in the trace, hundreds of megabytes of it.
TRACED = "fsync,fdatasync,pwrite64,sendto,sendmsg,recvfrom"
_SENDS = frozenset({"sendto", "sendmsg"})
_RECEIVES = frozenset({"recvfrom"})
_SYNCS = frozenset({"fsync", "fdatasync"})

PUBLISH, PUBACK = 3, 4


def strace_unusable() -> str | None:
    """Why strace cannot record here (missing, or ptrace not permitted), None when it can."""
    binary = shutil.which("strace") or (STRACE if Path(STRACE).exists() else None)
    if binary is None:
        return "strace is not installed (apt-get install strace)"
    probe = subprocess.run(
        [binary, "-f", "--seccomp-bpf", "-e", "trace=fsync", "-o", "/dev/null", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return (
            "strace cannot trace here (ptrace not permitted, or an strace older than 5.3 "
            f"without --seccomp-bpf): {probe.stderr.strip()}"
        )
    return None


def strace_command(output: Path, argv: Sequence[str]) -> list[str]:
    binary = shutil.which("strace") or STRACE
    # --seccomp-bpf: calls not traced do not stop the process, so it runs near full speed.
    options = ["-f", "--seccomp-bpf", "-yy", "-xx", "-s", "65535", "-e", f"trace={TRACED}"]
    return [binary, *options, "-o", str(output), *argv]


@dataclass(frozen=True)
class Syscall:
    start: int  # index of the line where the call began
    end: int  # index of the line where it returned
    pid: int
    name: str
    fd: str  # the -yy annotation: a path, or e.g. "TCP:[127.0.0.1:40000->127.0.0.1:1883]"
    data: bytes | None  # the first string argument (what was sent or received)
    result: int | None


_LINE = re.compile(r"^(\d+)\s+(?:\d\d:\d\d:\d\d\.\d+\s+)?(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_FD = re.compile(r"^\d+<((?:TCP|UDP)[^\]]*\]|[^>]*)>")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_RESULT = re.compile(r"\)\s+=\s+(-?\d+)")


def _unescape(text: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out += ch.encode()
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "x":
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        elif nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", text[i + 1 :])
            assert digits is not None
            out.append(int(digits.group(0), 8))
            i += 1 + len(digits.group(0))
        else:
            out += {"n": b"\n", "t": b"\t", "r": b"\r", "v": b"\v", "f": b"\f"}.get(
                nxt, nxt.encode()
            )
            i += 2
    return bytes(out)


def parse_trace(path: Path) -> list[Syscall]:
    """The traced calls in ``path``, in the order they began."""
    pending: dict[int, tuple[int, str, str]] = {}  # pid -> (start, name, args so far)
    calls: list[Syscall] = []
    for index, line in enumerate(path.read_text(errors="replace").splitlines()):
        m = _LINE.match(line)
        if m is None:
            continue
        pid, body = int(m.group(1)), m.group(2)
        if (r := _RESUMED.match(body)) is not None:
            if pid not in pending:
                continue
            start, name, head = pending.pop(pid)
            args = head + r.group(2)
        elif (c := _CALL.match(body)) is not None:
            name, args = c.group(1), c.group(2)
            if args.endswith("<unfinished ...>"):
                pending[pid] = (index, name, args[: -len("<unfinished ...>")].rstrip())
                continue
            start = index
        else:
            continue  # signals, exits
        fd = _FD.match(args)
        data = _STRING.search(args[fd.end() :] if fd else args)
        result = _RESULT.search(args)
        calls.append(
            Syscall(
                start=start,
                end=index,
                pid=pid,
                name=name,
                fd=_unescape(fd.group(1)).decode(errors="replace") if fd else "",
                data=_unescape(data.group(1)) if data else None,
                result=int(result.group(1)) if result else None,
            )
        )
    calls.sort(key=lambda call: call.start)
    return calls


@dataclass(frozen=True)
class MqttPacket:
    kind: int  # control packet type: 3 PUBLISH, 4 PUBACK, ...
    packet_id: int | None  # PUBLISH with QoS > 0 and PUBACK carry one
    at: int  # trace line index: the send's start, or the receive that completed it


def _packet_id(first: int, body: bytes) -> int | None:
    kind = first >> 4
    if kind == PUBACK:
        return int.from_bytes(body[:2], "big")
    if kind == PUBLISH and (first >> 1) & 3:
        topic_len = int.from_bytes(body[:2], "big")
        return int.from_bytes(body[2 + topic_len : 4 + topic_len], "big")
    return None


def _header(buffer: bytes) -> tuple[int, int] | None:
    """(fixed header length, remaining length) of the packet ``buffer`` starts with, None
    while its remaining-length bytes are incomplete."""
    length = 0
    for i in range(1, min(len(buffer), 5)):
        length |= (buffer[i] & 0x7F) << (7 * (i - 1))
        if not buffer[i] & 0x80:
            return i + 1, length
    return None


def mqtt_packets(chunks: Iterable[tuple[int, bytes]]) -> Iterator[MqttPacket]:
    """The packets in one direction of an MQTT byte stream, given as (line index, bytes)
    in order; a packet is placed at the chunk that completed it."""
    buffer = b""
    for at, chunk in chunks:
        buffer += chunk
        while (header := _header(buffer)) is not None and len(buffer) >= sum(header):
            size, length = header
            first, body = buffer[0], buffer[size : size + length]
            buffer = buffer[size + length :]
            yield MqttPacket(first >> 4, _packet_id(first, body), at)


def acks_before_sync(
    calls: Sequence[Syscall], wal: Path, broker_port: int
) -> tuple[int, list[str]]:
    """How many PUBACKs the traced process sent to the broker, and for each one sent before
    its reading's commit was durable, why.

    A reading's PUBLISH arrives; the first commit to the database after it writes the WAL
    (the only database writer is the store's writer thread, so with one reading in flight
    at a time that commit holds it); its PUBACK must come after an fsync or fdatasync of
    the WAL that follows that commit's writes."""
    peer = f":{broker_port}]"
    socket_calls = [c for c in calls if c.fd.startswith("TCP") and c.fd.endswith(peer)]
    inbound = mqtt_packets(
        (c.end, c.data[: c.result])
        for c in socket_calls
        if c.name in _RECEIVES and c.data and c.result
    )
    outbound = mqtt_packets((c.start, c.data) for c in socket_calls if c.name in _SENDS and c.data)
    arrived: dict[int, int] = {}  # packet id -> where its latest PUBLISH arrived
    events = sorted(
        [(p.at, "in", p) for p in inbound if p.kind == PUBLISH]
        + [(p.at, "out", p) for p in outbound if p.kind == PUBACK],
        key=lambda e: e[0],
    )
    wal_writes = [c for c in calls if c.fd == str(wal) and c.name == "pwrite64"]
    wal_syncs = [c for c in calls if c.fd == str(wal) and c.name in _SYNCS]
    acks, problems = 0, []
    for at, direction, packet in events:
        assert packet.packet_id is not None
        if direction == "in":
            arrived[packet.packet_id] = at
            continue
        acks += 1
        received = arrived.pop(packet.packet_id, None)
        if received is None:
            problems.append(f"PUBACK {packet.packet_id} at line {at}: no PUBLISH before it")
            continue
        commit = next((w for w in wal_writes if w.start > received), None)
        if commit is None or commit.start > at:
            problems.append(
                f"PUBACK {packet.packet_id} at line {at}: no WAL write between the PUBLISH "
                f"(line {received}) and it"
            )
            continue
        synced = [s for s in wal_syncs if commit.end < s.end < at]
        if not synced:
            problems.append(
                f"PUBACK {packet.packet_id} at line {at}: its commit (WAL write at line "
                f"{commit.start}) was not synced before it"
            )
    return acks, problems
