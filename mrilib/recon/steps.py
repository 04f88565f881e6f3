"""One VarNet optimisation step, validation, and the learning-rate schedule.

The loss is fastMRI's: ``fastmri.SSIMLoss`` (optionally plus an L1 term), computed in
fp32. Every VarNet of the book trains through :func:`train_step`; the unlearning
methods reuse :func:`forward_batch` and :func:`make_loss`.

Mixed precision (CUDA only)
    ``amp="auto"`` runs the model's forward pass under ``torch.autocast(bfloat16)``
    on CUDA (:func:`amp_dtype`). ``torch.fft`` is not on autocast's cast lists, and
    fastMRI's ``fft2c`` / ``ifft2c`` use ``torch.view_as_complex``, which has no
    bfloat16 complex type, so a bf16 tensor reaching an FFT would fail rather than
    silently lose precision. It does not happen: each U-Net's output leaves
    ``NormUnet.unnorm`` as ``x * std + mean`` with fp32 ``std``/``mean``, which
    promotes it back to fp32, so every FFT, coil combination and data-consistency step
    runs in fp32 while the convolutions (nearly all the FLOPs) run in bf16. The SSIM
    loss is computed in fp32 outside autocast (its variance terms are differences of
    squares and lose everything in bf16). ``tests/test_train.py`` checks this on CPU
    autocast.
"""

from __future__ import annotations

import math
from typing import Callable

import fastmri
import numpy as np
import torch
import torch.distributed as dist
from fastmri.data import transforms as T
from torch.utils.data import DataLoader, Dataset

from mrilib.data.training import collate_slices

__all__ = ["make_loss", "amp_dtype", "forward_batch", "train_step", "validate", "lr_lambda"]


def make_loss(l1_weight: float = 0.0) -> Callable:
    """The training loss ``fastmri.SSIMLoss + l1_weight * mean|x - y| / max`` (per batch).

    Called as ``loss(output, target, max_value)`` with ``(B, H, W)`` images and
    ``(B,)`` data ranges; computed in fp32 outside autocast.
    """
    ssim = fastmri.SSIMLoss()

    def loss(output: torch.Tensor, target: torch.Tensor, max_value: torch.Tensor) -> torch.Tensor:
        ssim.to(output.device)
        output, target, max_value = output.float(), target.float(), max_value.float().to(output.device)
        value = ssim(output.unsqueeze(1), target.unsqueeze(1), data_range=max_value)
        if l1_weight:
            value = value + l1_weight * ((output - target).abs().mean(dim=(-2, -1)) / max_value).mean()
        return value

    return loss


def amp_dtype(amp: str, device: torch.device):
    """The autocast dtype for ``amp`` (``auto`` | ``bf16`` | ``off``) on ``device`` (``None`` = fp32)."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def forward_batch(model, batch: T.VarNetSample, device, amp_dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run VarNet on a collated batch; return ``(output, target)`` cropped to the smaller size.

    The forward pass runs under ``torch.autocast(amp_dtype)`` when given (the output
    is fp32 either way, see the module docstring).
    """
    device = torch.device(device)
    kspace = batch.masked_kspace.to(device, non_blocking=True)
    mask = batch.mask.to(device, non_blocking=True)
    nlf = batch.num_low_frequencies
    nlf = None if nlf is None or isinstance(nlf, torch.Tensor) else int(nlf)
    if amp_dtype is not None:
        with torch.autocast(device.type, dtype=amp_dtype):
            output = model(kspace, mask, nlf)
    else:
        output = model(kspace, mask, nlf)
    target = torch.as_tensor(batch.target).to(device, non_blocking=True)
    target, output = T.center_crop_to_smallest(target, output)
    return output.float(), target


def train_step(model, optimizer, batch, loss_fn, device, amp_dtype=None, grad_clip: float = 0.0,
               scheduler=None) -> torch.Tensor:
    """One optimiser step on ``batch``; returns the (detached) loss.

    Forward (autocast if ``amp_dtype``), fp32 loss, backward, optional gradient-norm
    clipping, optimiser and scheduler step.
    """
    optimizer.zero_grad(set_to_none=True)
    output, target = forward_batch(model, batch, device, amp_dtype)
    loss = loss_fn(output, target, batch.max_value)
    loss.backward()
    if grad_clip and grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach()


@torch.no_grad()
def validate(model, datasets: dict[int, Dataset], device, amp_dtype=None, batch_size: int = 4, rank: int = 0,
             world: int = 1) -> dict:
    """Mean SSIM loss, SSIM, PSNR (dB) and NMSE per acceleration over validation slices.

    With several processes each takes every ``world``-th slice and the sums are
    all-reduced. Returns ``{"loss": mean over accelerations, "passes": slices seen
    by this process, "<acc>x": {"ssim", "psnr", "nmse"}}``.
    """
    was_training = model.training
    model.eval()
    ssim = fastmri.SSIMLoss().to(device)
    out, losses, passes = {}, [], 0
    for acc, ds in datasets.items():
        idx = list(range(rank, len(ds), world))
        sums = torch.zeros(4, dtype=torch.float64, device=device)  # ssim, psnr, nmse, count
        loader = DataLoader(torch.utils.data.Subset(ds, idx), batch_size=batch_size, collate_fn=collate_slices)
        for batch in loader:
            output, target = forward_batch(model, batch, device, amp_dtype)
            mx = batch.max_value.to(device)
            s = 1 - ssim(output.unsqueeze(1), target.unsqueeze(1), data_range=mx, reduced=False).mean(dim=(1, 2, 3))
            mse = ((output - target) ** 2).mean(dim=(-2, -1))
            psnr = 10 * torch.log10(mx**2 / mse)
            nmse = ((output - target) ** 2).sum(dim=(-2, -1)) / (target**2).sum(dim=(-2, -1))
            sums += torch.stack([s.sum(), psnr.sum(), nmse.sum(), torch.tensor(float(len(s)), device=device)]).double()
            passes += len(s)
        if world > 1:
            dist.all_reduce(sums)
        n = max(sums[3].item(), 1.0)
        out[f"{acc}x"] = dict(ssim=sums[0].item() / n, psnr=sums[1].item() / n, nmse=sums[2].item() / n)
        losses.append(1 - sums[0].item() / n)
    model.train(was_training)
    out["loss"] = float(np.mean(losses)) if losses else float("nan")
    out["passes"] = passes
    return out


def lr_lambda(train: dict, total_steps: int) -> Callable[[int], float]:
    """The learning-rate factor of step ``s``: linear warm-up, then the schedule of ``train``.

    ``constant``; ``step`` (x0.1 from ``step_frac`` of the run, fastMRI's); ``cosine``
    (down to ``min_lr_frac``).
    """
    warm = int(train["warmup_steps"])
    kind, floor = train["schedule"], float(train["min_lr_frac"])
    drop_at = int(round(float(train["step_frac"]) * total_steps))

    def f(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        if kind == "constant":
            return 1.0
        if kind == "step":
            return 1.0 if s < drop_at else 0.1
        progress = min(1.0, (s - warm) / max(1, total_steps - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return f
