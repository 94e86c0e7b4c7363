"""Retraining on fresh data: reservoir, schedule, champion/challenger, swap, control."""

from __future__ import annotations

from sentinel.retrain.job import RetrainOutcome, run_retrain
from sentinel.retrain.promotion import Decision, Metrics, decide, evaluate
from sentinel.retrain.reservoir import CleanData, Reservoir, ReservoirTap
from sentinel.retrain.retrainer import Retrainer, apply_outcome
from sentinel.retrain.scheduler import RetrainScheduler, trigger_for

__all__ = [
    "CleanData",
    "Decision",
    "Metrics",
    "Reservoir",
    "ReservoirTap",
    "RetrainOutcome",
    "RetrainScheduler",
    "Retrainer",
    "apply_outcome",
    "decide",
    "evaluate",
    "run_retrain",
    "trigger_for",
]
