"""The k-space stress test: can a small measurement perturbation make a model show a tumour?

For a reconstruction model ``f`` (an E2E VarNet taking masked k-space and the mask)
and a test slice with undersampled k-space ``y`` (sampling mask ``M``), find a
perturbation ``δ`` of the **measured samples only** (``δ = M δ``: unsampled k-space
stays zero, as a real acquisition would leave it) with

.. math::

    \\|δ\\|_2 \\le ε\\, \\|y\\|_2

that maximises the lesion classifier's tumour score of the reconstruction *inside a
target region* ``R`` while keeping the reconstruction outside ``R`` unchanged (the
ascent follows the region's own tumour evidence,
:func:`mrilib.attacks.differentiable.region_tumour_score`; success is judged by the
classifier's ordinary slice score):

.. math::

    \\max_δ\\; \\min\\big(s(c_δ), κ\\big) - λ\\, \\frac{\\|(1 - R)(f(y + δ) - f(y))\\|_2^2}{\\|(1 - R) f(y)\\|_2^2},
    \\qquad c_δ = R\\, f(y + δ) + (1 - R)\\, f(y).

``c_δ`` is the attacked reconstruction inside ``R`` pasted into the unattacked one, so
the tumour evidence the classifier sees can only come from the region; ``R`` is the
same brain-anchored disc as the adversarial poison (:func:`mrilib.poison.roi.tumour_roi`).
It is solved by L2 projected gradient ascent (Madry et al. 2018): normalised gradient
steps of ``step_size * ε ||y|| / steps``, then projection onto the sampled locations
and the L2 ball. The ε values are visited in increasing order, each starting from the
previous ε's perturbation (a feasible point of the larger ball), and a slice stops
once it is a success.

**Success** at ε: ``p_tumour(c_δ) > t`` while the unattacked reconstruction has
``p_tumour(f(y)) <= t`` (``t`` = the larger of ``success_prob`` and the classifier's
calibrated lesion threshold, :func:`mrilib.poison.judge.tumour_threshold`), and the SSIM of ``f(y + δ)``
against ``f(y)`` outside ``R`` is at least ``ssim_floor``. This is the instability
of Antun et al. (2020) turned into a hallucination probe: a model that learnt to
draw tumours (a poisoned one) needs a smaller ε than a clean one.

:func:`stress_test` returns the curve (success rate and mean score versus ε) as a
DataFrame and, given ``run_dir``, writes ``metrics/stress_<model>.json`` of the run
(curve, per-slice results, settings, identity) as a :func:`mrilib.run.cache.cached_step`:
a later call with the same model weights (:func:`~mrilib.run.cache.weights_digest`),
classifier, slices and settings reads that file instead of attacking again.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from fastmri.data.transforms import center_crop

from mrilib.attacks.differentiable import region_tumour_score, ssim_map_torch
from mrilib.attacks.objective import adversarial_config
from mrilib.config import Profile, StressConfig, as_dict, get_profile, with_overrides
from mrilib.poison.effect import load_test_slices
from mrilib.poison.judge import check_classifier, classifier_identity, tumour_threshold
from mrilib.poison.roi import tumour_rois, validate_roi
from mrilib.run.cache import JSON, cached_step, canonical, weights_digest
from mrilib.run.device import default_device, on_device
from mrilib.run.io import read_json
from mrilib.run.layout import RunLayout, as_layout
from mrilib.run.progress import progress as progress_bar

__all__ = [
    "STRESS_DEFAULTS",
    "StressSamples",
    "stress_config",
    "stress_samples",
    "attack_batch",
    "stress_test",
    "read_stress",
    "stress_separation",
]

#: Settings of the stress test and their defaults (:class:`mrilib.config.StressConfig`; the
#: profile's ``adversarial.stress`` holds its own values).
STRESS_DEFAULTS = as_dict(StressConfig())


def stress_config(profile: Profile | str | None = None, **overrides) -> dict:
    """:data:`STRESS_DEFAULTS` (or the profile's ``adversarial.stress``), then ``overrides``.

    Raises ``ValueError`` for unknown keys, an empty or non-positive ``eps_list``, or
    ``steps < 1``.
    """
    cfg = dict(STRESS_DEFAULTS)
    if profile is not None:
        p = get_profile(profile)
        cfg = as_dict(p.adversarial.stress)
        if cfg.get("acceleration") is None:
            cfg["acceleration"] = int(p.data.accelerations[0])
    with_overrides(cfg, overrides, STRESS_DEFAULTS, "stress-test")
    cfg["eps_list"] = _eps_list(cfg["eps_list"])
    if int(cfg["steps"]) < 1:
        raise ValueError(f"steps must be >= 1, got {cfg['steps']}")
    if cfg.get("acceleration") is None:
        cfg["acceleration"] = 4
    return canonical(cfg)


def _eps_list(eps_list) -> list[float]:
    """Sorted unique budgets; a clear error for an empty list or a budget <= 0."""
    vals = [float(e) for e in np.atleast_1d(np.asarray(eps_list, dtype=float))] if eps_list is not None else []
    if not vals:
        raise ValueError("eps_list must hold at least one budget")
    bad = [e for e in vals if not np.isfinite(e) or e <= 0]
    if bad:
        raise ValueError(f"every eps must be > 0 (a relative L2 budget ||δ|| / ||y||), got {bad}")
    return sorted(set(vals))


@dataclass
class StressSamples:
    """The slices a stress test attacks.

    Attributes:
        samples: ``fastmri`` ``VarNetSample`` s (masked k-space, mask, target, ...).
        rois: the target regions ``(N, h, w)`` bool, in the reconstruction's (target's) frame.
        vmax: the volume max of each slice (the data range).
        ids: ``"file:slice"`` of each slice (for the identity and the per-slice table).
        config: the profile's stress settings (:func:`stress_config`); :func:`stress_test`
            uses them when it is given no ``cfg``.
    """

    samples: list
    rois: np.ndarray
    vmax: np.ndarray
    ids: list[str] = field(default_factory=list)
    config: dict | None = None

    def __len__(self) -> int:
        """Number of slices."""
        return len(self.samples)


def stress_samples(run_dir: RunLayout | str | os.PathLike, profile: Profile | str, *, split: str = "test",
                   max_slices: int | None = None, acceleration: int | None = None, seed: int = 0) -> StressSamples:
    """Evenly spaced slices of a split of the run with the adversarial recipe's tumour regions.

    The masks are fastMRI's, seeded by the file name (as in evaluation). ``max_slices``
    and ``acceleration`` default to the profile's stress settings, which the result
    carries (``config``) for :func:`stress_test`.
    """
    p = get_profile(profile)
    scfg = stress_config(p)
    acc = int(acceleration or scfg["acceleration"])
    test = load_test_slices(as_layout(run_dir).split(split), None, acc, p.data.center_fraction, p.data.mask_type)
    n = len(test)
    limit = max_slices if max_slices is not None else scfg["max_slices"]
    k = n if limit is None else min(n, int(limit))
    idx = np.unique(np.linspace(0, n - 1, k).round().astype(int)) if k > 0 else np.zeros(0, int)
    acfg = adversarial_config(p, seed)
    rois = tumour_rois(test.slices.brain[idx], acfg["roi_radius_mm"] / acfg["pixel_mm"], acfg["anchor"])
    ids = [f"{test.slices.files[i]}:{int(test.slices.slices[i])}" for i in idx]
    return StressSamples([test.clean[i] for i in idx], rois, test.slices.vmax[idx].astype(np.float32), ids,
                         config={**scfg, "acceleration": acc, "max_slices": limit})


def _recon(model, kspace: torch.Tensor, mask: torch.Tensor, nlf, shape) -> torch.Tensor:
    """VarNet reconstruction ``(B, h, w)`` cropped to ``shape``."""
    out = model(kspace, mask, nlf)
    return center_crop(out, tuple(shape)) if tuple(out.shape[-2:]) != tuple(shape) else out


def _score(classifier, x: torch.Tensor) -> torch.Tensor:
    """Tumour log-odds ``(B,)`` (differentiable)."""
    return classifier.tumour_score(x)


def _ssim_out(a: torch.Tensor, b: torch.Tensor, outside: torch.Tensor, vmax: torch.Tensor) -> torch.Tensor:
    """Mean SSIM map of ``a`` vs ``b`` over ``outside`` pixels, per image."""
    s = ssim_map_torch(a, b, vmax)
    return (s * outside).sum(dim=(-2, -1)) / outside.sum(dim=(-2, -1)).clamp_min(1.0)


def attack_batch(model, classifier, kspace: torch.Tensor, mask: torch.Tensor, nlf, roi: torch.Tensor,
                 vmax: torch.Tensor, eps_list: Sequence[float], cfg: dict) -> list[dict]:
    """Attack one batch for every ε (increasing, warm-started); per-ε arrays of per-slice results.

    Args:
        model: the VarNet (eval mode; its parameters are not changed).
        classifier: the lesion classifier.
        kspace: masked k-space ``(B, C, H, W, 2)``; mask ``(B, 1, 1, W, 1)``; ``nlf``:
            number of low frequencies (or ``None``).
        roi: target regions ``(B, h, w)`` (float 0/1) in the reconstruction frame.
        vmax: data range per slice ``(B,)``.
        eps_list: relative L2 budgets.
        cfg: settings (:func:`stress_config`).

    Returns:
        one dict per ε with numpy arrays ``score``, ``p_tumour`` (in the region),
        ``p_tumour_full`` (of the whole attacked reconstruction), ``ssim_outside``,
        ``outside_nmse``, ``delta_rel`` (``||δ|| / ||y||``), ``iterations`` (cumulative),
        ``success``, plus ``p_tumour_clean`` / ``score_clean`` of the unattacked
        reconstruction and ``delta`` / ``recon`` (the last perturbation and reconstruction).
    """
    shape = roi.shape[-2:]
    b = kspace.shape[0]
    m = mask.to(kspace.dtype).expand_as(kspace)
    ynorm = kspace.flatten(1).norm(dim=1)
    outside = 1.0 - roi
    steps, kappa, lam = int(cfg["steps"]), float(cfg["kappa"]), float(cfg["outside_weight"])
    thr, floor = tumour_threshold(classifier, float(cfg["success_prob"])), float(cfg["ssim_floor"])
    with torch.no_grad():
        r0 = _recon(model, kspace, mask, nlf, shape)
        s0 = _score(classifier, r0)
        p0 = torch.sigmoid(s0)
        out_energy = ((r0 * outside) ** 2).sum(dim=(-2, -1)).clamp_min(1e-12)
    delta = torch.zeros_like(kspace)
    iters = torch.zeros(b, dtype=torch.long, device=kspace.device)
    # the state of the current perturbation of every slice
    r, s, full = r0.clone(), s0.clone(), p0.clone()
    so, nm = torch.ones(b, device=kspace.device), torch.zeros(b, device=kspace.device)
    ok = (torch.sigmoid(s) > thr) & (p0 <= thr) & (so >= floor)
    results = []
    for eps in eps_list:
        budget = float(eps) * ynorm
        alpha = float(cfg["step_size"]) * budget / steps
        # every pass scores the current δ of the unfinished slices (one forward) and, while
        # steps remain, takes a gradient step for those that are not yet a success
        for step in range(steps + 1):
            idx = (~ok).nonzero().flatten()
            if len(idx) == 0:
                break
            last = step == steps
            d = delta[idx].clone().requires_grad_(not last)
            with torch.set_grad_enabled(not last):
                rr = _recon(model, kspace[idx] + d, mask[idx], nlf, shape)
                comp = roi[idx] * rr + outside[idx] * r0[idx]
                with torch.no_grad():
                    s_i = _score(classifier, comp)
                    so_i = _ssim_out(rr, r0[idx], outside[idx], vmax[idx])
                    r[idx] = rr.detach()
                    s[idx] = s_i
                    full[idx] = torch.sigmoid(_score(classifier, rr))
                    so[idx] = so_i
                    nm[idx] = ((rr - r0[idx]) * outside[idx]).pow(2).sum(dim=(-2, -1)) / out_energy[idx]
                    ok_i = (torch.sigmoid(s_i) > thr) & (p0[idx] <= thr) & (so_i >= floor)
                    ok[idx] = ok_i
                if last or bool(ok_i.all()):
                    break
                obj = torch.clamp(region_tumour_score(classifier, comp, roi[idx]), max=kappa)
                change = ((rr - r0[idx]) * outside[idx]).pow(2).sum(dim=(-2, -1)) / out_energy[idx]
                (g,) = torch.autograd.grad((obj - lam * change).sum(), d)
            with torch.no_grad():
                move = ~ok_i  # a success keeps its perturbation
                g = g * m[idx]
                shp = (-1,) + (1,) * (g.dim() - 1)
                gn = g.flatten(1).norm(dim=1).clamp_min(1e-20).view(shp)
                nd = (d.detach() + alpha[idx].view(shp) * g / gn) * m[idx]
                dn = nd.flatten(1).norm(dim=1)
                scale = torch.clamp(budget[idx] / dn.clamp_min(1e-20), max=1.0)
                nd = nd * scale.view(shp)
                delta[idx[move]] = nd[move]
                iters[idx[move]] += 1
        host = lambda t: t.cpu().numpy().copy()  # noqa: E731 - to numpy
        results.append(dict(
            eps=float(eps),
            score=host(s), p_tumour=host(torch.sigmoid(s)), p_tumour_full=host(full),
            ssim_outside=host(so), outside_nmse=host(nm),
            delta_rel=host(delta.flatten(1).norm(dim=1) / ynorm), iterations=host(iters),
            success=host(ok), p_tumour_clean=host(p0), score_clean=host(s0),
            recon=host(r), recon_clean=host(r0), delta=delta.clone(),
        ))
    return results


def _collate(samples) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """Stack VarNet samples: k-space ``(B, C, H, W, 2)``, mask ``(B, 1, 1, W, 1)``, common ``nlf``."""
    k = torch.stack([s.masked_kspace for s in samples]).float()
    m = torch.stack([torch.as_tensor(s.mask) for s in samples]).bool()
    nlf = [s.num_low_frequencies for s in samples]
    same = all(n == nlf[0] for n in nlf) and nlf[0]
    return k, m, (int(nlf[0]) if same else None)


def stress_test(
    model: torch.nn.Module,
    samples,
    classifier,
    eps_list: Sequence[float] | None = None,
    *,
    model_name: str = "model",
    run_dir: RunLayout | str | os.PathLike | None = None,
    rois: np.ndarray | None = None,
    vmax=None,
    cfg: dict | None = None,
    reuse: bool = True,
    keep_arrays: bool = False,
    progress: bool = False,
    device=None,
    **overrides,
) -> pd.DataFrame:
    """Run the k-space stress test on ``model``; return success rate and mean score versus ε.

    Args:
        model: a VarNet (``model(masked_kspace, mask, num_low_frequencies)``); unchanged.
        samples: a :class:`StressSamples` (from :func:`stress_samples`), or a list of
            ``VarNetSample`` s with ``rois`` (and ``vmax``) given.
        classifier: the lesion classifier (judges "shows a tumour").
        eps_list: relative L2 budgets ``||δ|| / ||y||`` (default: ``cfg["eps_list"]``);
            each must be > 0.
        model_name: its name in the output (``stress_<model_name>.json``).
        run_dir: where to write ``metrics/stress_<model_name>.json``; ``None``: no file.
        rois, vmax: target regions ``(N, h, w)`` and data ranges, for a plain sample list.
        cfg: settings (default: the profile's, carried by a :class:`StressSamples`, else
            :data:`STRESS_DEFAULTS`); ``overrides`` update them.
        reuse: read the JSON instead of attacking when it holds a run with the same
            identity (model weights, classifier, slices, regions, settings).
        keep_arrays: attach the attacked reconstructions (``df.attrs["arrays"]``).
        progress: progress bar over batches.
        device: where the model and the classifier compute (default
            :func:`~mrilib.run.device.default_device`; copied there when elsewhere).

    Returns:
        DataFrame, one row per ε: ``model``, ``eps``, ``success_rate``, ``mean_p_tumour``
        (in the region), ``mean_score`` / ``sd_score`` (tumour log-odds in the region),
        ``mean_p_tumour_full``, ``mean_ssim_outside``, ``mean_delta_rel``,
        ``mean_iterations``, ``n``. The per-slice table is ``df.attrs["per_slice"]``
        (a list of records) and in the JSON.

    Raises:
        ValueError: an empty ``eps_list``, an ε <= 0, no slices, or regions that do not
        match the slices.
    """
    if cfg is None and isinstance(samples, StressSamples) and samples.config:
        cfg = samples.config
    merged = {**(cfg or {}), **overrides}
    if eps_list is not None:
        merged["eps_list"] = eps_list
    cfg = stress_config(None, **merged)  # checks keys and budgets
    if isinstance(samples, StressSamples):
        items, rois, vmax, ids = samples.samples, samples.rois, samples.vmax, list(samples.ids)
    else:
        items = list(samples)
        if rois is None:
            raise ValueError("a plain list of samples needs rois=(N, h, w) target regions")
        ids = [f"{getattr(s, 'fname', i)}:{getattr(s, 'slice_num', '')}" for i, s in enumerate(items)]
        if vmax is None:
            vmax = [float(s.max_value) for s in items]
    if not items:
        raise ValueError("the stress test needs at least one slice")
    rois = np.asarray(rois)
    if rois.ndim == 2:
        rois = rois[None]
    if len(rois) != len(items):
        raise ValueError(f"{len(rois)} regions for {len(items)} slices")
    rois = np.stack([validate_roi(r, None, i) for i, r in enumerate(rois)])
    vmax = np.broadcast_to(np.asarray(vmax, np.float32).reshape(-1), (len(items),)).astype(np.float32)
    check_classifier(classifier, rois.shape[-2:])
    identity = dict(model=weights_digest(model), classifier=classifier_identity(classifier), slices=ids,
                    rois=hashlib.blake2b(np.packbits(rois).tobytes(), digest_size=8).hexdigest(),
                    cfg={k: v for k, v in cfg.items() if k not in ("batch_size",)})
    fresh = {}

    def attack() -> dict:
        fresh["df"], record = _attack(model, classifier, items, rois, vmax, ids, cfg, model_name, keep_arrays,
                                      progress, default_device(device))
        return record

    if run_dir is None:
        attack()
        return fresh["df"]
    stored = cached_step(as_layout(run_dir).stress_metrics(model_name), identity, attack, JSON,
                         reuse=reuse and not keep_arrays)
    if fresh:  # attacked now: the frame as computed (with its seconds and arrays)
        return fresh["df"]
    df = pd.DataFrame(stored["curve"])
    df.attrs["per_slice"] = stored["per_slice"]
    df.attrs["reused"] = True
    return df


def _attack(model, classifier, items: list, rois: np.ndarray, vmax: np.ndarray, ids: list, cfg: dict,
            model_name: str, keep_arrays: bool, progress: bool, device) -> tuple[pd.DataFrame, dict]:
    """The attack of :func:`stress_test` on ``device``: its DataFrame and the record its JSON file holds."""
    t0 = time.perf_counter()
    model, classifier = on_device(model, device), on_device(classifier, device)
    was = model.training, classifier.training
    model.eval(), classifier.eval()
    grads = [(p, p.requires_grad) for p in list(model.parameters()) + list(classifier.parameters())]
    for p, _ in grads:
        p.requires_grad_(False)
    per_eps: dict[float, list[dict]] = {float(e): [] for e in cfg["eps_list"]}
    arrays: dict = {}
    bs = max(1, int(cfg["batch_size"]))
    try:
        for i in progress_bar(range(0, len(items), bs), desc=f"stress test {model_name}", disable=not progress,
                              unit="batch"):
            k, m, nlf = _collate(items[i : i + bs])
            res = attack_batch(model, classifier, k.to(device), m.to(device), nlf,
                               torch.from_numpy(rois[i : i + bs].astype(np.float32)).to(device),
                               torch.from_numpy(vmax[i : i + bs]).to(device), cfg["eps_list"], cfg)
            for r in res:
                per_eps[r["eps"]].append(r)
    finally:
        for p, flag in grads:
            p.requires_grad_(flag)
        model.train(was[0]), classifier.train(was[1])
    seconds = time.perf_counter() - t0
    thr = tumour_threshold(classifier, float(cfg["success_prob"]))
    rows, per_slice = [], []
    keys = ("score", "p_tumour", "p_tumour_full", "ssim_outside", "outside_nmse", "delta_rel", "iterations",
            "success", "p_tumour_clean", "score_clean")
    for eps, parts in per_eps.items():
        cat = {k: np.concatenate([p[k] for p in parts]) for k in keys}
        rows.append(dict(
            model=model_name, eps=eps, success_rate=float(cat["success"].mean()),
            mean_p_tumour=float(cat["p_tumour"].mean()), mean_score=float(cat["score"].mean()),
            sd_score=float(cat["score"].std(ddof=1)) if len(cat["score"]) > 1 else 0.0,
            mean_p_tumour_full=float(cat["p_tumour_full"].mean()),
            mean_ssim_outside=float(cat["ssim_outside"].mean()), mean_delta_rel=float(cat["delta_rel"].mean()),
            mean_iterations=float(cat["iterations"].mean()), n=int(len(cat["success"])),
            clean_tumour_rate=float((cat["p_tumour_clean"] > thr).mean()),
        ))
        for j in range(len(cat["success"])):
            per_slice.append(dict(model=model_name, eps=eps, slice=ids[j],
                                  **{k: (bool(cat[k][j]) if k == "success" else
                                         int(cat[k][j]) if k == "iterations" else float(cat[k][j])) for k in keys}))
        if keep_arrays:
            arrays[eps] = dict(recon=np.concatenate([p["recon"] for p in parts]),
                               recon_clean=np.concatenate([p["recon_clean"] for p in parts]), rois=rois)
    df = pd.DataFrame(rows)
    df.attrs["per_slice"] = per_slice
    df.attrs["reused"] = False
    df.attrs["seconds"] = seconds
    if keep_arrays:
        df.attrs["arrays"] = arrays
    return df, dict(
        model=model_name, config=cfg, curve=rows, per_slice=per_slice, seconds=seconds,
        definitions=dict(
            eps="relative L2 budget ||delta||_2 / ||y||_2 of a perturbation on the sampled k-space locations only",
            p_tumour="classifier p(tumour) of the attacked reconstruction inside the target region pasted into "
                     "the unattacked reconstruction",
            success=f"p_tumour > {thr:.3f} (max of {cfg['success_prob']} and the classifier's calibrated "
                    f"lesion threshold; unattacked <= it) and SSIM outside the region >= {cfg['ssim_floor']}",
        ),
    )


def read_stress(run_dir: RunLayout | str | os.PathLike, model_names: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The stress-test curves and per-slice tables of several models from their JSON files.

    Raises :class:`~mrilib.run.layout.MissingArtefactError` (a ``FileNotFoundError``) naming
    the missing file and ``notebooks/04_poison_adversarial.ipynb`` (run :func:`stress_test` first).
    """
    run = as_layout(run_dir)
    curves, slices = [], []
    for name in model_names:
        d = read_json(run.require(run.stress_metrics(name), "04_poison_adversarial"))
        curves.append(pd.DataFrame(d["curve"]))
        slices.append(pd.DataFrame(d["per_slice"]))
    return pd.concat(curves, ignore_index=True), pd.concat(slices, ignore_index=True)


def stress_separation(curves: pd.DataFrame, reference: str = "clean") -> pd.DataFrame:
    """How far each model's curve lies from ``reference``'s.

    One row per model: the largest difference in success rate at a common ε
    (``max_success_gap``, with that ε), the mean difference over ε, and the area under
    the success-versus-log(ε) curve (normalised to [0, 1]); positive gaps mean the
    model is easier to make hallucinate a tumour than the reference.
    """
    out = []
    ref = curves[curves["model"] == reference].set_index("eps")["success_rate"]
    for name, g in curves.groupby("model", sort=False):
        s = g.set_index("eps")["success_rate"].sort_index()
        common = s.index.intersection(ref.index)
        gap = (s.loc[common] - ref.loc[common]) if len(common) else pd.Series(dtype=float)
        le = np.log(np.asarray(s.index, float))
        auc = float(np.trapezoid(s.values, le) / (le[-1] - le[0])) if len(le) > 1 else float(s.values[0])
        out.append(dict(model=name, auc_log_eps=auc,
                        max_success_gap=float(gap.max()) if len(gap) else float("nan"),
                        eps_at_max_gap=float(gap.idxmax()) if len(gap) else float("nan"),
                        mean_success_gap=float(gap.mean()) if len(gap) else float("nan"),
                        eps50=_eps_at(s, 0.5)))
    return pd.DataFrame(out).set_index("model")


def _eps_at(curve: pd.Series, level: float) -> float:
    """The smallest ε whose success rate reaches ``level`` (NaN when none does)."""
    hit = curve[curve >= level]
    return float(hit.index.min()) if len(hit) else float("nan")
