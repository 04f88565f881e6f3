"""How the poisoning chapters run: device choice, CPU thread count, wall time per step.

The device is the run's (:func:`mrilib.run.device.default_device`, re-exported here).

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

from mrilib.run.device import default_device

__all__ = ["default_device", "cpu_threads", "Timings"]


@contextlib.contextmanager
def cpu_threads(n: int | None, device=None):
    """Limit torch's intra-op CPU threads to ``n`` inside the block (no-op for ``None`` or a GPU device)."""
    if n is None or (device is not None and torch.device(device).type != "cpu"):  # threads matter on the CPU only
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
