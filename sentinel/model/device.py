"""The torch device a config asks for, checked to really work before a model is put on it."""

from __future__ import annotations

from typing import Literal

import structlog
import torch

from sentinel.errors import ModelError

__all__ = ["resolve_device"]

log = structlog.get_logger(__name__)


def resolve_device(name: Literal["auto", "cpu", "cuda"]) -> torch.device:
    """The torch device for a config value; ``cuda`` without CUDA is an error, not a fallback."""
    cuda = torch.cuda.is_available()
    if name == "auto":
        device = torch.device("cuda" if cuda and _cuda_works() else "cpu")
        if device.type == "cpu":
            log.info(
                "model_device_fallback",
                device="cpu",
                reason="CUDA unusable (see cuda_unusable)"
                if cuda
                else f"torch {torch.__version__} sees no CUDA device "
                f"(built for CUDA {torch.version.cuda})",
            )
    elif name == "cuda":
        if not cuda:
            raise ModelError(
                "model.device is 'cuda' but torch sees no CUDA device "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                "use 'auto' or 'cpu', or install a CUDA build of torch"
            )
        device = torch.device("cuda")
    elif name == "cpu":
        device = torch.device("cpu")
    else:
        raise ModelError(f"unknown model device {name!r}")
    log.info(
        "model_device",
        requested=name,
        device=str(device),
        gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    )
    return device


def _cuda_works() -> bool:
    """A tensor on the GPU really works: a Jetson whose CUDA libraries do not match its torch
    build reports a device, then fails at the first allocation."""
    try:
        torch.zeros(1, device="cuda").add_(1).cpu()
    except (RuntimeError, AssertionError) as err:
        log.warning("cuda_unusable", error=str(err).splitlines()[0], using="cpu")
        return False
    return True
