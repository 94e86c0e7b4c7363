"""Sentinel: streaming anomaly detection for IoT sensor fleets."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
