"""Shared by the offline tests: replay a recorded series of one device and read its output."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentinel.config import SentinelConfig
from sentinel.offline.csvdata import RecordedData
from sentinel.offline.replay import ReplaySummary, replay
from simulators.synthetic import LabelledSeries

__all__ = ["replay_rows", "replay_series"]


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


def replay_series(
    series: LabelledSeries,
    out: Path,
    stream: str,
    settings: Mapping[str, Any] | None = None,
    *,
    train_rows: int | None = None,
) -> list[dict[str, str]]:
    """Replay a synthetic ``series`` as stream ``stream`` (all its features) with the
    default config but for ``settings`` (config sections), the model's seed fixed,
    training on its own training rows or the first ``train_rows``; replay's output rows."""
    config = SentinelConfig.model_validate(
        {
            "streams": [
                {"name": stream, "topic": f"{stream}/{{device}}", "features": list(series.features)}
            ],
            "model": {"seed": 1},
            **(settings or {}),
        }
    )
    data = RecordedData(series.values.astype(np.float32), series.timestamps, series.features, None)
    rows = series.train_rows if train_rows is None else train_rows
    return replay_rows(config, data, out, train_rows=rows)[1]
