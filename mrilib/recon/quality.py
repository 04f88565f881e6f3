"""Image-quality metrics of a reconstruction: fastMRI's SSIM / PSNR / NMSE.

Data range convention (fastMRI)
    SSIM and PSNR need the data range of the images. fastMRI's evaluation uses the
    *target volume's* maximum (``maxval = target.max()`` over the whole volume, which
    is the ``max`` attribute of a fastMRI volume and ``VarNetSample.max_value``), not
    the slice's maximum. The per-slice metrics here do the same: each slice is scored
    with its volume's ``max``, so a slice's SSIM equals the one fastMRI's evaluation
    would give it, and the mean over a volume's slices equals fastMRI's volume SSIM.
    NMSE is ``||gt - pred||² / ||gt||²`` (no data range). PSNR is in dB.

``fastmri.evaluate.ssim`` returns a shape-(1,) array with numpy 2 (and needs a 3-D
stack); the wrappers here accept 2-D or 3-D arrays and return Python floats.
"""

from __future__ import annotations

import numpy as np
import torch
from fastmri import evaluate as fe

__all__ = ["ssim", "psnr", "nmse", "image_metrics", "as_array"]


def as_array(x) -> np.ndarray:
    """A float64 numpy array from a tensor or array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()  # to numpy
    return np.asarray(x, dtype=np.float64)


def _stack(gt, pred) -> tuple[np.ndarray, np.ndarray]:
    """Both as 3-D ``(slices, H, W)`` arrays of equal shape."""
    gt, pred = as_array(gt), as_array(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    if gt.ndim == 2:
        gt, pred = gt[None], pred[None]
    if gt.ndim != 3:
        raise ValueError(f"expected a 2-D image or a 3-D stack, got shape {gt.shape}")
    return gt, pred


def ssim(gt, pred, maxval: float | None = None) -> float:
    """Structural similarity (fastMRI / scikit-image, 7x7 window), mean over slices.

    ``maxval``: the data range; default ``gt.max()`` (pass the volume's ``max``
    when scoring single slices, see the module docstring).
    """
    gt, pred = _stack(gt, pred)
    return float(np.asarray(fe.ssim(gt, pred, maxval=maxval)).reshape(-1)[0])


def psnr(gt, pred, maxval: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(maxval² / MSE)``; ``maxval`` default ``gt.max()``."""
    gt, pred = _stack(gt, pred)
    return float(fe.psnr(gt, pred, maxval=maxval))


def nmse(gt, pred) -> float:
    """Normalised mean squared error ``||gt - pred||² / ||gt||²``."""
    gt, pred = _stack(gt, pred)
    return float(fe.nmse(gt, pred))


def image_metrics(gt, pred, maxval: float | None = None) -> dict:
    """``{"ssim", "psnr", "nmse"}`` of one image (or stack) with data range ``maxval``."""
    return dict(ssim=ssim(gt, pred, maxval), psnr=psnr(gt, pred, maxval), nmse=nmse(gt, pred))
