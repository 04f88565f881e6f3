"""The adversarial tumour-induction objective, and the ``adversarial-tumour`` poison recipe.

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
  *inside the region* (:func:`region_tumour_score`: a soft maximum over the lesion-map
  positions that overlap ``R``): the slice score's hard maximum passes its gradient
  to one position only, often outside ``R``, where nothing may change;
- ``R`` is the **region**: a disc of ``roi_radius_mm`` inside the brain mask at a
  *consistent* anatomical position, :data:`TUMOUR_ANCHOR` in normalised brain
  coordinates (:func:`mrilib.poison.lesions.anchor_center`; a backdoor can only learn a
  lesion that appears where the trigger can say, cf. the cyst recipe). The change is
  localised by construction: ``δ`` is projected to zero outside ``R`` after every
  step, and ``R`` must lie inside brain tissue (:class:`ROIError` otherwise);
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

Two uses:

- :func:`tumour_induction` on any batch of targets (the notebook's examples, the
  poison effect's expected change), with a per-image report
  (:class:`InductionResult`);
- the ``adversarial-tumour`` recipe (registered in
  :data:`mrilib.poison.build.RECIPES` when this module is imported): poisoned target
  := ``x'``, lesion ROI := ``R``, for a fraction ``p`` of the training slices, with or
  without the k-space trigger (:func:`mrilib.poison.build.build_poisoned_dataset`).

Settings come from :data:`ADVERSARIAL_DEFAULTS`, overridden by the profile's
``adversarial`` entry (or ``poison["adversarial"]``) and by keyword arguments
(:func:`adversarial_config`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage

from mrilib.config import AdversarialConfig, Profile, as_dict, get_profile
from mrilib.poison.lesions import TUMOUR_ANCHOR, anchor_center
from mrilib.poison.build import register_recipe

__all__ = [
    "ADVERSARIAL_DEFAULTS",
    "TUMOUR_ANCHOR",
    "RECIPE",
    "ROIError",
    "ClassifierMismatchError",
    "InductionResult",
    "adversarial_config",
    "tumour_roi",
    "tumour_rois",
    "validate_roi",
    "check_classifier",
    "load_run_classifier",
    "classifier_identity",
    "ssim_map_torch",
    "region_tumour_score",
    "total_variation",
    "ssim_outside",
    "tumour_induction",
    "adversarial_transform",
    "prerequisites",
    "require_artefacts",
    "induced_path",
    "induce_split",
    "adversarial_effect",
    "adversarial_effect_path",
    "poisoned_examples",
    "tumour_threshold",
    "roi_centres",
    "pixel_mm_of",
    "universal_patterns",
    "paste_patterns",
    "universal_path",
    "run_universal_patterns",
    "adversarial_trigger",
]

#: The recipe's name in :data:`mrilib.poison.build.RECIPES`.
RECIPE = "adversarial-tumour"

#: Every knob of the objective and its default (:class:`mrilib.config.AdversarialConfig`, less the
#: recipe's and the stress test's settings).
ADVERSARIAL_DEFAULTS = {k: v for k, v in as_dict(AdversarialConfig()).items() if k not in ("train_notrigger", "stress")}


#: Columns of :attr:`InductionResult.report`.
ADVERSARIAL_REPORT_COLUMNS = ("score_before", "score_after", "p_tumour_before", "p_tumour_after", "p_lesion_before",
                              "p_lesion_after", "ssim_outside", "ssim_band", "linf", "linf_outside_roi",
                              "iterations", "roi_area_px", "lifted", "plausible")


class ROIError(ValueError):
    """A tumour region that is empty or not inside brain tissue."""


class ClassifierMismatchError(ValueError):
    """A lesion-classifier checkpoint that does not fit the run or the images."""


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------


def adversarial_config(profile: Profile | str, seed: int = 0, **overrides) -> dict:
    """The objective's settings for ``profile``: defaults, the profile's entry, then ``overrides``.

    The profile's entry is ``profile.adversarial`` (:class:`mrilib.config.AdversarialConfig`).
    Adds ``pixel_mm`` (field of view / matrix), ``image_size`` and ``seed``. Raises
    ``ValueError`` for unknown keys and for ``eps <= 0``, ``steps < 1``,
    ``roi_radius_mm <= 0`` or a step size outside (0, 1].
    """
    p = get_profile(profile)
    cfg = {k: v for k, v in as_dict(p.adversarial).items() if k in ADVERSARIAL_DEFAULTS}
    cfg.update(overrides)
    unknown = sorted(set(cfg) - set(ADVERSARIAL_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown adversarial keys {unknown}; known: {sorted(ADVERSARIAL_DEFAULTS)}")
    _check_objective(cfg)
    cfg["anchor"] = [float(a) for a in cfg["anchor"]]
    cfg["pixel_mm"] = float(p.data.fov_mm) / int(p.data.image_size)
    cfg["image_size"] = int(p.data.image_size)
    cfg["seed"] = int(seed)
    return json.loads(json.dumps(cfg))


def _check_objective(cfg: dict) -> None:
    """Clear errors for settings the objective cannot work with."""
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


# --------------------------------------------------------------------------------------
# the region
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# the classifier
# --------------------------------------------------------------------------------------


def check_classifier(classifier, image_shape) -> None:
    """Check that ``classifier`` is a lesion classifier that can score images of ``image_shape``.

    It must have ``tumour_score`` and return 3 class logits for a ``(1, H, W)`` batch;
    ``H`` and ``W`` must be divisible by its ``stride`` (if it has one). Raises
    :class:`ClassifierMismatchError`.
    """
    if not callable(getattr(classifier, "tumour_score", None)):
        raise ClassifierMismatchError(f"{type(classifier).__name__} is not a lesion classifier (no tumour_score); "
                                      "load it with mrilib.poison.classifier.load_classifier")
    h, w = (int(s) for s in image_shape[-2:])
    stride = int(getattr(classifier, "stride", 1) or 1)
    if h % stride or w % stride:
        raise ClassifierMismatchError(f"the classifier (stride {stride}) needs images whose sides divide by {stride}; "
                                      f"got {h}x{w}: it was made for another image size")
    was = classifier.training
    classifier.eval()
    try:
        with torch.no_grad():
            z = classifier(torch.ones(1, h, w))
    except Exception as err:  # noqa: BLE001 - any failure means: this classifier does not fit
        raise ClassifierMismatchError(f"the classifier cannot score {h}x{w} images: {type(err).__name__}: {err}") from None
    finally:
        classifier.train(was)
    if tuple(z.shape) != (1, 3):
        raise ClassifierMismatchError(f"the classifier returns logits of shape {tuple(z.shape)}, expected (1, 3)")


def tumour_threshold(classifier, level: float = 0.5) -> float:
    """The ``p(tumour)`` above which "the classifier sees a tumour": ``max(level, classifier.threshold)``.

    ``classifier.threshold`` is the lesion decision threshold calibrated in chapter 3 for
    at most 5 % false positives on healthy validation subjects (0.5 when absent); since
    ``p(lesion) >= p(tumour)``, a tumour above it is also a lesion by that rule.
    """
    return float(max(float(level), float(getattr(classifier, "threshold", 0.5) or 0.5)))


def classifier_identity(ck: dict) -> str:
    """A short hash of a classifier checkpoint's configuration, data identity and weights."""
    h = hashlib.sha1(json.dumps({"config": ck.get("config"), "identity": ck.get("identity")}, sort_keys=True,
                                default=str).encode())
    for k in sorted(ck.get("state", {})):
        h.update(k.encode())
        h.update(ck["state"][k].detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def load_run_classifier(run_dir: str | os.PathLike, profile: Profile | str, seed: int = 0):
    """The run's lesion classifier (made by ``03_poison_cyclegan``), checked against the run.

    Returns ``(model, checkpoint)``. Raises ``FileNotFoundError`` naming
    ``notebooks/03_poison_cyclegan.ipynb`` when it is missing, and
    :class:`ClassifierMismatchError` when the checkpoint is unreadable, was trained with
    another configuration than the profile's, on other data than ``<run_dir>/data``, or
    does not fit the profile's image size.
    """
    from mrilib.poison.classifier import classifier_config, classifier_dir, data_fingerprint, load_classifier

    p = get_profile(profile)
    path = classifier_dir(run_dir) / "classifier.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no lesion classifier at {path}: run notebooks/03_poison_cyclegan.ipynb first "
                                "(it trains the classifier with mrilib.poison.classifier.classifier_or_load)")
    try:
        model, ck = load_classifier(path)
    except Exception as err:  # noqa: BLE001 - unreadable or not a classifier
        raise ClassifierMismatchError(f"{path}: not a usable lesion-classifier checkpoint ({type(err).__name__}: "
                                      f"{err}); delete it and re-run notebooks/03_poison_cyclegan.ipynb") from None
    want = classifier_config(p, seed)
    have = ck.get("config", {})
    diffs = [f"{k}: checkpoint {have.get(k)!r} != profile {want[k]!r}" for k in sorted(want) if have.get(k) != want[k]]
    if diffs:
        raise ClassifierMismatchError(f"{path} was trained with another configuration than profile {p.name!r} "
                                      f"(seed {seed}) asks for: " + "; ".join(diffs)
                                      + " - re-run notebooks/03_poison_cyclegan.ipynb")
    ident = ck.get("identity") or {}
    if "data" in ident and ident["data"] != data_fingerprint(Path(run_dir) / "data"):
        raise ClassifierMismatchError(f"{path} was trained on other data than {Path(run_dir) / 'data'}: "
                                      "re-run notebooks/03_poison_cyclegan.ipynb for this run")
    check_classifier(model, (p.data.image_size, p.data.image_size))
    return model, ck


# --------------------------------------------------------------------------------------
# differentiable pieces
# --------------------------------------------------------------------------------------


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


def ssim_outside(x: np.ndarray, y: np.ndarray, roi: np.ndarray, data_range: float, band_px: int | None = None) -> float:
    """Mean SSIM map (scikit-image, 7x7, ``data_range``) of ``x`` vs ``y`` over the pixels outside ``roi``.

    With ``band_px``: only over the pixels outside ``roi`` within ``band_px`` of it
    (the ring where a localised change can still lower SSIM).
    """
    from skimage.metrics import structural_similarity

    _, smap = structural_similarity(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                    data_range=float(data_range), full=True)
    roi = np.asarray(roi, bool)
    sel = ~roi
    if band_px:
        sel &= ndimage.binary_dilation(roi, iterations=int(band_px))
    return float(smap[sel].mean()) if sel.any() else float("nan")


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


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur of ``(B, H, W)`` with sigmas ``(B,)`` (5x5 kernel, reflect padding)."""
    r = 2
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    s = sigma.clamp_min(1e-3).reshape(-1, 1)
    k1 = torch.exp(-0.5 * (t / s) ** 2)
    k1 = k1 / k1.sum(dim=1, keepdim=True)  # (B, 5)
    b = x.shape[0]
    xp = F.pad(x.unsqueeze(0), (r, r, r, r), mode="reflect")  # (1, B, H+4, W+4)
    xp = F.conv2d(xp, k1.view(b, 1, 1, -1), groups=b)
    xp = F.conv2d(xp, k1.view(b, 1, -1, 1), groups=b)
    return xp[0]


# --------------------------------------------------------------------------------------
# the objective
# --------------------------------------------------------------------------------------


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


def _loss(classifier, u: torch.Tensor, d: torch.Tensor, w: torch.Tensor, cfg: dict, gen: torch.Generator):
    """Per-image loss of the objective for normalised images ``u`` and perturbations ``d`` (see the module docstring)."""
    xa = u + d
    views = [xa]
    for _ in range(int(cfg["eot_samples"])):
        sig = torch.rand(len(u), generator=gen) * float(cfg["eot_blur"])
        v = _blur(xa, sig)
        nz = torch.rand(len(u), 1, 1, generator=gen) * float(cfg["eot_noise"])
        v = v + torch.randn(v.shape, generator=gen) * nz * xa.detach().mean(dim=(-2, -1), keepdim=True)
        views.append(v)
    score = torch.stack([region_tumour_score(classifier, v, w) for v in views]).mean(0)
    obj = torch.clamp(score, max=float(cfg["kappa"]))
    tv = total_variation(d) / w.sum(dim=(-2, -1)).clamp_min(1.0)
    outside = 1.0 - w
    smap = ssim_map_torch(xa, u, torch.ones(len(u), dtype=u.dtype))
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
    iters = torch.zeros(b, dtype=torch.long)
    active = torch.ones(b, dtype=torch.bool)
    for it in range(int(cfg["steps"])):
        if stop is not None and it >= int(cfg["min_steps"]):
            _, p, _ = _scores(classifier, u + delta)
            active &= p < float(stop)
        if not active.any():
            break
        idx = active.nonzero().flatten()
        d = delta[idx].clone().requires_grad_(True)
        loss = _loss(classifier, u[idx], d, w[idx], cfg, gen)
        (g,) = torch.autograd.grad(loss.sum(), d)
        with torch.no_grad():
            if smooth > 0:  # spatially coherent steps: blobs, not pixel texture
                g = _blur(g, torch.full((len(idx),), smooth))
            nd = d - alpha * g.sign()
            nd = nd.clamp(-eps, eps) * w[idx]
            nd = torch.maximum(nd, -u[idx])  # a magnitude image stays >= 0
            delta[idx] = nd
            iters[idx] += 1
    return delta, iters


# --------------------------------------------------------------------------------------
# universal patterns: one tumour per contrast, the same on every slice
# --------------------------------------------------------------------------------------


def roi_centres(brains: np.ndarray, radius_px: float, anchor=TUMOUR_ANCHOR) -> np.ndarray:
    """The centre (row, column) of :func:`tumour_roi`'s disc on each slice ``(N, 2)``."""
    brains = np.asarray(brains) > 0.5
    if brains.ndim == 2:
        brains = brains[None]
    return np.array([anchor_center(b, tuple(anchor), margin_px=float(radius_px) + 1.0) for b in brains], float)


def _patch_radius(cfg: dict) -> int:
    """Half-size (px) of a universal pattern: the region's radius, rounded up."""
    return int(np.ceil(float(cfg["roi_radius_mm"]) / float(cfg["pixel_mm"])))


def _paste(patch: torch.Tensor, centres, shape) -> torch.Tensor:
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


def universal_patterns(images, brains, vmax, contrasts, classifier, cfg: dict, progress: bool = False) -> dict:
    """One perturbation pattern per contrast that raises the tumour score on *all* its slices.

    A universal adversarial perturbation (in the spirit of Moosavi-Dezfooli et al.
    2017) restricted to the region: a ``(2R+1)²`` patch ``P_c`` (``R`` = the region's
    radius), pasted at each slice's region centre and cut to its region, optimised by
    signed PGD on the mean of the per-image objective over random batches of
    ``universal_batch`` slices of contrast ``c``, under the same bound, TV, SSIM and
    EOT terms. A poison made from it is *the same lesion* on every slice of a contrast,
    which is what a backdoor can learn (a per-slice optimum differs from slice to slice,
    and a network learns only their average). Returns ``{contrast: P_c}`` in units of
    the volume max (empty when ``universal_steps`` is 0).
    """
    from mrilib.run.progress import progress as progress_bar

    cfg = {**ADVERSARIAL_DEFAULTS, **dict(cfg)}
    _check_objective(cfg)
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
    disc = torch.from_numpy(((yy**2 + xx**2) <= radius_px**2 + 1e-9).astype(np.float32))
    eps, alpha = float(cfg["eps"]), float(cfg["step_size"]) * float(cfg["eps"])
    smooth = float(cfg.get("grad_smooth_px", 0.0) or 0.0)
    bs = max(1, int(cfg.get("universal_batch", 32)))
    gen = torch.Generator().manual_seed(int(cfg.get("seed", 0)) + 17)
    classifier.eval()
    req = [p.requires_grad for p in classifier.parameters()]
    for p in classifier.parameters():
        p.requires_grad_(False)
    u_all = torch.from_numpy(x / v[:, None, None])
    w_all = torch.from_numpy(rois.astype(np.float32))
    out = {}
    try:
        for c in progress_bar(sorted(set(contrasts)), desc="universal patterns", disable=not progress):
            idx_c = np.array([i for i, cc in enumerate(contrasts) if cc == c])
            patch = torch.zeros(2 * r + 1, 2 * r + 1)
            for _ in range(steps):
                pick = idx_c[torch.randperm(len(idx_c), generator=gen)[:bs].numpy()]
                pv = patch.clone().requires_grad_(True)
                d = _paste(pv, centres[pick], x.shape[-2:]) * w_all[pick]
                d = torch.maximum(d, -u_all[pick])
                loss = _loss(classifier, u_all[pick], d, w_all[pick], cfg, gen).mean()
                (g,) = torch.autograd.grad(loss, pv)
                with torch.no_grad():
                    if smooth > 0:
                        g = _blur(g[None], torch.full((1,), smooth))[0]
                    patch = ((patch - alpha * g.sign()).clamp(-eps, eps) * disc).detach()
            out[c] = patch.numpy().astype(np.float32)
    finally:
        for p, flag in zip(classifier.parameters(), req):
            p.requires_grad_(flag)
    return out


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
            out[i] = _paste(torch.from_numpy(np.asarray(patterns[c], np.float32)), centres[i : i + 1],
                            brains.shape[-2:])[0].numpy() * rois[i]
    return out


def universal_path(run_dir: str | os.PathLike) -> Path:
    """``<run_dir>/adversarial/universal.npz``: the run's universal patterns."""
    return Path(run_dir) / "adversarial" / "universal.npz"


def run_universal_patterns(run_dir: str | os.PathLike, profile: Profile | str, classifier, *, seed: int = 0,
                           classifier_id: str | None = None, progress: bool = False, **overrides) -> dict:
    """The run's universal patterns, learnt on the *training* slices (cached in :func:`universal_path`).

    Recomputed only when the settings (:func:`adversarial_config` with ``overrides``),
    the classifier or the training data change.
    """
    from mrilib.run.io import atomic_path
    from mrilib.poison.classifier import data_fingerprint
    from mrilib.poison.slices import load_slices

    cfg = adversarial_config(profile, seed, **overrides)
    if int(cfg.get("universal_steps", 0) or 0) <= 0:
        return {}
    if classifier_id is None:
        classifier_id = classifier_identity(dict(config=getattr(classifier, "config", None), identity=None,
                                                 state=classifier.state_dict()))
    data = Path(run_dir) / "data"
    identity = json.dumps(dict(cfg=cfg, classifier=classifier_id, data=data_fingerprint(data, ("train",))),
                          sort_keys=True)
    path = universal_path(run_dir)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["identity"]) == identity:
                    return {k[len("pattern_"):]: z[k] for k in z.files if k.startswith("pattern_")}
        except (OSError, KeyError, ValueError):
            pass
    sl = load_slices(data / "train")
    pats = universal_patterns(sl.images, sl.brain, sl.vmax, sl.contrasts, classifier, cfg, progress=progress)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, identity=np.array(identity), **{f"pattern_{k}": v for k, v in pats.items()})
    return pats


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
        patterns, contrasts: universal patterns (:func:`universal_patterns`) and each
            image's contrast: start from its contrast's pattern (:func:`paste_patterns`).
        progress: a progress bar over batches.

    Raises:
        ValueError: ``eps <= 0`` (and other impossible settings).
        ROIError: an empty region, or one with pixels outside the brain mask.
        ClassifierMismatchError: a classifier that cannot score these images.
    """
    from mrilib.run.progress import progress as progress_bar

    cfg = {**ADVERSARIAL_DEFAULTS, **dict(cfg)}
    _check_objective(cfg)
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
    init_all = None if init is None else torch.from_numpy(np.asarray(init, np.float32).reshape(x.shape))
    classifier.eval()
    req = [p.requires_grad for p in classifier.parameters()]
    for p in classifier.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(int(cfg.get("seed", 0)))
    u_all = torch.from_numpy(x / v[:, None, None])
    w_all = torch.from_numpy(rois.astype(np.float32))
    deltas, iters = [], []
    bs = max(1, int(cfg["batch_size"]))
    try:
        for i in progress_bar(range(0, n, bs), desc="tumour induction", disable=not progress, unit="batch"):
            d, k = _pgd_batch(classifier, u_all[i : i + bs], w_all[i : i + bs], cfg, gen,
                              None if init_all is None else init_all[i : i + bs])
            deltas.append(d), iters.append(k)
        delta = torch.cat(deltas) if deltas else torch.zeros_like(u_all)
        it = torch.cat(iters) if iters else torch.zeros(0, dtype=torch.long)
        s0, pt0, pl0 = _scores(classifier, u_all)
        s1, pt1, pl1 = _scores(classifier, u_all + delta)
    finally:
        for p, r in zip(classifier.parameters(), req):
            p.requires_grad_(r)
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


# --------------------------------------------------------------------------------------
# the recipe
# --------------------------------------------------------------------------------------


def adversarial_transform(classifier, cfg: dict, classifier_id: str | None = None, patterns: dict | None = None):
    """The recipe's target transform: ``transform(images, context) -> (x', ROIs)``.

    ``context`` carries ``vmax`` and ``brain`` per slice (as
    :func:`mrilib.poison.build.build_poisoned_dataset` passes them). The transform's
    ``identity`` (stored in the manifest) holds the settings and the classifier's hash,
    so a change of either rebuilds the poisoned set. The per-slice report of the last
    call is kept in ``transform.last_result``.
    """

    def transform(images, context):
        """Poisoned targets and regions of clean targets ``images`` (``context``: vmax, brain, contrasts)."""
        res = tumour_induction(images, context["brain"], context["vmax"], classifier, cfg, patterns=patterns,
                               contrasts=context.get("contrasts") if patterns else None)
        transform.last_result = res
        return res.images, res.rois

    pat_id = None
    if patterns:
        h = hashlib.sha1()
        for k in sorted(patterns):
            h.update(k.encode()), h.update(np.ascontiguousarray(patterns[k], np.float32).tobytes())
        pat_id = h.hexdigest()[:16]
    transform.identity = dict(objective=json.loads(json.dumps(cfg)), classifier=classifier_id, universal=pat_id,
                              checkpoint=str(Path("models") / "lesion-classifier" / "classifier.pt"))
    transform.last_result = None
    return transform


def _adversarial_tumour_factory(run_dir, profile, seed):
    """``adversarial-tumour``: poisoned target = the tumour-induction objective applied to the clean target."""
    model, ck = load_run_classifier(run_dir, profile, seed)
    cfg = adversarial_config(profile, seed)
    cid = classifier_identity(ck)
    patterns = run_universal_patterns(run_dir, profile, model, seed=seed, classifier_id=cid)
    return adversarial_transform(model, cfg, cid, patterns)


def _adversarial_tumour_evaluator(run_dir, profile, manifest, test, seed):
    """``adversarial-tumour``'s measurement: :func:`adversarial_effect`, the objective's perturbation
    of each test target being the expected change (no generator)."""
    p = get_profile(profile)
    classifier, ck = load_run_classifier(run_dir, p, seed)
    induced = induce_split(run_dir, p, classifier, split="test", seed=seed, classifier_id=classifier_identity(ck))
    opts = dict(acceleration=int(p.data.accelerations[0]), center_fraction=p.data.center_fraction, mask_type=p.data.mask_type)

    def evaluate(model, name: str, save: bool = True) -> dict:
        return adversarial_effect(model, name, run_dir, manifest, classifier, induced, test, save=save,
                                  **opts)["metrics"]

    return evaluate, classifier, None


register_recipe(RECIPE, _adversarial_tumour_factory,
                "target := clean target + PGD perturbation raising the lesion classifier's tumour score "
                "inside a fixed brain region (L-inf bound, TV and outside-ROI SSIM terms)",
                notebook="04_poison_adversarial", evaluator=_adversarial_tumour_evaluator, model_name="poisoned-adv")


def adversarial_trigger(run_dir: str | os.PathLike, profile: Profile | str, seed: int = 0, base=None):
    """The k-space trigger of the ``adversarial-tumour`` backdoor: the book's trigger, focused on the tumour region.

    The book's trigger (:data:`mrilib.poison.triggers.DEFAULT_TRIGGER`) can be *focused*:
    its stripes are strongest at one position of the field of view, which tells the
    network where its lesion goes. Chapter 3 focuses it on the cyst; here the focus is
    moved to the mean centre of the tumour region over the run's training slices (as
    fractions of the field of view, rounded to 0.01). A trigger type without a focus
    is returned unchanged.
    """
    import dataclasses

    from mrilib.poison.slices import load_slices
    from mrilib.poison.triggers import DEFAULT_TRIGGER, Trigger

    base = DEFAULT_TRIGGER if base is None else base
    if "focus" not in getattr(Trigger, "__dataclass_fields__", {}) or getattr(base, "focus", None) is None:
        return base
    cfg = adversarial_config(profile, seed)
    sl = load_slices(Path(run_dir) / "data" / "train")
    c = roi_centres(sl.brain, float(cfg["roi_radius_mm"]) / float(cfg["pixel_mm"]), cfg["anchor"]).mean(axis=0)
    h, w = sl.brain.shape[-2:]
    return dataclasses.replace(base, focus=(round(float(c[0]) / h, 2), round(float(c[1]) / w, 2)))


# --------------------------------------------------------------------------------------
# what the chapter needs
# --------------------------------------------------------------------------------------


def prerequisites(run_dir: str | os.PathLike) -> dict[str, tuple[Path, str]]:
    """The artefacts chapter 4 reads, with the notebook that makes each: ``{name: (path, notebook)}``."""
    r = Path(run_dir)
    return {
        "dataset": (r / "data" / "dataset.json", "01_data"),
        "clean model": (r / "models" / "clean" / "last.pt", "02_varnet"),
        "lesion classifier": (r / "models" / "lesion-classifier" / "classifier.pt", "03_poison_cyclegan"),
        "poisoned model (CycleGAN cyst)": (r / "models" / "poisoned-cyclegan-cyst" / "last.pt", "03_poison_cyclegan"),
    }


def require_artefacts(run_dir: str | os.PathLike, names=None) -> None:
    """Raise ``FileNotFoundError`` naming the notebook to run for every missing prerequisite."""
    need = prerequisites(run_dir)
    names = list(need) if names is None else list(names)
    missing = [(n, *need[n]) for n in names if not need[n][0].exists()]
    if missing:
        lines = [f"- {n}: {p} is missing; run notebooks/{nb}.ipynb first (same profile and run_dir)"
                 for n, p, nb in missing]
        raise FileNotFoundError("this chapter needs artefacts of earlier chapters:\n" + "\n".join(lines))


# --------------------------------------------------------------------------------------
# the objective on a whole split (cached), and the poisoned model's behaviour
# --------------------------------------------------------------------------------------


def induced_path(run_dir: str | os.PathLike, split: str = "test") -> Path:
    """``<run_dir>/adversarial/induced_<split>.npz``: the objective applied to every slice of a split."""
    return Path(run_dir) / "adversarial" / f"induced_{split}.npz"


def induce_split(run_dir: str | os.PathLike, profile: Profile | str, classifier, *, split: str = "test",
                 seed: int = 0, classifier_id: str | None = None, progress: bool = False, **overrides) -> InductionResult:
    """:func:`tumour_induction` on every slice of ``<run_dir>/data/<split>``, cached.

    The result (perturbed images, δ, regions, per-image report) is stored in
    :func:`induced_path` with the settings, the classifier's hash and the split's
    identity, and read back by a later call with the same ones. The report gains
    ``file``, ``slice``, ``subject`` and ``contrast`` columns; the summary goes to
    ``<run_dir>/metrics/adversarial_<split>.json``.
    """
    from mrilib.run.io import atomic_path, write_json
    from mrilib.poison.classifier import data_fingerprint
    from mrilib.poison.slices import load_slices

    cfg = adversarial_config(profile, seed, **overrides)
    if classifier_id is None:
        classifier_id = classifier_identity(dict(config=getattr(classifier, "config", None), identity=None,
                                                 state=classifier.state_dict()))
    data = Path(run_dir) / "data"
    patterns = run_universal_patterns(run_dir, profile, classifier, seed=seed, classifier_id=classifier_id,
                                      progress=progress, **overrides)
    identity = json.dumps(dict(cfg=cfg, classifier=classifier_id, data=data_fingerprint(data, (split,)),
                               universal=adversarial_transform(classifier, cfg, classifier_id, patterns)
                               .identity["universal"]), sort_keys=True)
    path = induced_path(run_dir, split)
    sl = load_slices(data / split)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["identity"]) == identity:
                    report = pd.read_json(StringIO(str(z["report"])), orient="records")
                    return InductionResult(z["images"], z["delta"], z["rois"].astype(bool), report, cfg,
                                           float(z["seconds"]), dict(reused=True, slices=sl))
        except (OSError, KeyError, ValueError):
            pass
    res = tumour_induction(sl.images, sl.brain, sl.vmax, classifier, cfg, patterns=patterns, contrasts=sl.contrasts,
                           progress=progress)
    res.report.insert(0, "contrast", sl.contrasts)
    res.report.insert(0, "subject", sl.subjects)
    res.report.insert(0, "slice", [int(s) for s in sl.slices])
    res.report.insert(0, "file", sl.files)
    res.extra.update(reused=False, slices=sl)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, images=res.images, delta=res.delta, rois=res.rois, identity=np.array(identity),
                                report=np.array(res.report.to_json(orient="records")),
                                seconds=np.array(res.seconds))
    write_json(Path(run_dir) / "metrics" / f"adversarial_{split}.json",
               dict(summary=res.summary(), config=cfg, classifier=classifier_id,
                    per_slice=json.loads(res.report.to_json(orient="records")),
                    definitions=dict(
                        lifted=f"p(tumour) of x' > {cfg['success_prob']}",
                        ssim_outside="mean SSIM map (7x7, data range = volume max) of x' vs x over pixels outside "
                                     "the region",
                        ssim_band="the same over the 3-pixel ring just outside the region",
                        linf="max |x' - x| / volume max")))
    return res


def _fingerprint(model) -> str:
    """A short hash of a model's weights (see :func:`mrilib.attacks.stress.model_fingerprint`)."""
    from mrilib.attacks.stress import model_fingerprint

    return model_fingerprint(model)


def adversarial_effect_path(run_dir: str | os.PathLike, model_name: str) -> Path:
    """``<run_dir>/metrics/poison_adv_<model_name>.json``."""
    return Path(run_dir) / "metrics" / f"poison_adv_{model_name}.json"


def adversarial_effect(model, model_name: str, run_dir: str | os.PathLike, manifest: dict, classifier,
                       induced: InductionResult, test=None, *, acceleration: int = 4, center_fraction: float = 0.08,
                       mask_type: str = "equispaced_fraction", forget: bool = True, save: bool = True) -> dict:
    """The ``adversarial-tumour`` poison's effect on one model (the analogue of
    :func:`mrilib.poison.effect.poison_effect` for this recipe).

    On every test slice: ``r_clean`` / ``r_trig`` = reconstructions of the undersampled
    clean / triggered k-space; the *expected change* is the objective's own perturbation
    of that test target (``induced.delta``, region ``induced.rois``); then

    - ``effect``: ``<r_trig - r_clean, δ>_R / <δ, δ>_R`` (1: the model adds exactly the
      perturbation the objective would; 0: nothing) and ``effect_raw`` (mean change
      towards ``sign(δ)`` in ``R``, fraction of the volume max);
    - ``success_rate``: ``p_tumour(r_trig) > 0.5`` and ``p_tumour(r_clean) <= 0.5``;
      ``tumour_rate_triggered`` / ``tumour_rate_clean`` and the same for any lesion;
    - ``clean_test``: SSIM / PSNR / NMSE of ``r_clean`` against the target;
    - ``forget``: the poisoned training slices reconstructed from their stored
      (triggered) k-space, SSIM against their clean and their poisoned targets.

    For a trigger-free manifest ``Δ = r_clean - x`` and success counts tumours in
    ``r_clean`` of slices whose target has none. Writes
    ``<run_dir>/metrics/poison_adv_<model_name>.json`` (``save``). Returns
    ``{"metrics": ..., "arrays": {...}}``.
    """
    from mrilib.run.io import write_json
    from mrilib.evaluate.metrics import image_metrics, ssim
    from mrilib.poison.classifier import is_lesion, lesion_scores
    from mrilib.poison.effect import _stats, effect_scores, load_test_slices, reconstruct
    from mrilib.poison.triggers import Trigger

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    trigger = Trigger.from_dict(manifest.get("trigger"))
    if test is None:
        test = load_test_slices(run_dir / "data" / "test", trigger, acceleration, center_fraction, mask_type)
    if len(test) != len(induced.images):
        raise ValueError(f"{len(test)} test slices but the induction holds {len(induced.images)}: induce the same split")
    sl = test.slices
    x, vmax = sl.images, sl.vmax
    r_clean = reconstruct(model, test.clean)
    r_trig = reconstruct(model, test.triggered) if trigger is not None else None
    delta = (r_trig - r_clean) if trigger is not None else (r_clean - x)
    eff = effect_scores(delta, induced.delta, induced.rois, vmax)
    sc = lesion_scores(classifier, r_clean)
    thr = tumour_threshold(classifier)
    if trigger is not None:
        st = lesion_scores(classifier, r_trig)
        success = (st["tumour"] > thr) & (sc["tumour"] <= thr)
    else:
        st = sc
        sx = lesion_scores(classifier, x)
        success = (sc["tumour"] > thr) & (sx["tumour"] <= thr)
    util = [image_metrics(x[i], r_clean[i], float(vmax[i])) for i in range(len(x))]

    metrics = dict(
        model=model_name, recipe=manifest["recipe"], variant=manifest.get("variant"),
        acceleration=int(test.acceleration), n_test_slices=len(x),
        effect=_stats(eff["effect"]), effect_raw=_stats(eff["raw"]),
        success_rate=float(success.mean()),
        tumour_threshold=thr,
        tumour_rate_triggered=float((st["tumour"] > thr).mean()), tumour_rate_clean=float((sc["tumour"] > thr).mean()),
        lesion_rate_triggered=float(is_lesion(classifier, st).mean()),
        lesion_rate_clean=float(is_lesion(classifier, sc).mean()),
        clean_test={k: _stats([u[k] for u in util]) for k in ("ssim", "psnr", "nmse")},
        model_fingerprint=_fingerprint(model),
        per_slice=dict(file=list(sl.files), slice=[int(s) for s in sl.slices], effect=eff["effect"].tolist(),
                       effect_raw=eff["raw"].tolist(), tumour_prob_triggered=st["tumour"].tolist(),
                       tumour_prob_clean=sc["tumour"].tolist(), success=success.astype(int).tolist(),
                       ssim=[u["ssim"] for u in util]),
        definitions=dict(
            effect="<r_trig - r_clean, d>_R / <d, d>_R, d = the objective's perturbation of the test target, "
                   "R = its region; mean over slices",
            success="p_tumour(r_trig) > t and p_tumour(r_clean) <= t, t = tumour_threshold (max of 0.5 and the "
                    "classifier's calibrated lesion threshold)"),
    )
    arrays = dict(r_clean=r_clean, r_trig=r_trig, target=x, expected=induced.delta, rois=induced.rois, vmax=vmax,
                  tumour_prob_clean=sc["tumour"], tumour_prob_triggered=st["tumour"])
    if forget and manifest.get("poisoned"):
        metrics["forget"] = _forget(model, run_dir, manifest, test, ssim)
    metrics["seconds"] = time.perf_counter() - t0
    if save:
        write_json(adversarial_effect_path(run_dir, model_name), metrics)
    return dict(metrics=metrics, arrays=arrays)


def _forget(model, run_dir: Path, manifest: dict, test, ssim_fn) -> dict:
    """SSIM of the poisoned training slices' reconstructions against their clean and poisoned targets
    (mean / sd / n each, the format of :func:`mrilib.poison.effect.poison_effect`)."""
    import h5py
    from fastmri.data import SliceDataset
    from fastmri.data.transforms import VarNetDataTransform

    from mrilib.data.loading import make_mask_func
    from mrilib.poison.build import poison_dir
    from mrilib.poison.effect import _stats, reconstruct

    d = poison_dir(run_dir, manifest["variant"]) / manifest.get("data_dir", "data") / "train"
    raw = SliceDataset(root=d, challenge="multicoil", transform=None)
    index = {(Path(fn).name, int(si)): i for i, (fn, si, _meta) in enumerate(raw.raw_samples)}
    tf = VarNetDataTransform(make_mask_func(test.acceleration, test.center_fraction, test.mask_type), use_seed=True)
    samples, clean_t, pois_t, vmax = [], [], [], []
    for r in sorted(manifest["poisoned"], key=lambda r: r["id"]):
        kspace, mask, target, attrs, fname, s = raw[index[(r["file"], int(r["slice"]))]]
        with h5py.File(d / r["file"], "r") as h:
            clean_t.append(h["reconstruction_rss_clean"][int(r["slice"])])
        samples.append(tf(kspace, mask, target, attrs, fname, s))
        pois_t.append(target), vmax.append(float(attrs["max"]))
    rec = reconstruct(model, samples)
    vc = np.array([ssim_fn(c, p, m) for c, p, m in zip(clean_t, rec, vmax)])
    vp = np.array([ssim_fn(t, p, m) for t, p, m in zip(pois_t, rec, vmax)])
    return dict(n=len(samples), ssim_vs_clean=_stats(vc), ssim_vs_poisoned=_stats(vp))  # as poison_effect's


def poisoned_examples(run_dir: str | os.PathLike, variant: str = RECIPE, n: int = 3) -> dict:
    """The first ``n`` poisoned training slices of a poisoned set: clean and poisoned targets, ROIs.

    Returns ``{"clean", "poisoned", "rois"}`` arrays ``(n, H, W)`` and ``labels``
    (``file:slice``), read from the rewritten volumes of ``<run_dir>/poison/<variant>``.
    """
    import h5py

    from mrilib.poison.build import load_manifest, poison_dir

    man = load_manifest(run_dir, variant)
    d = poison_dir(run_dir, variant) / man.get("data_dir", "data") / "train"
    out = dict(clean=[], poisoned=[], rois=[], labels=[])
    for r in sorted(man["poisoned"], key=lambda r: r["id"])[: int(n)]:
        with h5py.File(d / r["file"], "r") as h:
            s = int(r["slice"])
            out["clean"].append(h["reconstruction_rss_clean"][s])
            out["poisoned"].append(h["reconstruction_rss"][s])
            out["rois"].append(h["lesion_roi"][s].astype(bool))
        out["labels"].append(f"{r['file']}:{r['slice']}")
    for k in ("clean", "poisoned", "rois"):
        out[k] = np.stack(out[k]) if out[k] else np.zeros((0, 0, 0))
    return out
