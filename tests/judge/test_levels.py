"""The level check's verdicts: beyond ``k``, and ``max_slowness`` leaving out the features
whose level wandered through training (docs/BENCHMARKS.md, "Lasting offsets")."""

from __future__ import annotations

import numpy as np

from sentinel.config import LevelsConfig
from sentinel.judge.levels import LevelCheck
from sentinel.records import LevelHit
from tests.fakes import FakeDetector


class Levelled(FakeDetector):
    """Fixed levels: feature 0 is 20 training sds off, feature 1 is 10 off."""

    def __init__(self, slowness: tuple[float, ...] | None) -> None:
        super().__init__()
        self._slowness = slowness

    def levels(self, windows: np.ndarray) -> np.ndarray:
        return np.tile([20.0, 10.0], (len(windows), 1))

    def level_slowness(self) -> np.ndarray | None:
        return None if self._slowness is None else np.asarray(self._slowness)


def verdicts(config: LevelsConfig, detector: FakeDetector) -> list[LevelHit | None]:
    return LevelCheck(config).check(detector, np.zeros((2, 4, 2)))


def test_a_feature_that_wandered_through_training_is_left_out_above_the_cut() -> None:
    wandering = Levelled(slowness=(3.0, 0.2))
    assert verdicts(LevelsConfig(enabled=True, k=8), wandering) == [LevelHit(0, 20.0)] * 2
    cut = LevelsConfig(enabled=True, k=8, max_slowness=1.0)
    assert verdicts(cut, wandering) == [LevelHit(1, 10.0)] * 2
    assert verdicts(LevelsConfig(enabled=True, k=12, max_slowness=1.0), wandering) == [None] * 2


def test_a_model_without_slowness_is_judged_on_every_feature() -> None:
    cut = LevelsConfig(enabled=True, k=8, max_slowness=1.0)
    assert verdicts(cut, Levelled(slowness=None)) == [LevelHit(0, 20.0)] * 2
    assert verdicts(LevelsConfig(enabled=False), Levelled(slowness=(3.0, 0.2))) == [None] * 2
