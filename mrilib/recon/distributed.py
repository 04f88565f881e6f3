"""Distributed data-parallel training: which process this is, and what the processes share.

Launched by ``torchrun --nproc_per_node N`` (``WORLD_SIZE > 1`` in the environment) the
training loop initialises the process group (NCCL on CUDA, gloo on CPU), wraps the model
in ``DistributedDataParallel`` and shards each epoch with ``DistributedSampler``;
``batch_size`` is per process. Validation is sharded and reduced; only rank 0 writes
files. With one process every method here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

__all__ = ["DistContext"]


@dataclass(frozen=True)
class DistContext:
    """This process's rank, the number of processes and the device it trains on."""

    rank: int
    world: int
    device: torch.device

    @classmethod
    def from_env(cls, device=None) -> DistContext:
        """The context of this process; initialises the process group under torchrun.

        ``device`` defaults to ``cuda:LOCAL_RANK`` when CUDA is available, else CPU.
        """
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if dist.is_available() and dist.is_initialized():
            world = dist.get_world_size()
        elif world > 1:
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank = dist.get_rank() if world > 1 else 0
        if device is None:
            if torch.cuda.is_available():
                local = int(os.environ.get("LOCAL_RANK", "0"))
                torch.cuda.set_device(local)
                device = f"cuda:{local}"
            else:
                device = "cpu"  # no GPU: the host
        return cls(rank, world, torch.device(device))

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and shows progress."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in ``DistributedDataParallel`` with several processes, else itself."""
        if self.world == 1:
            return model
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the processes (on the CPU); itself with one process."""
        if self.world == 1:
            return values
        values = values.to(self.device)
        dist.all_reduce(values)
        return values.cpu()

    def barrier(self) -> None:
        """Wait for every process (nothing to wait for with one)."""
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group (at the end of a torchrun job)."""
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
