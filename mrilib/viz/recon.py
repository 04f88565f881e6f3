"""Figures of the VarNet chapter: learning curves and reconstructions with error maps."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from mrilib.recon.quality import image_metrics

__all__ = ["plot_learning_curves", "plot_reconstructions"]


def _moving_average(x: np.ndarray, n: int) -> np.ndarray:
    """Trailing moving average over ``n`` values (shorter at the start)."""
    if len(x) == 0:
        return x
    c = np.cumsum(np.insert(np.asarray(x, dtype=float), 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(0, idx - n)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_learning_curves(history: dict, title: str = "E2E VarNet training", smooth: int | None = None):
    """Loss per optimiser step with validation per epoch, validation PSNR, learning rate.

    Args:
        history: the dict of ``history.json`` (:func:`mrilib.recon.checkpoints.read_history`).
        smooth: moving-average window for the per-step loss (default: ~1/2 epoch).

    Returns:
        the matplotlib figure (three panels).
    """
    steps = np.arange(1, len(history["step_loss"]) + 1)
    loss = np.asarray(history["step_loss"], dtype=float)
    spe = max(1, int(history.get("steps_per_epoch") or 1))
    smooth = smooth or max(1, spe // 2)
    epochs = history.get("epochs", [])
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), constrained_layout=True)

    ax = axes[0]
    ax.plot(steps, loss, color="0.75", lw=0.6, label="training batch")
    ax.plot(steps, _moving_average(loss, smooth), color="C0", lw=1.5, label=f"training (mean of {smooth} steps)")
    ev = [e for e in epochs if "val_loss" in e]
    if ev:
        ax.plot([e["step"] for e in ev], [e["val_loss"] for e in ev], "o-", color="C3", ms=3, label="validation")
    ax.set(xlabel="optimiser step", ylabel="SSIM loss (1 − SSIM)", title="Loss", yscale="log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")

    ax = axes[1]
    if ev:
        for acc in ev[0]["val"]:
            ax.plot([e["epoch"] for e in ev], [e["val"][acc]["psnr"] for e in ev], "o-", ms=3, label=f"{acc} val.")
        ax.legend(fontsize=8)
    ax.set(xlabel="epoch", ylabel="PSNR (dB)", title="Validation PSNR")
    ax.grid(alpha=0.3)

    ax = axes[2]
    ax.plot(steps, history.get("step_lr", [np.nan] * len(steps)), color="C2")
    ax.set(xlabel="optimiser step", ylabel="learning rate", title="Learning-rate schedule")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)

    cost = f"{history.get('wall_s', 0):.0f} s, {history.get('train_slice_passes', 0):,} slice-passes"
    fig.suptitle(f"{title} ({cost})")
    return fig


def _np(x) -> np.ndarray:
    """A 2-D float numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=float)


def plot_reconstructions(
    images: dict,
    target,
    maxval: float | None = None,
    title: str = "",
    fov_mm: float | None = None,
    error_scale: float = 5.0,
):
    """Target and reconstructions (top row) with their absolute error maps (bottom row).

    Args:
        images: ``{method name: image (h, w)}``.
        target: the reference image (fully sampled RSS).
        maxval: data range for the metrics and the grey scale (default ``target.max()``).
        fov_mm: field of view, to label the axes in millimetres (pixels otherwise).
        error_scale: error maps are shown on ``[0, maxval / error_scale]``.

    Returns:
        the matplotlib figure; each panel's title gives SSIM and PSNR against the target.
    """
    target = _np(target)
    maxval = float(maxval if maxval is not None else target.max())
    n = len(images) + 1
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n + 1.2, 5.6), squeeze=False, constrained_layout=True)
    h, w = target.shape
    if fov_mm:
        extent, unit = [0, fov_mm * w / max(h, w), fov_mm * h / max(h, w), 0], "mm"
    else:
        extent, unit = [0, w, h, 0], "pixel"
    im_kw = dict(cmap="gray", vmin=0, vmax=maxval, extent=extent)
    err_kw = dict(cmap="inferno", vmin=0, vmax=maxval / error_scale, extent=extent)
    axes[0, 0].imshow(target, **im_kw)
    axes[0, 0].set_title("target (fully sampled)", fontsize=9)
    axes[1, 0].axis("off")
    axes[1, 0].text(0.5, 0.5, f"|error| maps\nscale: 0 to {maxval / error_scale:.3g}\n(1/{error_scale:g} of the\nimage range)",
                    ha="center", va="center", fontsize=9, transform=axes[1, 0].transAxes)
    im = err = None
    for j, (name, img) in enumerate(images.items(), start=1):
        img = _np(img)
        m = image_metrics(target, img, maxval)
        im = axes[0, j].imshow(img, **im_kw)
        axes[0, j].set_title(f"{name}\nSSIM {m['ssim']:.3f}, PSNR {m['psnr']:.1f} dB", fontsize=9)
        err = axes[1, j].imshow(np.abs(img - target), **err_kw)
        axes[1, j].set_title(f"|{name} − target|", fontsize=9)
    for ax in axes.ravel():
        if ax.axison:
            ax.set_xlabel(f"x ({unit})", fontsize=8)
            ax.set_ylabel(f"y ({unit})", fontsize=8)
            ax.tick_params(labelsize=7)
    if im is not None:
        fig.colorbar(im, ax=axes[0, :].tolist(), shrink=0.9, label="intensity (a.u.)")
        fig.colorbar(err, ax=axes[1, :].tolist(), shrink=0.9, label="absolute error (a.u.)")
    if title:
        fig.suptitle(title)
    return fig
