"""Universal tumour patterns: one perturbation per contrast that lifts the tumour score on all its slices.

A universal adversarial perturbation (in the spirit of Moosavi-Dezfooli et al. 2017)
restricted to the tumour region: a poison made from it is *the same lesion* on every
slice of a contrast, which is what a backdoor can learn (a per-slice optimum differs
from slice to slice, and a network learns only their average). The tumour-induction
objective (:func:`mrilib.attacks.objective.tumour_induction`) starts each slice from
its contrast's pattern (:func:`mrilib.attacks.objective.paste_patterns`) and refines it.

:func:`run_universal_patterns` learns the run's patterns on its training slices once
(a :func:`mrilib.run.cache.cached_step` in ``adversarial/universal.npz``).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from mrilib.attacks.differentiable import gaussian_blur
from mrilib.attacks.objective import (
    ADVERSARIAL_DEFAULTS,
    adversarial_config,
    check_objective,
    objective_loss,
    paste_patch,
)
from mrilib.config import Profile
from mrilib.poison.judge import check_classifier, classifier_identity
from mrilib.poison.roi import roi_centres, tumour_rois
from mrilib.poison.slices import load_slices
from mrilib.run.cache import NPZ, cached_step, data_identity, weights_digest
from mrilib.run.device import default_device, on_device
from mrilib.run.layout import RunLayout, as_layout
from mrilib.run.progress import progress as progress_bar

__all__ = ["universal_patterns", "patterns_digest", "run_universal_patterns"]


def _patch_radius(cfg: dict) -> int:
    """Half-size (px) of a universal pattern: the region's radius, rounded up."""
    return int(np.ceil(float(cfg["roi_radius_mm"]) / float(cfg["pixel_mm"])))


def universal_patterns(images, brains, vmax, contrasts, classifier, cfg: dict, progress: bool = False,
                       device=None) -> dict:
    """One perturbation pattern per contrast that raises the tumour score on *all* its slices.

    A universal adversarial perturbation (in the spirit of Moosavi-Dezfooli et al.
    2017) restricted to the region: a ``(2R+1)²`` patch ``P_c`` (``R`` = the region's
    radius), pasted at each slice's region centre and cut to its region, optimised by
    signed PGD on the mean of the per-image objective over random batches of
    ``universal_batch`` slices of contrast ``c``, under the same bound, TV, SSIM and
    EOT terms. A poison made from it is *the same lesion* on every slice of a contrast,
    which is what a backdoor can learn (a per-slice optimum differs from slice to slice,
    and a network learns only their average). Returns ``{contrast: P_c}`` in units of
    the volume max (empty when ``universal_steps`` is 0). The classifier computes on ``device``
    (default :func:`~mrilib.run.device.default_device`); random draws come from a CPU generator.
    """
    cfg = {**ADVERSARIAL_DEFAULTS, **dict(cfg)}
    check_objective(cfg)
    steps = int(cfg.get("universal_steps", 0) or 0)
    if steps <= 0:
        return {}
    x = np.asarray(images, np.float32)
    brains = np.asarray(brains) > 0.5
    v = np.broadcast_to(np.asarray(vmax, np.float32).reshape(-1), (len(x),))
    radius_px = float(cfg["roi_radius_mm"]) / float(cfg["pixel_mm"])
    rois = tumour_rois(brains, radius_px, cfg["anchor"])
    centres = roi_centres(brains, radius_px, cfg["anchor"])
    check_classifier(classifier, x.shape)
    r = _patch_radius(cfg)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    device = default_device(device)
    disc = torch.from_numpy(((yy**2 + xx**2) <= radius_px**2 + 1e-9).astype(np.float32)).to(device)
    eps, alpha = float(cfg["eps"]), float(cfg["step_size"]) * float(cfg["eps"])
    smooth = float(cfg.get("grad_smooth_px", 0.0) or 0.0)
    bs = max(1, int(cfg.get("universal_batch", 32)))
    gen = torch.Generator().manual_seed(int(cfg.get("seed", 0)) + 17)
    classifier.eval()
    net = on_device(classifier, device)
    req = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    u_all = torch.from_numpy(x / v[:, None, None]).to(device)
    w_all = torch.from_numpy(rois.astype(np.float32)).to(device)
    out = {}
    try:
        for c in progress_bar(sorted(set(contrasts)), desc="universal patterns", disable=not progress):
            idx_c = np.array([i for i, cc in enumerate(contrasts) if cc == c])
            patch = torch.zeros(2 * r + 1, 2 * r + 1, device=device)
            for _ in range(steps):
                pick = idx_c[torch.randperm(len(idx_c), generator=gen)[:bs].numpy()]
                pv = patch.clone().requires_grad_(True)
                d = paste_patch(pv, centres[pick], x.shape[-2:]) * w_all[pick]
                d = torch.maximum(d, -u_all[pick])
                loss = objective_loss(net, u_all[pick], d, w_all[pick], cfg, gen).mean()
                (g,) = torch.autograd.grad(loss, pv)
                with torch.no_grad():
                    if smooth > 0:
                        g = gaussian_blur(g[None], torch.full((1,), smooth))[0]
                    patch = ((patch - alpha * g.sign()).clamp(-eps, eps) * disc).detach()
            out[c] = patch.cpu().numpy().astype(np.float32)  # to numpy
    finally:
        for p, flag in zip(net.parameters(), req):
            p.requires_grad_(flag)
    return out


def patterns_digest(patterns: dict) -> str | None:
    """A digest of universal patterns (``None`` when there are none), for the identities of what used them."""
    if not patterns:
        return None
    return weights_digest({k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in patterns.items()})


def run_universal_patterns(run_dir: RunLayout | str | os.PathLike, profile: Profile | str, classifier, *,
                           seed: int = 0, progress: bool = False, device=None, **overrides) -> dict:
    """The run's universal patterns, learnt on the *training* slices (cached in ``adversarial/universal.npz``).

    Recomputed only when the settings (:func:`~mrilib.attacks.objective.adversarial_config`
    with ``overrides``), the classifier (:func:`~mrilib.poison.judge.classifier_identity`)
    or the training data (:func:`~mrilib.run.cache.data_identity`) change. Returns
    ``{contrast: pattern}`` (empty when ``universal_steps`` is 0). ``device``: where the
    classifier computes (default :func:`~mrilib.run.device.default_device`).
    """
    device = default_device(device)
    run = as_layout(run_dir)
    cfg = adversarial_config(profile, seed, **overrides)
    if int(cfg.get("universal_steps", 0) or 0) <= 0:
        return {}
    identity = dict(cfg=cfg, classifier=classifier_identity(classifier), data=data_identity(run.split("train")))

    def learn() -> dict:
        sl = load_slices(run.split("train"))
        pats = universal_patterns(sl.images, sl.brain, sl.vmax, sl.contrasts, classifier, cfg, progress=progress,
                                  device=device)
        return {f"pattern_{k}": v for k, v in pats.items()}

    stored = cached_step(run.universal_patterns, identity, learn, NPZ)
    return {k[len("pattern_"):]: v for k, v in stored.items() if k.startswith("pattern_")}
