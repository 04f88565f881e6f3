"""Split-wide evaluation of reconstructions: per-slice and per-volume tables, mean ± sd, saved metrics.

The per-image metrics (fastMRI's SSIM / PSNR / NMSE and their data-range convention) are
:mod:`mrilib.recon.quality`.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import torch

from mrilib.data.loading import varnet_dataset
from mrilib.recon.baselines import crop_to, varnet_reconstruct
from mrilib.recon.quality import as_array, image_metrics
from mrilib.run.device import default_device, on_device
from mrilib.run.io import atomic_path, write_json
from mrilib.run.layout import as_layout
from mrilib.run.progress import progress as progress_bar

__all__ = [
    "volume_metrics",
    "evaluate_split",
    "evaluate_methods",
    "summarise",
    "mean_sd_table",
    "save_metrics",
]


def volume_metrics(df_or_gt, pred=None, maxval: float | None = None):
    """fastMRI's volume-level metrics.

    Either ``volume_metrics(gt_volume, pred_volume, maxval)`` → dict (``maxval``
    default ``gt.max()``), or ``volume_metrics(per_slice_df)`` → the per-volume
    means of SSIM (which equal fastMRI's volume SSIM) and PSNR/NMSE recomputed from
    the per-slice sums of squares, one row per ``(method, acceleration, file)``.
    """
    if pred is not None:
        return image_metrics(df_or_gt, pred, maxval)
    df = df_or_gt
    keys = [k for k in ("method", "acceleration", "file") if k in df.columns]
    g = df.groupby(keys, sort=False)
    out = g.agg(ssim=("ssim", "mean"), sse=("sse", "sum"), ssq=("ssq", "sum"), n=("npix", "sum"), maxval=("maxval", "first"))
    out["psnr"] = 10 * np.log10(out["maxval"] ** 2 / (out["sse"] / out["n"]))
    out["nmse"] = out["sse"] / out["ssq"]
    return out[["ssim", "psnr", "nmse"]].reset_index()


def _as_recon(recon, device) -> Callable:
    """A reconstruction function ``sample -> (h, w)`` from a model (run on ``device``, default
    :func:`~mrilib.run.device.default_device`; copied there when elsewhere) or a callable."""
    if isinstance(recon, torch.nn.Module):
        device = default_device(device)
        model = on_device(recon.eval(), device)
        return lambda sample: varnet_reconstruct(model, sample, device=device)
    if not callable(recon):
        raise TypeError(f"recon must be a torch model or a function sample -> image, got {type(recon).__name__}")
    return recon


def evaluate_split(
    recon,
    split_dir: str | os.PathLike,
    acceleration: int = 4,
    center_fraction: float = 0.08,
    mask_type: str = "equispaced_fraction",
    method: str | None = None,
    max_slices: int | None = None,
    device=None,
    progress: bool = False,
) -> pd.DataFrame:
    """Score a reconstruction method on every slice of a split; one row per slice.

    Args:
        recon: a VarNet (``torch.nn.Module``) or a function ``VarNetSample -> image``
            (e.g. :func:`mrilib.recon.baselines.zero_filled`, :class:`mrilib.recon.baselines.CGSense`).
        split_dir: folder of fastMRI-layout volumes (read by
            :func:`mrilib.data.varnet_dataset`: fixed masks seeded by file name).
        acceleration, center_fraction, mask_type: the undersampling.
        method: name for the ``method`` column (default: the class/function name).
        max_slices: score only the first slices (quick looks).
        device: where a model reconstructs (default :func:`~mrilib.run.device.default_device`).

    Returns:
        DataFrame with ``method, acceleration, file, slice, ssim, psnr, nmse, maxval``
        (the volume ``max`` used as data range) and ``sse, ssq, npix`` (sums for
        :func:`volume_metrics`).
    """
    fn = _as_recon(recon, device)
    if method is None:
        method = type(recon).__name__ if isinstance(recon, torch.nn.Module) else getattr(recon, "__name__", type(recon).__name__)
    ds = varnet_dataset(split_dir, acceleration, center_fraction, mask_type)
    n = len(ds) if max_slices is None else min(len(ds), int(max_slices))
    rows = []
    for i in progress_bar(range(n), desc=f"{method} {acceleration}x", disable=not progress, unit="slice"):
        sample = ds[i]
        target = as_array(sample.target)
        pred = as_array(fn(sample))
        if pred.shape != target.shape:
            pred = as_array(crop_to(torch.from_numpy(pred), target.shape))
        mx = float(sample.max_value)
        diff = target - pred
        rows.append(
            dict(
                method=method,
                acceleration=int(acceleration),
                file=sample.fname,
                slice=int(sample.slice_num),
                **image_metrics(target, pred, mx),
                maxval=mx,
                sse=float((diff**2).sum()),
                ssq=float((target**2).sum()),
                npix=int(target.size),
            )
        )
    return pd.DataFrame(rows)


def evaluate_methods(
    methods: Mapping[str, object],
    split_dir: str | os.PathLike,
    accelerations=(4, 8),
    center_fraction: float = 0.08,
    mask_type: str = "equispaced_fraction",
    max_slices: int | None = None,
    device=None,
    progress: bool = False,
) -> pd.DataFrame:
    """:func:`evaluate_split` for every ``{name: recon}`` and acceleration, concatenated."""
    frames = [
        evaluate_split(recon, split_dir, a, center_fraction, mask_type, method=name, max_slices=max_slices,
                       device=device, progress=progress)
        for a in accelerations
        for name, recon in methods.items()
    ]
    return pd.concat(frames, ignore_index=True)


def summarise(df: pd.DataFrame, by=("method", "acceleration"), metrics=("ssim", "psnr", "nmse")) -> pd.DataFrame:
    """Mean, standard deviation and count of each metric over the rows of each group."""
    by = [b for b in by if b in df.columns]
    agg = df.groupby(list(by), sort=False)[list(metrics)].agg(["mean", "std", "count"])
    return agg


def mean_sd_table(df: pd.DataFrame, by=("method", "acceleration"), metrics=("ssim", "psnr", "nmse"), digits=None) -> pd.DataFrame:
    """A table of ``"mean ± sd"`` strings per group (for the book's tables).

    ``digits``: decimals per metric (default SSIM 3, PSNR 2, NMSE 4).
    """
    digits = digits or {"ssim": 3, "psnr": 2, "nmse": 4}
    s = summarise(df, by, metrics)
    out = pd.DataFrame(index=s.index)
    for m in metrics:
        d = digits.get(m, 3)
        out[m.upper() if m != "psnr" else "PSNR (dB)"] = [
            f"{mu:.{d}f} ± {sd:.{d}f}" for mu, sd in zip(s[(m, "mean")], s[(m, "std")].fillna(0.0))
        ]
    out["slices"] = s[(metrics[0], "count")].astype(int)
    return out


def save_metrics(df: pd.DataFrame, run_dir: str | os.PathLike, name: str, extra: dict | None = None) -> dict:
    """Write ``<run_dir>/metrics/<name>.json`` (summary) and ``<name>.csv`` (per slice), atomically.

    The JSON holds ``summary[method][f"{acc}x"] = {ssim_mean, ssim_sd, psnr_mean, ...,
    n}`` over the slices, the data range convention, and ``extra`` (e.g. the model
    configuration and training cost). Returns the JSON content.
    """
    run = as_layout(run_dir)
    s = summarise(df)
    summary: dict = {}
    for (method, acc), row in s.iterrows():
        rec = {}
        for m in ("ssim", "psnr", "nmse"):
            rec[f"{m}_mean"] = float(row[(m, "mean")])
            rec[f"{m}_sd"] = float(row[(m, "std")]) if np.isfinite(row[(m, "std")]) else 0.0
        rec["n"] = int(row[("ssim", "count")])
        summary.setdefault(str(method), {})[f"{int(acc)}x"] = rec
    content = dict(
        summary=summary,
        convention="per-slice SSIM/PSNR with data range = the volume's max (fastMRI); mean and sd over slices; "
        "PSNR in dB; NMSE = ||gt - pred||^2 / ||gt||^2",
        **(extra or {}),
    )
    write_json(run.metric(f"{name}.json"), content)
    with atomic_path(run.metric(f"{name}.csv")) as tmp:
        df.to_csv(tmp, index=False)
    return content
