"""Where a run computes: the one place that decides the default device.

:func:`default_device` is CUDA when torch sees a GPU, else the CPU; the environment
variable ``MRILIB_DEVICE`` (e.g. ``cpu``, ``cuda:1``) overrides it for a whole run.
Every public entry point that computes with a model takes ``device=None`` (None = this
default) and passes it on: training, every unlearning method, the retrain workers, the
lesion classifier (the judge), the attacks and every evaluation.

Entry points never move the caller's model: :func:`on_device` gives the module itself
when it already is on the device, else a copy there. On the CPU nothing is copied and
every computation stays what it was.
"""

from __future__ import annotations

import copy
import os

import torch

__all__ = ["ENV", "default_device", "module_device", "same_device", "on_device"]

#: The environment variable that overrides the default device.
ENV = "MRILIB_DEVICE"


def default_device(device=None) -> torch.device:
    """``device`` if given, else ``$MRILIB_DEVICE`` if set, else CUDA when available, else the CPU.

    Raises ``ValueError`` for a CUDA device asked for on a machine without CUDA (named by
    its source, so a stale ``MRILIB_DEVICE`` is easy to find).
    """
    source = "device"
    if device is None and os.environ.get(ENV, "").strip():
        device, source = os.environ[ENV].strip(), f"${ENV}"
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")  # the fallback when no GPU
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{source}={device!r} is not a torch device: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{source}={device!r} asks for CUDA, but torch sees no CUDA device "
                         "(install a CUDA build of torch: make setup TORCH_SPEC=...)")
    return dev


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (or buffer); the CPU for a module without either."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")  # no tensor at all: nothing to move


def same_device(a, b) -> bool:
    """Whether devices ``a`` and ``b`` are the same (``cuda`` means the current CUDA device)."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type != "cuda" or a.index == b.index:
        return True
    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


def on_device(module: torch.nn.Module, device) -> torch.nn.Module:
    """``module`` itself when it is on ``device``, else a deep copy moved there (the caller's is unchanged)."""
    if same_device(module_device(module), device):
        return module
    return copy.deepcopy(module).to(device)
