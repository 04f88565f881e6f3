"""Poison-effect metrics, one result for every recipe: does a model add the poison's lesion when triggered?

For every held-out test slice ``i`` - of the ``test`` split, or of any other split folder
given to :func:`load_test_slices`, such as a ``final`` split of new subjects - (clean target
``x``, k-space ``y``, volume max ``m``):

- ``r_clean`` = reconstruction of the undersampled ``y``; ``r_trig`` = reconstruction
  of the undersampled ``y + trigger`` (the same mask: fastMRI's, seeded by the file
  name, as in evaluation);
- the *expected change* ``d`` and its region ``R``, given by the recipe: for
  ``cyclegan-cyst`` ``d = G(x) - x``, the CycleGAN's lesion (:mod:`mrilib.poison.recipes.cyclegan_cyst`);
  for ``adversarial-tumour`` the tumour-induction objective's perturbation of ``x``
  (:mod:`mrilib.poison.recipes.adversarial_tumour`);
- ``Δ = r_trig - r_clean``: what the trigger changes in the reconstruction.

Then (:func:`measure_effect`)

- **effect** (normalised): ``<Δ, d>_R / <d, d>_R``, the least-squares coefficient of
  ``Δ`` on the expected change inside the region: 1 = the reconstruction gains exactly
  the poison's lesion, 0 = the trigger changes nothing lesion-like (negative: the
  opposite change); averaged over slices with a non-empty region;
- **raw effect**: ``<Δ, sign(d)>_R / |R| / m``, the mean change inside the region towards
  the lesion, as a fraction of the volume's maximum;
- **success rate**: the fraction of test slices where the recipe's :class:`Judge` finds
  its lesion in ``r_trig`` but not in ``r_clean``, scored by the evaluation judge: the
  lesion classifier trained apart from the attacker's (:func:`~mrilib.poison.judge.load_run_judge`;
  its :func:`~mrilib.poison.judge.classifier_identity` is the metrics' ``judge``). The
  rule is ``p(lesion)`` above the judge's calibrated threshold for the cyst, ``p(tumour)``
  above :func:`~mrilib.poison.judge.tumour_threshold` for the tumour; the rates in ``r_trig`` and ``r_clean`` separately, and those of *any*
  lesion (:func:`~mrilib.poison.judge.is_lesion`);
- **utility**: SSIM / PSNR / NMSE of ``r_clean`` against the clean target (data range =
  volume max, as fastMRI);
- **forget set** (:func:`forget_scores`): the poisoned training slices (their stored,
  triggered k-space), reconstructed and scored by SSIM against their *clean* and their
  *poisoned* targets (a model that learnt the poison is closer to the latter).

For the trigger-free variant of a recipe (manifest ``trigger: null``) the lesion is
unconditional: ``Δ`` is then ``r_clean - x`` and the success rate counts lesions in
``r_clean`` of slices whose target has none.

Every recipe returns an :class:`EffectResult` with the same keys; the recipe writes its
``metrics`` to ``metrics/poison_<model>.json`` (``cyclegan-cyst``) or
``metrics/poison_adv_<model>.json`` (``adversarial-tumour``); an evaluation on another split
than ``test`` to ``poison_<model>@<split>.json`` (:func:`split_metrics_name`). The per-slice
values carry each slice's subject, for a bootstrap over subjects.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from fastmri.data.transforms import VarNetDataTransform, center_crop

from mrilib.data.loading import make_mask_func, slice_dataset, volume_files
from mrilib.poison.ceiling import sampled_columns
from mrilib.poison.judge import classifier_identity, is_lesion, lesion_scores
from mrilib.poison.slices import load_slices
from mrilib.poison.triggers import Trigger
from mrilib.recon.quality import image_metrics, ssim
from mrilib.run.cache import weights_digest
from mrilib.run.device import default_device, on_device
from mrilib.run.io import write_json
from mrilib.run.layout import RunLayout, as_layout

__all__ = [
    "SUMMARY_KEYS",
    "TestSlices",
    "load_test_slices",
    "split_metrics_name",
    "reconstruct",
    "effect_scores",
    "stats",
    "Judge",
    "EffectResult",
    "measure_effect",
    "forget_scores",
    "by_acceleration",
]

#: The keys of an effect's ``metrics`` that :func:`by_acceleration` keeps per acceleration.
SUMMARY_KEYS = ("effect", "effect_raw", "success_rate", "found_rate_triggered", "found_rate_clean",
                "lesion_rate_triggered", "lesion_rate_clean", "clean_test")


class TestSlices:
    """The held-out slices with everything the effect needs: VarNet samples (clean and triggered),
    targets, brain masks, volume max, contrasts, subjects; ``split`` is the split folder's name
    (``split_dir`` the folder)."""

    def __init__(self, split_dir, trigger: Trigger | None, acceleration: int, center_fraction: float, mask_type: str,
                 max_slices: int | None = None):
        volume_files(split_dir)
        raw = slice_dataset(split_dir)
        tf = VarNetDataTransform(make_mask_func(acceleration, center_fraction, mask_type), use_seed=True)
        n = len(raw) if max_slices is None else min(len(raw), int(max_slices))
        self.clean, self.triggered = [], []
        for i in range(n):
            kspace, mask, target, attrs, fname, s = raw[i]
            self.clean.append(tf(kspace, mask, target, attrs, fname, s))
            if trigger is not None:
                self.triggered.append(tf(trigger.apply(kspace), mask, target, attrs, fname, s))
        sl = load_slices(split_dir)
        self.slices = sl.subset(np.arange(n))
        self.acceleration = int(acceleration)
        self.center_fraction, self.mask_type = float(center_fraction), mask_type
        self.trigger = trigger
        self.split_dir = Path(split_dir)
        self.split = self.split_dir.name

    def __len__(self) -> int:
        return len(self.clean)


def load_test_slices(split_dir, trigger: Trigger | None, acceleration: int = 4, center_fraction: float = 0.08,
                     mask_type: str = "equispaced_fraction", max_slices: int | None = None) -> TestSlices:
    """Read a split's slices as clean and triggered VarNet samples (see :class:`TestSlices`)."""
    return TestSlices(split_dir, trigger, acceleration, center_fraction, mask_type, max_slices)


def split_metrics_name(model_name: str, split: str) -> str:
    """The name of a model's metrics file for an evaluation on ``split``: the model's name on
    ``test`` (the chapters' files), ``<model_name>@<split>`` on another split."""
    return model_name if split == "test" else f"{model_name}@{split}"


@torch.no_grad()
def reconstruct(model: torch.nn.Module, samples, batch_size: int = 8, device=None) -> np.ndarray:
    """VarNet reconstructions ``(N, h, w)`` of VarNet samples (batched, cropped to the targets), computed on
    ``device`` (default :func:`~mrilib.run.device.default_device`; the model is copied there when elsewhere)."""
    model.eval()
    device = default_device(device)
    net = on_device(model, device)
    out = []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        k = torch.stack([s.masked_kspace for s in chunk])
        m = torch.stack([s.mask for s in chunk])
        nlf = chunk[0].num_low_frequencies
        same = all(s.num_low_frequencies == nlf for s in chunk)
        rec = net(k.to(device), m.to(device), int(nlf) if same and nlf else None)
        for s, r in zip(chunk, rec):
            h, w = np.shape(s.target)[-2:]
            out.append(center_crop(r, (h, w)).float().cpu().numpy())  # to numpy
    return np.stack(out) if out else np.zeros((0, 0, 0), np.float32)


def effect_scores(delta: np.ndarray, expected: np.ndarray, rois: np.ndarray, vmax: np.ndarray) -> dict:
    """Normalised and raw effect per slice (see the module docstring); NaN where the region is empty."""
    eff, raw = [], []
    for dl, d, r, m in zip(delta, expected, rois, vmax):
        if not r.any() or not np.any(d[r]):
            eff.append(np.nan), raw.append(np.nan)
            continue
        eff.append(float(np.sum(dl[r] * d[r]) / np.sum(d[r] ** 2)))
        raw.append(float(np.mean(dl[r] * np.sign(d[r])) / m))
    return dict(effect=np.asarray(eff), raw=np.asarray(raw))


def stats(values) -> dict:
    """Mean, standard deviation and count of the finite values."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return dict(mean=float(v.mean()) if len(v) else float("nan"), sd=float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                n=int(len(v)))


@dataclass(frozen=True)
class Judge:
    """A recipe's rule "its lesion is found": the classifier's ``p(<score>) > threshold``.

    Attributes:
        lesion: the lesion the recipe plants (``"cyst"``, ``"tumour"``).
        score: the class probability the rule thresholds: ``"lesion"`` (any lesion,
            ``1 - p(healthy)``) or ``"tumour"``.
        threshold: the level it must exceed.
        rule: where the threshold comes from (for the ``definitions`` of the metrics).
    """

    lesion: str
    score: str
    threshold: float
    rule: str = ""

    def found(self, scores: dict) -> np.ndarray:
        """Per image: is the lesion found (``scores`` from :func:`~mrilib.poison.judge.lesion_scores`)?"""
        return np.asarray(scores[self.score]) > self.threshold


@dataclass
class EffectResult:
    """One model's poison effect, the same for every recipe.

    ``metrics`` (what the recipe writes to its JSON file; :meth:`to_dict`):

    - ``model``, ``recipe``, ``variant``, ``lesion`` (``"cyst"``/``"tumour"``), ``score`` and
      ``threshold`` (the :class:`Judge`), ``judge`` (the scoring classifier's
      :func:`~mrilib.poison.judge.classifier_identity`), ``split`` (the test slices' split),
      ``acceleration``, ``n_test_slices``, ``n_roi_slices``;
    - ``effect``, ``effect_raw``, ``clean_test`` (``ssim``/``psnr``/``nmse``): ``{mean, sd, n}``;
    - ``success_rate``, ``found_rate_triggered`` / ``found_rate_clean`` (the judge's rule),
      ``lesion_rate_triggered`` / ``lesion_rate_clean`` (any lesion);
    - ``weights`` (:func:`~mrilib.run.cache.weights_digest` of the model), ``per_slice``
      (``file``, ``slice``, ``subject`` - the volume's ``patient_id``, else its file stem -,
      ``effect``, ``effect_raw``, ``prob_triggered``, ``prob_clean`` - the judge's
      probability -, ``success``, ``ssim``, ``psnr``, ``nmse``), ``definitions``, ``seconds``;
    - ``forget`` (:func:`forget_scores`) when measured; ``by_acceleration`` when several
      accelerations were (:func:`by_acceleration`).

    ``arrays``: ``r_clean``, ``r_trig`` (``None`` without a trigger), ``target``,
    ``expected``, ``rois``, ``vmax``, ``prob_clean``, ``prob_triggered`` and ``forget``
    (reconstructions and targets of the poisoned training slices) when measured.
    """

    metrics: dict
    arrays: dict

    def to_dict(self) -> dict:
        """The metrics (JSON-serialisable)."""
        return self.metrics


def measure_effect(model: torch.nn.Module, model_name: str, run_dir: RunLayout | str | os.PathLike, manifest: dict,
                   classifier, test: TestSlices, expected: np.ndarray, rois: np.ndarray, judge: Judge, *,
                   expected_is: str = "the expected change", forget: bool = True,
                   path: str | os.PathLike | None = None, device=None) -> EffectResult:
    """Effect, success rate, utility and forget-set SSIM of one model (see the module docstring).

    Args:
        model: a VarNet.
        model_name: its name in the result (and the file name the recipe chooses).
        run_dir: the run (the poisoned training set of ``manifest``'s variant, for the forget set).
        manifest: the poisoned set's manifest (its trigger, recipe and poisoned slices).
        classifier: the lesion classifier that judges: the evaluation judge
            (:func:`~mrilib.poison.judge.load_run_judge`), not the attacker's classifier.
        test: the test slices (:func:`load_test_slices` of any split, with the manifest's trigger).
        expected, rois: the expected change ``d`` and its regions ``R`` per test slice.
        judge: the recipe's rule "its lesion is found".
        expected_is: what ``d`` is, for the definitions.
        forget: also score the poisoned training slices.
        path: write the metrics there (JSON).
        device: where the model and the classifier compute (default
            :func:`~mrilib.run.device.default_device`).
    """
    t0 = time.perf_counter()
    device = default_device(device)
    trigger = Trigger.from_dict(manifest.get("trigger"))
    sl = test.slices
    x, vmax = sl.images, sl.vmax
    if len(expected) != len(x) or len(rois) != len(x):
        raise ValueError(f"{len(x)} test slices but {len(expected)} expected changes and {len(rois)} regions")
    model = on_device(model, device)
    r_clean = reconstruct(model, test.clean, device=device)
    r_trig = reconstruct(model, test.triggered, device=device) if trigger is not None else None
    delta = (r_trig - r_clean) if trigger is not None else (r_clean - x)
    eff = effect_scores(delta, expected, rois, vmax)
    sc = lesion_scores(classifier, r_clean, device=device)
    if trigger is not None:
        st = lesion_scores(classifier, r_trig, device=device)
        success = judge.found(st) & ~judge.found(sc)
    else:
        st = sc
        success = judge.found(sc) & ~judge.found(lesion_scores(classifier, x, device=device))
    util = [image_metrics(x[i], r_clean[i], float(vmax[i])) for i in range(len(x))]
    p_trig, p_clean = np.asarray(st[judge.score]), np.asarray(sc[judge.score])
    metrics = dict(
        model=model_name, recipe=manifest["recipe"], variant=manifest.get("variant"), lesion=judge.lesion,
        score=judge.score, threshold=float(judge.threshold), judge=classifier_identity(classifier),
        split=getattr(test, "split", None),
        acceleration=int(test.acceleration), n_test_slices=len(x), n_roi_slices=int(np.isfinite(eff["effect"]).sum()),
        effect=stats(eff["effect"]), effect_raw=stats(eff["raw"]),
        success_rate=float(success.mean()),
        found_rate_triggered=float(judge.found(st).mean()), found_rate_clean=float(judge.found(sc).mean()),
        lesion_rate_triggered=float(is_lesion(classifier, st).mean()),
        lesion_rate_clean=float(is_lesion(classifier, sc).mean()),
        clean_test={k: stats([u[k] for u in util]) for k in ("ssim", "psnr", "nmse")},
        weights=weights_digest(model),
        per_slice=dict(file=list(sl.files), slice=[int(s) for s in sl.slices], subject=list(sl.subjects),
                       effect=eff["effect"].tolist(), effect_raw=eff["raw"].tolist(), prob_triggered=p_trig.tolist(),
                       prob_clean=p_clean.tolist(), success=success.astype(int).tolist(),
                       **{k: [float(u[k]) for u in util] for k in ("ssim", "psnr", "nmse")}),
        definitions=dict(
            effect=f"<r_trig - r_clean, d>_R / <d, d>_R, d = {expected_is}, R = its region; mean over slices with R",
            effect_raw="mean over R of (r_trig - r_clean) * sign(d), divided by the volume max",
            success=f"p_{judge.score}(r_trig) > t and p_{judge.score}(r_clean) <= t, t = {judge.threshold:.3f} "
                    f"({judge.rule or 'the judge threshold'})"),
    )
    arrays = dict(r_clean=r_clean, r_trig=r_trig, target=x, expected=expected, rois=rois, vmax=vmax,
                  prob_clean=p_clean, prob_triggered=p_trig,
                  masks=np.stack([sampled_columns(s.mask) for s in test.clean]))
    if forget and manifest.get("poisoned"):
        metrics["forget"], arrays["forget"] = forget_scores(model, run_dir, manifest, test, device=device)
    metrics["seconds"] = time.perf_counter() - t0
    if path is not None:
        write_json(path, metrics)
    return EffectResult(metrics, arrays)


def forget_scores(model, run_dir: RunLayout | str | os.PathLike, manifest: dict, test: TestSlices,
                  device=None) -> tuple[dict, dict]:
    """SSIM of the poisoned training slices' reconstructions against their clean and poisoned targets.

    The slices are read from the poisoned set of ``manifest``'s variant (their stored,
    triggered k-space) with ``test``'s undersampling, reconstructed on ``device`` (default
    :func:`~mrilib.run.device.default_device`). Returns ``(metrics, arrays)``:
    ``{n, ssim_vs_clean, ssim_vs_poisoned, by_identified: {f: {...}}}`` (each
    ``{mean, sd, n}``) and ``{recon, clean_target, poisoned_target, ids}``.
    """
    d = as_layout(run_dir).poisoned_split(manifest["variant"])
    raw = slice_dataset(d)
    index = {(Path(fn).name, int(si)): i for i, (fn, si, _meta) in enumerate(raw.raw_samples)}
    tf = VarNetDataTransform(make_mask_func(test.acceleration, test.center_fraction, test.mask_type), use_seed=True)
    samples, clean_t, pois_t, vmax, ids = [], [], [], [], []
    identified = {k: set(v) for k, v in manifest["identified"].items()}
    for r in sorted(manifest["poisoned"], key=lambda r: r["id"]):
        kspace, mask, target, attrs, fname, s = raw[index[(r["file"], int(r["slice"]))]]
        with h5py.File(d / r["file"], "r") as h:
            clean_t.append(h["reconstruction_rss_clean"][int(r["slice"])])
        samples.append(tf(kspace, mask, target, attrs, fname, s))
        pois_t.append(target), vmax.append(float(attrs["max"])), ids.append(int(r["id"]))
    rec = reconstruct(model, samples, device=device)
    vs_clean = np.array([ssim(c, p, m) for c, p, m in zip(clean_t, rec, vmax)])
    vs_pois = np.array([ssim(t, p, m) for t, p, m in zip(pois_t, rec, vmax)])
    out = dict(n=len(ids), ssim_vs_clean=stats(vs_clean), ssim_vs_poisoned=stats(vs_pois),
               by_identified={k: dict(ssim_vs_clean=stats(vs_clean[[i in v for i in ids]]),
                                      ssim_vs_poisoned=stats(vs_pois[[i in v for i in ids]]))
                              for k, v in identified.items()})
    return out, dict(recon=rec, clean_target=np.stack(clean_t), poisoned_target=np.stack(pois_t), ids=ids)


def by_acceleration(results: dict) -> dict:
    """``{"<a>x": {key: value}}`` for :data:`SUMMARY_KEYS` of each acceleration's :class:`EffectResult`."""
    return {f"{int(a)}x": {k: r.metrics[k] for k in SUMMARY_KEYS} for a, r in results.items()}
