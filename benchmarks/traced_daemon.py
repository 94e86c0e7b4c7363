"""`sentinel run` with memory accounting from inside, for finding what grows (issue #23).

``python benchmarks/traced_daemon.py DIR [--frames N] [--every S] -- run --config FILE``
runs the daemon as ``python -m sentinel.cli`` would, and from a thread of its own writes
to DIR:

* ``memory.jsonl``: every ``--sample`` seconds, RSS split by mapping (glibc's main heap,
  the other anonymous mappings, file-backed pages) from ``/proc/self/smaps``, glibc's
  ``mallinfo2`` (bytes in use, free in the arenas, mmapped): what the allocator holds
  live against what it keeps free, for every thread's arena together; SQLite's
  ``sqlite3_memory_used``; and CPython's small-object arenas (``sys._debugmallocstats``);
* ``snap-NNNN.tracemalloc``: a ``tracemalloc`` snapshot every ``--every`` seconds (with
  ``--frames`` > 0), Python objects and NumPy buffers by where they were allocated.
  Compare two with ``python benchmarks/traced_daemon.py --compare A B``.

tracemalloc slows the daemon and adds its own tables to RSS: compare its snapshots with
each other, and RSS only between runs with the same ``--frames``. memory.py's
``--traced DIR`` starts the daemon this way.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def mallinfo() -> dict[str, float]:
    """glibc's totals over all arenas (MB): in use, free inside the arenas, mmapped."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        return {}
    fn.restype = _Mallinfo2
    info = fn()
    mb = 2**20
    return {
        "malloc_in_use_mb": round((info.uordblks + info.hblkhd) / mb, 1),
        "malloc_free_mb": round(info.fordblks / mb, 1),
        "malloc_arena_mb": round(info.arena / mb, 1),
        "malloc_mmapped_mb": round(info.hblkhd / mb, 1),
    }


def sqlite_memory() -> dict[str, float]:
    """What SQLite's own allocator holds (MB): page caches, schemas, statements, of every
    connection in the process (Python's sqlite3 and SQLAlchemy's share the library)."""
    try:
        lib = ctypes.CDLL("libsqlite3.so.0")
    except OSError:
        return {}
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return {"sqlite_mb": round(lib.sqlite3_memory_used() / 2**20, 1)}


_PYMALLOC = {
    "# arenas allocated current": "pymalloc_arenas_mb",
    "# bytes in allocated blocks": "pymalloc_allocated_mb",
    "# bytes in available blocks": "pymalloc_available_mb",
}


def pymalloc() -> dict[str, float]:
    """CPython's small-object allocator (MB): its arenas (1 MiB each, mmapped, given back
    only when wholly empty), the objects in them, and their free blocks. Neither malloc's
    figures nor tracemalloc's show how full the arenas are; ``sys._debugmallocstats``
    does, on the C stderr, which is borrowed for the call (a log line written meanwhile is
    passed on)."""
    import tempfile

    with tempfile.TemporaryFile() as out:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    row: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        name = _PYMALLOC.get(key.strip())
        if name is None:
            if line.startswith("{"):  # a JSON log line written while stderr was borrowed
                os.write(2, (line + "\n").encode())
            continue
        number = int(value.strip().replace(",", ""))
        # arenas are counted, 1 MiB each (CPython 3.10 and later on 64 bits); the rest bytes
        row[name] = float(number) if "arenas" in key else round(number / 2**20, 1)
    return row


def smaps() -> dict[str, float]:
    """RSS by kind of mapping (MB): [heap], anonymous (arenas, mmapped blocks), files."""
    kinds = {"heap": 0, "anon": 0, "file": 0}
    kind = "anon"
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if "-" in head and not head.endswith(":"):
                parts = line.split()
                path = parts[5] if len(parts) > 5 else ""
                kind = "heap" if path == "[heap]" else "file" if path.startswith("/") else "anon"
            elif head == "Rss:":
                kinds[kind] += int(line.split()[1])
    return {f"rss_{k}_mb": round(v / 1024, 1) for k, v in kinds.items()}


class Sampler:
    """Takes the samples on SIGALRM, in the main thread: a thread of its own would take a
    malloc arena of its own first (``M_ARENA_MAX`` 2), and the daemon's threads would not
    share theirs as they do in a real ``sentinel run``."""

    def __init__(self, out: Path, every: float, frames: int) -> None:
        self.log = (out / "memory.jsonl").open("a")
        self.out, self.every, self.frames = out, every, frames
        self.start = time.monotonic()
        self.next_snap = self.start + every
        self.n = 0

    def __call__(self, *_: object) -> None:
        now = time.monotonic()
        row: dict[str, float] = {"t": round(now - self.start, 1), **smaps(), **mallinfo()}
        row.update(sqlite_memory())
        row.update(pymalloc())
        if self.frames:
            traced, _peak = tracemalloc.get_traced_memory()
            row["traced_mb"] = round(traced / 2**20, 1)
            own = tracemalloc.get_tracemalloc_memory()
            row["tracemalloc_overhead_mb"] = round(own / 2**20, 1)
            if now >= self.next_snap:
                self.next_snap = now + self.every
                tracemalloc.take_snapshot().dump(str(self.out / f"snap-{self.n:04d}.tracemalloc"))
                row["snapshot"] = self.n
                self.n += 1
        self.log.write(json.dumps(row) + "\n")
        self.log.flush()


def compare(a: Path, b: Path, top: int, key: str) -> None:
    old, new = tracemalloc.Snapshot.load(str(a)), tracemalloc.Snapshot.load(str(b))
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    old, new = old.filter_traces(filters), new.filter_traces(filters)
    total = sum(s.size for s in new.statistics("filename")) - sum(
        s.size for s in old.statistics("filename")
    )
    print(f"traced growth {total / 2**20:+.1f} MB ({a.name} -> {b.name})")
    for stat in new.compare_to(old, key)[:top]:
        diff, now = stat.size_diff / 2**20, stat.size / 2**20
        print(f"{diff:+8.2f} MB {stat.count_diff:+9d} blocks, now {now:7.2f} MB")
        for line in stat.traceback.format()[-8:]:
            print("    " + line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"))
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--key", default="traceback", choices=("traceback", "lineno", "filename"))
    ap.add_argument("out", nargs="?", type=Path, help="directory for samples and snapshots")
    ap.add_argument("--frames", type=int, default=8, help="tracemalloc frames (0: off)")
    ap.add_argument("--every", type=float, default=300.0, help="seconds between snapshots")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    own, argv = sys.argv[1:], []  # sentinel's arguments follow a "--"
    if "--" in own:
        cut = own.index("--")
        own, argv = own[:cut], own[cut + 1 :]
    args = ap.parse_args(own)
    if args.compare:
        old, new = args.compare
        compare(old, new, args.top, args.key)
        return 0
    if args.out is None:
        ap.error("give an output directory")
    args.out.mkdir(parents=True, exist_ok=True)
    from sentinel.daemon.malloc import cap_malloc_arenas

    cap_malloc_arenas()  # as `sentinel run` does (it will again: already done, no matter)
    if args.frames:
        tracemalloc.start(args.frames)
    signal.signal(signal.SIGALRM, Sampler(args.out, args.every, args.frames))
    signal.setitimer(signal.ITIMER_REAL, args.sample, args.sample)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    from sentinel.cli.main import main as sentinel_main

    return sentinel_main(argv)


if __name__ == "__main__":
    sys.exit(main())
