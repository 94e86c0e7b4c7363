"""What other threads ask of the worker: one queue, applied between passes, in order."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sentinel.worker.pipeline import Pipeline
from tests.fakes import FakeDetector, make_config


def make_pipeline() -> Pipeline:
    return Pipeline(
        make_config(),
        sink=lambda batch: None,
        request_training=lambda job: None,
        models={"pump": FakeDetector("old")},
    )


def test_a_command_waits_for_the_next_pass() -> None:
    pipeline = make_pipeline()
    pipeline.install_model("pump", FakeDetector("new"))
    assert pipeline.model_versions() == {"pump": "old"}
    pipeline.process([])
    assert pipeline.model_versions() == {"pump": "new"}


@pytest.mark.parametrize("reload_first", [True, False])
def test_a_reload_and_a_promotion_queued_together_apply_in_the_order_they_came(
    reload_first: bool,
) -> None:
    """The reload turns the shadow period on: a promotion queued after it first shadows
    the active model; one queued before it swaps at once."""
    pipeline = make_pipeline()
    commands: list[Callable[[], None]] = [
        lambda: pipeline.reconfigure(make_config(retrain={"shadow": 60.0})),
        lambda: pipeline.install_model("pump", FakeDetector("new"), shadow=True),
    ]
    for command in commands if reload_first else commands[::-1]:
        command()
    pipeline.process([])
    assert pipeline.model_versions() == {"pump": "old" if reload_first else "new"}


def test_a_failed_training_queued_after_a_model_leaves_the_stream_collecting() -> None:
    pipeline = make_pipeline()
    pipeline.install_model("pump", FakeDetector("new"))
    pipeline.training_failed("pump")
    pipeline.process([])
    assert pipeline.model_versions() == {"pump": None}


def test_the_worker_describes_its_devices_between_passes() -> None:
    """``describe_devices`` waits for the worker's answer; a stopped worker gives none."""
    pipeline = make_pipeline()
    assert pipeline.describe_devices([("pump", "p1")], timeout=0.1) is None  # not started
    pipeline.start()
    try:
        views = pipeline.describe_devices([("pump", "p1")], timeout=30)
    finally:
        pipeline.stop()
    assert views is not None
    view = views[("pump", "p1")]
    assert (view.held, view.threshold) == (False, None)  # never seen: not in memory
