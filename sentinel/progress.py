"""Progress bars (tqdm) for training, replay and the demo: one line that fits, honest rates.

A bar wider than the screen wraps, and every redraw (``\\r``) then leaves a line behind. On a
terminal the bar follows the window's width as it changes; anywhere else (stderr piped into
``cat`` or ``tee``, a captured stream) it keeps to ``$COLUMNS``, else the terminal's width,
else 80 columns. A bar that appears part-way, as the demo's does when the first progress
event reports readings already collected, starts its count there (``initial``): counting
them as done the instant it appeared showed 75,297,743 readings/s.
"""

from __future__ import annotations

import shutil
import sys
from typing import IO, TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["progress_bar", "progress_reporter"]

log = structlog.get_logger(__name__)


def progress_bar(
    total: int, desc: str, unit: str, *, initial: int = 0, file: IO[str] | None = None
) -> tqdm[None]:
    """A bar on ``file`` (default stderr) at ``initial`` of ``total``; ``close()`` it."""
    from tqdm import tqdm

    stream = file if file is not None else sys.stderr
    tty = stream.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        file=stream,
        dynamic_ncols=tty,
        ncols=None if tty else shutil.get_terminal_size().columns - 1,
    )


class _Progress:
    """A tqdm bar on a terminal, one log line per epoch elsewhere."""

    def __init__(self, stream: str, epochs: int) -> None:
        self._stream = stream
        self._bar = None
        if sys.stderr.isatty():
            self._bar = progress_bar(epochs, f"training {stream}", "epoch")

    def __call__(self, epoch: int, epochs: int, val_loss: float) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(val_loss=f"{val_loss:.4f}")
        else:
            log.info(
                "training_progress",
                stream=self._stream,
                epoch=epoch,
                epochs=epochs,
                val_loss=round(val_loss, 6),
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def progress_reporter(stream: str, epochs: int) -> _Progress:
    """A training progress callback: a bar on a terminal, log lines otherwise."""
    return _Progress(stream, epochs)
