"""Selective Synaptic Dampening (SSD) and its variants.

SSD (Foster, Schoepf & Brintrup 2024) estimates how important each parameter is to the
forget set and to the data the model was trained on, with the diagonal of the Fisher
information, ``I = E_batches[(∂L/∂θ)²]`` (the squared gradient of the batch-mean
training loss, averaged over batches of the same size on both sets), and dampens the
parameters that matter much more to the forget set:

    select θ_i  if  I_forget,i > α · I_ref,i,
    θ_i ← β_i θ_i  with  β_i = min(λ · I_ref,i / I_forget,i, 1).

As published (Foster et al.'s code and the seed study), the reference importance
``I_ref`` is that of the **full training set**, forget ∪ retain (``reference="full"``,
the default): the forget batches are part of it, so ``I_ref ≥ (N_f/N) · I_forget``
(exactly when the forget set fills whole batches - the union is read forget first - while a
batch that mixes forget and retain slices loosens it), so the dampening factor is bounded below,
``β ≳ λ · N_f / N``, and nothing is selected at ``α ≳ N / N_f``.
``reference="retain"`` uses the retain set alone (no such bound: a parameter the retain
set does not use can be zeroed). ``L`` is the model's training loss: the SSIM loss plus
``l1_weight`` × the L1 term (:func:`mrilib.recon.steps.make_loss`); ``eval_mode`` computes
the importances with ``model.eval()``, as the seed does (for E2E VarNet - instance norm
without running statistics, no dropout - both modes give the same gradients).

A parameter whose forget importance is zero is never selected (``0 > α·I`` is false
for ``I ≥ 0``). Variants here:

- **label-free SSD** (LF-SSD, Foster et al. 2024): the importance is the mean
  absolute gradient of the squared output norm ``‖f(x)‖²`` — no target needed;
- **automatic α** in the spirit of Potion (Schoepf et al. 2024): importances are
  computed once; the dampened fraction grows step by step (α taken at quantiles of
  the importance ratio) until the poison effect on the *identified* slices falls
  below ``ρ`` × its value for the original model;
- **tuned SSD**: importances computed once, then a grid of (α, λ) scored on held-out
  clean data (utility) and on the identified slices (poison effect) only — never on
  the test set or the unidentified poison; the α grid is set by the shares of
  parameters it dampens (:data:`TUNING_FRACTIONS`);
- **region-targeted SSD** (tuned SSD with ``regions``): the forget importance is that of
  the error inside a region of each forget slice (:func:`region_importance`) - for the
  defender, where the identified slice's label disagrees with its own k-space
  (:mod:`mrilib.unlearn.regions`) - instead of the whole-image loss, whose forget signal
  the anatomy around the poison dilutes (the reference importance stays the whole-image
  Fisher importance of the reference set);
- an optional short **retain repair** after dampening (a few fine-tuning steps on
  retain data), which recovers the reconstruction quality dampening costs; tuned SSD can
  repair every grid point before scoring it, so that it selects the model it returns.
"""

from __future__ import annotations

import math
import time
from numbers import Real
from typing import Callable

import numpy as np
import torch

from mrilib.recon.steps import forward_batch
from mrilib.run.device import default_device, module_device, on_device
from mrilib.run.progress import progress
from mrilib.unlearn.base import (
    PassCounter,
    UnlearnError,
    UnlearnResult,
    batch_loss,
    batches,
    check_inputs,
    check_positive,
    timed_copy,
    union,
)
from mrilib.unlearn.gradient import finetune_steps

__all__ = [
    "fisher_importance",
    "label_free_importance",
    "region_importance",
    "ssd_dampen",
    "ssd",
    "lf_ssd",
    "ssd_auto_alpha",
    "alpha_for_fraction",
    "ssd_tuned",
    "TUNING_FRACTIONS",
    "REFERENCES",
]

#: reference sets of SSD's importance ratio: the full training set (forget ∪ retain, as published) or retain only
REFERENCES = ("full", "retain")


def _params(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _mean_gradient_statistic(model, dataset, batch_size: int, objective: Callable, square: bool,
                             desc: str, eval_mode: bool = False) -> dict[str, torch.Tensor]:
    """Mean over batches of ``grad²`` (``square``) or ``|grad|`` of ``objective(model, batch, first_index)``,
    with ``model`` in eval mode when ``eval_mode``, else in train mode."""
    params = _params(model)
    imp = {n: torch.zeros_like(p) for n, p in params.items()}
    model.train(not eval_mode)
    n = first = 0
    for batch in progress(batches(dataset, batch_size), desc=desc, leave=False):
        model.zero_grad(set_to_none=True)
        objective(model, batch, first).backward()
        first += len(batch.fname)
        for name, p in params.items():
            if p.grad is not None:
                imp[name] += p.grad.detach() ** 2 if square else p.grad.detach().abs()
        n += 1
    model.zero_grad(set_to_none=True)
    return {k: v / max(n, 1) for k, v in imp.items()}


def _on(model, device):
    """``model`` on ``device`` (default: the run's), a copy when it is elsewhere; the device."""
    device = default_device(device)
    return on_device(model, device), device


def fisher_importance(model, dataset, batch_size: int = 4, counter: PassCounter | None = None,
                      desc: str = "importance", device=None, l1_weight: float = 0.0,
                      eval_mode: bool = False) -> dict[str, torch.Tensor]:
    """Diagonal Fisher importance: mean over batches of the squared batch-mean loss gradient.

    The loss is the training loss, SSIM + ``l1_weight`` × L1 (:func:`~mrilib.unlearn.base.batch_loss`);
    ``eval_mode`` puts ``model`` in eval mode for it (else train mode). Computed on ``device`` (default
    :func:`~mrilib.run.device.default_device`; ``model`` is copied there when it is elsewhere); the
    importances live there too.
    """
    counter = counter or PassCounter()
    model, device = _on(model, device)
    return _mean_gradient_statistic(
        model, dataset, batch_size,
        lambda m, b, _: batch_loss(m, b, counter, backward=True, device=device, l1_weight=l1_weight),
        square=True, desc=desc, eval_mode=eval_mode)


def label_free_importance(model, dataset, batch_size: int = 4, counter: PassCounter | None = None,
                          desc: str = "LF importance", device=None, eval_mode: bool = False) -> dict[str, torch.Tensor]:
    """Label-free importance: mean over batches of ``|∂ mean‖f(x)‖² / ∂θ|`` (no targets used); ``device`` and
    ``eval_mode`` as :func:`fisher_importance`'s."""
    counter = counter or PassCounter()
    model, device = _on(model, device)

    def objective(m, batch, _):
        out, _ = forward_batch(m, batch, device)
        counter.add(out.shape[0], backward=True)
        scale = batch.max_value.to(out.device).view(-1, 1, 1)
        return (out / scale).pow(2).sum(dim=(-2, -1)).mean()

    return _mean_gradient_statistic(model, dataset, batch_size, objective, square=False, desc=desc,
                                    eval_mode=eval_mode)


def region_importance(model, dataset, regions, batch_size: int = 4, counter: PassCounter | None = None,
                      desc: str = "region importance", device=None, eval_mode: bool = False) -> dict[str, torch.Tensor]:
    """Fisher importance of the error *inside marked regions*: mean over batches of the squared
    gradient of the mean absolute error (fraction of each slice's maximum) over the region pixels.

    ``regions``: ``(N, H, W)`` masks in the order of ``dataset`` (e.g. where the poison put its
    lesion). The whole-image loss of :func:`fisher_importance` mixes the poison with the anatomy
    around it; this one asks which parameters produce the marked region only. ``device`` and
    ``eval_mode`` as :func:`fisher_importance`'s.
    """
    counter = counter or PassCounter()
    regions = torch.as_tensor(regions, dtype=torch.float32)
    if len(regions) != len(dataset):
        raise UnlearnError(f"{len(regions)} regions for a set of {len(dataset)} slices")
    model, device = _on(model, device)
    regions = regions.to(device)

    def objective(m, batch, first):
        out, target = forward_batch(m, batch, device)
        counter.add(out.shape[0], backward=True)
        mask = regions[first:first + out.shape[0]]
        if mask.shape[-2:] != out.shape[-2:]:
            raise UnlearnError(f"regions of shape {tuple(mask.shape[-2:])} for images of {tuple(out.shape[-2:])}")
        err = (out - target).abs() / batch.max_value.to(out.device).view(-1, 1, 1)
        return (err * mask).sum() / mask.sum().clamp_min(1.0)

    return _mean_gradient_statistic(model, dataset, batch_size, objective, square=True, desc=desc,
                                    eval_mode=eval_mode)


@torch.no_grad()
@torch.no_grad()
def ssd_dampen(model, imp_forget: dict, imp_retain: dict, alpha: float, lam: float) -> dict:
    """Dampen ``model`` in place by SSD's rule; return per-layer statistics.

    ``imp_retain`` is the reference importance (of the full training set, as published, or of the
    retain set). Returns ``{"selected": n, "total": N, "fraction": n/N, "layers": {name: fraction}}``.
    """
    check_positive(alpha=alpha, lam=lam)
    selected = total = 0
    layers = {}
    for name, p in _params(model).items():
        f, r = imp_forget[name].to(p.device), imp_retain[name].to(p.device)
        sel = f > alpha * r
        beta = torch.clamp(lam * r / f.clamp_min(torch.finfo(f.dtype).tiny), max=1.0)
        p[sel] = p[sel] * beta[sel]
        k = int(sel.sum())
        selected += k
        total += p.numel()
        layers[name] = k / p.numel()
    return {"selected": selected, "total": total, "fraction": selected / max(total, 1), "layers": layers}


def _importance_spec(reference: str, l1_weight: float, eval_mode: bool) -> dict:
    """The checked importance settings shared by every SSD variant."""
    if reference not in REFERENCES:
        raise UnlearnError(f"reference must be one of {REFERENCES}, got {reference!r}")
    if isinstance(l1_weight, bool) or not isinstance(l1_weight, Real) or not (math.isfinite(l1_weight)
                                                                              and l1_weight >= 0):
        raise UnlearnError(f"l1_weight must be a number >= 0 (a plan's \"train\" is resolved by plan_runs), "
                           f"got {l1_weight!r}")
    return dict(reference=reference, l1_weight=float(l1_weight), eval_mode=bool(eval_mode))


def _importance_info(spec: dict, importance_batch_size: int, label_free: bool) -> dict:
    """What a result records of how its importances were computed (no loss, hence no L1 term, when label-free)."""
    return dict(spec, l1_weight=None if label_free else spec["l1_weight"], importance_batch_size=importance_batch_size,
                label_free=bool(label_free))


def _importances(work, forget, retain, label_free: bool, batch_size: int, counter: PassCounter, regions=None,
                 reference: str = "full", l1_weight: float = 0.0, eval_mode: bool = False):
    """Forget and reference importances of ``work``: Fisher (loss SSIM + ``l1_weight`` × L1), label-free, or -
    with ``regions`` - the forget set's :func:`region_importance` against the reference set's Fisher importance.
    The reference set is forget ∪ retain (``reference="full"``) or ``retain``."""
    dev = module_device(work)
    ref_set, ref_desc = (union(forget, retain), "full-set importance") if reference == "full" \
        else (retain, "retain importance")
    kw = dict(counter=counter, device=dev, eval_mode=eval_mode)
    fisher = dict(kw, l1_weight=l1_weight)
    if regions is not None:
        return (region_importance(work, forget, regions, batch_size, desc="forget region importance", **kw),
                fisher_importance(work, ref_set, batch_size, desc=ref_desc, **fisher))
    if label_free:
        return (label_free_importance(work, forget, batch_size, desc="forget importance", **kw),
                label_free_importance(work, ref_set, batch_size, desc=ref_desc, **kw))
    return (fisher_importance(work, forget, batch_size, desc="forget importance", **fisher),
            fisher_importance(work, ref_set, batch_size, desc=ref_desc, **fisher))


def _run_ssd(model, forget, retain, label_free: bool, alpha: float, lam: float, batch_size: int,
             importance_batch_size: int | None, repair_steps: int, repair_lr: float, seed: int, device,
             spec: dict) -> UnlearnResult:
    check_inputs(model, forget, retain, need_retain=True)
    check_positive(alpha=alpha, lam=lam, batch_size=batch_size)
    importance_batch_size = importance_batch_size or batch_size
    check_positive(importance_batch_size=importance_batch_size)
    work, start = timed_copy(model, device)
    counter = PassCounter()
    imp_f, imp_r = _importances(work, forget, retain, label_free, importance_batch_size, counter, **spec)
    stats = ssd_dampen(work, imp_f, imp_r, alpha, lam)
    if repair_steps:
        finetune_steps(work, retain, repair_steps, repair_lr, batch_size, counter, seed=seed)
    work.eval()
    name = ("lf-ssd" if label_free else "ssd") + ("+repair" if repair_steps else "")
    info = dict(method=name, alpha=alpha, lam=lam, repair_steps=repair_steps, dampened_fraction=stats["fraction"],
                dampened_layers=stats["layers"], **_importance_info(spec, importance_batch_size, label_free))
    return UnlearnResult(work, time.perf_counter() - start, counter.forward, counter.backward, info)


def ssd(model, forget, retain, alpha: float = 10.0, lam: float = 1.0, batch_size: int = 4,
        repair_steps: int = 0, repair_lr: float = 1e-4, seed: int = 0, device=None, reference: str = "full",
        l1_weight: float = 0.0, eval_mode: bool = False, importance_batch_size: int | None = None) -> UnlearnResult:
    """SSD with Fisher importances on ``forget`` and on the reference set (same batch size).

    ``reference``: ``"full"`` (forget ∪ retain, as published) or ``"retain"``; ``l1_weight``: the
    L1 term of the training loss the importances differentiate (0: SSIM only); ``eval_mode``:
    importances in eval mode (the seed's), else train mode; ``importance_batch_size``: batch size
    of the importances (default ``batch_size``). The seed's configuration is ``alpha=0.1,
    lam=0.1, eval_mode=True, l1_weight=1e-5``, batches of 32; ``repair_steps`` > 0 adds a short
    fine-tuning on ``retain`` after dampening (SSD+R).
    """
    return _run_ssd(model, forget, retain, False, alpha, lam, batch_size, importance_batch_size, repair_steps,
                    repair_lr, seed, device, _importance_spec(reference, l1_weight, eval_mode))


def lf_ssd(model, forget, retain, alpha: float = 10.0, lam: float = 1.0, batch_size: int = 4,
           repair_steps: int = 0, repair_lr: float = 1e-4, seed: int = 0, device=None, reference: str = "full",
           l1_weight: float = 0.0, eval_mode: bool = False, importance_batch_size: int | None = None) -> UnlearnResult:
    """Label-free SSD: importances from ``|∂‖f(x)‖²/∂θ|`` instead of the loss gradient (``l1_weight`` is
    accepted for a uniform interface and unused); the other arguments as :func:`ssd`'s."""
    return _run_ssd(model, forget, retain, True, alpha, lam, batch_size, importance_batch_size, repair_steps,
                    repair_lr, seed, device, _importance_spec(reference, l1_weight, eval_mode))


def alpha_for_fraction(imp_forget: dict, imp_retain: dict, fraction: float) -> float:
    """The α at which SSD selects (about) ``fraction`` of all parameters, at least one.

    Parameters are selected when ``I_f / I_r > α``; α is the ``1 - fraction`` quantile
    of that ratio over parameters with ``I_f > 0`` (ties and zeros make it approximate).
    A fraction smaller than one parameter (1e-6 of a small model) selects the one with the
    largest ratio.
    """
    if not 0 < fraction < 1:
        raise UnlearnError(f"fraction must be in (0, 1), got {fraction}")
    ratios = []
    for name in imp_forget:
        f, r = imp_forget[name].flatten(), imp_retain[name].flatten().to(imp_forget[name].device)
        keep = f > 0
        ratios.append((f[keep] / r[keep].clamp_min(1e-30)).cpu().numpy())  # to numpy
    ratios = np.concatenate(ratios) if ratios else np.zeros(0)
    total = sum(v.numel() for v in imp_forget.values())
    if ratios.size == 0:
        raise UnlearnError("every forget importance is zero: nothing to dampen")
    k = int(np.ceil(fraction * total - 1e-9))  # not one more for a product that rounds up (0.3 × 10)
    k = min(max(k, 1), ratios.size)
    return float(np.partition(ratios, ratios.size - k)[ratios.size - k]) * (1 - 1e-6)


def ssd_auto_alpha(model, forget, retain, effect_fn: Callable, rho: float = 0.1, lam: float = 1.0,
                   fractions=(1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3),
                   batch_size: int = 4, label_free: bool = False, repair_steps: int = 0,
                   repair_lr: float = 1e-4, effect_passes: int | None = None, seed: int = 0,
                   device=None, reference: str = "full", l1_weight: float = 0.0, eval_mode: bool = False,
                   importance_batch_size: int | None = None) -> UnlearnResult:
    """SSD with α found automatically (Potion-style): dampen more until the poison is gone.

    Args:
        effect_fn: ``effect_fn(model) -> float``, the poison effect measured on the
            *identified* slices only (never the test set or unidentified poison).
        rho: stop at the first dampened fraction with effect ≤ ``rho`` × original effect.
        fractions: increasing dampened fractions to try (each → an α by
            :func:`alpha_for_fraction`); importances are computed once.
        effect_passes: slice-passes one ``effect_fn`` call costs (for cost accounting;
            default: the forget set's size).
        reference, l1_weight, eval_mode, importance_batch_size: as :func:`ssd`'s.
    """
    check_inputs(model, forget, retain, need_retain=True)
    check_positive(rho=rho, lam=lam)
    spec = _importance_spec(reference, l1_weight, eval_mode)
    importance_batch_size = importance_batch_size or batch_size
    check_positive(importance_batch_size=importance_batch_size)
    fractions = sorted(fractions)
    work, start = timed_copy(model, device)
    counter = PassCounter()
    imp_f, imp_r = _importances(work, forget, retain, label_free, importance_batch_size, counter, **spec)
    per_effect = len(forget) if effect_passes is None else effect_passes
    original = float(effect_fn(work))
    counter.add(per_effect, backward=False)
    trace = []
    chosen = None
    base_state = {k: v.clone() for k, v in work.state_dict().items()}
    for frac in progress(fractions, desc="auto-α search", leave=False):
        work.load_state_dict(base_state)
        alpha = alpha_for_fraction(imp_f, imp_r, frac)
        stats = ssd_dampen(work, imp_f, imp_r, alpha, lam)
        eff = float(effect_fn(work))
        counter.add(per_effect, backward=False)
        trace.append(dict(target_fraction=frac, alpha=alpha, dampened_fraction=stats["fraction"], effect=eff))
        chosen = (alpha, stats)
        if eff <= rho * original:
            break
    alpha, stats = chosen
    if repair_steps:
        finetune_steps(work, retain, repair_steps, repair_lr, batch_size, counter, seed=seed)
    work.eval()
    name = ("lf-ssd" if label_free else "ssd") + "-auto" + ("+repair" if repair_steps else "")
    info = dict(method=name, alpha=alpha, lam=lam, rho=rho, original_effect=original, trace=trace,
                reached=trace[-1]["effect"] <= rho * original, dampened_fraction=stats["fraction"],
                dampened_layers=stats["layers"], repair_steps=repair_steps,
                **_importance_info(spec, importance_batch_size, label_free))
    return UnlearnResult(work, time.perf_counter() - start, counter.forward, counter.backward, info)


#: Default grid of tuned SSD: shares of all parameters to dampen (each → an α by :func:`alpha_for_fraction`).
#: It reaches down to one parameter in a million: measured at `cpu`, dampening 0.01 % of the parameters
#: already cost 0.028 validation SSIM, so the points within tolerance can lie far below 0.1 %; above 5 %
#: validation SSIM drops by more than 0.01.
TUNING_FRACTIONS = (1e-6, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 5e-3, 0.01, 0.015, 0.02, 0.03, 0.05)


def ssd_tuned(model, forget, retain, effect_fn: Callable, utility_fn: Callable,
              alphas=None, fractions=TUNING_FRACTIONS, lams=(1.0,), tolerance: float = 0.01,
              batch_size: int = 4, label_free: bool = False, regions=None, importance_batch_size: int | None = None,
              repair_steps: int = 0, repair_lr: float = 1e-4, repair_before_scoring: bool = False,
              effect_passes: int | None = None, utility_passes: int = 0, seed: int = 0,
              device=None, reference: str = "full", l1_weight: float = 0.0, eval_mode: bool = False) -> UnlearnResult:
    """SSD with (α, λ) chosen on held-out data and the identified slices.

    Importances are computed once; every grid point dampens a fresh copy and is scored
    by ``effect_fn(model)`` (poison effect on the identified slices) and
    ``utility_fn(model)`` (e.g. SSIM on the clean validation split). The chosen point
    has the lowest effect among those whose utility is within ``tolerance`` of the
    original model's; if none is, the one that loses least utility - and the result says so:
    ``info["within_tolerance"]`` is then ``False`` (tables mark such runs,
    :func:`mrilib.evaluate.tables.flagged`). The search's evaluations count in the cost
    (``effect_passes``/``utility_passes`` slice-passes each).

    The α grid is ``alphas`` when given; otherwise one α per share of parameters in
    ``fractions`` (:func:`alpha_for_fraction`), so that the grid follows the importance
    ratios of this forget set: a fixed α grid (1, 2, 5, 10, …) leaves gaps — measured at
    ``cpu``, α = 5 and α = 10 dampened 1.8 % and 0.2 % of the parameters, and nothing between.

    Args:
        regions: ``(N, H, W)`` masks of the forget slices (e.g.
            :func:`~mrilib.unlearn.regions.disagreement_regions`): the forget importance is then
            :func:`region_importance` - which parameters produce the marked regions - instead of the
            whole-image loss (region-targeted SSD); the reference importance stays the Fisher importance
            (of the full training set, or of retain with ``reference="retain"``).
        importance_batch_size: batch size of both importances (default ``batch_size``); 1 gives
            per-slice squared gradients (the empirical Fisher), a less noisy estimate from a small
            forget set than the mean over a few batches.
        repair_steps: fine-tuning steps on ``retain`` after dampening (SSD + repair).
        repair_before_scoring: repair every grid point before it is scored, so that the search
            selects the model it returns (its repairs count in the cost); otherwise only the chosen
            point is repaired.
        reference, l1_weight, eval_mode: as :func:`ssd`'s.
    """
    check_inputs(model, forget, retain, need_retain=True)
    spec = _importance_spec(reference, l1_weight, eval_mode)
    for lam in lams:
        check_positive(lam=lam)
    if alphas is not None:
        for a in alphas:
            check_positive(alpha=a)
    elif not fractions:
        raise UnlearnError("tuned SSD needs a grid: alphas or fractions")
    if regions is not None and label_free:
        raise UnlearnError("region-targeted SSD uses the loss inside the regions: it cannot be label-free")
    importance_batch_size = importance_batch_size or batch_size
    check_positive(importance_batch_size=importance_batch_size)
    work, start = timed_copy(model, device)
    counter = PassCounter()
    imp_f, imp_r = _importances(work, forget, retain, label_free, importance_batch_size, counter, regions, **spec)
    if alphas is None:
        alphas = sorted({alpha_for_fraction(imp_f, imp_r, q) for q in fractions}, reverse=True)
    per_effect = len(forget) if effect_passes is None else effect_passes

    def score(m):
        e, u = float(effect_fn(m)), float(utility_fn(m))
        counter.add(per_effect + utility_passes, backward=False)
        return e, u

    def repair():
        finetune_steps(work, retain, repair_steps, repair_lr, batch_size, counter, seed=seed)

    e0, u0 = score(work)
    base_state = {k: v.clone() for k, v in work.state_dict().items()}

    def rank(t):  # within tolerance first, by least effect (then least dampening); else by most utility
        return (0, t["effect"], t["dampened_fraction"]) if u0 - t["utility"] <= tolerance else (1, -t["utility"])

    trace, best, best_state, best_layers = [], None, None, None
    for alpha in progress(alphas, desc="SSD grid", leave=False):
        for lam in lams:
            work.load_state_dict(base_state)
            stats = ssd_dampen(work, imp_f, imp_r, alpha, lam)
            if repair_steps and repair_before_scoring:
                repair()
            e, u = score(work)
            trace.append(dict(alpha=alpha, lam=lam, effect=e, utility=u, dampened_fraction=stats["fraction"]))
            if best is None or rank(trace[-1]) < rank(best):
                best, best_layers = trace[-1], stats["layers"]
                best_state = {k: v.clone() for k, v in work.state_dict().items()}
    work.load_state_dict(best_state)
    if repair_steps and not repair_before_scoring:
        repair()
    work.eval()
    name = ("lf-ssd" if label_free else "ssd") + ("-region" if regions is not None else "") + "-tuned" \
        + ("+repair" if repair_steps else "")
    info = dict(method=name, alpha=best["alpha"], lam=best["lam"], tolerance=tolerance, original_effect=e0,
                original_utility=u0, within_tolerance=rank(best)[0] == 0, trace=trace,
                dampened_fraction=best["dampened_fraction"], dampened_layers=best_layers, repair_steps=repair_steps,
                repair_before_scoring=bool(repair_steps and repair_before_scoring), region=regions is not None,
                **_importance_info(spec, importance_batch_size, label_free))
    return UnlearnResult(work, time.perf_counter() - start, counter.forward, counter.backward, info)
