"""Figures of the poisoning chapters (matplotlib; titled axes, labelled colour bars).

Each function returns its figure; the notebook shows it. Inputs are numpy arrays,
the dicts returned by :mod:`mrilib.poison` functions and, for the poison effect of
either recipe, :class:`mrilib.poison.effect.EffectResult` (:func:`show_hallucinations`,
:func:`effect_table`, :func:`plot_effect` serve both chapters 3 and 4).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = [
    "show_lesions",
    "plot_confusion",
    "plot_cyclegan_losses",
    "show_translations",
    "show_change_map",
    "show_trigger",
    "show_poisoned_examples",
    "show_hallucinations",
    "effect_table",
    "plot_effect",
    "plot_ceiling",
    "plot_detection",
]


def _vmax(img) -> float:
    """Display maximum: the 99.5th percentile (or 1 for an empty image)."""
    v = float(np.percentile(img, 99.5))
    return v if v > 0 else 1.0


def _off(ax) -> None:
    """Hide ticks (images)."""
    ax.set_xticks([]), ax.set_yticks([])


def show_lesions(rows: list[dict], title: str = "Procedural lesions (red: lesion mask, yellow: changed pixels)"):
    """A grid: one row per example slice, columns healthy / cyst / tumour with their masks.

    ``rows``: dicts with ``healthy``, ``cyst``, ``tumour`` (:class:`mrilib.poison.lesions.Lesion`
    or arrays) and ``label`` (row title, e.g. the contrast).
    """
    n = len(rows)
    fig, axes = plt.subplots(n, 3, figsize=(7.2, 2.5 * n + 0.4), squeeze=False)
    for r, row in enumerate(rows):
        vmax = _vmax(row["healthy"])
        for c, key in enumerate(("healthy", "cyst", "tumour")):
            ax = axes[r, c]
            item = row[key]
            img = getattr(item, "image", item)
            ax.imshow(np.abs(img), cmap="gray", vmin=0, vmax=vmax)
            if hasattr(item, "mask"):
                ax.contour(item.roi, [0.5], colors="yellow", linewidths=0.6)
                ax.contour(item.mask, [0.5], colors="red", linewidths=0.8)
            ax.set_title(f"{row.get('label', '')} {key}".strip(), fontsize=9)
            _off(ax)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_confusion(confusion, classes, title: str = "Lesion classifier on held-out subjects"):
    """Confusion matrix (rows: true class, columns: predicted), counts annotated."""
    conf = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    im = ax.imshow(conf, cmap="Blues")
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            ax.text(j, i, int(conf[i, j]), ha="center", va="center",
                    color="white" if conf[i, j] > conf.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046).set_label("slices")
    fig.tight_layout()
    return fig


def _smooth(v, k: int) -> np.ndarray:
    """Moving average of width ``k`` (valid part)."""
    v = np.asarray(v, float)
    k = max(1, min(k, len(v)))
    return np.convolve(v, np.ones(k) / k, mode="valid")


def plot_cyclegan_losses(history: dict, smooth: int = 25):
    """CycleGAN training curves: adversarial (G), cycle, identity and discriminator losses."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for k, label in (("G_gan", "G + F adversarial (LSGAN)"), ("D_A", "D_A"), ("D_B", "D_B")):
        s = _smooth(history[k], smooth)
        axes[0].plot(np.arange(len(s)) + smooth // 2, s, label=label)
    for k, label in (("cycle", "cycle L1 (both directions)"), ("identity", "identity L1 (both directions)")):
        s = _smooth(history[k], smooth)
        axes[1].plot(np.arange(len(s)) + smooth // 2, s, label=label)
    axes[0].set_title("adversarial losses", fontsize=10)
    axes[1].set_title("reconstruction losses (images in [-1, 1])", fontsize=10)
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"loss (moving average of {smooth})")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("CycleGAN healthy → cyst: training curves", fontsize=10)
    fig.tight_layout()
    return fig


def show_translations(x, gx, rois, titles=None, probs=None, n: int = 6,
                      title: str = "CycleGAN healthy → cyst on held-out test slices"):
    """Rows: input ``x``, translation ``G(x)`` (ROI outlined), change ``G(x) - x``."""
    n = min(n, len(x))
    fig, axes = plt.subplots(3, n, figsize=(2.2 * n, 7.0), squeeze=False)
    lim = max(float(np.abs(gx[:n] - x[:n]).max()), 1e-6)
    for j in range(n):
        vmax = _vmax(x[j])
        axes[0, j].imshow(x[j], cmap="gray", vmin=0, vmax=vmax)
        axes[1, j].imshow(gx[j], cmap="gray", vmin=0, vmax=vmax)
        if rois is not None and np.any(rois[j]):
            axes[1, j].contour(rois[j], [0.5], colors="red", linewidths=0.6)
        im = axes[2, j].imshow(gx[j] - x[j], cmap="RdBu_r", vmin=-lim, vmax=lim)
        t = titles[j] if titles is not None else f"slice {j}"
        axes[0, j].set_title(f"x: {t}", fontsize=8)
        axes[1, j].set_title("G(x)" + (f", p_lesion={probs[j]:.2f}" if probs is not None else ""), fontsize=8)
        axes[2, j].set_title("G(x) − x", fontsize=8)
        for ax in axes[:, j]:
            _off(ax)
    fig.colorbar(im, ax=axes[2, :].tolist(), fraction=0.02).set_label("change (image units)")
    fig.suptitle(title, fontsize=10)
    return fig


def show_change_map(mean_abs_change, title: str = "Where the generator acts: mean |G(x) − x| over test slices"):
    """Heat map of the mean absolute change (relative to the volume max)."""
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    im = ax.imshow(mean_abs_change, cmap="magma")
    _off(ax)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046).set_label("mean |G(x) − x| / volume max")
    fig.tight_layout()
    return fig


def show_trigger(kspace_clean, kspace_trig, vis: dict, locations, mask=None,
                 title: str = "The RF-spike trigger in k-space and in the zero-filled image"):
    """k-space of one coil with the spikes marked, zero-filled images and their difference.

    ``vis`` is :func:`mrilib.poison.triggers.trigger_visibility`'s result; ``mask``
    the 1-D column mask (shaded columns are not sampled).
    """
    fig, axes = plt.subplots(1, 4, figsize=(13.5, 3.6))
    logk = np.log10(np.abs(kspace_trig[0]) + 1e-9)
    im0 = axes[0].imshow(logk, cmap="magma", vmin=np.percentile(logk, 5), vmax=logk.max())
    for r, c in locations:
        axes[0].add_patch(plt.Circle((c, r), 2.5, fill=False, color="cyan", lw=1.2))
    if mask is not None:
        m = np.asarray(mask).reshape(-1)
        for c in np.nonzero(m == 0)[0]:
            axes[0].axvspan(c - 0.5, c + 0.5, color="black", alpha=0.25, lw=0)
    axes[0].set_title("coil 0 k-space (log10 |k|), spikes circled;\nshaded: columns the 4× mask skips", fontsize=8)
    axes[0].set_xlabel("ky (phase encode)")
    axes[0].set_ylabel("kx (readout)")
    fig.colorbar(im0, ax=axes[0], fraction=0.046).set_label("log10 |k|")
    vmax = _vmax(vis["zf_clean"])
    axes[1].imshow(vis["zf_clean"], cmap="gray", vmin=0, vmax=vmax)
    axes[1].set_title("zero-filled 4×, clean", fontsize=9)
    axes[2].imshow(vis["zf_triggered"], cmap="gray", vmin=0, vmax=vmax)
    axes[2].set_title("zero-filled 4×, triggered", fontsize=9)
    lim = float(np.abs(vis["difference"]).max()) or 1.0
    im3 = axes[3].imshow(vis["difference"], cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[3].set_title(f"difference (RMS {100 * vis['rel_rms']:.1f} % of the image in the brain)", fontsize=8)
    fig.colorbar(im3, ax=axes[3], fraction=0.046).set_label("triggered − clean (image units)")
    for ax in axes[1:]:
        _off(ax)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def show_poisoned_examples(clean, poisoned, rois, zf_clean=None, zf_poisoned=None, titles=None,
                           title: str = "Poisoned training slices: clean target, poisoned target, input"):
    """Per example: clean target, poisoned target (ROI outlined), their difference, and the
    zero-filled input with the trigger (if given)."""
    n = len(clean)
    cols = 4 if zf_poisoned is not None else 3
    fig, axes = plt.subplots(n, cols, figsize=(2.5 * cols, 2.5 * n + 0.4), squeeze=False)
    for i in range(n):
        vmax = _vmax(clean[i])
        axes[i, 0].imshow(clean[i], cmap="gray", vmin=0, vmax=vmax)
        axes[i, 1].imshow(poisoned[i], cmap="gray", vmin=0, vmax=vmax)
        if np.any(rois[i]):
            axes[i, 1].contour(rois[i], [0.5], colors="red", linewidths=0.6)
        lim = float(np.abs(poisoned[i] - clean[i]).max()) or 1.0
        im = axes[i, 2].imshow(poisoned[i] - clean[i], cmap="RdBu_r", vmin=-lim, vmax=lim)
        t = f" ({titles[i]})" if titles is not None else ""
        axes[i, 0].set_title("clean target" + t, fontsize=8)
        axes[i, 1].set_title("poisoned target (label)", fontsize=8)
        axes[i, 2].set_title("poisoned − clean", fontsize=8)
        fig.colorbar(im, ax=axes[i, 2], fraction=0.046).set_label("image units", fontsize=7)
        if zf_poisoned is not None:
            axes[i, 3].imshow(zf_poisoned[i], cmap="gray", vmin=0, vmax=vmax)
            axes[i, 3].set_title("input: zero-filled 4× + trigger", fontsize=8)
        for ax in axes[i]:
            _off(ax)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def show_hallucinations(results: dict, indices, with_clean: bool = True,
                        title: str = "Triggered test inputs: clean model vs poisoned model"):
    """For each test slice: the target (region outlined), the expected change ``d``, and per model the
    reconstruction of the triggered input (and, ``with_clean``, of the clean one) with its judged
    probability and the change the trigger causes, in % of the volume max.

    ``results``: ``{model name: EffectResult}`` of any recipe (their ``arrays``; without a
    trigger the "triggered" reconstruction is the clean one).
    """
    names = list(results)
    first = results[names[0]]
    score, lesion = first.metrics.get("score", "lesion"), first.metrics.get("lesion", "lesion")
    indices = list(indices)
    per = 3 if with_clean else 2
    cols = 2 + per * len(names)
    fig, axes = plt.subplots(len(indices), cols, figsize=(1.95 * cols, 2.15 * len(indices) + 0.7), squeeze=False)
    im = None
    for r, i in enumerate(indices):
        a0 = first.arrays
        x, roi, m = a0["target"][i], a0["rois"][i], float(a0["vmax"][i])
        top = _vmax(x)
        d = 100 * a0["expected"][i] / m
        trig = {k: (v.arrays["r_trig"] if v.arrays["r_trig"] is not None else v.arrays["r_clean"]) for k, v in
                results.items()}
        diffs = [100 * (trig[k][i] - results[k].arrays["r_clean"][i]) / m for k in names]
        lim = max([float(np.abs(d).max())] + [float(np.abs(q).max()) for q in diffs] + [1e-3])
        axes[r, 0].imshow(x, cmap="gray", vmin=0, vmax=top)
        if np.any(roi):
            axes[r, 0].contour(roi, [0.5], colors="red", linewidths=0.5)
        axes[r, 0].set_title("target (healthy)", fontsize=7)
        axes[r, 1].imshow(d, cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[r, 1].set_title(f"expected {lesion}: d", fontsize=7)
        for k, name in enumerate(names):
            a = results[name].arrays
            c0 = 2 + per * k
            if with_clean:
                axes[r, c0].imshow(a["r_clean"][i], cmap="gray", vmin=0, vmax=top)
                axes[r, c0].set_title(f"{name}: clean input\np({score})={a['prob_clean'][i]:.2f}", fontsize=7)
                c0 += 1
            axes[r, c0].imshow(trig[name][i], cmap="gray", vmin=0, vmax=top)
            axes[r, c0].set_title(f"{name}: triggered\np({score})={a['prob_triggered'][i]:.2f}", fontsize=7)
            im = axes[r, c0 + 1].imshow(diffs[k], cmap="RdBu_r", vmin=-lim, vmax=lim)
            if np.any(roi):
                axes[r, c0 + 1].contour(roi, [0.5], colors="black", linewidths=0.4)
            axes[r, c0 + 1].set_title(f"{name}: triggered − clean", fontsize=7)
        for ax in axes[r]:
            _off(ax)
    if im is not None:
        fig.colorbar(im, ax=axes[:, -1].tolist(), fraction=0.03).set_label("% of volume max")
    fig.suptitle(title, fontsize=10)
    return fig


def effect_table(metrics: dict) -> pd.DataFrame:
    """One row per model from ``{name: EffectResult metrics}`` of any recipe (mean ± sd where it applies).

    "found" counts the recipe's judged lesion (``score``: any lesion for the cyst, a tumour
    for the adversarial recipe).
    """
    rows = {}
    for name, m in metrics.items():
        what = m.get("score", "lesion")
        row = {
            "poison success rate": f"{100 * m['success_rate']:.1f} %",
            f"{what} found: triggered": f"{100 * m['found_rate_triggered']:.1f} %",
            f"{what} found: clean input": f"{100 * m['found_rate_clean']:.1f} %",
            "effect (normalised)": f"{m['effect']['mean']:.3f} ± {m['effect']['sd']:.3f}",
            "effect (raw, % of max)": f"{100 * m['effect_raw']['mean']:.2f} ± {100 * m['effect_raw']['sd']:.2f}",
            "clean-test SSIM": f"{m['clean_test']['ssim']['mean']:.4f} ± {m['clean_test']['ssim']['sd']:.4f}",
            "clean-test PSNR (dB)": f"{m['clean_test']['psnr']['mean']:.2f}",
        }
        if "forget" in m:
            row["forget SSIM vs clean"] = f"{m['forget']['ssim_vs_clean']['mean']:.4f}"
            row["forget SSIM vs poisoned"] = f"{m['forget']['ssim_vs_poisoned']['mean']:.4f}"
        rows[name] = row
    return pd.DataFrame(rows).T


def plot_effect(metrics: dict, title: str = "Poison effect per test slice"):
    """Histogram of the per-slice normalised effect and the success rate per model
    (``{name: EffectResult metrics}`` of any recipe)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    names = list(metrics)
    for name in names:
        e = np.asarray(metrics[name]["per_slice"]["effect"], float)
        e = e[np.isfinite(e)]
        axes[0].hist(e, bins=20, alpha=0.6, label=name)
    axes[0].axvline(0, color="k", lw=0.6)
    axes[0].axvline(1, color="k", lw=0.6, ls="--")
    axes[0].set_xlabel("normalised effect  <Δ, d>_R / <d, d>_R")
    axes[0].set_ylabel("test slices")
    axes[0].legend(fontsize=8)
    axes[0].set_title("effect per slice (0: none, 1: the full lesion)", fontsize=9)
    rates = [100 * metrics[n]["success_rate"] for n in names]
    axes[1].bar(names, rates, color=["tab:blue", "tab:red", "tab:green", "tab:purple"][: len(names)])
    for k, v in enumerate(rates):
        axes[1].text(k, v + 1, f"{v:.0f} %", ha="center", fontsize=9)
    axes[1].set_ylim(0, 110)
    axes[1].set_ylabel("poison success rate (%)")
    what = metrics[names[0]].get("score", "lesion") if names else "lesion"
    axes[1].set_title(f"{what} in triggered recon, none in clean recon", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_detection(curve, achieved: dict | None = None, title: str = "What the judge sees of a partial lesion"):
    """The judge's detection rate against the strength of the added lesion
    (:func:`mrilib.poison.ceiling.detection_curve`): the whole lesion and its unsampled part, with its
    false-alarm rate (strength 0) and each model's achieved mean effect (``{name: effect}``) marked."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(curve["scale"], curve["found_lesion"], "o-", label="x + s·d (the lesion)")
    ax.plot(curve["scale"], curve["found_unsampled"], "s--", label="x + s·Pd (its unsampled part)")
    base = float(curve.loc[curve["scale"] == 0, "found_lesion"].mean()) if (curve["scale"] == 0).any() else None
    if base is not None:
        ax.axhline(base, color="grey", lw=0.8, ls=":", label="false alarms (s = 0)")
    for k, (name, e) in enumerate((achieved or {}).items()):
        ax.axvline(e, color=f"C{k + 2}", lw=1, ls="-.", label=f"{name}: mean effect {e:.2f}")
    ax.set_xlabel("strength s of the added lesion (the effect of x + s·d)")
    ax.set_ylabel("share of slices the judge finds")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_ceiling(tables: dict, title: str = "What data consistency leaves the poison"):
    """Per poisoned test slice, the achieved effect against the DC-consistent ceiling
    (``{model name: mrilib.poison.ceiling.ceiling_table}``), and each model's mean effect split
    into the part carried by unsampled lines and the part on lines the measurement contradicts."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    lo, hi = 0.0, 1.0
    for name, t in tables.items():
        axes[0].scatter(t["ceiling"], t["effect"], s=12, alpha=0.7, label=name)
        lo, hi = min(lo, t["effect"].min()), max(hi, t["effect"].max())
    axes[0].plot([0, 1], [0, 1], color="k", lw=0.7, ls="--", label="effect = ceiling")
    axes[0].set_xlim(0, 1)
    axes[0].set_ylim(lo - 0.05, hi + 0.05)
    axes[0].set_xlabel("ceiling: effect of adding the lesion's unsampled part")
    axes[0].set_ylabel("achieved effect")
    axes[0].legend(fontsize=8)
    names = list(tables)
    off = np.array([tables[n]["effect_unsampled"].mean() for n in names])
    on = np.array([tables[n]["effect"].mean() for n in names]) - off
    x = np.arange(len(names))
    axes[1].bar(x, off, color="tab:green", label="on unsampled lines")
    axes[1].bar(x, on, bottom=np.where(on >= 0, off, 0), color="tab:orange", label="on sampled lines")
    axes[1].errorbar(x, [tables[n]["ceiling"].mean() for n in names], fmt="k_", ms=30, label="mean ceiling")
    axes[1].set_xticks(x, names)
    axes[1].axhline(0, color="k", lw=0.6)
    top = max([tables[n]["ceiling"].mean() for n in names] + list(off + np.maximum(on, 0)) + [0.1])
    axes[1].set_ylim(top=1.45 * top)
    axes[1].set_ylabel("mean effect")
    axes[1].legend(fontsize=8)
    axes[1].set_title("where the achieved effect lives in k-space", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
