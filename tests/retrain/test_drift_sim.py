"""The simulator's slow concept drift (the drift benchmark's scenario)."""

from __future__ import annotations

import numpy as np

from simulators.fleet import DAY, FEATURES, FleetSimulator


def _run(drift: float, days: float) -> np.ndarray:
    sim = FleetSimulator(1, seed=3, step=60.0, anomaly_rate=0.0, drift=drift)
    steps = int(days * DAY / 60.0)
    rows = [
        [r.values[f] for f in FEATURES] for _, [r] in zip(range(steps), sim.steps(), strict=False)
    ]
    return np.asarray(rows)


def test_wear_moves_the_channels_and_no_drift_is_the_old_simulator() -> None:
    plain, worn = _run(0.0, 3), _run(0.1, 3)
    assert np.array_equal(_run(0.0, 1), plain[: len(plain) // 3])  # deterministic
    day = len(plain) // 3
    first = slice(0, day // 8)  # wear below 0.0125
    last = slice(len(plain) - day // 4, None)
    np.testing.assert_allclose(worn[first], plain[first], rtol=0.05, atol=0.2)
    ratio = worn[last].mean(axis=0) / plain[last].mean(axis=0)
    i = {f: FEATURES.index(f) for f in ("pressure", "current", "vibration")}
    assert ratio[i["current"]] > 1.2  # wear 0.3 after three days
    assert ratio[i["vibration"]] > 1.4
    assert ratio[i["pressure"]] < 0.9
