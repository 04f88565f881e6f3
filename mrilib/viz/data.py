"""Figure helpers for the data chapter (matplotlib; every axis titled, colourbars labelled)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["image_grid", "show_coil_maps", "show_kspace", "show_masks", "show_zero_filled", "log_magnitude"]


def log_magnitude(kspace: np.ndarray, eps: float = 1e-9) -> np.ndarray:
    """``log10 |k|`` for displaying k-space (``eps`` avoids log of zero)."""
    return np.log10(np.abs(kspace) + eps)


def _display_range(img: np.ndarray, pct: float = 99.5) -> tuple[float, float]:
    """Intensity window [0, percentile] for magnitude display."""
    return 0.0, float(np.percentile(img, pct)) or 1.0


def image_grid(images, titles=None, ncols: int = 4, cmap: str = "gray", suptitle: str | None = None,
               cbar_label: str | None = None, size: float = 2.6):
    """Show a list of 2-D images in a grid; returns the figure."""
    images = list(images)
    n = len(images)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.4), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for i, (ax, img) in enumerate(zip(axes.flat, images)):
        vmin, vmax = _display_range(img) if cmap == "gray" else (None, None)
        im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_xticks([]), ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
        if cbar_label:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).set_label(cbar_label, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_coil_maps(maps: np.ndarray, max_coils: int = 8):
    """Magnitude (top row) and phase (bottom row) of coil sensitivities ``(C, H, W)``."""
    c = min(len(maps), max_coils)
    fig, axes = plt.subplots(2, c, figsize=(2.3 * c, 4.8), squeeze=False)
    vmax = float(np.abs(maps[:c]).max())
    for i in range(c):
        m = axes[0, i].imshow(np.abs(maps[i]), cmap="viridis", vmin=0, vmax=vmax)
        p = axes[1, i].imshow(np.angle(maps[i]), cmap="twilight", vmin=-np.pi, vmax=np.pi)
        axes[0, i].set_title(f"coil {i}: |S|", fontsize=9)
        axes[1, i].set_title(f"coil {i}: ∠S", fontsize=9)
        for ax in axes[:, i]:
            ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(m, ax=axes[0, :].tolist(), fraction=0.02).set_label("|S| (a.u.)")
    fig.colorbar(p, ax=axes[1, :].tolist(), fraction=0.02).set_label("phase (rad)")
    fig.suptitle("Birdcage coil sensitivities (normalised: Σ|S|² = 1)")
    return fig


def show_kspace(kspace: np.ndarray, max_coils: int = 4):
    """log10 magnitude of each coil's k-space ``(C, H, W)``; rows = readout (kx), columns = phase encode (ky)."""
    c = min(len(kspace), max_coils)
    logk = log_magnitude(kspace[:c])
    fig, axes = plt.subplots(1, c, figsize=(2.8 * c, 3.0), squeeze=False)
    for i in range(c):
        im = axes[0, i].imshow(logk[i], cmap="magma", vmin=np.percentile(logk, 5), vmax=logk.max())
        axes[0, i].set_title(f"coil {i}", fontsize=9)
        axes[0, i].set_xlabel("ky (phase encode)")
        axes[0, i].set_ylabel("kx (readout)")
        axes[0, i].set_xticks([]), axes[0, i].set_yticks([])
    fig.colorbar(im, ax=axes[0].tolist(), fraction=0.02).set_label("log10 |k|")
    fig.suptitle("Multi-coil k-space (log magnitude)")
    return fig


def show_masks(masks: dict[str, np.ndarray], shape: tuple[int, int]):
    """Sampling masks (1-D over phase-encode columns) shown as 2-D patterns, one panel each."""
    fig, axes = plt.subplots(1, len(masks), figsize=(3.0 * len(masks), 3.2), squeeze=False)
    for ax, (name, m) in zip(axes[0], masks.items()):
        m = np.asarray(m).reshape(-1)
        ax.imshow(np.broadcast_to(m[None, :], shape), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{name}: {int(m.sum())}/{m.size} lines", fontsize=9)
        ax.set_xlabel("ky (phase encode)")
        ax.set_ylabel("kx (readout)")
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("fastMRI equispaced masks (white = sampled)")
    fig.tight_layout()
    return fig


def show_zero_filled(target: np.ndarray, recons: dict[str, np.ndarray]):
    """Target and zero-filled reconstructions (top) with absolute error maps (bottom)."""
    n = len(recons) + 1
    fig, axes = plt.subplots(2, n, figsize=(2.8 * n, 5.8), squeeze=False)
    vmax = _display_range(target)[1]
    axes[0, 0].imshow(target, cmap="gray", vmin=0, vmax=vmax)
    axes[0, 0].set_title("target (fully sampled RSS)", fontsize=9)
    axes[1, 0].axis("off")
    err_max = max(float(np.abs(r - target).max()) for r in recons.values())
    for j, (name, rec) in enumerate(recons.items(), start=1):
        axes[0, j].imshow(rec, cmap="gray", vmin=0, vmax=vmax)
        axes[0, j].set_title(name, fontsize=9)
        e = axes[1, j].imshow(np.abs(rec - target), cmap="inferno", vmin=0, vmax=err_max)
        axes[1, j].set_title(f"|error| {name}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(e, ax=axes[1, 1:].tolist(), fraction=0.03).set_label("|error| (a.u.)")
    fig.suptitle("Zero-filled RSS versus the fully sampled target")
    return fig
