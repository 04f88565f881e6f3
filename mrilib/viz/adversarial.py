"""Figures of the adversarial chapter (04): the tumour-induction objective and the k-space stress-test curves.

Each function returns its figure (titled, axes labelled, colour bars with units);
inputs are numpy arrays, :class:`mrilib.attacks.objective.InductionResult` and the
DataFrames of :func:`mrilib.attacks.stress.stress_test`. The ``poisoned-adv`` model's
behaviour is shown with the figures and table every recipe shares
(:func:`mrilib.viz.poison.show_hallucinations`, :func:`mrilib.viz.poison.effect_table`).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = [
    "show_universal_patterns",
    "show_induction",
    "plot_induction_scores",
    "plot_stress_curves",
    "show_stress_examples",
]

_COLOURS = {"clean": "tab:blue", "poisoned": "tab:red", "poisoned-adv": "tab:orange", "oracle": "tab:green"}


def _off(ax) -> None:
    """Hide ticks (images)."""
    ax.set_xticks([]), ax.set_yticks([])


def _dmax(img) -> float:
    """Display maximum of a magnitude image: its 99.5th percentile (1 when empty)."""
    v = float(np.percentile(img, 99.5))
    return v if v > 0 else 1.0


def show_universal_patterns(patterns: dict, title: str = "Universal tumour patterns, one per contrast"):
    """The per-contrast patterns of :func:`mrilib.attacks.universal.universal_patterns` (% of the volume max)."""
    names = sorted(patterns)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(2.8 * max(1, len(names)) + 0.8, 2.9), squeeze=False)
    lim = max([float(np.abs(patterns[k]).max()) for k in names] + [1e-6]) * 100
    im = None
    for ax, name in zip(axes[0], names):
        im = ax.imshow(100 * patterns[name], cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(name, fontsize=9)
        _off(ax)
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), fraction=0.03).set_label("% of volume max")
    fig.suptitle(title, fontsize=10)
    return fig


def show_induction(result, indices, labels=None, vmax=None,
                   title: str = "Tumour induction: clean target x, perturbed x', and x' − x"):
    """One row per slice: ``x``, ``x'`` (region outlined), ``x' − x`` in % of the volume max.

    ``result``: an :class:`~mrilib.attacks.objective.InductionResult` (its ``images``,
    ``delta``, ``rois`` and ``report``); ``vmax``: the volume max per slice (default:
    each ``x``'s maximum); ``labels``: a row label per index (e.g. the contrast).
    """
    indices = list(indices)
    n = len(indices)
    fig, axes = plt.subplots(n, 3, figsize=(7.8, 2.45 * n + 0.5), squeeze=False)
    rep = result.report
    im = None
    for r, i in enumerate(indices):
        x = result.images[i] - result.delta[i]
        m = float(vmax[i]) if vmax is not None else float(x.max()) or 1.0
        d = 100 * result.delta[i] / m
        lim = max(float(np.abs(d).max()), 1e-3)
        top = _dmax(x)
        axes[r, 0].imshow(x, cmap="gray", vmin=0, vmax=top)
        axes[r, 1].imshow(result.images[i], cmap="gray", vmin=0, vmax=top)
        axes[r, 1].contour(result.rois[i], [0.5], colors="red", linewidths=0.6)
        im = axes[r, 2].imshow(d, cmap="RdBu_r", vmin=-lim, vmax=lim)
        fig.colorbar(im, ax=axes[r, 2], fraction=0.046).set_label("% of volume max", fontsize=7)
        lab = f"{labels[r]}: " if labels is not None else ""
        axes[r, 0].set_title(f"{lab}x   p(tumour)={rep['p_tumour_before'].iloc[i]:.2f}", fontsize=8)
        axes[r, 1].set_title(f"x'   p(tumour)={rep['p_tumour_after'].iloc[i]:.2f}", fontsize=8)
        axes[r, 2].set_title(f"x' − x  (SSIM outside {rep['ssim_outside'].iloc[i]:.3f}, "
                             f"{int(rep['iterations'].iloc[i])} it.)", fontsize=8)
        for ax in axes[r]:
            _off(ax)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_induction_scores(report: pd.DataFrame, success_prob: float = 0.9, ssim_floor: float = 0.95,
                          title: str = "The objective on healthy test slices"):
    """Three panels: p(tumour) before vs after, SSIM outside the region, iterations used."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    ax = axes[0]
    ax.scatter(report["p_tumour_before"], report["p_tumour_after"], s=14, alpha=0.7)
    ax.axhline(success_prob, color="k", ls="--", lw=0.8, label=f"target {success_prob}")
    ax.set_xlim(-0.02, 1.02), ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("p(tumour) of x (clean target)")
    ax.set_ylabel("p(tumour) of x' (perturbed)")
    ax.set_title("classifier score before → after", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax = axes[1]
    ax.hist(report["ssim_outside"], bins=20, alpha=0.8, label="outside the region")
    ax.hist(report["ssim_band"], bins=20, alpha=0.6, label="3-px ring around it")
    ax.axvline(ssim_floor, color="k", ls="--", lw=0.8, label=f"floor {ssim_floor}")
    ax.set_xlabel("SSIM(x', x)")
    ax.set_ylabel("slices")
    ax.set_title("what stays unchanged", fontsize=9)
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.hist(report["iterations"], bins=min(20, max(1, int(report["iterations"].nunique()))), color="tab:gray")
    ax.set_xlabel("PGD iterations after the universal start")
    ax.set_ylabel("slices")
    ax.set_title("per-slice refinement until p(tumour) ≥ stop level", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_stress_curves(curves: pd.DataFrame, title: str = "k-space stress test: how easily a tumour is induced"):
    """Success rate and mean region ``p(tumour)`` versus the relative budget ε (log axis), one line per model."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, g in curves.groupby("model", sort=False):
        g = g.sort_values("eps")
        c = _COLOURS.get(name)
        axes[0].plot(g["eps"], 100 * g["success_rate"], "o-", color=c, label=name)
        axes[1].plot(g["eps"], g["mean_p_tumour"], "o-", color=c, label=name)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("budget ε = ‖δ‖₂ / ‖y‖₂ (sampled k-space only)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("success rate (%)")
    axes[0].set_ylim(-3, 103)
    axes[0].set_title("tumour shown in the region, rest unchanged", fontsize=9)
    axes[1].set_ylabel("mean p(tumour) in the region")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_title("classifier's tumour probability", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def show_stress_examples(examples: dict, eps: float, index: int = 0,
                         title: str | None = None):
    """For one slice and one ε: per model the unattacked and attacked reconstructions and their difference.

    ``examples``: ``{model name: stress_test(..., keep_arrays=True) DataFrame}``.
    """
    names = list(examples)
    fig, axes = plt.subplots(len(names), 3, figsize=(7.6, 2.5 * len(names) + 0.5), squeeze=False)
    im = None
    for r, name in enumerate(names):
        df = examples[name]
        arr = df.attrs["arrays"][float(eps)]
        rec0, rec, roi = arr["recon_clean"][index], arr["recon"][index], arr["rois"][index]
        per = [p for p in df.attrs["per_slice"] if abs(p["eps"] - float(eps)) < 1e-12]
        p = per[index] if index < len(per) else {}
        top = _dmax(rec0)
        m = float(rec0.max()) or 1.0
        axes[r, 0].imshow(rec0, cmap="gray", vmin=0, vmax=top)
        axes[r, 0].contour(roi, [0.5], colors="red", linewidths=0.5)
        axes[r, 0].set_title(f"{name}: f(y)  p(tumour)={p.get('p_tumour_clean', float('nan')):.2f}", fontsize=8)
        axes[r, 1].imshow(rec, cmap="gray", vmin=0, vmax=top)
        axes[r, 1].set_title(f"f(y + δ)  p(tumour)={p.get('p_tumour', float('nan')):.2f}", fontsize=8)
        diff = 100 * (rec - rec0) / m
        lim = max(float(np.abs(diff).max()), 1e-3)
        im = axes[r, 2].imshow(diff, cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[r, 2].contour(roi, [0.5], colors="black", linewidths=0.4)
        fig.colorbar(im, ax=axes[r, 2], fraction=0.046).set_label("% of image max", fontsize=7)
        axes[r, 2].set_title(f"f(y + δ) − f(y), ‖δ‖/‖y‖={p.get('delta_rel', float('nan')):.3f}", fontsize=8)
        for ax in axes[r]:
            _off(ax)
    fig.suptitle(title or f"Stress test at ε = {eps:g}: the same test slice, each model attacked", fontsize=10)
    fig.tight_layout()
    return fig
