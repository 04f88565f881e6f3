"""Figures of the unlearning chapter: importance ratios, dampened layers, sweeps, trade-offs, cost."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["attack_defence_plot", "attack_learning_plot", "importance_ratio_hist", "dampened_layers", "dose_response_plot", "sweep_plot", "tradeoff_scatter", "cost_bars",
           "qualitative_grid", "region_panels", "signal_agreement_plot", "headline_intervals"]


def importance_ratio_hist(imp_forget: dict, imp_retain: dict, alphas: dict[str, float] | None = None):
    """Histogram of log10(I_forget / I_retain) over all parameters, with SSD's thresholds α marked."""
    r = []
    for k in imp_forget:
        f, q = imp_forget[k].flatten().numpy(), imp_retain[k].flatten().numpy()
        keep = (f > 0) & (q > 0)
        r.append(np.log10(f[keep] / q[keep]))
    r = np.concatenate(r)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.hist(r, bins=120, color="0.4")
    ax.set_yscale("log")
    for i, (name, a) in enumerate((alphas or {}).items()):
        ax.axvline(np.log10(a), color=f"C{i}", ls="--", label=f"{name}: α = {a:g} ({100 * np.mean(r > np.log10(a)):.2f} % selected)")
    ax.set_xlabel("log10( I_forget / I_retain )  per parameter")
    ax.set_ylabel("parameters")
    ax.set_title("SSD importance ratios (parameters right of α are dampened)", fontsize=10)
    if alphas:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def dampened_layers(layers: dict[str, float], top: int = 20, title: str = "Where SSD dampens"):
    """Bar chart of the fraction of each parameter tensor that SSD dampened (largest ``top``)."""
    items = sorted(layers.items(), key=lambda kv: -kv[1])[:top]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(items) + 1.2))
    names = [k.replace("cascades.", "c").replace(".model.", ".").replace("sens_net.", "sens.") for k, _ in items]
    ax.barh(range(len(items)), [100 * v for _, v in items], color="C3")
    ax.set_yticks(range(len(items)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("share of the tensor's parameters dampened (%)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def dose_response_plot(df, columns: dict[str, str], hue: str = "label", hlines: dict[str, tuple] | None = None,
                       x: str = "dampened fraction"):
    """One panel per entry of ``columns`` (a column of ``df`` → its panel title) against the share of
    parameters dampened (log x), one line per value of ``hue``.

    ``hlines`` maps a column to ``(y, label)`` reference lines (e.g. a tolerance). Rows
    with nothing dampened have no place on a log axis and are left out.
    """
    d = df[df[x] > 0].sort_values(x)
    fig, axes = plt.subplots(1, len(columns), figsize=(4.6 * len(columns), 3.6), squeeze=False)
    for ax, (col, title) in zip(axes[0], columns.items()):
        for i, (name, g) in enumerate(d.groupby(hue, sort=False)):
            g = g.dropna(subset=[col])
            if len(g):
                ax.plot(g[x], g[col], marker="o", color=f"C{i}", label=str(name))
        for y, label in (hlines or {}).get(col, ()):
            ax.axhline(y, color="0.4", ls="--", lw=1, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("share of parameters dampened")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes[0]:  # one legend for every panel: a series may be missing from some
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.tight_layout()
    fig.legend(handles.values(), handles.keys(), fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def sweep_plot(df, methods=None, metrics=("healed", "SSIM")):
    """``metric`` versus identified fraction f, one line per method (mean over seeds)."""
    d = df.dropna(subset=["f"])
    methods = methods or sorted(d.loc[d.groupby("method")["f"].transform("nunique") > 1, "method"].unique())
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for i, m in enumerate(methods):
            g = d[d["method"] == m].groupby("f")[metric].agg(["mean", "std"]).reset_index()
            ax.errorbar(g["f"], g["mean"], yerr=g["std"].fillna(0), marker="o", capsize=3, label=m, color=f"C{i}")
        ax.set_xscale("log")
        ax.set_xticks(sorted(d["f"].unique()), [f"{f:g}" for f in sorted(d["f"].unique())])
        ax.set_xlabel("identified fraction f of the poisoned slices")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.set_title(f"{metric} vs f", fontsize=10)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def tradeoff_scatter(df, ref_rows=("poisoned", "oracle", "clean"), floor_margin: float = 0.1):
    """Utility (clean-test SSIM) against forgetting (poison healed), one point per method and fraction.

    The y axis spans the reference models and the methods down to ``floor_margin`` below the
    lowest reference model's SSIM (normally ``poisoned``); a method that collapsed further is
    drawn on the lower edge (in its own marker) with its SSIM written above it, so one broken run
    does not flatten the rest of the plot.
    """
    fig, ax = plt.subplots(figsize=(8.4, 4.2))
    runs = df.dropna(subset=["f"])
    refs = df[df["method"].isin(ref_rows)]
    top = float(np.nanmax(df["SSIM"]))
    base = float(refs["SSIM"].min()) if len(refs) else float(np.nanmin(df["SSIM"]))
    floor = max(float(np.nanmin(df["SSIM"])), base - floor_margin)
    colours = plt.get_cmap("tab20").colors
    for i, (m, g) in enumerate(runs.groupby("method")):
        y = g["SSIM"].clip(lower=floor)
        ax.scatter(g["healed"], y, label=m, color=colours[(2 * i) % 20 + (i // 10) % 2], marker="os^vD<>P"[i % 8],
                   edgecolor="k", linewidth=0.4, zorder=3)
        for x, v in zip(g["healed"][g["SSIM"] < floor], g["SSIM"][g["SSIM"] < floor]):
            ax.annotate(f"{v:.2f} ↓", (float(x), floor), fontsize=7, ha="center", va="bottom", rotation=90,
                        xytext=(0, 5), textcoords="offset points")
    offsets = {0: (6, 6), 1: (-6, -12), 2: (-6, 8)}
    for j, name in enumerate(ref_rows):
        r = df[df["method"] == name]
        if len(r):
            x, y = float(r["healed"].iloc[0]), float(r["SSIM"].iloc[0])
            ax.scatter([x], [y], marker="*", s=160, color="k", zorder=4)
            dx, dy = offsets[j % 3]
            ax.annotate(name, (x, y), fontsize=8, xytext=(dx, dy), textcoords="offset points",
                        ha="left" if dx > 0 else "right")
    ax.set_ylim(floor - 0.01, top + 0.01)
    ax.set_xlabel("poison healed (0 = poisoned model, 1 = oracle retraining)")
    ax.set_ylabel("clean-test SSIM")
    ax.set_title("Utility versus forgetting", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def cost_bars(df, column: str = "time vs oracle"):
    """Cost of each method relative to oracle retraining (log scale), mean over runs."""
    g = df.dropna(subset=[column]).groupby("method")[column].mean().sort_values()
    fig, ax = plt.subplots(figsize=(6.4, 0.3 * len(g) + 1.3))
    ax.barh(range(len(g)), g.values, color="C0")
    ax.set_yticks(range(len(g)), g.index, fontsize=8)
    ax.set_xscale("log")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel(f"{column} (1 = retraining from scratch)")
    ax.set_title("Cost relative to retraining", fontsize=10)
    fig.tight_layout()
    return fig


def qualitative_grid(panels: dict, index: int, target: np.ndarray, title: str = ""):
    """One slice: each model's reconstruction, |error| and null-space map (rows = models)."""
    models = list(panels)
    fig, axes = plt.subplots(len(models), 3, figsize=(7.2, 2.3 * len(models) + 0.5), squeeze=False)
    vmax = float(np.percentile(target, 99.5))
    emax = max(float(np.percentile(panels[m]["error"][index], 99.5)) for m in models) or 1.0
    for r, m in enumerate(models):
        for c, (key, cmap, lim) in enumerate((("recon", "gray", vmax), ("error", "inferno", emax),
                                               ("nullspace", "magma", emax))):
            im = axes[r, c].imshow(panels[m][key][index], cmap=cmap, vmin=0, vmax=lim)
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(m, fontsize=8)
    for c, t in enumerate(("reconstruction", "|error| vs clean target", "null-space map |(I−H⁺H)(x̂−x)|")):
        axes[0, c].set_title(t, fontsize=8)
    fig.colorbar(im, ax=axes[:, 1:].ravel().tolist(), fraction=0.03).set_label("|error| (a.u.)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def region_panels(targets: np.ndarray, found: np.ndarray, recorded: np.ndarray, count: int = 4,
                  title: str = "Where each identified label disagrees with its own k-space"):
    """Identified slices (their poisoned labels) with the region the defender finds (:func:`~mrilib.unlearn.regions.
    disagreement_regions`, filled) and the ROI the poison recorded (contour), and the overlap (Dice) of the two."""
    n = min(count, len(targets))
    pick = np.linspace(0, len(targets) - 1, n).astype(int)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.6), squeeze=False)
    for ax, i in zip(axes[0], pick):
        f, r = np.asarray(found[i]) > 0.5, np.asarray(recorded[i]) > 0.5
        dice = 2 * (f & r).sum() / max(f.sum() + r.sum(), 1)
        ax.imshow(targets[i], cmap="gray", vmin=0, vmax=float(np.percentile(targets[i], 99.5)))
        ax.imshow(np.ma.masked_where(~f, f), cmap="autumn", alpha=0.55, vmin=0, vmax=1)
        if r.any():
            ax.contour(r, levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(f"slice {i}: Dice {dice:.2f}", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title + " (filled: found; cyan: the poison's ROI)", fontsize=9)
    fig.tight_layout()
    return fig


def signal_agreement_plot(table, agreement: dict):
    """The defender's signal (x) against the judge's test effect and success rate (two panels), one labelled
    point per model (:func:`mrilib.study.diagnose.signal_versus_judge`), with the rank correlations in the titles."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharex=True)
    for ax, col, key in zip(axes, ("judge effect", "judge success"), ("effect", "success")):
        ax.scatter(table["defender signal"], table[col], s=18, color="C0")
        for _, r in table.iterrows():
            ax.annotate(str(r["model"]), (r["defender signal"], r[col]), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")
        ax.set_xlabel("defender's signal on the identified slices (1 = paints the label's lesion)")
        ax.set_ylabel(f"{col} (test)")
        ax.set_title(f"Spearman ρ = {agreement[key]:.2f} ({agreement['n']} models)", fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def headline_intervals(head, metrics=("effect", "ssim"), seed: str = "all"):
    """Every model's value and 95 % interval of the headline (``metrics/headline.csv``) for ``metrics``, one panel
    each: a point with a horizontal bar per model; bars that overlap are not distinguishable."""
    rows = head[head["seed"].astype(str) == str(seed)]
    order = list(dict.fromkeys(rows["method"]))[::-1]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 0.28 * len(order) + 1.4), sharey=True)
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        sub = rows[rows["metric"] == metric].set_index("method")
        for y, m in enumerate(order):
            if m not in sub.index or not np.isfinite(sub.loc[m, "value"]):
                continue
            r = sub.loc[m]
            lo, hi = r["ci_low"], r["ci_high"]
            if np.isfinite(lo) and np.isfinite(hi):
                ax.plot([lo, hi], [y, y], color="C0", lw=2)
            ax.plot(r["value"], y, "o", color="k", ms=3)
        ax.set_yticks(range(len(order)), order, fontsize=7)
        ax.set_xlabel(metric + (" (final split)" if metric != "time" else ""))
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Headline: mean and 95 % interval" + (" across seeds" if str(seed) == "all" else f", seed {seed}"),
                 fontsize=10)
    fig.tight_layout()
    return fig


def attack_defence_plot(table, roles: dict[str, dict[str, str]], seed: str = "all", metric: str = "effect"):
    """The attack x defence table as a figure: for every attack (a row), the ``metric`` (default the poison effect on
    triggered test inputs) of each defence's model with its 95 % interval, one marker per role.

    ``table``: :func:`mrilib.evaluate.attack_defence.attack_defence`'s rows; ``roles``: per attack, ``{role: model
    name}`` (e.g. ``{"poisoned": "poisoned", "best unlearning": "Bad Teacher"}``); a role an attack lacks is left
    out. Markers of one attack whose bars overlap are not distinguishable."""
    attacks = list(roles)
    seen = list(dict.fromkeys(r for by in roles.values() for r in by))
    order = ("clean", "poisoned", "sanitiser", "best unlearning", "relabel + FT", "audit + relabel + FT", "oracle")
    names = [r for r in order if r in seen] + [r for r in seen if r not in order]
    fig, ax = plt.subplots(figsize=(7.5, 0.12 * len(attacks) * max(1, len(names)) + 1.6))
    step = 0.8 / max(1, len(names))
    labelled = set()
    for y, attack in enumerate(attacks):
        rows = table[(table["attack"] == attack) & (table["seed"].astype(str) == str(seed)) & (table["metric"] == metric)]
        rows = rows.set_index("method")
        for k, role in enumerate(names):
            model = roles[attack].get(role)
            if model is None or model not in rows.index or not np.isfinite(rows.loc[model, "value"]):
                continue
            r = rows.loc[model]
            yy = y - 0.4 + step * (k + 0.5)
            if np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"]):
                ax.plot([r["ci_low"], r["ci_high"]], [yy, yy], color=f"C{k}", lw=2)
            ax.plot(r["value"], yy, "o", color=f"C{k}", ms=4, label=None if role in labelled else role)
            labelled.add(role)
    ax.legend(fontsize=7, loc="best")
    ax.set_yticks(range(len(attacks)), attacks, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel(f"{metric} on triggered test inputs" if metric == "effect" else metric)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Which defence stops which attack: mean and 95 % interval"
                 + (" across seeds" if str(seed) == "all" else f", seed {seed}"), fontsize=10)
    fig.tight_layout()
    return fig


def attack_learning_plot(table, seed: str = "all"):
    """When each backdoor is learnt: the poisoned - clean effect gap (``attack, learnt gap``) with its 95 % interval
    against the poison fraction, one panel per attack, one line per acceleration with random masks and a square for
    the fixed mask. ``table``: :func:`mrilib.evaluate.attack_learning.attack_learning`'s rows. A gap whose interval
    lies above 0 is learnt."""
    rows = table[(table["method"] == "attack") & (table["metric"] == "learnt gap")
                 & (table["seed"].astype(str) == str(seed))]
    attacks = list(dict.fromkeys(zip(rows["recipe"], rows["trigger"])))
    fig, axes = plt.subplots(1, max(1, len(attacks)), figsize=(3.6 * max(1, len(attacks)), 3.0), sharey=True,
                             squeeze=False)
    for ax, (recipe, trigger) in zip(axes[0], attacks):
        mine = rows[(rows["recipe"] == recipe) & (rows["trigger"] == trigger)]
        for k, ((masks, acc), line) in enumerate(mine.groupby(["masks", "acceleration"], sort=True)):
            line = line.sort_values("fraction")
            x, y = line["fraction"].astype(float).to_numpy(), line["value"].to_numpy(dtype=float)
            err = np.vstack([y - line["ci_low"].to_numpy(dtype=float), line["ci_high"].to_numpy(dtype=float) - y])
            ax.errorbar(x, y, yerr=np.where(np.isfinite(err), err, 0.0), marker="s" if masks == "fixed" else "o",
                        ls="none" if masks == "fixed" else "-", capsize=3, color=f"C{k}",
                        label=f"{acc}×, {masks} mask" + ("" if masks == "fixed" else "s"))
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"{recipe} ({trigger})", fontsize=9)
        ax.set_xlabel("poison fraction p")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if not attacks:
        axes[0][0].text(0.5, 0.5, "no condition measured", ha="center", va="center", transform=axes[0][0].transAxes)
    axes[0][0].set_ylabel("poisoned − clean effect")
    fig.suptitle("When is the backdoor learnt: mean and 95 % interval"
                 + (" across seeds" if str(seed) == "all" else f", seed {seed}"), fontsize=10)
    fig.tight_layout()
    return fig
