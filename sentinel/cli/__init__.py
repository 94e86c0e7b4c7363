"""The ``sentinel`` command line: one module per group of commands, ``main`` the entry point."""

from __future__ import annotations

__all__: list[str] = []
