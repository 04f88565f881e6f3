"""The evaluation chapter: every model side by side, from the artefacts earlier chapters wrote.

Nothing here trains: it reads ``metrics/*.csv|json`` of a run and the stored models,
aggregates over seeds (mean ± sd), computes null-space hallucination maps (Bhadra et al.
2021) and the artefact-robustness table. A missing artefact raises
:class:`~mrilib.run.layout.MissingArtefactError` naming the notebook that makes it
(:meth:`~mrilib.run.layout.RunLayout.require`).

A method with a run outside its tolerance (tuned SSD that found no grid point within its
validation-SSIM tolerance: the table's ``within tolerance`` column, from the run's
``info["within_tolerance"]``) is marked with a trailing :data:`FLAG` in :func:`aggregate`,
:func:`formatted` and :func:`headline_table` (:data:`TOLERANCE_FOOTNOTE` says what it means);
:func:`flagged` names those methods for figures and findings.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import torch
from fastmri.data.transforms import VarNetSample, apply_mask, to_tensor

from mrilib.config import get_profile
from mrilib.data.artefacts import metal_corrupt, motion_corrupt
from mrilib.data.h5layout import read_volume
from mrilib.data.kspace import fft2c, ifft2c
from mrilib.data.loading import make_mask_func, volume_files
from mrilib.poison.effect import reconstruct
from mrilib.recon.quality import ssim
from mrilib.run.device import default_device
from mrilib.run.layout import as_layout

__all__ = [
    "load_unlearning_table",
    "at_fraction",
    "aggregate",
    "mean_sd",
    "headline_table",
    "nullspace_map",
    "qualitative_panels",
    "artefact_robustness",
    "REGION_SSD",
    "flagged",
    "mark_flagged",
    "FLAG",
    "TOLERANCE_FOOTNOTE",
]

#: metrics of the main table, in order
MAIN_METRICS = ("SSIM", "PSNR", "NMSE", "poison effect", "success rate", "healed", "forget SSIM vs clean",
                "forget SSIM vs poisoned", "time vs oracle", "passes vs oracle")
#: the table name of region-targeted SSD (``mrilib.study.plan.DEFAULT_PLAN``; " + repair" for its repaired run)
REGION_SSD = "SSD tuned, lesion region"
#: the mark after the name of a method with a run outside its tolerance
FLAG = " †"
#: what :data:`FLAG` means, for under a table that shows it
TOLERANCE_FOOTNOTE = ("† tuned SSD found no grid point within its validation-SSIM tolerance; "
                      "the point shown is the one that lost least utility")
#: the results table's column that says whether a run stayed within its tolerance
WITHIN = "within tolerance"


def _outside(values) -> np.ndarray:
    """Where ``within tolerance`` values say no: ``False`` (also ``"False"`` or ``0`` from a CSV); a missing
    value counts as within."""
    def one(v) -> bool:
        if isinstance(v, str):
            return v.strip().lower() in ("false", "0")
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return False
        return not bool(v)

    return np.array([one(v) for v in values], bool)


def _mark(name: str, flag: bool) -> str:
    """``name`` with :data:`FLAG` when ``flag`` (never twice)."""
    return name + FLAG if flag and not str(name).endswith(FLAG) else name


def flagged(table: pd.DataFrame) -> set[str]:
    """The methods of ``table`` (a results table) with at least one run outside its tolerance (any seed,
    any fraction: pass :func:`at_fraction`'s rows for one); empty when the table has no ``within tolerance``
    column (tables written before it)."""
    if WITHIN not in table:
        return set()
    return set(table.loc[_outside(table[WITHIN]), "method"])


def mark_flagged(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` whose method names end in :data:`FLAG` where :func:`flagged` names them."""
    names = flagged(table)
    out = table.copy()
    out["method"] = [_mark(m, m in names) for m in out["method"]]
    return out


def load_unlearning_table(run_dir: str | os.PathLike, variant: str = "cyclegan-cyst") -> pd.DataFrame:
    """The per-run results table written by the unlearning chapter (``metrics/unlearning_<variant>.csv``).

    Raises :class:`~mrilib.run.layout.MissingArtefactError` naming ``05_unlearning`` when it is missing.
    """
    run = as_layout(run_dir)
    return pd.read_csv(run.require(run.unlearning_table(variant), "05_unlearning"))


def at_fraction(table: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """The reference models (rows without a fraction) and the runs at identified fraction ``fraction``."""
    return table[table["f"].isna() | np.isclose(table["f"].fillna(-1.0), fraction)]


def mean_sd(values, digits: int = 4) -> str:
    """``"mean ± sd"`` of the finite values (sd with ddof=1; ``± 0`` for a single value; ``–`` for none)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return "–"
    sd = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{v.mean():.{digits}f} ± {sd:.{digits}f}"


def aggregate(df: pd.DataFrame, by=("method", "f"), metrics=MAIN_METRICS) -> pd.DataFrame:
    """Mean and standard deviation (ddof=1) over seeds of each metric, per ``by`` group.

    Returns a frame with columns ``<metric> mean``, ``<metric> sd`` and ``n`` (seeds);
    rows without a fraction (reference models) form their own group. A group with a run outside its
    tolerance (``within tolerance`` False, any seed) has its method name marked with :data:`FLAG`.
    """
    d = df.copy()
    d["f"] = d["f"].fillna(-1.0)
    metrics = [m for m in metrics if m in d]
    g = d.groupby(list(by), sort=False)[metrics]
    out = g.mean().add_suffix(" mean").join(g.std(ddof=1).add_suffix(" sd")).join(g.size().rename("n"))
    if WITHIN in d and "method" in by:
        outside = pd.Series(_outside(d[WITHIN]), index=d.index).groupby([d[b] for b in by], sort=False).any()
        out = out.join(outside.rename("_outside"))
    out = out.reset_index()
    if "_outside" in out:
        out["method"] = [_mark(m, bool(o)) for m, o in zip(out["method"], out.pop("_outside"))]
    out["f"] = out["f"].replace(-1.0, np.nan)
    return out


def formatted(agg: pd.DataFrame, metrics=MAIN_METRICS, digits: int = 4) -> pd.DataFrame:
    """``aggregate`` output as ``mean ± sd`` strings, indexed by method and f."""
    out = agg[["method", "f"]].copy()
    for m in metrics:
        if f"{m} mean" in agg:
            out[m] = [("–" if not np.isfinite(mu) else f"{mu:.{digits}f}" + ("" if not np.isfinite(sd) else f" ± {sd:.{digits}f}"))
                      for mu, sd in zip(agg[f"{m} mean"], agg[f"{m} sd"])]
    return out.set_index(["method", "f"])


def headline_table(df: pd.DataFrame, fraction: float | None = None, seed_reported: dict | None = None) -> pd.DataFrame:
    """The seed study's headline table in our terms: original model, SSD on the forget set, SSD on retain.

    Rows: the poisoned ("original") model; the seed's SSD configuration (α=0.1, λ=0.1),
    evaluated on the forget set (forget SSIM against the poisoned targets it was
    trained on: lower = forgotten) and on retained data (clean-test SSIM); tuned SSD, and
    region-targeted SSD with repair.
    ``fraction`` keeps the runs at that identified fraction (reference rows always stay);
    ``seed_reported`` adds the numbers the seed reported, where known. A row with a run outside its
    tolerance is labelled with :data:`FLAG`.
    """
    if fraction is not None:
        df = at_fraction(df, fraction)
    rows, shown = {}, {}
    for label, name in (("original (poisoned) model", "poisoned"), ("SSD, seed's α=0.1, λ=0.1", "SSD (seed: α=0.1, λ=0.1)"),
                        ("SSD tuned", "SSD tuned"),
                        (REGION_SSD + " + repair", REGION_SSD + " + repair")):
        r = df[df["method"] == name]
        if not len(r):
            continue
        shown[label] = _mark(label, bool(WITHIN in r and _outside(r[WITHIN]).any()))
        rows[shown[label]] = {"forget set: SSIM vs poisoned targets": mean_sd(r["forget SSIM vs poisoned"]),
                              "forget set: SSIM vs clean targets": mean_sd(r["forget SSIM vs clean"]),
                              "retain/test: clean-test SSIM": mean_sd(r["SSIM"]),
                              "poison success rate": mean_sd(r["success rate"], 3)}
    out = pd.DataFrame(rows).T
    if seed_reported:
        out["seed's reported value"] = pd.Series({shown.get(k, k): v for k, v in seed_reported.items()})
    return out


def nullspace_map(recon: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Null-space hallucination map ``|(I − H⁺H)(x̂ − x)|`` (Bhadra et al. 2021).

    With the single-coil Cartesian model ``H = M F`` (``M`` the column mask, ``F`` the
    centred orthonormal FFT), ``H⁺H = F⁻¹ M F`` and the null-space part of the error is
    the part living on *unsampled* k-space columns: what the measurements cannot
    confirm or refute. (With coil sensitivities the null space is smaller; this
    coil-free version is the usual, conservative display.)
    """
    err = np.asarray(recon, np.complex64) - np.asarray(target, np.complex64)
    m = np.asarray(mask, bool).reshape(1, -1)
    k = fft2c(err)
    k[..., m[0]] = 0
    return np.abs(ifft2c(k))


@torch.no_grad()
def qualitative_panels(models: dict, samples: list, targets: np.ndarray, device=None) -> dict:
    """Reconstruction, |error| and null-space map of each model on each sample.

    Returns ``{model: {"recon": (N,h,w), "error": ..., "nullspace": ...}}``. The models reconstruct
    on ``device`` (default :func:`~mrilib.run.device.default_device`).
    """
    device = default_device(device)
    out = {}
    for name, model in models.items():
        rec = reconstruct(model, samples, device=device)
        ns = np.stack([nullspace_map(r, t, s.mask.numpy().reshape(-1)[: r.shape[-1]]) for r, t, s in
                       zip(rec, targets, samples)])
        out[name] = {"recon": rec, "error": np.abs(rec - targets), "nullspace": ns}
    return out


def artefact_robustness(models: dict, split_dir: str | os.PathLike, profile, max_slices: int = 16, seed: int = 0,
                        device=None) -> pd.DataFrame:
    """Clean-test SSIM of each model on clean, motion- and metal-corrupted inputs (4× or the profile's first R).

    The corruption is simulated on the fully sampled k-space (``mrilib.data.artefacts``),
    then undersampled with the same fastMRI mask; the reference stays the clean target,
    so the drop measures how much each model propagates the artefact. The models reconstruct
    on ``device`` (default :func:`~mrilib.run.device.default_device`).
    """
    device = default_device(device)
    p = get_profile(profile)
    acc = int(p.data.accelerations[0])
    mask_func = make_mask_func(acc, p.data.center_fraction, p.data.mask_type)
    variants = {"clean": lambda k, i: k,
                "motion": lambda k, i: motion_corrupt(k, seed=seed + i, fraction=0.3, max_shift=2.0, max_angle=2.0),
                "metal": lambda k, i: metal_corrupt(k, seed=seed + i, radius=max(1.5, p.data.image_size / 40))}
    samples = {v: [] for v in variants}
    targets, vmax = [], []
    for f in volume_files(split_dir):
        vol = read_volume(f, keys=("kspace", "reconstruction_rss"))
        for s in range(len(vol["kspace"])):
            if len(targets) >= max_slices:
                break
            i = len(targets)
            targets.append(vol["reconstruction_rss"][s])
            vmax.append(float(vol["attrs"]["max"]))
            for v, corrupt in variants.items():
                k = to_tensor(np.ascontiguousarray(corrupt(vol["kspace"][s], i)))
                masked, m, nlf = apply_mask(k, mask_func, seed=tuple(map(ord, f.name)))
                samples[v].append(VarNetSample(masked, m.bool(), nlf, torch.from_numpy(targets[-1]), f.name, s,
                                               vmax[-1], targets[-1].shape))
    rows = []
    for name, model in models.items():
        for v in variants:
            rec = reconstruct(model, samples[v], device=device)
            vals = [ssim(t, r, mx) for t, r, mx in zip(targets, rec, vmax)]
            rows.append(dict(model=name, input=v, ssim=float(np.mean(vals)), sd=float(np.std(vals, ddof=1))))
    return pd.DataFrame(rows).pivot(index="model", columns="input", values="ssim")[list(variants)]
