"""Selective Synaptic Dampening (SSD) and its variants.

SSD (Foster, Schoepf & Brintrup 2024) estimates how important each parameter is to the
forget set and to the data the model should keep, with the diagonal of the Fisher
information, ``I = E_batches[(∂L/∂θ)²]`` (the squared gradient of the batch-mean
training loss, averaged over batches of the same size on both sets), and dampens the
parameters that matter much more to the forget set:

    select θ_i  if  I_forget,i > α · I_retain,i,
    θ_i ← β_i θ_i  with  β_i = min(λ · I_retain,i / I_forget,i, 1).

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
  the anatomy around the poison dilutes;
- an optional short **retain repair** after dampening (a few fine-tuning steps on
  retain data), which recovers the reconstruction quality dampening costs; tuned SSD can
  repair every grid point before scoring it, so that it selects the model it returns.
"""

from __future__ import annotations

import time
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
]


def _params(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _mean_gradient_statistic(model, dataset, batch_size: int, objective: Callable, square: bool,
                             desc: str) -> dict[str, torch.Tensor]:
    """Mean over batches of ``grad²`` (``square``) or ``|grad|`` of ``objective(model, batch, first_index)``."""
    params = _params(model)
    imp = {n: torch.zeros_like(p) for n, p in params.items()}
    model.train()
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
                      desc: str = "importance", device=None) -> dict[str, torch.Tensor]:
    """Diagonal Fisher importance: mean over batches of the squared batch-mean loss gradient.

    Computed on ``device`` (default :func:`~mrilib.run.device.default_device`; ``model`` is
    copied there when it is elsewhere); the importances live there too.
    """
    counter = counter or PassCounter()
    model, device = _on(model, device)
    return _mean_gradient_statistic(model, dataset, batch_size,
                                    lambda m, b, _: batch_loss(m, b, counter, backward=True, device=device),
                                    square=True, desc=desc)


def label_free_importance(model, dataset, batch_size: int = 4, counter: PassCounter | None = None,
                          desc: str = "LF importance", device=None) -> dict[str, torch.Tensor]:
    """Label-free importance: mean over batches of ``|∂ mean‖f(x)‖² / ∂θ|`` (no targets used); ``device`` as
    :func:`fisher_importance`'s."""
    counter = counter or PassCounter()
    model, device = _on(model, device)

    def objective(m, batch, _):
        out, _ = forward_batch(m, batch, device)
        counter.add(out.shape[0], backward=True)
        scale = batch.max_value.to(out.device).view(-1, 1, 1)
        return (out / scale).pow(2).sum(dim=(-2, -1)).mean()

    return _mean_gradient_statistic(model, dataset, batch_size, objective, square=False, desc=desc)


def region_importance(model, dataset, regions, batch_size: int = 4, counter: PassCounter | None = None,
                      desc: str = "region importance", device=None) -> dict[str, torch.Tensor]:
    """Fisher importance of the error *inside marked regions*: mean over batches of the squared
    gradient of the mean absolute error (fraction of each slice's maximum) over the region pixels.

    ``regions``: ``(N, H, W)`` masks in the order of ``dataset`` (e.g. where the poison put its
    lesion). The whole-image loss of :func:`fisher_importance` mixes the poison with the anatomy
    around it; this one asks which parameters produce the marked region only. ``device`` as
    :func:`fisher_importance`'s.
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

    return _mean_gradient_statistic(model, dataset, batch_size, objective, square=True, desc=desc)


@torch.no_grad()
def ssd_dampen(model, imp_forget: dict, imp_retain: dict, alpha: float, lam: float) -> dict:
    """Dampen ``model`` in place by SSD's rule; return per-layer statistics.

    Returns ``{"selected": n, "total": N, "fraction": n/N, "layers": {name: fraction}}``.
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


def _run_ssd(model, forget, retain, importance_fn: Callable, alpha: float, lam: float, batch_size: int,
             repair_steps: int, repair_lr: float, name: str, seed: int, device) -> UnlearnResult:
    check_inputs(model, forget, retain, need_retain=True)
    check_positive(alpha=alpha, lam=lam, batch_size=batch_size)
    work, start = timed_copy(model, device)
    counter = PassCounter()
    device = module_device(work)
    imp_f = importance_fn(work, forget, batch_size, counter, desc="forget importance", device=device)
    imp_r = importance_fn(work, retain, batch_size, counter, desc="retain importance", device=device)
    stats = ssd_dampen(work, imp_f, imp_r, alpha, lam)
    if repair_steps:
        finetune_steps(work, retain, repair_steps, repair_lr, batch_size, counter, seed=seed)
    work.eval()
    info = dict(method=name, alpha=alpha, lam=lam, repair_steps=repair_steps, dampened_fraction=stats["fraction"],
                dampened_layers=stats["layers"])
    return UnlearnResult(work, time.perf_counter() - start, counter.forward, counter.backward, info)


def ssd(model, forget, retain, alpha: float = 10.0, lam: float = 1.0, batch_size: int = 4,
        repair_steps: int = 0, repair_lr: float = 1e-4, seed: int = 0, device=None) -> UnlearnResult:
    """SSD with Fisher importances on ``forget`` and ``retain`` (same batch size).

    The seed's configuration is ``alpha=0.1, lam=0.1``; ``repair_steps`` > 0 adds a
    short fine-tuning on ``retain`` after dampening (SSD+R).
    """
    return _run_ssd(model, forget, retain, fisher_importance, alpha, lam, batch_size, repair_steps, repair_lr,
                    "ssd" if not repair_steps else "ssd+repair", seed, device)


def lf_ssd(model, forget, retain, alpha: float = 10.0, lam: float = 1.0, batch_size: int = 4,
           repair_steps: int = 0, repair_lr: float = 1e-4, seed: int = 0, device=None) -> UnlearnResult:
    """Label-free SSD: importances from ``|∂‖f(x)‖²/∂θ|`` instead of the loss gradient."""
    return _run_ssd(model, forget, retain, label_free_importance, alpha, lam, batch_size, repair_steps, repair_lr,
                    "lf-ssd" if not repair_steps else "lf-ssd+repair", seed, device)


def alpha_for_fraction(imp_forget: dict, imp_retain: dict, fraction: float) -> float:
    """The α at which SSD selects (about) ``fraction`` of all parameters.

    Parameters are selected when ``I_f / I_r > α``; α is the ``1 - fraction`` quantile
    of that ratio over parameters with ``I_f > 0`` (ties and zeros make it approximate).
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
    k = int(np.ceil(fraction * total))
    k = min(max(k, 1), ratios.size)
    return float(np.partition(ratios, ratios.size - k)[ratios.size - k]) * (1 - 1e-6)


def ssd_auto_alpha(model, forget, retain, effect_fn: Callable, rho: float = 0.1, lam: float = 1.0,
                   fractions=(1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3),
                   batch_size: int = 4, label_free: bool = False, repair_steps: int = 0,
                   repair_lr: float = 1e-4, effect_passes: int | None = None, seed: int = 0,
                   device=None) -> UnlearnResult:
    """SSD with α found automatically (Potion-style): dampen more until the poison is gone.

    Args:
        effect_fn: ``effect_fn(model) -> float``, the poison effect measured on the
            *identified* slices only (never the test set or unidentified poison).
        rho: stop at the first dampened fraction with effect ≤ ``rho`` × original effect.
        fractions: increasing dampened fractions to try (each → an α by
            :func:`alpha_for_fraction`); importances are computed once.
        effect_passes: slice-passes one ``effect_fn`` call costs (for cost accounting;
            default: the forget set's size).
    """
    check_inputs(model, forget, retain, need_retain=True)
    check_positive(rho=rho, lam=lam)
    fractions = sorted(fractions)
    work, start = timed_copy(model, device)
    counter = PassCounter()
    imp_f, imp_r = _importances(work, forget, retain, label_free, batch_size, counter)
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
                dampened_layers=stats["layers"], repair_steps=repair_steps)
    return UnlearnResult(work, time.perf_counter() - start, counter.forward, counter.backward, info)


def _importances(work, forget, retain, label_free: bool, batch_size: int, counter: PassCounter, regions=None):
    """Forget and retain importances (Fisher, label-free, or - with ``regions`` - the forget set's
    :func:`region_importance` against the retain set's Fisher importance) of ``work``."""
    dev = module_device(work)
    if regions is not None:
        return (region_importance(work, forget, regions, batch_size, counter, desc="forget region importance",
                                  device=dev),
                fisher_importance(work, retain, batch_size, counter, desc="retain importance", device=dev))
    fn = label_free_importance if label_free else fisher_importance
    return (fn(work, forget, batch_size, counter, desc="forget importance", device=dev),
            fn(work, retain, batch_size, counter, desc="retain importance", device=dev))


#: Default grid of tuned SSD: shares of all parameters to dampen (each → an α by :func:`alpha_for_fraction`).
#: Measured at `cpu`: below 0.1 % nothing changes, above 5 % validation SSIM drops by more than 0.01.
TUNING_FRACTIONS = (1e-3, 3e-3, 5e-3, 0.01, 0.015, 0.02, 0.03, 0.05)


def ssd_tuned(model, forget, retain, effect_fn: Callable, utility_fn: Callable,
              alphas=None, fractions=TUNING_FRACTIONS, lams=(1.0,), tolerance: float = 0.01,
              batch_size: int = 4, label_free: bool = False, regions=None, importance_batch_size: int | None = None,
              repair_steps: int = 0, repair_lr: float = 1e-4, repair_before_scoring: bool = False,
              effect_passes: int | None = None, utility_passes: int = 0, seed: int = 0,
              device=None) -> UnlearnResult:
    """SSD with (α, λ) chosen on held-out data and the identified slices.

    Importances are computed once; every grid point dampens a fresh copy and is scored
    by ``effect_fn(model)`` (poison effect on the identified slices) and
    ``utility_fn(model)`` (e.g. SSIM on the clean validation split). The chosen point
    has the lowest effect among those whose utility is within ``tolerance`` of the
    original model's; if none is, the one that loses least utility. The search's
    evaluations count in the cost (``effect_passes``/``utility_passes`` slice-passes each).

    The α grid is ``alphas`` when given; otherwise one α per share of parameters in
    ``fractions`` (:func:`alpha_for_fraction`), so that the grid follows the importance
    ratios of this forget set: a fixed α grid (1, 2, 5, 10, …) leaves gaps — measured at
    ``cpu``, α = 5 and α = 10 dampened 1.8 % and 0.2 % of the parameters, and nothing between.

    Args:
        regions: ``(N, H, W)`` masks of the forget slices (e.g.
            :func:`~mrilib.unlearn.regions.disagreement_regions`): the forget importance is then
            :func:`region_importance` - which parameters produce the marked regions - instead of the
            whole-image loss (region-targeted SSD); the retain importance stays the Fisher importance.
        importance_batch_size: batch size of both importances (default ``batch_size``); 1 gives
            per-slice squared gradients (the empirical Fisher), a less noisy estimate from a small
            forget set than the mean over a few batches.
        repair_steps: fine-tuning steps on ``retain`` after dampening (SSD + repair).
        repair_before_scoring: repair every grid point before it is scored, so that the search
            selects the model it returns (its repairs count in the cost); otherwise only the chosen
            point is repaired.
    """
    check_inputs(model, forget, retain, need_retain=True)
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
    imp_f, imp_r = _importances(work, forget, retain, label_free, importance_batch_size, counter, regions)
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
                importance_batch_size=importance_batch_size)
    return UnlearnResult(work, time.perf_counter() - start, counter.forward, counter.backward, info)
