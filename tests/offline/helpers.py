"""Shared by the offline tests: replay a recorded series of one device and read its output."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from sentinel.config import SentinelConfig
from sentinel.offline.csvdata import RecordedData
from sentinel.offline.replay import ReplaySummary, replay

__all__ = ["replay_rows"]


def replay_rows(
    config: SentinelConfig, data: RecordedData, out: Path, *, train_rows: int
) -> tuple[ReplaySummary, list[dict[str, str]]]:
    """Replay ``data`` as device m1 of the config's first stream on the CPU, training on its
    first ``train_rows`` rows; the summary and replay's output rows."""
    summary = replay(
        config,
        config.streams[0],
        data,
        out,
        device="m1",
        train_rows=train_rows,
        torch_device=torch.device("cpu"),
        show_progress=False,
    )
    with out.open() as handle:
        return summary, list(csv.DictReader(handle))
