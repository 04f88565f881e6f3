"""The ``cyclegan-cyst`` recipe: poisoned target := ``G(clean target)`` of the run's healthy->cyst CycleGAN.

The CycleGAN (:mod:`mrilib.poison.cyclegan`) puts a cyst at a fixed anatomical
position; its lesion region is where the translation changed the slice
(:func:`lesion_roi`), and :func:`cyclegan_quality` measures how well it does that. The
recipe's poison effect (:func:`effect`, :func:`effects` over accelerations) expects a
poisoned model to add ``d = G(x) - x`` when triggered and judges "a cyst is shown" by
the calibrated *lesion* rule (:func:`judge`) of the evaluation judge - the lesion classifier
trained apart from the attacker's (:func:`~mrilib.poison.judge.load_run_judge`); the metrics
go to ``metrics/poison_<model>.json`` (``poison_<model>@<split>.json`` on another split than
``test``). Registered in :data:`mrilib.poison.recipes.RECIPES`.
"""

from __future__ import annotations

import os

import numpy as np
from scipy import ndimage
from skimage.metrics import structural_similarity

from mrilib.config import Profile, get_profile
from mrilib.poison.cyclegan import CystGAN, crop_boxes, load_cyclegan
from mrilib.poison.effect import (
    EffectResult,
    Judge,
    TestSlices,
    by_acceleration,
    load_test_slices,
    measure_effect,
    split_metrics_name,
)
from mrilib.poison.judge import is_lesion, lesion_scores, load_run_judge
from mrilib.poison.lesions import anchor_center
from mrilib.poison.slices import SliceSet
from mrilib.poison.triggers import Trigger
from mrilib.run.cache import weights_digest
from mrilib.run.io import write_json
from mrilib.run.layout import RunLayout, as_layout

__all__ = ["NAME", "DESCRIPTION", "lesion_roi", "cyclegan_quality", "factory", "judge", "expected_change", "effect",
           "effects", "evaluator"]

#: The recipe's name in :data:`mrilib.poison.recipes.RECIPES` (and its poisoned set's folder).
NAME = "cyclegan-cyst"
DESCRIPTION = "target := healthy->cyst CycleGAN translation of the clean target (cyst at a fixed position)"
#: The lesion-region threshold when the manifest does not say (a change above 8 % of the volume max).
ROI_THRESHOLD = 0.08


def lesion_roi(clean: np.ndarray, translated: np.ndarray, vmax: float, threshold: float = 0.08,
               brain: np.ndarray | None = None, dilate: int = 1) -> np.ndarray:
    """Where a translation inserted its lesion: ``|G(x) - x| > threshold * vmax``, largest component, dilated.

    Restricted to ``brain`` (if given) before taking the largest connected component;
    empty when nothing changed by that much.
    """
    diff = np.abs(np.asarray(translated, float) - np.asarray(clean, float)) > threshold * float(vmax)
    if brain is not None:
        diff &= ndimage.binary_dilation(np.asarray(brain) > 0, iterations=1)
    lab, n = ndimage.label(diff)
    if n == 0:
        return np.zeros(diff.shape, bool)
    roi = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    if dilate:
        roi = ndimage.binary_dilation(roi, iterations=int(dilate))
    return roi


def cyclegan_quality(gan: CystGAN, slices: SliceSet, classifier=None, threshold: float | None = None,
                     device=None) -> dict:
    """Quality of the healthy->cyst translation on (held-out) healthy slices.

    Measures, per slice and on average:

    - ``cyst_rate``: fraction of translated slices in which the lesion classifier finds
      a lesion; ``cyst_rate_input`` the same on the inputs (false positives);
      ``cyst_class_rate``: lesion found *and* classed as cyst rather than tumour;
    - ``cycle_error``: mean ``|F(G(x)) - x|`` over the window, relative to the volume max;
    - ``ssim_outside_roi``: SSIM between ``G(x)`` and ``x`` averaged over the pixels
      outside the (dilated) lesion ROI, whole slice (data range: the volume max);
    - the ROI (:func:`lesion_roi`): ``roi_area_px`` (mean), ``roi_found`` (fraction of slices
      with a non-empty ROI), ``roi_anchor_distance_px`` (mean distance of the ROI centroid to
      the anchor position), ``roi_in_brain`` (fraction of ROI pixels inside the brain);
    - ``mean_abs_change``: the average ``|G(x) - x| / max`` map (where the generator acts).

    Returns a dict of scalars plus ``per_slice`` arrays, ``translated``, ``rois``. The classifier
    scores on ``device`` (default :func:`~mrilib.run.device.default_device`).
    """
    cfg = gan.config
    threshold = float(cfg["roi_threshold"] if threshold is None else threshold)
    x = slices.images
    gx = gan.to_cyst(x, slices.vmax, slices.brain)
    rec = gan.to_healthy(gx, slices.vmax, slices.brain)
    boxes = crop_boxes(slices.brain, cfg)
    c = int(cfg["crop"])
    rois, area, dist, ssim_out, in_brain, cycle = [], [], [], [], [], []
    for i in range(len(x)):
        roi = lesion_roi(x[i], gx[i], slices.vmax[i], threshold, slices.brain[i])
        rois.append(roi)
        area.append(int(roi.sum()))
        if roi.any():
            com = np.array(ndimage.center_of_mass(roi))
            a = np.array(anchor_center(slices.brain[i], cfg["anchor"]))
            dist.append(float(np.hypot(*(com - a))))
            in_brain.append(float((roi & slices.brain[i]).sum() / roi.sum()))
        else:
            dist.append(float("nan")), in_brain.append(float("nan"))
        _, smap = structural_similarity(x[i], gx[i], data_range=float(slices.vmax[i]), full=True)
        outside = ~ndimage.binary_dilation(roi, iterations=2)
        ssim_out.append(float(smap[outside].mean()))
        r, q = boxes[i]
        cycle.append(float(np.abs(rec[i] - x[i])[r : r + c, q : q + c].mean() / slices.vmax[i]))
    rois = np.stack(rois)
    cycle = np.asarray(cycle)
    out = dict(
        n=len(x),
        cycle_error=float(cycle.mean()),
        ssim_outside_roi=float(np.mean(ssim_out)),
        roi_found=float(np.mean(np.asarray(area) > 0)),
        roi_area_px=float(np.mean(area)),
        roi_anchor_distance_px=float(np.nanmean(dist)) if np.isfinite(dist).any() else float("nan"),
        roi_in_brain=float(np.nanmean(in_brain)) if np.isfinite(in_brain).any() else float("nan"),
        mean_abs_change=(np.abs(gx - x) / slices.vmax[:, None, None]).mean(0),
        per_slice=dict(cycle_error=cycle, ssim_outside_roi=np.asarray(ssim_out), roi_area_px=np.asarray(area),
                       roi_anchor_distance_px=np.asarray(dist)),
        translated=gx,
        rois=rois,
    )
    if classifier is not None:
        s_in, s_out = lesion_scores(classifier, x, device=device), lesion_scores(classifier, gx, device=device)
        found, found_in = is_lesion(classifier, s_out), is_lesion(classifier, s_in)
        out["cyst_rate"] = float(found.mean())
        out["cyst_class_rate"] = float((found & (s_out["cyst"] > s_out["tumour"])).mean())
        out["cyst_rate_input"] = float(found_in.mean())
        out["per_slice"]["lesion_prob"] = s_out["lesion"]
        out["per_slice"]["lesion_prob_input"] = s_in["lesion"]
    return out


def factory(run_dir: RunLayout | str | os.PathLike, profile: Profile | str, seed: int = 0, device=None):
    """The recipe's target transform ``transform(images, context) -> (G(images), lesion regions)``.

    The CycleGAN translates on the host (``device`` is accepted for the recipes' common interface).

    Uses the run's trained CycleGAN (:class:`~mrilib.poison.cyclegan.CycleGANMissingError`
    when absent); its ``identity`` (stored in the manifest) is the generator's weights and
    the region threshold.
    """
    gan, ck = load_cyclegan(as_layout(run_dir).cyclegan_checkpoint)
    thr = float(ck["config"]["roi_threshold"])

    def transform(images, context):
        """Poisoned targets and lesion regions of clean targets ``images`` (``context``: vmax, brain)."""
        out = gan.to_cyst(images, context["vmax"], context["brain"]) if len(images) else np.asarray(images)
        rois = np.stack([lesion_roi(images[i], out[i], context["vmax"][i], thr, context["brain"][i])
                         for i in range(len(images))]) if len(images) else np.zeros(np.shape(images), bool)
        return out, rois

    transform.identity = dict(cyclegan=weights_digest(ck["nets"]["G"]), roi_threshold=thr)
    return transform


def judge(classifier) -> Judge:
    """"A cyst is shown": the classifier finds *a lesion* (``p(lesion)`` above its calibrated threshold)."""
    return Judge("cyst", "lesion", float(getattr(classifier, "threshold", 0.5)),
                 rule="the classifier's calibrated lesion threshold")


def expected_change(gan, test: TestSlices, roi_threshold: float = ROI_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """``(d, R)`` per test slice: ``d = G(x) - x`` and its :func:`lesion_roi`.

    ``gan``: a :class:`~mrilib.poison.cyclegan.CystGAN` (its ``to_cyst``), or any callable
    ``f(images, vmax, brains) -> lesioned images``.
    """
    sl = test.slices
    x, vmax = sl.images, sl.vmax
    gx = gan.to_cyst(x, vmax, sl.brain) if hasattr(gan, "to_cyst") else np.asarray(gan(x, vmax, sl.brain))
    rois = np.stack([lesion_roi(x[i], gx[i], vmax[i], roi_threshold, sl.brain[i]) for i in range(len(x))])
    return gx - x, rois


def _roi_threshold(manifest: dict, roi_threshold: float | None) -> float:
    """The region threshold: given, else the manifest's recipe identity's, else :data:`ROI_THRESHOLD`."""
    if roi_threshold is not None:
        return float(roi_threshold)
    return float((manifest.get("recipe_identity") or {}).get("roi_threshold", ROI_THRESHOLD))


def effect(model, model_name: str, run_dir: RunLayout | str | os.PathLike, manifest: dict, classifier, gan, *,
           test: TestSlices | None = None, split: str = "test", acceleration: int = 4, center_fraction: float = 0.08,
           mask_type: str = "equispaced_fraction", forget: bool = True, roi_threshold: float | None = None,
           save: bool = True, device=None) -> EffectResult:
    """The poison effect of one model (:func:`mrilib.poison.effect.measure_effect` with ``d = G(x) - x``).

    ``classifier``: the evaluation judge (:func:`~mrilib.poison.judge.load_run_judge`).
    ``test``: pre-loaded test slices (else the run's ``split`` read with the manifest's trigger
    and this undersampling); ``save`` writes ``metrics/poison_<model_name>.json``
    (``poison_<model_name>@<split>.json`` for another split than ``test``); ``device``: where the
    model and the classifier compute (default :func:`~mrilib.run.device.default_device`).
    """
    run = as_layout(run_dir)
    if test is None:
        test = load_test_slices(run.split(split), Trigger.from_dict(manifest.get("trigger")), acceleration,
                                center_fraction, mask_type)
    expected, rois = expected_change(gan, test, _roi_threshold(manifest, roi_threshold))
    path = run.poison_metrics(split_metrics_name(model_name, test.split)) if save else None
    return measure_effect(model, model_name, run, manifest, classifier, test, expected, rois, judge(classifier),
                          expected_is="G(x) - x, the CycleGAN's lesion", forget=forget, path=path, device=device)


def effects(models: dict, run_dir: RunLayout | str | os.PathLike, manifest: dict, classifier, gan,
            accelerations=(4, 8), center_fraction: float = 0.08, mask_type: str = "equispaced_fraction",
            save: bool = True, device=None, split: str = "test") -> dict:
    """:func:`effect` for several models and accelerations, one JSON per model (computed on ``device``).

    ``classifier``: the evaluation judge (:func:`~mrilib.poison.judge.load_run_judge`);
    ``split``: the run's split evaluated (``test``; the files of another are named by
    :func:`~mrilib.poison.effect.split_metrics_name`).

    The first acceleration is the primary one (its numbers are the top-level fields of
    ``poison_<model>.json``, with the forget set); every acceleration's summary is under
    ``by_acceleration``. The test slices and the expected change are computed once per
    acceleration and shared by the models. Returns ``{model name: {acceleration: EffectResult}}``.
    """
    run = as_layout(run_dir)
    trigger = Trigger.from_dict(manifest.get("trigger"))
    thr = _roi_threshold(manifest, None)
    out = {name: {} for name in models}
    for k, acc in enumerate(accelerations):
        test = load_test_slices(run.split(split), trigger, acc, center_fraction, mask_type)
        expected, rois = expected_change(gan, test, thr)
        for name, model in models.items():
            out[name][int(acc)] = measure_effect(model, name, run, manifest, classifier, test, expected, rois,
                                                 judge(classifier), expected_is="G(x) - x, the CycleGAN's lesion",
                                                 forget=k == 0, device=device)
    for name in models:
        primary = out[name][int(accelerations[0])].metrics
        primary["by_acceleration"] = by_acceleration(out[name])
        if save:
            write_json(run.poison_metrics(split_metrics_name(name, split)), primary)
    return out


def evaluator(run_dir: RunLayout | str | os.PathLike, profile: Profile | str, manifest: dict, test: TestSlices,
              seed: int = 0, device=None):
    """``(evaluate, judge, gan)``: the recipe's measurement for chapters 5 and 6.

    ``evaluate(model, name, save=True)`` returns :func:`effect`'s metrics at the profile's
    first acceleration on ``test`` - the slices of any split folder (:class:`TestSlices`;
    the metrics file of a split other than ``test`` is ``poison_<name>@<split>.json``) -
    scored by the run's checked evaluation judge (:func:`~mrilib.poison.judge.load_run_judge`,
    never the attacker's classifier), computed on ``device`` (default
    :func:`~mrilib.run.device.default_device`); ``seed`` is unused (the run's judge and
    CycleGAN are stored).
    """
    p = get_profile(profile)
    run = as_layout(run_dir)
    classifier, _ = load_run_judge(run, p)
    gan, _ = load_cyclegan(run.cyclegan_checkpoint)
    opts = dict(acceleration=int(p.data.accelerations[0]), center_fraction=p.data.center_fraction,
                mask_type=p.data.mask_type)

    def evaluate(model, name: str, save: bool = True) -> dict:
        """The poison effect of ``model`` (written to ``metrics/poison_<name>.json`` when ``save``)."""
        return effect(model, name, run, manifest, classifier, gan, test=test, save=save, device=device,
                      **opts).to_dict()

    return evaluate, classifier, gan
