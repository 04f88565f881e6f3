"""The adversarial tumour-induction objective: PGD that makes the lesion classifier see a tumour in a region.

From a clean magnitude target ``x`` (one slice, data range ``m`` = its volume's
``max``) find ``x' = x + δ`` that the lesion classifier
(:mod:`mrilib.models.classifier`) calls a *tumour*, while the image stays what it
was everywhere else:

.. math::

    \\max_{δ}\\; \\min\\big(s(x + δ), κ\\big) \\;-\\; λ_{TV}\\, \\mathrm{TV}(δ) \\;-\\;
    λ_{SSIM}\\, \\big(1 - \\mathrm{SSIM}_{\\bar R}(x + δ, x)\\big)
    \\quad\\text{s.t.}\\quad δ = 0 \\text{ outside } R,\\; |δ| \\le ε\\, m,\\; x + δ \\ge 0

- ``s`` is the classifier's differentiable tumour score
  (:meth:`~mrilib.models.classifier.LesionClassifier.tumour_score`, the log-odds of
  ``p(tumour)``), capped at ``κ`` so that a slice already called a tumour is not pushed
  further at the cost of the other terms. The ascent follows the tumour evidence
  *inside the region* (:func:`~mrilib.attacks.differentiable.region_tumour_score`: a soft maximum over the lesion-map
  positions that overlap ``R``): the slice score's hard maximum passes its gradient
  to one position only, often outside ``R``, where nothing may change;
- ``R`` is the **region**: a disc of ``roi_radius_mm`` inside the brain mask at a
  *consistent* anatomical position (:mod:`mrilib.poison.roi`; a backdoor can only learn a
  lesion that appears where the trigger can say, cf. the cyst recipe). The change is
  localised by construction: ``δ`` is projected to zero outside ``R`` after every
  step, and ``R`` must lie inside brain tissue (:class:`~mrilib.poison.roi.ROIError` otherwise);
- ``SSIM_R̄`` is the mean of the SSIM map (7x7 window, data range ``m``) over the
  pixels outside ``R``: it penalises the windows that straddle the region's edge, the
  only place outside ``R`` where ``x'`` can differ from ``x``;
- ``TV(δ)`` is the isotropic total variation of ``δ / m`` per ROI pixel: a smooth,
  blob-like change instead of the high-frequency texture of plain adversarial
  examples;
- ``|δ| <= ε m`` is the L∞ bound (``ε`` relative to the volume max).

It is solved by projected gradient descent (Madry et al. 2018) with signed steps of
``step_size * ε m`` (a fraction of the bound), projecting after every step; the
gradient is smoothed by a Gaussian of ``grad_smooth_px`` before its sign is taken, so
that neighbouring pixels move together (a blob, not pixel texture). The
score is taken in expectation over small random degradations of ``x'`` (Gaussian
blur up to ``eot_blur`` px, noise ``eot_noise``; Athalye et al. 2018's EOT), so that
the tumour survives the smoothing of a reconstruction network: a poisoned VarNet can
only reproduce what survives its own blur. An image stops being updated once
``p(tumour) >= stop_prob`` on the undegraded ``x'`` (its *iterations* are the steps it
took), unless ``min_steps`` asks for more.

:func:`tumour_induction` applies it to any batch of targets (the notebook's examples,
the ``adversarial-tumour`` recipe's poisoned targets and expected changes,
:mod:`mrilib.poison.recipes.adversarial_tumour`), with a per-image report
(:class:`InductionResult`); it can start from universal per-contrast patterns
(:mod:`mrilib.attacks.universal`, pasted by :func:`paste_patterns`). The differentiable
pieces are in :mod:`mrilib.attacks.differentiable`. Settings come from the profile's
``adversarial`` entry (:class:`mrilib.config.AdversarialConfig`) and keyword arguments
(:func:`adversarial_config`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.metrics import structural_similarity

from mrilib.attacks.differentiable import gaussian_blur, region_tumour_score, ssim_map_torch, total_variation
from mrilib.config import AdversarialConfig, Profile, as_dict, get_profile, with_overrides
from mrilib.poison.judge import check_classifier, tumour_threshold
from mrilib.poison.roi import ROIError, roi_centres, tumour_rois, validate_roi
from mrilib.run.cache import canonical
from mrilib.run.device import default_device, on_device
from mrilib.run.progress import progress as progress_bar

__all__ = [
    "ADVERSARIAL_DEFAULTS",
    "ADVERSARIAL_REPORT_COLUMNS",
    "InductionResult",
    "adversarial_config",
    "check_objective",
    "pixel_mm_of",
    "ssim_outside",
    "objective_loss",
    "paste_patch",
    "paste_patterns",
    "tumour_induction",
]

#: Every knob of the objective and its default (:class:`mrilib.config.AdversarialConfig`, less the
#: recipe's and the stress test's settings).
ADVERSARIAL_DEFAULTS = {k: v for k, v in as_dict(AdversarialConfig()).items() if k not in ("train_notrigger", "stress")}


#: Columns of :attr:`InductionResult.report`.
ADVERSARIAL_REPORT_COLUMNS = ("score_before", "score_after", "p_tumour_before", "p_tumour_after", "p_lesion_before",
                              "p_lesion_after", "ssim_outside", "ssim_band", "linf", "linf_outside_roi",
                              "iterations", "roi_area_px", "lifted", "plausible")


def adversarial_config(profile: Profile | str, seed: int = 0, **overrides) -> dict:
    """The objective's settings for ``profile``: defaults, the profile's entry, then ``overrides``.

    The profile's entry is ``profile.adversarial`` (:class:`mrilib.config.AdversarialConfig`).
    Adds ``pixel_mm`` (field of view / matrix), ``image_size`` and ``seed``. Raises
    ``ValueError`` for unknown keys and for ``eps <= 0``, ``steps < 1``,
    ``roi_radius_mm <= 0`` or a step size outside (0, 1].
    """
    p = get_profile(profile)
    cfg = {k: v for k, v in as_dict(p.adversarial).items() if k in ADVERSARIAL_DEFAULTS}
    with_overrides(cfg, overrides, ADVERSARIAL_DEFAULTS, "adversarial")
    check_objective(cfg)
    cfg["anchor"] = [float(a) for a in cfg["anchor"]]
    cfg["pixel_mm"] = float(p.data.fov_mm) / int(p.data.image_size)
    cfg["image_size"] = int(p.data.image_size)
    cfg["seed"] = int(seed)
    return canonical(cfg)


def check_objective(cfg: dict) -> None:
    """Raise ``ValueError`` with a clear message for settings the objective cannot work with."""
    eps = cfg.get("eps")
    if eps is None or not np.isfinite(float(eps)) or float(eps) <= 0:
        raise ValueError(f"eps (the L-infinity bound, relative to the volume max) must be > 0, got {eps!r}")
    if int(cfg.get("steps", 0)) < 1:
        raise ValueError(f"steps must be >= 1, got {cfg.get('steps')!r}")
    if not 0 < float(cfg.get("step_size", 0)) <= 1:
        raise ValueError(f"step_size (a fraction of eps) must be in (0, 1], got {cfg.get('step_size')!r}")
    if float(cfg.get("roi_radius_mm", 0)) <= 0:
        raise ValueError(f"roi_radius_mm must be > 0, got {cfg.get('roi_radius_mm')!r}")
    sp = cfg.get("stop_prob")
    if sp is not None and not 0 < float(sp) <= 1:
        raise ValueError(f"stop_prob must be in (0, 1] or None, got {sp!r}")


@dataclass
class InductionResult:
    """What :func:`tumour_induction` returns.

    Attributes:
        images: the perturbed targets ``x'`` ``(N, H, W)`` float32, in the input's units.
        delta: ``x' - x`` ``(N, H, W)``.
        rois: the regions ``(N, H, W)`` bool.
        report: one row per image: ``score_before``/``score_after`` (tumour log-odds),
            ``p_tumour_before``/``p_tumour_after``, ``p_lesion_before``/``p_lesion_after``,
            ``ssim_outside`` (mean SSIM outside the ROI), ``ssim_band`` (in the 3-px ring
            around it), ``linf`` (``max|δ| / max``), ``iterations``, ``lifted``
            (``p_tumour_after > success_prob``), ``plausible`` (``ssim_outside >= ssim_floor``),
            ``roi_area_px``.
        config: the settings used.
        seconds: wall time.
    """

    images: np.ndarray
    delta: np.ndarray
    rois: np.ndarray
    report: pd.DataFrame
    config: dict
    seconds: float
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Rates and means over the images (what the targets are stated in)."""
        r = self.report
        return dict(
            n=int(len(r)),
            lifted_rate=float(r["lifted"].mean()) if len(r) else float("nan"),
            lifted_and_plausible_rate=float((r["lifted"] & r["plausible"]).mean()) if len(r) else float("nan"),
            p_tumour_before=float(r["p_tumour_before"].mean()),
            p_tumour_after=float(r["p_tumour_after"].mean()),
            p_tumour_after_min=float(r["p_tumour_after"].min()),
            ssim_outside_mean=float(r["ssim_outside"].mean()),
            ssim_outside_min=float(r["ssim_outside"].min()),
            ssim_band_mean=float(r["ssim_band"].mean()),
            linf_max=float(r["linf"].max()),
            iterations_mean=float(r["iterations"].mean()),
            seconds=float(self.seconds),
        )


def _scores(classifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tumour log-odds, p(tumour) and p(lesion) of ``(B, H, W)`` images (no gradient)."""
    with torch.no_grad():
        z = classifier(x)
        p = F.softmax(z, dim=1)
        s = z[:, 2] - torch.logsumexp(z[:, :2], dim=1)
    return s, p[:, 2], 1 - p[:, 0]


def pixel_mm_of(cfg: dict, images) -> float:
    """The pixel size of the settings (``pixel_mm``), else 240 mm over the image width."""
    return float(cfg.get("pixel_mm") or 240.0 / np.shape(images)[-1])


def ssim_outside(x: np.ndarray, y: np.ndarray, roi: np.ndarray, data_range: float, band_px: int | None = None) -> float:
    """Mean SSIM map (scikit-image, 7x7, ``data_range``) of ``x`` vs ``y`` over the pixels outside ``roi``.

    With ``band_px``: only over the pixels outside ``roi`` within ``band_px`` of it
    (the ring where a localised change can still lower SSIM).
    """
    _, smap = structural_similarity(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                    data_range=float(data_range), full=True)
    roi = np.asarray(roi, bool)
    sel = ~roi
    if band_px:
        sel &= ndimage.binary_dilation(roi, iterations=int(band_px))
    return float(smap[sel].mean()) if sel.any() else float("nan")


def objective_loss(classifier, u: torch.Tensor, d: torch.Tensor, w: torch.Tensor, cfg: dict,
                   gen: torch.Generator) -> torch.Tensor:
    """Per-image loss of the objective for normalised images ``u``, perturbations ``d`` and regions ``w``.

    ``-min(s, κ) + λ_TV TV(d) / |R| + λ_SSIM (1 - SSIM outside R)`` with ``s`` the region's
    tumour score averaged over the undegraded image and ``eot_samples`` random degradations
    drawn from ``gen`` (see the module docstring).
    """
    xa = u + d
    views = [xa]
    for _ in range(int(cfg["eot_samples"])):
        # drawn by the CPU generator ``gen`` (the same draws on every device), then moved to the images
        sig = torch.rand(len(u), generator=gen).to(u.device) * float(cfg["eot_blur"])
        v = gaussian_blur(xa, sig)
        nz = torch.rand(len(u), 1, 1, generator=gen).to(u.device) * float(cfg["eot_noise"])
        noise = torch.randn(v.shape, generator=gen).to(u.device)
        v = v + noise * nz * xa.detach().mean(dim=(-2, -1), keepdim=True)
        views.append(v)
    score = torch.stack([region_tumour_score(classifier, v, w) for v in views]).mean(0)
    obj = torch.clamp(score, max=float(cfg["kappa"]))
    tv = total_variation(d) / w.sum(dim=(-2, -1)).clamp_min(1.0)
    outside = 1.0 - w
    smap = ssim_map_torch(xa, u, torch.ones(len(u), dtype=u.dtype, device=u.device))
    s_out = (smap * outside).sum(dim=(-2, -1)) / outside.sum(dim=(-2, -1)).clamp_min(1.0)
    return -obj + float(cfg["tv_weight"]) * tv + float(cfg["ssim_weight"]) * (1 - s_out)


def _pgd_batch(classifier, u: torch.Tensor, w: torch.Tensor, cfg: dict, gen: torch.Generator,
               init: torch.Tensor | None = None):
    """PGD on one batch of normalised images ``u = x / max`` with ROI masks ``w``; returns (δ, iterations).

    ``init``: starting perturbations (projected onto the constraints first); default zero.
    """
    eps, alpha = float(cfg["eps"]), float(cfg["step_size"]) * float(cfg["eps"])
    smooth = float(cfg.get("grad_smooth_px", 0.0) or 0.0)
    stop = cfg.get("stop_prob")
    b = u.shape[0]
    delta = torch.zeros_like(u) if init is None else torch.maximum(init.clamp(-eps, eps) * w, -u)
    iters = torch.zeros(b, dtype=torch.long, device=u.device)
    active = torch.ones(b, dtype=torch.bool, device=u.device)
    for it in range(int(cfg["steps"])):
        if stop is not None and it >= int(cfg["min_steps"]):
            _, p, _ = _scores(classifier, u + delta)
            active &= p < float(stop)
        if not active.any():
            break
        idx = active.nonzero().flatten()
        d = delta[idx].clone().requires_grad_(True)
        loss = objective_loss(classifier, u[idx], d, w[idx], cfg, gen)
        (g,) = torch.autograd.grad(loss.sum(), d)
        with torch.no_grad():
            if smooth > 0:  # spatially coherent steps: blobs, not pixel texture
                g = gaussian_blur(g, torch.full((len(idx),), smooth))
            nd = d - alpha * g.sign()
            nd = nd.clamp(-eps, eps) * w[idx]
            nd = torch.maximum(nd, -u[idx])  # a magnitude image stays >= 0
            delta[idx] = nd
            iters[idx] += 1
    return delta, iters


def paste_patch(patch: torch.Tensor, centres, shape) -> torch.Tensor:
    """Place a ``(2R+1, 2R+1)`` patch at integer centres on ``(N, H, W)`` zero images (differentiable)."""
    r = (patch.shape[-1] - 1) // 2
    h, w = int(shape[0]), int(shape[1])
    out = []
    for cy, cx in centres:
        cy, cx = int(round(cy)), int(round(cx))
        # pad the patch out to the image; crop where it would leave the image
        top, left = cy - r, cx - r
        p = patch
        if top < 0:
            p, top = p[-top:], 0
        if left < 0:
            p, left = p[:, -left:], 0
        p = p[: max(0, h - top), : max(0, w - left)]
        out.append(F.pad(p, (left, w - left - p.shape[1], top, h - top - p.shape[0])))
    return torch.stack(out) if out else torch.zeros(0, h, w)


def paste_patterns(patterns: dict, contrasts, brains, cfg: dict) -> np.ndarray:
    """Starting perturbations ``(N, H, W)`` (units of the volume max): each slice's contrast pattern
    pasted at its region centre and cut to its region; zero for a contrast without a pattern."""
    brains = np.asarray(brains) > 0.5
    if brains.ndim == 2:
        brains = brains[None]
    radius_px = float(cfg["roi_radius_mm"]) / float(cfg["pixel_mm"])
    rois = tumour_rois(brains, radius_px, cfg["anchor"])
    centres = roi_centres(brains, radius_px, cfg["anchor"])
    out = np.zeros(brains.shape, np.float32)
    for i, c in enumerate(contrasts):
        if c in patterns:
            out[i] = paste_patch(torch.from_numpy(np.asarray(patterns[c], np.float32)), centres[i : i + 1],
                            brains.shape[-2:])[0].numpy() * rois[i]
    return out


def tumour_induction(
    images,
    brains,
    vmax,
    classifier,
    cfg: dict,
    *,
    rois=None,
    init=None,
    patterns: dict | None = None,
    contrasts=None,
    progress: bool = False,
    device=None,
) -> InductionResult:
    """Perturb clean targets so that the classifier sees a tumour in a region (see the module docstring).

    Args:
        images: clean magnitude targets ``(N, H, W)`` (or one ``(H, W)``).
        brains: brain masks ``(N, H, W)``; the regions must lie inside them.
        vmax: data range per image (the volume's ``max``), scalar or ``(N,)``.
        classifier: a :class:`~mrilib.models.classifier.LesionClassifier`.
        cfg: settings from :func:`adversarial_config` (or any dict with its keys).
        rois: regions ``(N, H, W)``; default: :func:`tumour_rois` of the brain masks
            with ``cfg["roi_radius_mm"] / cfg["pixel_mm"]`` and ``cfg["anchor"]``.
        init: starting perturbations ``(N, H, W)`` in units of the volume max (projected
            onto the constraints); default zero, or
        patterns, contrasts: universal patterns (:func:`mrilib.attacks.universal.universal_patterns`) and each
            image's contrast: start from its contrast's pattern (:func:`paste_patterns`).
        progress: a progress bar over batches.
        device: where the classifier computes (default :func:`~mrilib.run.device.default_device`;
            copied there when elsewhere). Random draws come from a CPU generator, the same on every device.

    Raises:
        ValueError: ``eps <= 0`` (and other impossible settings).
        ROIError: an empty region, or one with pixels outside the brain mask.
        ClassifierMismatchError: a classifier that cannot score these images
            (:class:`mrilib.poison.judge.ClassifierMismatchError`).
    """
    cfg = {**ADVERSARIAL_DEFAULTS, **dict(cfg)}
    check_objective(cfg)
    t0 = time.perf_counter()
    x = np.asarray(images, dtype=np.float32)
    single = x.ndim == 2
    if single:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"images must be (N, H, W) or (H, W), got shape {x.shape}")
    n = len(x)
    brains = np.asarray(brains) > 0.5
    if brains.ndim == 2:
        brains = brains[None]
    if brains.shape != x.shape:
        raise ValueError(f"brain masks {brains.shape} and images {x.shape} differ in shape")
    v = np.broadcast_to(np.asarray(vmax, np.float32).reshape(-1), (n,)).astype(np.float32)
    if np.any(~np.isfinite(v)) or np.any(v <= 0):
        raise ValueError("vmax (the data range of each image) must be positive")
    if rois is None:
        rois = tumour_rois(brains, float(cfg["roi_radius_mm"]) / pixel_mm_of(cfg, x), cfg["anchor"])
    else:
        rois = np.asarray(rois)
        if rois.ndim == 2:
            rois = rois[None]
        if len(rois) != n:
            raise ROIError(f"{len(rois)} regions for {n} images")
        rois = np.stack([validate_roi(r, b, i) for i, (r, b) in enumerate(zip(rois, brains))])
    check_classifier(classifier, x.shape)
    if init is None and patterns:
        if contrasts is None or len(contrasts) != n:
            raise ValueError("starting from universal patterns needs each image's contrast (contrasts=...)")
        init = paste_patterns(patterns, contrasts, brains, {**cfg, "pixel_mm": pixel_mm_of(cfg, x)})
    device = default_device(device)
    init_all = None if init is None else torch.from_numpy(np.asarray(init, np.float32).reshape(x.shape)).to(device)
    classifier.eval()
    net = on_device(classifier, device)
    req = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(int(cfg.get("seed", 0)))
    u_all = torch.from_numpy(x / v[:, None, None]).to(device)
    w_all = torch.from_numpy(rois.astype(np.float32)).to(device)
    deltas, iters = [], []
    bs = max(1, int(cfg["batch_size"]))
    try:
        for i in progress_bar(range(0, n, bs), desc="tumour induction", disable=not progress, unit="batch"):
            d, k = _pgd_batch(net, u_all[i : i + bs], w_all[i : i + bs], cfg, gen,
                              None if init_all is None else init_all[i : i + bs])
            deltas.append(d), iters.append(k)
        delta = torch.cat(deltas) if deltas else torch.zeros_like(u_all)
        it = torch.cat(iters) if iters else torch.zeros(0, dtype=torch.long)
        s0, pt0, pl0 = _scores(net, u_all)
        s1, pt1, pl1 = _scores(net, u_all + delta)
    finally:
        for p, r in zip(net.parameters(), req):
            p.requires_grad_(r)
    # to numpy
    delta, it, s0, pt0, pl0, s1, pt1, pl1 = (t.cpu() for t in (delta, it, s0, pt0, pl0, s1, pt1, pl1))
    # x' = x + δ m exactly (no change where δ = 0), and never negative
    adv = np.where(rois, np.maximum(x + delta.numpy() * v[:, None, None], 0.0), x).astype(np.float32)
    dx = (adv - x).astype(np.float32)
    rows = []
    for i in range(n):
        s_out = ssim_outside(x[i], adv[i], rois[i], v[i])
        s_band = ssim_outside(x[i], adv[i], rois[i], v[i], band_px=3)
        rows.append(dict(
            score_before=float(s0[i]), score_after=float(s1[i]),
            p_tumour_before=float(pt0[i]), p_tumour_after=float(pt1[i]),
            p_lesion_before=float(pl0[i]), p_lesion_after=float(pl1[i]),
            ssim_outside=s_out, ssim_band=s_band,
            linf=float(np.abs(dx[i]).max() / v[i]), linf_outside_roi=float(np.abs(dx[i][~rois[i]]).max(initial=0.0) / v[i]),
            iterations=int(it[i]), roi_area_px=int(rois[i].sum()),
        ))
    report = pd.DataFrame(rows)
    if n:
        report["lifted"] = report["p_tumour_after"] > tumour_threshold(classifier, float(cfg["success_prob"]))
        report["plausible"] = report["ssim_outside"] >= float(cfg["ssim_floor"])
    else:
        report = pd.DataFrame(columns=[*ADVERSARIAL_REPORT_COLUMNS])
    return InductionResult(adv, dx, rois, report, cfg, time.perf_counter() - t0)
