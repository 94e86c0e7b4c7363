"""Where a model scores: a torch device checked to really work, or NumPy on the CPU.

``scoring_device`` answers for the daemon, replay and the CLI alike: ``None`` is the CPU
without torch (``sentinel.model.numpy_lstm``), a ``torch.device`` the torch runtime. torch is
imported only when the answer needs it, so a daemon scoring with NumPy never loads it
(issue #23: ~190 MB of resident memory).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

import structlog

from sentinel.errors import ModelError

if TYPE_CHECKING:
    import torch

    from sentinel.config import ModelConfig

__all__ = ["gpu_present", "resolve_device", "scoring_device", "torch_device"]

log = structlog.get_logger(__name__)

# Device nodes of an NVIDIA GPU: a desktop or server driver (nvidia*), a Jetson's (nvhost-*,
# nvgpu), WSL's (dxg). Without any of them torch cannot see a CUDA device either.
_GPU_NODES = ("nvidiactl", "nvidia0", "nvhost-ctrl-gpu", "nvgpu", "dxg")


def gpu_present(dev: str = "/dev") -> bool:
    """Whether this machine may have a CUDA device: one of its driver's device nodes exists.
    Cheap and torch-free; ``resolve_device`` then checks that CUDA really works."""
    return any(os.path.exists(os.path.join(dev, node)) for node in _GPU_NODES)


def scoring_device(model: ModelConfig) -> torch.device | None:
    """The device ``model`` (the config's ``[model]``) scores on: ``None`` for NumPy on the
    CPU, else the torch device (``resolve_device``).

    ``runtime = "auto"`` (default) scores with NumPy wherever the device is the CPU and the
    detector has a NumPy twin (``lstm_ae``, ``lstm_forecast``): ``device = "cpu"``, or
    ``"auto"`` on a machine with no GPU device node. ``"torch"`` always uses torch;
    ``"numpy"`` never (the config refuses it with ``device = "cuda"``).
    """
    from sentinel.model.numpy_lstm import NUMPY_DETECTORS

    numpy_ok = model.detector in NUMPY_DETECTORS
    if model.runtime == "numpy":
        if not numpy_ok:
            raise ModelError(
                f"model.runtime = 'numpy' scores {', '.join(NUMPY_DETECTORS)}, "
                f"not {model.detector!r}; use 'auto' or 'torch'"
            )
        device = None
    elif model.runtime == "torch" or not numpy_ok or model.device == "cuda":
        device = resolve_device(model.device)
    elif model.device == "cpu" or not gpu_present():
        device = None
    else:  # auto on a machine that may have a GPU: torch decides, and NumPy takes the CPU
        resolved = resolve_device(model.device)
        device = resolved if resolved.type != "cpu" else None
    if device is None:
        log.info("model_device", requested=model.device, device="cpu", runtime="numpy")
    return device


def torch_device(device: torch.device | None) -> torch.device:
    """A torch device for training or export: ``device``, or the CPU for NumPy's ``None``."""
    import torch

    return torch.device("cpu") if device is None else device


def resolve_device(name: Literal["auto", "cpu", "cuda"]) -> torch.device:
    """The torch device for a config value; ``cuda`` without CUDA is an error, not a fallback."""
    import torch

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
        runtime="torch",
        gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    )
    return device


def _cuda_works() -> bool:
    """A tensor on the GPU really works: a Jetson whose CUDA libraries do not match its torch
    build reports a device, then fails at the first allocation."""
    import torch

    try:
        torch.zeros(1, device="cuda").add_(1).cpu()
    except (RuntimeError, AssertionError) as err:
        log.warning("cuda_unusable", error=str(err).splitlines()[0], using="cpu")
        return False
    return True
