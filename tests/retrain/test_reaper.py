"""A finished training child is reaped however long it takes to exit: one slower than the
retrainer's wait (torch's teardown on a loaded box) used to stay a zombie until the next
run started (``[python] <defunct>`` beside the daemon in a soak)."""

from __future__ import annotations

import multiprocessing
import sys
import time
from pathlib import Path

import pytest

from sentinel.retrain.retrainer import join_or_reap
from tests.e2e_helpers import wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _state(pid: int) -> str | None:
    """The process's state letter from /proc (``Z`` for a zombie), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def test_a_child_slower_than_the_wait_is_reaped_when_it_exits() -> None:
    process = multiprocessing.get_context("spawn").Process(
        target=time.sleep, args=(1.0,), daemon=True
    )
    process.start()
    assert process.pid is not None
    pid = process.pid
    ticks: list[int] = []
    join_or_reap(process, 0.2, lambda: ticks.append(1))
    assert ticks, "the lease's renewal was called while the child was waited for"
    # Still running when the wait ended: a thread of its own joins it, so once the child has
    # exited no zombie is left behind.
    wait_for(lambda: _state(pid) is None, 120, "the exited training child reaped")
    assert process.exitcode == 0


def test_a_child_that_exits_within_the_wait_is_joined_there() -> None:
    process = multiprocessing.get_context("spawn").Process(
        target=time.sleep, args=(0.0,), daemon=True
    )
    process.start()
    join_or_reap(process, 120.0, lambda: None)
    assert process.exitcode == 0
