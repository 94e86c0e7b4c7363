"""Typed readers for meta.json values: each wrong value is a ModelError naming its key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sentinel.errors import ModelError

__all__ = ["as_list", "as_object", "integer", "number", "string"]


def as_list(obj: Mapping[str, Any], key: str, where: str) -> list[Any]:
    """``obj[key]`` as a list, [] when absent (keys added after a format was first saved)."""
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise ModelError(f"{where} must be a list")
    return value


def as_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ModelError(f"{where} must be a JSON object")
    return value


def string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ModelError(f"{where} must be a non-empty string")
    return value


def integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(f"{where} must be an integer")
    return value


def number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelError(f"{where} must be a number")
    return float(value)
