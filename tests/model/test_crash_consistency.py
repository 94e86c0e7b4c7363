"""Models and ``ACTIVE`` survive a crash at any point of an activation, and a torn or empty
file found at start is reported and the previous good version used (issue #22).

The crash test forks a child (no second interpreter start per run, so dozens of runs stay
fast) that saves a new version and activates it, and kills it with SIGKILL at a chosen
point: just before the n-th file operation of the activation (every point in turn), or
after a random delay. Afterwards the registry, as the daemon loads it at start, always
yields a whole model: the old one or the new one.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import sentinel.model.lstm_detector
from sentinel.model import ModelRegistry
from sentinel.model.base import META_FILE
from sentinel.model.lstm_detector import WEIGHTS_FILE
from sentinel.model.registry import ACTIVE_FILE, load_active_or_previous
from tests.model.helpers import CPU, V1, V2, make_detector

RANDOM_RUNS = 20  # besides one run per file operation

# (owner, attribute) of every call through which an activation touches the disk: os is
# one module wherever it is imported, Path's methods are shared by every path.
_FILE_OPERATIONS: list[tuple[object, str]] = [
    (os, "open"),
    (os, "fsync"),
    (os, "replace"),
    (Path, "open"),
    (Path, "write_text"),
    (Path, "mkdir"),
    (sentinel.model.lstm_detector, "save_file"),
]


@pytest.fixture
def base(tmp_path: Path) -> ModelRegistry:
    """V1 saved and active; each run works on a copy."""
    registry = ModelRegistry(tmp_path / "base")
    registry.save(make_detector(V1, seed=1))
    registry.activate("pump", V1)
    return registry


def _activate_v2(root: Path) -> None:
    registry = ModelRegistry(root)
    registry.save(make_detector(V2, seed=2))
    registry.activate("pump", V2)


def _hook_file_operations(before: Callable[[], None], patch: Callable[..., None]) -> None:
    """Call ``before()`` ahead of every file operation; ``patch(owner, name, value)``."""

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def hooked(*args: Any, **kwargs: Any) -> Any:
            before()
            return original(*args, **kwargs)

        return hooked

    for owner, name in _FILE_OPERATIONS:
        patch(owner, name, wrap(getattr(owner, name)))


def _run_child(root: Path, kill_before: int | None, kill_after: float | None) -> int:
    """Fork a child that activates V2 in ``root``, SIGKILLed just before its
    ``kill_before``-th file operation or ``kill_after`` seconds in; its wait status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            if kill_before is not None:
                count = itertools.count(1)

                def before() -> None:
                    if next(count) == kill_before:
                        os.kill(os.getpid(), signal.SIGKILL)

                _hook_file_operations(before, setattr)
            _activate_v2(root)
            code = 0
        finally:
            os._exit(code)
    if kill_after is not None:
        time.sleep(kill_after)  # the kill point itself, not a wait for anything
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return status


def test_a_killed_activation_leaves_the_old_model_or_the_new(
    base: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How many file operations an activation makes, and about how long it takes.
    count = itertools.count(1)

    def tally() -> None:
        next(count)

    _hook_file_operations(tally, monkeypatch.setattr)
    shutil.copytree(base.root, tmp_path / "counted")
    _activate_v2(tmp_path / "counted")
    monkeypatch.undo()
    operations = next(count) - 1
    assert operations > 10  # the hooks see the activation's work
    # A whole child's run, fork to exit: the random kill points fall inside it.
    shutil.copytree(base.root, tmp_path / "timed")
    started = time.monotonic()
    assert _run_child(tmp_path / "timed", None, None) == 0
    duration = time.monotonic() - started

    rng = random.Random(22)
    points: list[tuple[int | None, float | None]] = [
        (n, None) for n in range(1, operations + 1)
    ] + [(None, rng.uniform(0, duration)) for _ in range(RANDOM_RUNS)]
    outcomes: dict[str, int] = {}
    for run, (kill_before, kill_after) in enumerate(points):
        root = tmp_path / f"run-{run}"
        shutil.copytree(base.root, root)
        status = _run_child(root, kill_before, kill_after)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert killed or os.waitstatus_to_exitcode(status) == 0, f"run {run}: {status}"
        if kill_before is not None:
            assert killed, f"run {run}: the child passed its kill point"
        registry = ModelRegistry(root)
        assert registry.active_version("pump") in (V1, V2), f"run {run}"
        detector = load_active_or_previous(registry, "pump", CPU, 64)
        assert detector is not None
        assert detector.version in (V1, V2)
        # Whole: the version loads by itself, weights and meta.json of the same version.
        assert registry.load_version("pump", detector.version, CPU).version == detector.version
        outcomes[detector.version] = outcomes.get(detector.version, 0) + 1
        # What a killed save leaves is hidden (a dot directory) and never taken for a version.
        assert set(registry.versions("pump")) <= {V1, V2}
    # Killed before ACTIVE's rename: V1; after it: V2. Both happen.
    assert outcomes.get(V1, 0) > 0
    assert outcomes.get(V2, 0) > 0


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b""), id="empty"),
        pytest.param(
            lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), id="torn"
        ),
    ],
)
@pytest.mark.parametrize("target", [WEIGHTS_FILE, META_FILE, ACTIVE_FILE])
def test_a_damaged_file_at_start_is_reported_and_the_previous_version_used(
    base: ModelRegistry, target: str, damage: Callable[[Path], None]
) -> None:
    base.save(make_detector(V2, seed=2))
    base.activate("pump", V2)
    path = base.root / "pump" / (target if target == ACTIVE_FILE else f"{V2}/{target}")
    damage(path)

    with capture_logs() as logs:
        base.prune("pump", keep=1)  # what the daemon's start does first: must not fail
        detector = load_active_or_previous(base, "pump", CPU, 64)

    assert detector is not None
    [unusable] = [e for e in logs if e["event"] == "model_unusable"]
    assert str(path) in unusable["error"]  # the log line names the damaged file
    [fell_back] = [e for e in logs if e["event"] == "model_fell_back"]
    assert fell_back["log_level"] == "warning"
    if target == ACTIVE_FILE:
        # ACTIVE is what was damaged; the version it named is whole and stays in use.
        assert detector.version == V2
    else:
        assert detector.version == V1
    assert fell_back["version"] == detector.version
    assert base.active_version("pump") == detector.version  # ACTIVE is whole again
