"""An LSTM detector's whole scoring rule as one torch module: what ``sentinel.model.export``
traces into TorchScript or ONNX.

Raw windows ``(batch, window, features)`` in, ``(scores (batch,), feature_errors (batch,
features))`` out. This base holds what the LSTM detectors share -- the torch twin of
``model_inputs`` (scaling, features constant in training held at their value, relative
features centred per window) and of ``window_scores`` (per-feature errors over the floored
normal error, the worst judged feature) -- and each detector's subclass adds its network and
how a window's per-feature error comes out of it (``feature_errors``), beside the detector
in its own module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from sentinel.model.calibration import score_floor

if TYPE_CHECKING:
    from sentinel.model.lstm_detector import LstmMeta

__all__ = ["LstmScoringGraph", "cpu_copy"]


class LstmScoringGraph(nn.Module, ABC):
    """Raw windows -> (score, per-feature error), as the detector's ``score`` computes them;
    a subclass implements ``feature_errors`` on the scaled windows."""

    mean: torch.Tensor
    scale: torch.Tensor
    baseline: torch.Tensor
    judged: torch.Tensor
    held: torch.Tensor
    held_value: torch.Tensor
    relative: torch.Tensor
    median_centre: bool

    def __init__(self, meta: LstmMeta) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(np.array(meta.scaler.mean)))
        self.register_buffer("scale", torch.from_numpy(np.array(meta.scaler.scale)))
        baseline, judged = score_floor(meta.calibration.feature_mean_errors, meta.unscored_indices)
        self.register_buffer("baseline", torch.from_numpy(baseline.astype(np.float32)))
        self.register_buffer("judged", torch.from_numpy(judged.astype(np.float32)))
        # 1 for features constant in training, held at their scaled training value
        # (``hold_constants``); they take no part in the score (``judged`` 0).
        held = np.zeros(len(meta.features), dtype=np.float32)
        held_value = np.zeros(len(meta.features), dtype=np.float32)
        for index, value in meta.constant_values().items():
            held[index] = 1.0
            held_value[index] = (value - meta.scaler.mean[index]) / meta.scaler.scale[index]
        self.register_buffer("held", torch.from_numpy(held))
        self.register_buffer("held_value", torch.from_numpy(held_value))
        # 1 for features judged relative to their window's centre (``center_relative``):
        # its lower median, or the mean for models trained before it.
        relative = np.zeros(len(meta.features), dtype=np.float32)
        relative[list(meta.relative_indices)] = 1.0
        self.register_buffer("relative", torch.from_numpy(relative))
        self.score_steps = meta.score_steps or meta.window
        self.median_centre = meta.relative_centre == "median"

    @abstractmethod
    def feature_errors(self, scaled: torch.Tensor) -> torch.Tensor:
        """(B, F) per-feature errors of scaled (B, T, F) windows, as the detector's own."""

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scaled = (windows - self.mean) / self.scale
        scaled = torch.where(self.held > 0, self.held_value, scaled)
        if self.median_centre:
            # The lower median by sorting: ONNX has no median (aten::median does not export).
            middle = (scaled.shape[1] - 1) // 2
            centre = scaled.sort(dim=1).values[:, middle : middle + 1]
        else:
            centre = scaled.mean(dim=1, keepdim=True)
        scaled = scaled - self.relative * centre
        feature_errors = self.feature_errors(scaled)
        scores = (feature_errors / self.baseline * self.judged).amax(dim=1)
        return scores, feature_errors


def cpu_copy(target: nn.Module, source: nn.Module) -> None:
    """Fill ``target`` (a freshly built network of the same shapes) with ``source``'s
    weights, wherever those live, and put it in eval mode: exports are traced on the CPU."""
    target.load_state_dict({k: v.detach().cpu() for k, v in source.state_dict().items()})
    target.eval()
