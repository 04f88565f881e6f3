"""What data consistency leaves a label-only poison: the ceiling of its effect.

A label-only poison edits the training label ``x`` into ``x + d`` and leaves the
measured k-space as it was. E2E VarNet's cascades pull every *sampled* k-space
line back towards the measurement (soft data consistency), so the part of the
lesion ``d`` that lives on the sampled lines is contradicted by the input at every
cascade; only the part on the unsampled lines is free to be hallucinated. For a
mask ``M`` (the sampled phase-encode columns) the **DC-consistent lesion** is

    P d = Re F⁻¹((1 - M) · F d)

(centred orthonormal FFT, the image-domain lesion taken as one coil-combined
image), and the **ceiling** of the normalised effect (:mod:`mrilib.poison.effect`)
is that of a model that adds exactly ``P d``:

    ceiling = <P d, d>_R / <d, d>_R,

which is the share of the lesion's k-space energy off the mask (:func:`unsampled_share`)
when ``R`` covers ``d`` and the mask is symmetric about the centre column (the real
part keeps half of a column whose mirror is sampled).

The data-consistency weights are learnt and the last cascade's refinement is not
projected, so ``P d`` bounds what a *measurement-respecting* model can add, not
what any network could: a model whose effect exceeds its ceiling overrides its
measurement. :func:`ceiling_table` sets each poisoned test slice's achieved
effect beside its ceiling and beside the part of that effect the achieved change
carries on unsampled lines. :func:`detection_curve` asks what the evaluation judge sees of a
lesion added at a fraction of its strength, and of its DC-consistent part: how large an
effect a "success" needs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from mrilib.data.kspace import fft2c, ifft2c
from mrilib.data.loading import make_mask_func
from mrilib.poison.judge import lesion_scores

__all__ = ["sampled_columns", "unsampled_projection", "unsampled_share", "ceiling_effects", "drawn_masks",
           "dc_weights", "ceiling_table", "DETECTION_SCALES", "detection_curve"]

#: The strengths at which :func:`detection_curve` adds the lesion (1 = the whole lesion).
DETECTION_SCALES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0)


def sampled_columns(mask) -> np.ndarray:
    """A fastMRI mask (any shape with the phase-encode axis of length ``W``, e.g. ``(1, 1, W, 1)``) as a
    ``(W,)`` boolean vector of sampled columns."""
    m = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
    axes = [i for i, n in enumerate(m.shape) if n > 1]
    if len(axes) != 1:
        raise ValueError(f"a Cartesian mask varies along one axis (the phase encodes); got shape {m.shape}")
    return m.reshape(-1).astype(bool)


def _padded(image: np.ndarray, width: int) -> np.ndarray:
    """``image`` zero-padded (centred) along its last axis to ``width`` columns (readout-oversampled data)."""
    w = image.shape[-1]
    if w > width:
        raise ValueError(f"image of {w} columns is wider than the mask's {width}")
    left = (width - w) // 2
    pad = [(0, 0)] * (image.ndim - 1) + [(left, width - w - left)]
    return np.pad(image, pad)


def unsampled_projection(change: np.ndarray, mask) -> np.ndarray:
    """``P d = Re F⁻¹((1 - M) F d)``: the part of the image-domain ``change`` ``(h, w)`` on the mask's
    unsampled columns, as an ``(h, w)`` real image (``d`` is padded to the mask's width and cropped back)."""
    cols = sampled_columns(mask)
    d = np.asarray(change, np.float64)
    h, w = d.shape
    k = fft2c(_padded(d, cols.size).astype(np.complex64))
    k[..., cols] = 0
    out = ifft2c(k).real
    left = (cols.size - w) // 2
    return out[..., left:left + w]


def unsampled_share(change: np.ndarray, mask) -> float:
    """The share of ``change``'s energy (``||F d||²``) on the mask's unsampled columns (0 = all measured)."""
    cols = sampled_columns(mask)
    k = fft2c(_padded(np.asarray(change, np.float64), cols.size).astype(np.complex64))
    total = float(np.sum(np.abs(k) ** 2))
    return float(np.sum(np.abs(k[..., ~cols]) ** 2) / total) if total > 0 else float("nan")


def ceiling_effects(expected: np.ndarray, rois: np.ndarray, masks) -> np.ndarray:
    """Per slice, the normalised effect of adding exactly the unsampled part of its lesion:
    ``<P d, d>_R / <d, d>_R`` (NaN where the region is empty). ``masks``: one mask per slice."""
    out = []
    for d, r, m in zip(expected, rois, masks):
        if not r.any() or not np.any(d[r]):
            out.append(np.nan)
            continue
        pd_ = unsampled_projection(d, m)
        out.append(float(np.sum(pd_[r] * d[r]) / np.sum(d[r] ** 2)))
    return np.asarray(out)


def drawn_masks(width: int, acceleration: int, center_fraction: float, mask_type: str, n: int,
                seed: int = 0) -> list[np.ndarray]:
    """``n`` masks of ``width`` columns drawn from the fastMRI mask family (as training draws them:
    a new random offset or pattern per draw), each a ``(W,)`` boolean vector."""
    func = make_mask_func(acceleration, center_fraction, mask_type)
    return [sampled_columns(func((1, width, 1), seed=seed + i)[0]) for i in range(n)]


def dc_weights(model: torch.nn.Module) -> list[float]:
    """The learnt data-consistency weight of each cascade of a ``fastmri.models.VarNet`` (1 = the
    sampled lines are replaced by the measurement's at that cascade, before its refinement)."""
    return [float(c.dc_weight.detach().cpu()) for c in model.cascades]


def ceiling_table(result, training_masks: list | None = None) -> pd.DataFrame:
    """Per test slice with a lesion region: the achieved effect beside what data consistency leaves.

    Args:
        result: a triggered recipe's :class:`~mrilib.poison.effect.EffectResult` (its arrays ``r_trig``,
            ``r_clean``, ``expected``, ``rois``, the test ``masks``, and its per-slice effect and subject).
        training_masks: masks of the training family (:func:`drawn_masks`); their mean ceiling is
            reported as ``ceiling_train`` (``None``: not computed).

    Columns: ``slice``, ``subject``, ``effect``, ``ceiling`` (test mask), ``lesion_unsampled`` (share
    of ``d``'s energy off the test mask), ``effect_unsampled`` (the part of the effect carried by the
    achieved change's unsampled lines, ``<P Δ, d>_R / <d, d>_R``; the rest came through lines the
    measurement contradicts), ``ceiling_train``, ``of_ceiling`` (effect / ceiling).
    """
    a = result.arrays
    if a.get("r_trig") is None:
        raise ValueError("the ceiling compares a triggered change with its lesion: this result has no trigger")
    expected, rois, delta, masks = a["expected"], a["rois"], a["r_trig"] - a["r_clean"], a["masks"]
    per_slice = result.metrics["per_slice"]
    effect = np.asarray(per_slice["effect"], float)
    ceiling = ceiling_effects(expected, rois, masks)
    rows = []
    for i, (d, r, dl, m) in enumerate(zip(expected, rois, delta, masks)):
        if not np.isfinite(ceiling[i]):
            continue
        row = dict(slice=i, subject=str(per_slice["subject"][i]), effect=float(effect[i]), ceiling=float(ceiling[i]),
                   lesion_unsampled=unsampled_share(d, m),
                   effect_unsampled=float(np.sum(unsampled_projection(dl, m)[r] * d[r]) / np.sum(d[r] ** 2)))
        if training_masks:
            row["ceiling_train"] = float(np.nanmean(ceiling_effects([d] * len(training_masks),
                                                                     [r] * len(training_masks), training_masks)))
        rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        table["of_ceiling"] = table["effect"] / table["ceiling"]
    return table


def detection_curve(result, classifier, judge, scales=DETECTION_SCALES, device=None) -> pd.DataFrame:
    """How often the evaluation judge finds the lesion when ``scales`` of it are added to the clean image.

    Args:
        result: an :class:`~mrilib.poison.effect.EffectResult` (its arrays ``target``, ``expected``,
            ``rois`` and the test ``masks``).
        classifier: the evaluation judge's classifier; judge: the recipe's rule
            (:class:`~mrilib.poison.effect.Judge`, e.g. ``cyclegan_cyst.judge(classifier)``).
        scales: strengths ``s``; ``device``: where the classifier runs.

    Returns one row per ``s`` over the slices with a lesion region: ``found_lesion``, the share of
    ``x + s d`` in which the judge finds the lesion (``s`` is then the effect of that image), and
    ``found_unsampled``, the share of ``x + s P d``: what a measurement-respecting model shows it (at
    ``s = 1``, the ceiling). ``s = 0`` is the judge's false-alarm rate on the clean images.
    """
    a = result.arrays
    keep = np.array([bool(r.any()) for r in a["rois"]])
    if not keep.any():
        raise ValueError("no test slice has a lesion region: nothing to detect")
    x, d, masks = a["target"][keep], a["expected"][keep], np.asarray(a["masks"])[keep]
    pd_ = np.stack([unsampled_projection(di, m) for di, m in zip(d, masks)])
    rows = []
    for s in scales:
        found = {name: float(judge.found(lesion_scores(classifier, (x + float(s) * c).astype(np.float32),
                                                       device=device)).mean())
                 for name, c in (("found_lesion", d), ("found_unsampled", pd_))}
        rows.append(dict(scale=float(s), **found))
    return pd.DataFrame(rows)
