"""What every unlearning method shares: inputs, cost accounting, batches, the result.

Every method has the signature ``method(model, forget, retain, **hp) -> UnlearnResult``:

- ``model``: the poisoned VarNet (never modified: methods work on a copy);
- ``forget``: the *identified* poisoned slices (a ``Dataset`` of ``VarNetSample``);
- ``retain``: training slices the method may use besides them;
- ``hp``: the method's hyper-parameters;
- ``device``: where it computes (``None``: :func:`mrilib.run.device.default_device`). The copy
  goes there and so do the batches; the result's model stays there (whatever saves it
  moves it to the CPU).

Cost is counted in wall seconds and in *slice-passes*: one forward (or backward)
pass of one slice through VarNet. Retraining from scratch counts the same way (its
training history records them), so ``cost relative to oracle`` compares like with like.
"""

from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from mrilib.data.training import collate_slices
from mrilib.recon.steps import forward_batch, make_loss
from mrilib.run.device import default_device, module_device

__all__ = ["UnlearnError", "UnlearnResult", "PassCounter", "batches", "union", "set_epoch", "check_inputs", "timed_copy",
           "batch_loss"]


class UnlearnError(ValueError):
    """Bad input to an unlearning method (empty forget set, bad hyper-parameter…)."""


@dataclass
class PassCounter:
    """Counts slice-level forward and backward passes through VarNet."""

    forward: int = 0
    backward: int = 0

    def add(self, n: int, backward: bool) -> None:
        """Record ``n`` slices passed forward (and backward when ``backward``)."""
        self.forward += int(n)
        if backward:
            self.backward += int(n)

    @property
    def total(self) -> int:
        """Forward plus backward slice-passes."""
        return self.forward + self.backward


@dataclass
class UnlearnResult:
    """An unlearnt model and what it cost."""

    model: torch.nn.Module
    seconds: float
    forward_passes: int
    backward_passes: int
    info: dict = field(default_factory=dict)

    @property
    def passes(self) -> int:
        """Forward plus backward slice-passes."""
        return self.forward_passes + self.backward_passes

    def summary(self) -> dict:
        """JSON-ready cost and method information (without the model)."""
        return dict(seconds=self.seconds, forward_passes=self.forward_passes,
                    backward_passes=self.backward_passes, passes=self.passes, **self.info)


def check_inputs(model: torch.nn.Module, forget: Dataset, retain: Dataset | None, need_retain: bool = False) -> None:
    """Reject an empty forget set, a missing retain set, or a model that is not a torch module."""
    if not isinstance(model, torch.nn.Module):
        raise UnlearnError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if forget is None or len(forget) == 0:
        raise UnlearnError("the forget set is empty: identify at least one poisoned slice (f > 0)")
    if need_retain and (retain is None or len(retain) == 0):
        raise UnlearnError("this method needs a non-empty retain set")


def check_positive(**values) -> None:
    """Raise :class:`UnlearnError` unless every given hyper-parameter is > 0."""
    for name, v in values.items():
        if not (isinstance(v, (int, float)) and v > 0):
            raise UnlearnError(f"{name} must be > 0, got {v!r}")


def set_epoch(dataset: Dataset, epoch: int) -> None:
    """Select the undersampling masks of ``epoch`` in ``dataset``, in every part of a :func:`union`, and in
    the base set of a subset (``dataset.dataset``); a set without ``set_epoch`` has fixed masks."""
    for part in getattr(dataset, "datasets", None) or ():  # a ConcatDataset
        set_epoch(part, epoch)
    base = getattr(dataset, "dataset", dataset)
    if hasattr(base, "set_epoch"):
        base.set_epoch(epoch)


def union(*datasets: Dataset) -> Dataset:
    """The slices of ``datasets`` one after the other (e.g. forget ∪ retain, the whole training set);
    :func:`batches` selects the masks of every part."""
    return ConcatDataset(datasets)


def batches(dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0):
    """A DataLoader over VarNetSamples (fixed masks of ``epoch`` when the set, or each part of a
    :func:`union`, has ``set_epoch``)."""
    set_epoch(dataset, epoch)
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen, collate_fn=collate_slices)


def cycle(dataset: Dataset, batch_size: int, seed: int = 0):
    """Endless shuffled batches of ``dataset`` (a new mask epoch on each pass)."""
    epoch = 0
    while True:
        yield from batches(dataset, batch_size, shuffle=True, seed=seed + epoch, epoch=epoch)
        epoch += 1


_loss = functools.lru_cache(maxsize=8)(make_loss)  # one loss function per l1_weight


def batch_loss(model, batch, counter: PassCounter, backward: bool, target: torch.Tensor | None = None,
               device=None, l1_weight: float = 0.0) -> torch.Tensor:
    """The training loss of ``model`` on ``batch``, counted: fastMRI's SSIM loss plus
    ``l1_weight`` × the L1 term of :func:`mrilib.recon.steps.make_loss` (0: SSIM only).

    ``target`` replaces the batch's own target (distillation, noisy labels); ``device``
    defaults to where ``model`` is (the batch is moved there).
    """
    output, tgt = forward_batch(model, batch, module_device(model) if device is None else device)
    if target is not None:
        tgt = target.to(output.device)
    counter.add(output.shape[0], backward)
    return _loss(float(l1_weight))(output, tgt, batch.max_value)


def timed_copy(model: torch.nn.Module, device=None) -> tuple[torch.nn.Module, float]:
    """A deep copy of ``model`` on ``device`` (default :func:`~mrilib.run.device.default_device`),
    and the start time (``time.perf_counter``)."""
    start = time.perf_counter()
    work = copy.deepcopy(model).to(default_device(device))
    return work, start
