"""Windows over a run of readings, as training, calibration and promotion cut them; kept
apart from ``sentinel.model.train`` (torch) for the daemon that scores without torch."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from sentinel.errors import DataError

__all__ = ["make_windows"]


def make_windows(data: np.ndarray, window: int, stride: int) -> np.ndarray:
    """(N, F) -> (M, window, F): every ``stride``-th run of ``window`` consecutive rows.

    Returns a read-only strided view (no copy); fewer than ``window`` rows give M == 0.
    """
    if data.ndim != 2:
        raise DataError(f"expected an (N, F) array, got shape {data.shape}")
    if window < 1 or stride < 1:
        raise DataError("window and stride must be positive")
    if data.shape[0] < window:
        return np.empty((0, window, data.shape[1]), dtype=data.dtype)
    # sliding_window_view puts the window axis last: (N - window + 1, F, window).
    view = sliding_window_view(data, window, axis=0)[::stride]
    return view.transpose(0, 2, 1)
