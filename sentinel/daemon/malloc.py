"""Cap glibc's malloc arenas for the daemon: its RSS grew on fragmented per-thread arenas.

glibc gives each thread that allocates concurrently an arena of its own (up to 8 per core).
The daemon's network, worker and writer threads allocate and free NumPy buffers of every
size, and each thread's arena keeps its own holes: a daemon fed 100 readings from each of
300 pumps grew by 30.6 MB, by 20.4 MB with two arenas and 17.4 MB with one (single runs;
docs/BENCHMARKS.md, "Memory by fleet size", issue #23). The threads take turns on the GIL,
so two arenas leave them little to contend for.
``MALLOC_ARENA_MAX`` in the environment (systemd's ``Environment=``) still wins; elsewhere
than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform

import structlog

__all__ = ["ARENAS", "cap_malloc_arenas"]

log = structlog.get_logger(__name__)

ARENAS = 2
_M_ARENA_MAX = -8  # glibc's malloc.h


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
