"""How the poisoning chapters run: device choice, CPU thread count, wall time per step.

The lesion classifier and the CycleGAN are small networks on small images: their
convolutions are too small for intra-op parallelism to pay, and on a busy machine
(other processes on the same cores) every multi-threaded operator waits for its
slowest thread - measured here, a CycleGAN iteration on two threads took several
times longer than on one while other jobs ran. They therefore train on one CPU
thread by default (:func:`cpu_threads`), or on the GPU when there is one.

:class:`Timings` records how long each step of a chapter took (shown at its end).
"""

from __future__ import annotations

import contextlib
import time

import torch

__all__ = ["default_device", "cpu_threads", "Timings"]


def default_device(device=None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def cpu_threads(n: int | None, device=None):
    """Limit torch's intra-op CPU threads to ``n`` inside the block (no-op for ``None`` or a GPU device)."""
    if n is None or (device is not None and torch.device(device).type != "cpu"):
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


class Timings(dict):
    """Wall seconds of named steps: ``with timings("step"): ...`` records how long the block took.

    A step that raises is not recorded.
    """

    @contextlib.contextmanager
    def __call__(self, step: str):
        """Time the block as ``step``."""
        t0 = time.perf_counter()
        yield
        self[step] = time.perf_counter() - t0
