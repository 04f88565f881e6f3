"""The differentiable pieces the attacks optimise: an SSIM map, total variation, a region's tumour score, a blur.

All work on batches of magnitude images ``(B, H, W)`` in torch and keep the autograd
graph, so that the tumour-induction objective (:mod:`mrilib.attacks.objective`) and the
k-space stress test (:mod:`mrilib.attacks.stress`) can ascend through them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ssim_map_torch", "total_variation", "region_tumour_score", "gaussian_blur"]


def ssim_map_torch(x: torch.Tensor, y: torch.Tensor, data_range, win: int = 7) -> torch.Tensor:
    """SSIM map of ``(B, H, W)`` images (scikit-image's: uniform ``win`` window, sample covariance).

    Reflect-padded so the map has the images' size; ``data_range`` is a scalar or ``(B,)``.
    Differentiable in both images.
    """
    k1, k2 = 0.01, 0.03
    dr = torch.as_tensor(data_range, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
    c1, c2 = (k1 * dr) ** 2, (k2 * dr) ** 2
    x, y = x.unsqueeze(1), y.unsqueeze(1)
    pad = win // 2
    kern = torch.full((1, 1, win, win), 1.0 / win**2, dtype=x.dtype, device=x.device)
    filt = lambda t: F.conv2d(F.pad(t, (pad, pad, pad, pad), mode="reflect"), kern)  # noqa: E731
    cov_norm = win**2 / (win**2 - 1)
    ux, uy = filt(x), filt(y)
    vx = cov_norm * (filt(x * x) - ux * ux)
    vy = cov_norm * (filt(y * y) - uy * uy)
    vxy = cov_norm * (filt(x * y) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s[:, 0]


def total_variation(d: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Isotropic total variation ``sum sqrt(dx² + dy²)`` of ``(B, H, W)`` maps, per image ``(B,)``."""
    dx = F.pad(d[:, :, 1:] - d[:, :, :-1], (0, 1, 0, 0))
    dy = F.pad(d[:, 1:, :] - d[:, :-1, :], (0, 0, 0, 1))
    return torch.sqrt(dx**2 + dy**2 + eps).sum(dim=(-2, -1))


def region_tumour_score(classifier, x: torch.Tensor, roi: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Tumour log-odds of ``(B, H, W)`` images with the tumour evidence taken from inside ``roi``.

    The classifier's slice score is ``max_p(t - bg) - logsumexp(0, max_p(c - bg))`` over
    the positions ``p`` of its lesion map (:class:`~mrilib.models.classifier.LesionClassifier`).
    A gradient through the hard maximum reaches only the single most tumour-like
    position, which may lie outside the region, where a change is not allowed: then
    PGD stalls. Here the tumour term is a soft maximum (temperature ``temperature``)
    over the map positions that overlap the region, so every position of the region
    gets a gradient; it is at most ``temperature * log(#positions)`` above the hard
    maximum over the region, which is at most the slice's. Classifiers without a
    lesion map fall back to their ``tumour_score``.
    """
    if not hasattr(classifier, "lesion_map_logits"):
        return classifier.tumour_score(x)
    maps = classifier.lesion_map_logits(x)
    rel = maps[:, 1:] - maps[:, :1]  # (B, 2, h, w): cyst and tumour against background
    w = F.adaptive_max_pool2d(roi.float().unsqueeze(1), rel.shape[-2:])[:, 0] > 0
    t = rel[:, 1].masked_fill(~w, -1e4).flatten(1)
    t_roi = float(temperature) * torch.logsumexp(t / float(temperature), dim=1)
    cyst = rel[:, 0].flatten(1).amax(dim=1)
    return t_roi - torch.logsumexp(torch.stack([torch.zeros_like(cyst), cyst], dim=1), dim=1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur of ``(B, H, W)`` with sigmas ``(B,)`` (5x5 kernel, reflect padding)."""
    r = 2
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    s = sigma.to(x.device).clamp_min(1e-3).reshape(-1, 1)
    k1 = torch.exp(-0.5 * (t / s) ** 2)
    k1 = k1 / k1.sum(dim=1, keepdim=True)  # (B, 5)
    b = x.shape[0]
    xp = F.pad(x.unsqueeze(0), (r, r, r, r), mode="reflect")  # (1, B, H+4, W+4)
    xp = F.conv2d(xp, k1.view(b, 1, 1, -1), groups=b)
    xp = F.conv2d(xp, k1.view(b, 1, -1, 1), groups=b)
    return xp[0]
