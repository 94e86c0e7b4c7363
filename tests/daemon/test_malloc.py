"""The daemon caps glibc's malloc arenas unless the environment already does, and hands
malloc's free pages back once a minute."""

from __future__ import annotations

import platform
import subprocess
import sys
import time

import pytest

from sentinel.daemon import app as daemon_app
from sentinel.daemon.malloc import cap_malloc_arenas, release_free_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_glibc_takes_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert cap_malloc_arenas(2) is True


def test_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert cap_malloc_arenas(2) is False


def test_another_c_library_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", ""))
    assert cap_malloc_arenas(2) is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim")
def test_free_pages_inside_the_heap_go_back() -> None:
    """Buffers freed between kept ones leave holes glibc keeps in RSS by itself; the trim
    returns them (measured in a fresh process: 64 MB of 16 KB buffers, one in 8 kept)."""
    code = (
        "import numpy as np, psutil\n"
        "from sentinel.daemon.malloc import release_free_memory\n"
        "rss = lambda: psutil.Process().memory_info().rss\n"
        "held = [np.ones(2048) for _ in range(4096)]\n"
        "kept = held[::8]\n"
        "del held\n"
        "before = rss()\n"
        "print(release_free_memory(), (before - rss()) >> 20)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    done, freed_mb = out.stdout.split()
    assert done == "True"
    assert int(freed_mb) >= 30


def test_another_c_library_is_not_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sentinel.daemon.malloc._libc", None)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", ""))
    assert release_free_memory() is False


def test_housekeeping_trims_once_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    trims: list[float] = []
    monkeypatch.setattr(time, "monotonic", lambda: now[0])

    def release() -> bool:
        trims.append(now[0])
        return True

    monkeypatch.setattr(daemon_app, "release_free_memory", release)

    class Report:
        status, problems = "ok", ()
        checks: dict[str, dict[str, int]] = {}  # noqa: RUF012

    class Notifier:
        def status(self, text: str) -> None:
            pass

    class App:
        health = type("Health", (), {"report": staticmethod(Report)})()
        notifier = Notifier()

    housekeeping = daemon_app._Housekeeping(progress=None, watchdog=None)  # type: ignore[arg-type]
    for step in range(0, 150, 5):
        now[0] = 1000.0 + step
        housekeeping.tick(App())  # type: ignore[arg-type]
    assert trims == [1060.0, 1120.0]
