"""Poison-effect metrics: does a model hallucinate the poison's lesion when the trigger is present?

For every held-out test slice ``i`` (clean target ``x``, k-space ``y``, volume max ``m``):

- ``r_clean`` = reconstruction of the undersampled ``y``; ``r_trig`` = reconstruction
  of the undersampled ``y + trigger`` (the same mask: fastMRI's, seeded by the file
  name, as in evaluation);
- the *expected lesion change* ``d = G(x) - x`` (the CycleGAN's translation of the
  test target: the lesion the poison taught) and its ROI ``R`` (``|d| > 0.08 m``,
  largest component, dilated; :func:`mrilib.poison.cyclegan.lesion_roi`);
- ``Δ = r_trig - r_clean``: what the trigger changes in the reconstruction.

Then

- **effect** (normalised): ``<Δ, d>_R / <d, d>_R``, the least-squares coefficient of
  ``Δ`` on the expected lesion inside the ROI: 1 = the reconstruction gains exactly
  the poison's lesion, 0 = the trigger changes nothing lesion-like (negative: the
  opposite change). A clean model scores about 0; a fully poisoned one about 1;
  it is averaged over slices with a non-empty ROI;
- **raw effect**: ``<Δ, sign(d)>_R / |R| / m``, the mean change inside the ROI towards
  the lesion, as a fraction of the volume's maximum (in image units: ``× m``);
- **poison success rate**: the fraction of test slices where the lesion classifier
  finds a lesion in ``r_trig`` but not in ``r_clean`` (``p_lesion`` above the classifier's
  calibrated threshold, :func:`mrilib.poison.classifier.is_lesion`);
  also reported: the lesion rates in ``r_trig`` and in ``r_clean`` separately;
- **utility**: SSIM / PSNR / NMSE of ``r_clean`` against the clean target (the clean
  test set at this acceleration; data range = volume max, as fastMRI);
- **forget set**: the poisoned training slices (their stored, triggered k-space),
  reconstructed and scored by SSIM against their *clean* targets and against their
  *poisoned* targets (a model that learnt the poison is closer to the latter).

For the trigger-free variant of a recipe (manifest ``trigger: null``) the lesion is
unconditional: ``Δ`` is then ``r_clean - x`` and the success rate counts lesions in
``r_clean`` of slices whose target has none.

:func:`poison_effect` writes ``<run_dir>/metrics/poison_<model>.json``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from mrilib.run.io import write_json
from mrilib.poison.triggers import Trigger

__all__ = ["TestSlices", "load_test_slices", "reconstruct", "effect_scores", "poison_effect", "poison_effects", "metrics_path"]


class TestSlices:
    """The held-out slices with everything the effect needs: VarNet samples (clean and triggered),
    targets, brain masks, volume max, contrasts."""

    def __init__(self, split_dir, trigger: Trigger | None, acceleration: int, center_fraction: float, mask_type: str,
                 max_slices: int | None = None):
        from fastmri.data import SliceDataset
        from fastmri.data.transforms import VarNetDataTransform, to_tensor

        from mrilib.data.loading import make_mask_func, volume_files
        from mrilib.poison.slices import load_slices

        volume_files(split_dir)
        raw = SliceDataset(root=split_dir, challenge="multicoil", transform=None)
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

    def __len__(self) -> int:
        return len(self.clean)


def load_test_slices(split_dir, trigger: Trigger | None, acceleration: int = 4, center_fraction: float = 0.08,
                     mask_type: str = "equispaced_fraction", max_slices: int | None = None) -> TestSlices:
    """Read a split's slices as clean and triggered VarNet samples (see :class:`TestSlices`)."""
    return TestSlices(split_dir, trigger, acceleration, center_fraction, mask_type, max_slices)


@torch.no_grad()
def reconstruct(model: torch.nn.Module, samples, batch_size: int = 8) -> np.ndarray:
    """VarNet reconstructions ``(N, h, w)`` of VarNet samples (batched, CPU, cropped to the targets)."""
    from fastmri.data.transforms import center_crop

    model.eval()
    out = []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        k = torch.stack([s.masked_kspace for s in chunk])
        m = torch.stack([s.mask for s in chunk])
        nlf = chunk[0].num_low_frequencies
        same = all(s.num_low_frequencies == nlf for s in chunk)
        rec = model(k, m, int(nlf) if same and nlf else None)
        for s, r in zip(chunk, rec):
            h, w = np.shape(s.target)[-2:]
            out.append(center_crop(r, (h, w)).float().numpy())
    return np.stack(out) if out else np.zeros((0, 0, 0), np.float32)


def effect_scores(delta: np.ndarray, expected: np.ndarray, rois: np.ndarray, vmax: np.ndarray) -> dict:
    """Normalised and raw effect per slice (see the module docstring); NaN where the ROI is empty."""
    eff, raw = [], []
    for dl, d, r, m in zip(delta, expected, rois, vmax):
        if not r.any() or not np.any(d[r]):
            eff.append(np.nan), raw.append(np.nan)
            continue
        eff.append(float(np.sum(dl[r] * d[r]) / np.sum(d[r] ** 2)))
        raw.append(float(np.mean(dl[r] * np.sign(d[r])) / m))
    return dict(effect=np.asarray(eff), raw=np.asarray(raw))


def metrics_path(run_dir: str | os.PathLike, model_name: str) -> Path:
    """``<run_dir>/metrics/poison_<model_name>.json``."""
    return Path(run_dir) / "metrics" / f"poison_{model_name}.json"


def _stats(values) -> dict:
    """Mean, standard deviation and count of the finite values."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return dict(mean=float(v.mean()) if len(v) else float("nan"), sd=float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                n=int(len(v)))


def poison_effect(
    model: torch.nn.Module,
    model_name: str,
    run_dir: str | os.PathLike,
    manifest: dict,
    classifier,
    gan,
    *,
    acceleration: int = 4,
    center_fraction: float = 0.08,
    mask_type: str = "equispaced_fraction",
    test: TestSlices | None = None,
    forget: bool = True,
    roi_threshold: float | None = None,
    save: bool = True,
) -> dict:
    """Poison effect, success rate, clean utility and forget-set SSIM of one model.

    Args:
        model: a VarNet.
        model_name: its name in the output file (``poison_<model_name>.json``).
        run_dir: the run directory (test split in ``data/test``, poisoned set from the manifest).
        manifest: the poisoned set's manifest (its trigger and poisoned slices).
        classifier: the lesion classifier (:mod:`mrilib.poison.classifier`).
        gan: the recipe's healthy->lesion translator, for the expected change ``d``: a
            :class:`~mrilib.poison.cyclegan.CystGAN` (its ``to_cyst``), or any callable
            ``f(images, vmax, brains) -> lesioned images`` (another recipe's target transform).
        acceleration, center_fraction, mask_type: the undersampling of the test inputs.
        test: pre-loaded :class:`TestSlices` (saves reading them once per model).
        forget: also score the poisoned training slices.
        roi_threshold: ROI threshold (default: the recipe's, else 0.08).
        save: write the JSON file.

    Returns:
        ``{"metrics": <what the JSON holds>, "arrays": {r_clean, r_trig, expected, rois, ...}}``.
    """
    from mrilib.evaluate.metrics import image_metrics, ssim
    from mrilib.poison.classifier import is_lesion, lesion_scores
    from mrilib.poison.cyclegan import lesion_roi

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    trigger = Trigger.from_dict(manifest.get("trigger"))
    if test is None:
        test = load_test_slices(run_dir / "data" / "test", trigger, acceleration, center_fraction, mask_type)
    thr = roi_threshold if roi_threshold is not None else float((manifest.get("recipe_identity") or {}).get("roi_threshold", 0.08))
    sl = test.slices
    x, vmax = sl.images, sl.vmax
    r_clean = reconstruct(model, test.clean)
    r_trig = reconstruct(model, test.triggered) if trigger is not None else None
    gx = gan.to_cyst(x, vmax, sl.brain) if hasattr(gan, "to_cyst") else np.asarray(gan(x, vmax, sl.brain))
    expected = gx - x
    rois = np.stack([lesion_roi(x[i], gx[i], vmax[i], thr, sl.brain[i]) for i in range(len(x))])
    delta = (r_trig - r_clean) if trigger is not None else (r_clean - x)
    eff = effect_scores(delta, expected, rois, vmax)
    sc = lesion_scores(classifier, r_clean)
    s_clean, f_clean = sc["lesion"], is_lesion(classifier, sc)
    if trigger is not None:
        st = lesion_scores(classifier, r_trig)
        s_trig, f_trig = st["lesion"], is_lesion(classifier, st)
        success = f_trig & ~f_clean
    else:
        s_trig, f_trig = s_clean, f_clean
        success = f_clean & ~is_lesion(classifier, lesion_scores(classifier, x))
    util = [image_metrics(x[i], r_clean[i], float(vmax[i])) for i in range(len(x))]
    metrics = dict(
        model=model_name,
        recipe=manifest["recipe"],
        variant=manifest.get("variant"),
        acceleration=int(test.acceleration),
        n_test_slices=len(x),
        n_roi_slices=int(np.isfinite(eff["effect"]).sum()),
        effect=_stats(eff["effect"]),
        effect_raw=_stats(eff["raw"]),
        success_rate=float(success.mean()),
        lesion_rate_triggered=float(f_trig.mean()),
        lesion_rate_clean=float(f_clean.mean()),
        classifier_threshold=float(getattr(classifier, "threshold", 0.5)),
        clean_test=dict(ssim=_stats([u["ssim"] for u in util]), psnr=_stats([u["psnr"] for u in util]),
                        nmse=_stats([u["nmse"] for u in util])),
        per_slice=dict(file=list(sl.files), slice=[int(s) for s in sl.slices], effect=eff["effect"].tolist(),
                       effect_raw=eff["raw"].tolist(), lesion_prob_triggered=s_trig.tolist(),
                       lesion_prob_clean=s_clean.tolist(), success=success.astype(int).tolist(),
                       ssim=[u["ssim"] for u in util]),
        definitions=dict(
            effect="<r_trig - r_clean, d>_R / <d, d>_R with d = G(x) - x, R = lesion ROI; mean over slices with R",
            effect_raw="mean over R of (r_trig - r_clean) * sign(d), divided by the volume max",
            success="lesion classifier finds a lesion in r_trig (p_lesion > its threshold) and none in r_clean",
        ),
    )
    arrays = dict(r_clean=r_clean, r_trig=r_trig, target=x, expected=expected, rois=rois, vmax=vmax,
                  lesion_prob_clean=s_clean, lesion_prob_triggered=s_trig)
    if forget and manifest.get("poisoned"):
        metrics["forget"], arrays["forget"] = _forget_scores(model, run_dir, manifest, test, ssim)
    metrics["seconds"] = time.perf_counter() - t0
    if save:
        write_json(metrics_path(run_dir, model_name), metrics)
    return dict(metrics=metrics, arrays=arrays)


def _forget_scores(model, run_dir: Path, manifest: dict, test: TestSlices, ssim_fn) -> tuple[dict, dict]:
    """SSIM of the poisoned training slices' reconstructions against clean and poisoned targets."""
    from fastmri.data import SliceDataset
    from fastmri.data.transforms import VarNetDataTransform

    from mrilib.data.loading import make_mask_func
    from mrilib.poison.build import poison_dir

    d = poison_dir(run_dir, manifest["variant"]) / manifest.get("data_dir", "data") / "train"
    raw = SliceDataset(root=d, challenge="multicoil", transform=None)
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
    rec = reconstruct(model, samples)
    vs_clean = np.array([ssim_fn(c, p, m) for c, p, m in zip(clean_t, rec, vmax)])
    vs_pois = np.array([ssim_fn(t, p, m) for t, p, m in zip(pois_t, rec, vmax)])
    out = dict(n=len(ids), ssim_vs_clean=_stats(vs_clean), ssim_vs_poisoned=_stats(vs_pois),
               by_identified={k: dict(ssim_vs_clean=_stats(vs_clean[[i in v for i in ids]]),
                                      ssim_vs_poisoned=_stats(vs_pois[[i in v for i in ids]]))
                              for k, v in identified.items()})
    return out, dict(recon=rec, clean_target=np.stack(clean_t), poisoned_target=np.stack(pois_t), ids=ids)


def poison_effects(models: dict, run_dir: str | os.PathLike, manifest: dict, classifier, gan,
                   accelerations=(4, 8), center_fraction: float = 0.08, mask_type: str = "equispaced_fraction",
                   save: bool = True) -> dict:
    """:func:`poison_effect` for several models and accelerations, one JSON per model.

    The first acceleration is the primary one (its numbers are the top-level fields of
    ``poison_<model>.json``); every acceleration's summary is under ``by_acceleration``.
    The test slices are read once per acceleration and shared by the models.

    Returns ``{model name: {acceleration: poison_effect result}}``.
    """
    run_dir = Path(run_dir)
    trigger = Trigger.from_dict(manifest.get("trigger"))
    out = {name: {} for name in models}
    for k, acc in enumerate(accelerations):
        test = load_test_slices(run_dir / "data" / "test", trigger, acc, center_fraction, mask_type)
        for name, model in models.items():
            out[name][int(acc)] = poison_effect(model, name, run_dir, manifest, classifier, gan, acceleration=acc,
                                                center_fraction=center_fraction, mask_type=mask_type, test=test,
                                                forget=k == 0, save=False)
    keys = ("effect", "effect_raw", "success_rate", "lesion_rate_triggered", "lesion_rate_clean", "clean_test")
    for name in models:
        primary = out[name][int(accelerations[0])]["metrics"]
        primary["by_acceleration"] = {f"{a}x": {k: out[name][int(a)]["metrics"][k] for k in keys}
                                      for a in accelerations}
        if save:
            write_json(metrics_path(run_dir, name), primary)
    return out
