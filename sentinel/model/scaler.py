"""Per-feature standardisation fitted on training data and stored with the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sentinel.errors import ModelError

__all__ = ["Scaler"]

FloatArray = npt.NDArray[np.float32]

# Below this standard deviation a feature is treated as constant: dividing by a tiny scale
# would turn float noise in a stuck sensor into huge reconstruction errors.
_MIN_SCALE = 1e-8


@dataclass(frozen=True, eq=False)
class Scaler:
    """``(x - mean) / scale`` per feature; both vectors are float32 of length n_features."""

    mean: FloatArray
    scale: FloatArray

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float32).reshape(-1)
        scale = np.asarray(self.scale, dtype=np.float32).reshape(-1)
        if mean.shape != scale.shape:
            raise ModelError(f"scaler mean has {mean.size} values but scale has {scale.size}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise ModelError("scaler mean and scale must be finite and scale positive")
        mean.setflags(write=False)
        scale.setflags(write=False)
        # frozen dataclass: normalise the stored arrays through object.__setattr__
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "scale", scale)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scaler):
            return NotImplemented
        return np.array_equal(self.mean, other.mean) and np.array_equal(self.scale, other.scale)

    def __hash__(self) -> int:
        return hash((self.mean.tobytes(), self.scale.tobytes()))

    @property
    def n_features(self) -> int:
        return int(self.mean.size)

    @classmethod
    def fit(cls, data: npt.ArrayLike) -> Scaler:
        """Fit on raw rows of shape (N, F); a constant feature gets scale 1.0."""
        rows = np.asarray(data, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[0] == 0:
            raise ModelError(f"scaler needs a non-empty (N, F) array, got shape {rows.shape}")
        if not np.all(np.isfinite(rows)):
            raise ModelError("scaler input contains NaN or infinite values")
        mean = rows.mean(axis=0)
        std = rows.std(axis=0)
        scale = np.where(std > _MIN_SCALE, std, 1.0)
        return cls(mean=mean.astype(np.float32), scale=scale.astype(np.float32))

    def transform(self, x: npt.ArrayLike) -> FloatArray:
        """Scale an array whose last axis is the features: (N, F) or (B, T, F)."""
        arr = np.asarray(x, dtype=np.float32)
        if arr.ndim == 0 or arr.shape[-1] != self.n_features:
            raise ModelError(
                f"expected {self.n_features} features on the last axis, got shape {arr.shape}"
            )
        out: FloatArray = (arr - self.mean) / self.scale
        return out

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: Any) -> Scaler:
        if not isinstance(data, dict) or set(data) != {"mean", "scale"}:
            raise ModelError("scaler must be an object with exactly 'mean' and 'scale'")
        try:
            mean = np.asarray(data["mean"], dtype=np.float32)
            scale = np.asarray(data["scale"], dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise ModelError(f"scaler values are not numbers: {err}") from err
        return cls(mean=mean, scale=scale)
