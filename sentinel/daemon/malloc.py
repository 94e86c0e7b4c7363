"""Cap glibc's malloc arenas for the daemon: its RSS grew on fragmented per-thread arenas.

glibc gives each thread that allocates concurrently an arena of its own (up to 8 per core).
The daemon's network, worker and writer threads allocate and free NumPy buffers of every
size, and each thread's arena keeps its own holes: a daemon fed 100 readings from each of
300 pumps grew by 30.6 MB, by 20.4 MB with two arenas and 17.4 MB with one (single runs;
docs/BENCHMARKS.md, "Memory by fleet size", issue #23). The threads take turns on the GIL,
so two arenas leave them little to contend for.
``MALLOC_ARENA_MAX`` in the environment (systemd's ``Environment=``) still wins; elsewhere
than glibc this does nothing.

What the arenas keep free stays in RSS: glibc returns only the top of a heap by itself.
``release_free_memory`` (``malloc_trim``, called by the daemon once a minute) also hands
back the whole free pages inside the heaps: the holes left by buffers that grew (each
device's histories double up to their bound) and by each pass's temporaries. In process,
300 pumps at 4,096 readings each held 24 MB of live state and 53 MB of RSS above the
start; a trim brought that to 35 MB (docs/BENCHMARKS.md, "RSS at 1,000 devices", issue #23).
"""

from __future__ import annotations

import ctypes
import os
import platform

import structlog

__all__ = ["ARENAS", "cap_malloc_arenas", "release_free_memory"]

log = structlog.get_logger(__name__)

ARENAS = 2
_M_ARENA_MAX = -8  # glibc's malloc.h
_libc: ctypes.CDLL | None = None


def cap_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Ask glibc for at most ``arenas`` malloc arenas; True when it agreed. Call before
    the daemon starts its threads (arenas already made stay)."""
    if "MALLOC_ARENA_MAX" in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        done = bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # no mallopt in this C library after all
        return False
    log.debug("malloc_arenas_capped", arenas=arenas, done=done)
    return done


def release_free_memory() -> bool:
    """Return the free pages of glibc's heaps to the system (``malloc_trim(0)``); True
    when some were. Takes the arenas' locks for a few milliseconds; False, and nothing
    done, elsewhere than glibc."""
    global _libc
    if _libc is None:
        if platform.libc_ver()[0] != "glibc":
            return False
        _libc = ctypes.CDLL(None)
    try:
        return bool(_libc.malloc_trim(0))
    except AttributeError:  # no malloc_trim in this C library after all
        return False
