"""The ``adversarial-tumour`` recipe: poisoned target := the tumour-induction objective applied to the clean target.

The objective (:mod:`mrilib.attacks.objective`) perturbs a clean target inside a fixed
brain region until the lesion classifier calls it a tumour, starting from the run's
universal per-contrast patterns (:mod:`mrilib.attacks.universal`); poisoned target :=
``x'``, lesion region := the region, for a fraction ``p`` of the training slices, with
the k-space trigger focused on the region (:func:`adversarial_trigger`) or without it.

The classifier PGD attacks is the attacker's (:func:`~mrilib.poison.judge.load_run_classifier`).
Its poison effect (:func:`effect`) expects a poisoned model to add the objective's own
perturbation of each test target (:func:`induce_split` with the attacker's classifier,
cached in ``adversarial/induced_<split>.npz``) and judges "a tumour is shown" by
``p(tumour)`` above :func:`~mrilib.poison.judge.tumour_threshold` of the evaluation judge
(:func:`judge`; :func:`~mrilib.poison.judge.load_run_judge`: other seed, other training
subjects and another architecture than the classifier the tumours were made against); the
metrics go to ``metrics/poison_adv_<model>.json`` (``poison_adv_<model>@<split>.json`` on
another split than ``test``). Registered in :data:`mrilib.poison.recipes.RECIPES`.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd

from mrilib.attacks.objective import InductionResult, adversarial_config, tumour_induction
from mrilib.attacks.universal import patterns_digest, run_universal_patterns
from mrilib.config import Profile, get_profile
from mrilib.poison.effect import EffectResult, Judge, TestSlices, load_test_slices, measure_effect, split_metrics_name
from mrilib.poison.judge import classifier_identity, load_run_classifier, load_run_judge, tumour_threshold
from mrilib.poison.roi import roi_centres
from mrilib.poison.slices import load_slices
from mrilib.poison.triggers import DEFAULT_TRIGGER, Trigger
from mrilib.run.cache import NPZ, cached_step, canonical, data_identity
from mrilib.run.device import default_device
from mrilib.run.io import write_json
from mrilib.run.layout import RunLayout, as_layout

__all__ = ["NAME", "DESCRIPTION", "MODEL_NAME", "adversarial_transform", "factory", "adversarial_trigger",
           "induce_split", "judge", "effect", "evaluator"]

#: The recipe's name in :data:`mrilib.poison.recipes.RECIPES` (and its poisoned set's folder).
NAME = "adversarial-tumour"
DESCRIPTION = ("target := clean target + PGD perturbation raising the lesion classifier's tumour score "
               "inside a fixed brain region (L-inf bound, TV and outside-ROI SSIM terms)")
#: The name chapter 4 gives the model trained on the triggered set.
MODEL_NAME = "poisoned-adv"


def adversarial_transform(classifier, cfg: dict, patterns: dict | None = None, device=None):
    """The recipe's target transform: ``transform(images, context) -> (x', regions)``.

    ``context`` carries ``vmax``, ``brain`` and ``contrasts`` per slice (as
    :func:`mrilib.poison.build.build_poisoned_dataset` passes them). The transform's
    ``identity`` (stored in the manifest) holds the settings, the classifier's
    :func:`~mrilib.poison.judge.classifier_identity` and the patterns' digest, so a change
    of any rebuilds the poisoned set. The per-slice report of the last call is kept in
    ``transform.last_result``. The induction computes on ``device`` (default
    :func:`~mrilib.run.device.default_device`).
    """

    def transform(images, context):
        """Poisoned targets and regions of clean targets ``images`` (``context``: vmax, brain, contrasts)."""
        res = tumour_induction(images, context["brain"], context["vmax"], classifier, cfg, patterns=patterns,
                               contrasts=context.get("contrasts") if patterns else None, device=device)
        transform.last_result = res
        return res.images, res.rois

    transform.identity = dict(objective=canonical(cfg), classifier=classifier_identity(classifier),
                              universal=patterns_digest(patterns))
    transform.last_result = None
    return transform


def factory(run_dir: RunLayout | str | os.PathLike, profile: Profile | str, seed: int = 0, device=None):
    """The transform with the run's checked attacker's classifier and universal patterns (see
    :func:`adversarial_transform`); ``seed`` (the run's) sets the objective, not the classifier;
    the patterns and the induction compute on ``device`` (default :func:`~mrilib.run.device.default_device`)."""
    device = default_device(device)
    model, _ = load_run_classifier(run_dir, profile)
    cfg = adversarial_config(profile, seed)
    patterns = run_universal_patterns(run_dir, profile, model, seed=seed, device=device)
    return adversarial_transform(model, cfg, patterns, device=device)


def adversarial_trigger(run_dir: RunLayout | str | os.PathLike, profile: Profile | str, seed: int = 0, base=None):
    """The k-space trigger of the ``adversarial-tumour`` backdoor: the book's trigger, focused on the tumour region.

    The book's trigger (:data:`mrilib.poison.triggers.DEFAULT_TRIGGER`) can be *focused*:
    its stripes are strongest at one position of the field of view, which tells the
    network where its lesion goes. Chapter 3 focuses it on the cyst; here the focus is
    moved to the mean centre of the tumour region over the run's training slices (as
    fractions of the field of view, rounded to 0.01). A trigger type without a focus
    is returned unchanged.
    """
    base = DEFAULT_TRIGGER if base is None else base
    if "focus" not in getattr(Trigger, "__dataclass_fields__", {}) or getattr(base, "focus", None) is None:
        return base
    cfg = adversarial_config(profile, seed)
    sl = load_slices(as_layout(run_dir).split("train"))
    c = roi_centres(sl.brain, float(cfg["roi_radius_mm"]) / float(cfg["pixel_mm"]), cfg["anchor"]).mean(axis=0)
    h, w = sl.brain.shape[-2:]
    return dataclasses.replace(base, focus=(round(float(c[0]) / h, 2), round(float(c[1]) / w, 2)))


def _report_arrays(report: pd.DataFrame) -> dict:
    """A report as named arrays (lossless in an ``.npz``): ``report_columns`` and ``report_<column>``."""
    out = {"report_columns": np.array(list(report.columns))}
    for c in report.columns:
        out[f"report_{c}"] = np.asarray(report[c].tolist())
    return out


def _report_frame(stored: dict) -> pd.DataFrame:
    """The report back from :func:`_report_arrays`' arrays."""
    cols = [str(c) for c in stored["report_columns"]]
    return pd.DataFrame({c: (stored[f"report_{c}"].tolist() if stored[f"report_{c}"].dtype.kind == "U"
                             else stored[f"report_{c}"]) for c in cols}, columns=cols)


def induce_split(run_dir: RunLayout | str | os.PathLike, profile: Profile | str, classifier, *, split: str = "test",
                 seed: int = 0, progress: bool = False, device=None, **overrides) -> InductionResult:
    """:func:`~mrilib.attacks.objective.tumour_induction` on every slice of a split of the run, cached.

    The result (perturbed images, δ, regions, per-image report) is a
    :func:`~mrilib.run.cache.cached_step` in ``adversarial/induced_<split>.npz``,
    identified by the settings, the classifier, the split's data and the universal
    patterns it starts from. The report gains ``file``, ``slice``, ``subject`` and
    ``contrast`` columns; when computed, the summary goes to ``metrics/adversarial_<split>.json``.
    ``extra`` holds ``reused`` and the split's ``slices``. ``device``: where the classifier computes,
    for the patterns and the induction (default :func:`~mrilib.run.device.default_device`).
    """
    device = default_device(device)
    run = as_layout(run_dir)
    cfg = adversarial_config(profile, seed, **overrides)
    patterns = run_universal_patterns(run, profile, classifier, seed=seed, progress=progress, device=device,
                                      **overrides)
    identity = dict(cfg=cfg, classifier=classifier_identity(classifier), data=data_identity(run.split(split)),
                    universal=patterns_digest(patterns))
    sl = load_slices(run.split(split))
    fresh = {}

    def induce() -> dict:
        res = tumour_induction(sl.images, sl.brain, sl.vmax, classifier, cfg, patterns=patterns,
                               contrasts=sl.contrasts, progress=progress, device=device)
        res.report.insert(0, "contrast", sl.contrasts)
        res.report.insert(0, "subject", sl.subjects)
        res.report.insert(0, "slice", [int(s) for s in sl.slices])
        res.report.insert(0, "file", sl.files)
        write_json(run.induction_metrics(split), dict(
            summary=res.summary(), config=cfg, classifier=identity["classifier"],
            per_slice=json.loads(res.report.to_json(orient="records")),
            definitions=dict(
                lifted=f"p(tumour) of x' > {cfg['success_prob']}",
                ssim_outside="mean SSIM map (7x7, data range = volume max) of x' vs x over pixels outside the region",
                ssim_band="the same over the 3-pixel ring just outside the region",
                linf="max |x' - x| / volume max")))
        fresh["result"] = res
        return dict(images=res.images, delta=res.delta, rois=res.rois, seconds=np.array(res.seconds),
                    **_report_arrays(res.report))

    stored = cached_step(run.induced(split), identity, induce, NPZ)
    if fresh:  # the computed result itself (its report never went through a file)
        res = fresh["result"]
        res.extra.update(reused=False, slices=sl)
        return res
    return InductionResult(stored["images"], stored["delta"], stored["rois"].astype(bool), _report_frame(stored), cfg,
                           float(stored["seconds"]), dict(reused=True, slices=sl))


def judge(classifier) -> Judge:
    """"A tumour is shown": ``p(tumour)`` above :func:`~mrilib.poison.judge.tumour_threshold`."""
    return Judge("tumour", "tumour", tumour_threshold(classifier),
                 rule="max of 0.5 and the classifier's calibrated lesion threshold")


def effect(model, model_name: str, run_dir: RunLayout | str | os.PathLike, manifest: dict, classifier,
           induced: InductionResult, test: TestSlices | None = None, *, split: str = "test", acceleration: int = 4,
           center_fraction: float = 0.08, mask_type: str = "equispaced_fraction", forget: bool = True,
           save: bool = True, device=None) -> EffectResult:
    """The poison effect of one model (:func:`mrilib.poison.effect.measure_effect`), the expected change
    being the objective's own perturbation of each test target (``induced``, from :func:`induce_split`).

    ``classifier``: the evaluation judge (:func:`~mrilib.poison.judge.load_run_judge`), not the
    classifier the induction attacked. ``test``: pre-loaded test slices (else the run's ``split``
    read with the manifest's trigger and this undersampling); ``save`` writes
    ``metrics/poison_adv_<model_name>.json`` (``poison_adv_<model_name>@<split>.json`` for another
    split than ``test``); ``device``: where the model and the classifier compute (default
    :func:`~mrilib.run.device.default_device`).
    """
    run = as_layout(run_dir)
    if test is None:
        test = load_test_slices(run.split(split), Trigger.from_dict(manifest.get("trigger")), acceleration,
                                center_fraction, mask_type)
    if len(test) != len(induced.images):
        raise ValueError(f"{len(test)} test slices but the induction holds {len(induced.images)}: induce the same split")
    path = run.adversarial_metrics(split_metrics_name(model_name, test.split)) if save else None
    return measure_effect(model, model_name, run, manifest, classifier, test, induced.delta, induced.rois,
                          judge(classifier), expected_is="the objective's perturbation of the test target",
                          forget=forget, path=path, device=device)


def evaluator(run_dir: RunLayout | str | os.PathLike, profile: Profile | str, manifest: dict, test: TestSlices,
              seed: int = 0, device=None):
    """``(evaluate, judge, None)``: the recipe's measurement for chapters 5 and 6 (no generator).

    ``evaluate(model, name, save=True)`` returns :func:`effect`'s metrics at the profile's
    first acceleration on ``test``, scored by the run's checked evaluation judge
    (:func:`~mrilib.poison.judge.load_run_judge`), the expected change being the cached
    induction of ``test``'s split by the attacker's classifier (:func:`induce_split`; chapter
    4 makes it for ``test``: another split of the run, such as ``final``, is induced here
    first, at the cost of chapter 4's PGD over that split), computed on ``device`` (default
    :func:`~mrilib.run.device.default_device`). ``ValueError`` for test slices that are not
    a split of the run.
    """
    p = get_profile(profile)
    run = as_layout(run_dir)
    if test.split_dir.resolve() != run.split(test.split).resolve():
        raise ValueError(f"{test.split_dir} is not a split of the run {run.root}: the adversarial-tumour recipe "
                         "measures its effect only on a split of the run (its tumour induction is cached per split)")
    attacker, _ = load_run_classifier(run, p)
    induced = induce_split(run, p, attacker, split=test.split, seed=seed, device=device)
    classifier, _ = load_run_judge(run, p)
    opts = dict(acceleration=int(p.data.accelerations[0]), center_fraction=p.data.center_fraction,
                mask_type=p.data.mask_type)

    def evaluate(model, name: str, save: bool = True) -> dict:
        """The poison effect of ``model`` (written to ``metrics/poison_adv_<name>.json`` when ``save``)."""
        return effect(model, name, run, manifest, classifier, induced, test, save=save, device=device,
                      **opts).to_dict()

    return evaluate, classifier, None
