"""The Page-Hinkley test restated in sentinel.judge.drift against river's own."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from river import drift

from sentinel.judge.drift import PageHinkley

STATE = ("_sum_increase", "_sum_decrease", "_min_increase", "_max_decrease")


@pytest.mark.parametrize("seed", range(5))
def test_page_hinkley_equals_rivers_float_for_float(seed: int) -> None:
    """Log scores with level steps up and down, outliers and a long flat run: both tests
    hold the same numbers after every update and fire on the same windows, again and
    again (a detection resets the test on the next update)."""
    rng = np.random.default_rng(seed)
    parts = [rng.normal(0.0, 0.3, 400), rng.normal(2.0, 0.3, 300), rng.normal(-1.0, 0.5, 300)]
    parts += [np.full(100, 0.5), rng.standard_cauchy(300), rng.normal(4.0, 0.1, 300)]
    ours = PageHinkley(min_instances=30, delta=0.05, threshold=5.0, alpha=1 - 1e-4)
    theirs = drift.PageHinkley(min_instances=30, delta=0.05, threshold=5.0, mode="up")
    fired = 0
    for x in np.concatenate(parts).tolist():
        ours.update(x)
        theirs.update(x)  # type: ignore[no-untyped-call]
        assert ours.drift_detected == theirs.drift_detected
        fired += ours.drift_detected
        assert ours._x_mean.n == theirs._x_mean.n
        assert ours._x_mean.get() == theirs._x_mean.get()
        for name in STATE:
            assert getattr(ours, name) == getattr(theirs, name), name
    assert fired >= 3


def test_the_daemon_imports_neither_river_drift_nor_scipy_optimize() -> None:
    """Both bring scipy's statistics in, ~65 MB of RSS for what the daemon does not use
    (issue #23): SPOT imports its root finder when it fits a tail, and the level-shift
    watch has its own Page-Hinkley test."""
    code = (
        "import sys, sentinel.cli.main, sentinel.daemon.app; "
        "print(sorted(m for m in sys.modules if m.startswith(('river.drift', 'scipy.stats', "
        "'scipy.optimize'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_the_daemon_imports_neither_river_nor_alembic() -> None:
    """river's rolling quantile and mean are restated (sentinel.judge.history, drift) and
    alembic is imported only to migrate, which a current schema skips (issue #23, memory:
    ~6 MB and ~11 MB of RSS)."""
    code = (
        "import sys, sentinel.cli.main, sentinel.daemon.app; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('river', 'alembic')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
