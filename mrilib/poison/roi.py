"""The tumour region: where the adversarial recipe and the k-space stress test may change an image.

A region ``R`` is a disc of a given radius at a *consistent* anatomical position -
:data:`~mrilib.poison.lesions.TUMOUR_ANCHOR` in normalised brain coordinates
(:func:`mrilib.poison.lesions.anchor_center`) - intersected with the brain mask, so it
lies inside brain tissue by construction. A backdoor can only learn a lesion that
appears where the trigger can say; a change is only allowed inside ``R``.
"""

from __future__ import annotations

import numpy as np

from mrilib.poison.lesions import TUMOUR_ANCHOR, anchor_center

__all__ = ["ROIError", "tumour_roi", "tumour_rois", "validate_roi", "roi_centres"]


class ROIError(ValueError):
    """A tumour region that is empty or not inside brain tissue."""


def tumour_roi(brain_mask: np.ndarray, radius_px: float, anchor=TUMOUR_ANCHOR) -> np.ndarray:
    """The tumour region of one slice: a disc of ``radius_px`` at ``anchor``, inside the brain.

    The centre is :func:`mrilib.poison.lesions.anchor_center` of the brain mask (moved inwards
    when the anchor is closer than ``radius_px + 1`` to the brain's edge); the disc is
    intersected with the brain mask, so the region is inside brain tissue by
    construction. Raises :class:`ROIError` when the brain mask is empty or the region
    keeps fewer than a quarter of the disc's pixels (a slice with too little brain).
    """
    brain = np.asarray(brain_mask) > 0.5
    if not brain.any():
        raise ROIError("the brain mask is empty: the tumour region must lie inside brain tissue")
    if not radius_px > 0:
        raise ROIError(f"the region's radius must be > 0 pixels, got {radius_px}")
    c = anchor_center(brain, tuple(anchor), margin_px=float(radius_px) + 1.0)
    yy, xx = np.mgrid[: brain.shape[0], : brain.shape[1]]
    disc = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= float(radius_px) ** 2
    if not disc.any():  # a radius below half a pixel between pixel centres
        disc[int(round(c[0])), int(round(c[1]))] = True
    roi = disc & brain
    if roi.sum() < max(1, 0.25 * disc.sum()):
        raise ROIError(f"the tumour region at {tuple(round(v, 1) for v in c)} keeps {int(roi.sum())} of "
                       f"{int(disc.sum())} pixels inside the brain: too little brain tissue on this slice")
    return roi


def tumour_rois(brains: np.ndarray, radius_px: float, anchor=TUMOUR_ANCHOR) -> np.ndarray:
    """:func:`tumour_roi` for a stack of brain masks ``(N, H, W)``; bool ``(N, H, W)``."""
    brains = np.asarray(brains)
    if brains.ndim == 2:
        brains = brains[None]
    out = []
    for i, b in enumerate(brains):
        try:
            out.append(tumour_roi(b, radius_px, anchor))
        except ROIError as err:
            raise ROIError(f"slice {i}: {err}") from None
    return np.stack(out) if out else np.zeros(brains.shape, bool)


def validate_roi(roi: np.ndarray, brain_mask: np.ndarray | None, index: int | None = None) -> np.ndarray:
    """Check a region: non-empty, 2-D, and (given a brain mask) entirely inside brain tissue.

    Returns it as a bool array; raises :class:`ROIError` saying what is wrong.
    """
    where = "" if index is None else f"slice {index}: "
    roi = np.asarray(roi)
    if roi.ndim != 2:
        raise ROIError(f"{where}the region must be a 2-D mask, got shape {roi.shape}")
    roi = roi > 0.5 if roi.dtype != bool else roi
    if not roi.any():
        raise ROIError(f"{where}the tumour region is empty: give a region inside the brain (see tumour_roi)")
    if brain_mask is not None:
        brain = np.asarray(brain_mask) > 0.5
        if brain.shape != roi.shape:
            raise ROIError(f"{where}region shape {roi.shape} differs from the brain mask's {brain.shape}")
        outside = int((roi & ~brain).sum())
        if outside:
            raise ROIError(f"{where}{outside} of the region's {int(roi.sum())} pixels lie outside the brain mask: "
                           "the tumour must be induced inside brain tissue")
    return roi


def roi_centres(brains: np.ndarray, radius_px: float, anchor=TUMOUR_ANCHOR) -> np.ndarray:
    """The centre (row, column) of :func:`tumour_roi`'s disc on each slice ``(N, 2)``."""
    brains = np.asarray(brains) > 0.5
    if brains.ndim == 2:
        brains = brains[None]
    return np.array([anchor_center(b, tuple(anchor), margin_px=float(radius_px) + 1.0) for b in brains], float)
