"""Gradient-based unlearning baselines, adapted from classification to reconstruction.

All share one short optimisation loop (:func:`_optimise`): Adam, gradient-norm
clipping, a fixed number of steps, and a *collapse guard* for the methods that push
the model away from its training data — training stops early once the SSIM loss on a
few retain batches exceeds the original model's by ``max_retain_loss_rise``.

- **CF** (catastrophic forgetting / fine-tuning): minimise the training loss on retain.
- **Noisy labels** (NL), the regression analogue of random labels: fit the forget
  inputs to structureless targets (Gaussian noise with each target's mean and standard
  deviation, fresh each step), so the poisoned mapping is overwritten; **+FT** adds
  the retain loss.
- **Gradient ascent** (GA): maximise the forget loss (bounded: the ascent stops on a
  batch whose SSIM loss already exceeds ``ascent_bound``); **+FT** adds the retain loss.
- **Bad Teacher** (Chundawat et al. 2023), for regression: distil the student (a copy
  of the poisoned model) towards the poisoned model on retain slices and towards a
  randomly initialised VarNet on forget slices.
"""

from __future__ import annotations

import copy
import time
from typing import Callable

import torch

from mrilib.recon.steps import forward_batch
from mrilib.run.device import module_device, on_device
from mrilib.run.progress import progress
from mrilib.unlearn.base import (
    PassCounter,
    UnlearnResult,
    batch_loss,
    batches,
    check_inputs,
    check_positive,
    cycle,
    timed_copy,
    union,
)

__all__ = ["finetune_steps", "finetune", "noisy_labels", "gradient_ascent", "bad_teacher"]


def _retain_probe(model, retain, batch_size: int, counter: PassCounter, n_batches: int = 2) -> float:
    """Mean SSIM loss on the first ``n_batches`` retain batches (the collapse guard's gauge)."""
    model.eval()
    vals = []
    with torch.no_grad():
        for i, batch in enumerate(batches(retain, batch_size)):
            if i >= n_batches:
                break
            vals.append(float(batch_loss(model, batch, counter, backward=False)))
    model.train()
    return sum(vals) / max(len(vals), 1)


def _optimise(model, steps: int, lr: float, step_loss: Callable[[int], torch.Tensor], desc: str,
              grad_clip: float = 1.0, guard: Callable[[], bool] | None = None, guard_every: int = 10) -> dict:
    """Run ``steps`` Adam steps on ``step_loss(step)``; stop early if ``guard()`` says so."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses, stopped = [], None
    for step in progress(range(steps), desc=desc, leave=False):
        opt.zero_grad(set_to_none=True)
        loss = step_loss(step)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        if guard is not None and (step + 1) % guard_every == 0 and guard():
            stopped = step + 1
            break
    model.eval()
    return {"steps": len(losses), "losses": losses, "stopped_early_at": stopped}


def finetune_steps(model, retain, steps: int, lr: float, batch_size: int, counter: PassCounter, seed: int = 0) -> dict:
    """Fine-tune ``model`` in place on ``retain`` for ``steps`` steps (used by CF and SSD repair)."""
    stream = cycle(retain, batch_size, seed)
    return _optimise(model, steps, lr, lambda _: batch_loss(model, next(stream), counter, backward=True),
                     desc="retain fine-tuning")


def _guard(model, retain, batch_size, counter, max_rise):
    """A collapse guard: True once the retain loss rose by more than ``max_rise``."""
    base = _retain_probe(model, retain, batch_size, counter)
    return lambda: _retain_probe(model, retain, batch_size, counter) > base + max_rise


def finetune(model, forget, retain, steps: int = 100, lr: float = 1e-4, batch_size: int = 4,
             seed: int = 0, include_forget: bool = False, device=None) -> UnlearnResult:
    """CF: fine-tune the poisoned model on retain data only (the forget set is not used); with
    ``include_forget``, on forget ∪ retain - the corrective baseline when the forget set's labels have
    been corrected (:class:`~mrilib.study.sets.Relabelled`: relabel + fine-tune)."""
    check_inputs(model, forget, retain, need_retain=True)
    check_positive(steps=steps, lr=lr, batch_size=batch_size)
    work, start = timed_copy(model, device)
    counter = PassCounter()
    data = union(forget, retain) if include_forget else retain
    log = finetune_steps(work, data, steps, lr, batch_size, counter, seed)
    return UnlearnResult(work, time.perf_counter() - start, counter.forward, counter.backward,
                         dict(method="finetune", steps=log["steps"], lr=lr, include_forget=bool(include_forget)))


def _forget_objective(model, forget, retain, forget_term: Callable, name: str, steps: int, lr: float,
                      retain_weight: float, batch_size: int, max_retain_loss_rise: float, seed: int,
                      info: dict, device) -> UnlearnResult:
    """Optimise ``forget_term(work, forget batch, counter)`` (+ ``retain_weight`` × retain loss), guarded."""
    work, start = timed_copy(model, device)
    counter = PassCounter()
    f_stream = cycle(forget, batch_size, seed)
    r_stream = cycle(retain, batch_size, seed + 1) if retain is not None and len(retain) else None

    def step_loss(_):
        loss = forget_term(work, next(f_stream), counter)
        if retain_weight:
            loss = loss + retain_weight * batch_loss(work, next(r_stream), counter, backward=True)
        return loss

    guard = _guard(work, retain, batch_size, counter, max_retain_loss_rise) if r_stream is not None else None
    log = _optimise(work, steps, lr, step_loss, name, guard=guard)
    name = name + ("+ft" if retain_weight else "")
    return UnlearnResult(work, time.perf_counter() - start, counter.forward, counter.backward,
                         dict(method=name, steps=log["steps"], stopped_early_at=log["stopped_early_at"], lr=lr,
                              retain_weight=retain_weight, **info))


def noisy_labels(model, forget, retain, steps: int = 100, lr: float = 1e-4, noise: float = 1.0,
                 retain_weight: float = 0.0, batch_size: int = 4, max_retain_loss_rise: float = 0.05,
                 seed: int = 0, device=None) -> UnlearnResult:
    """NL (``retain_weight=0``) or NL+FT: fit forget inputs to random targets.

    The random target of slice ``y`` is ``mean(y) + noise · std(y) · ε`` with
    ``ε ~ N(0, 1)`` per pixel, fresh each step (``noise=1`` matches the target's
    first two moments and nothing else); with ``retain_weight > 0`` the retain loss
    is added. The noise is drawn on the CPU (the same on every device) and moved to the model.
    """
    check_inputs(model, forget, retain, need_retain=retain_weight > 0)
    check_positive(steps=steps, lr=lr, noise=noise, batch_size=batch_size)
    gen = torch.Generator().manual_seed(seed)

    def term(work, fb, counter):
        tgt = torch.as_tensor(fb.target).float()
        mean, std = tgt.mean(dim=(-2, -1), keepdim=True), tgt.std(dim=(-2, -1), keepdim=True)
        noisy = mean + noise * std * torch.randn(tgt.shape, generator=gen)
        return batch_loss(work, fb, counter, backward=True, target=noisy)

    return _forget_objective(model, forget, retain, term, "noisy-labels", steps, lr, retain_weight, batch_size,
                             max_retain_loss_rise, seed, dict(noise=noise), device)


def gradient_ascent(model, forget, retain, steps: int = 50, lr: float = 1e-5, ascent_bound: float = 0.5,
                    retain_weight: float = 0.0, batch_size: int = 4, max_retain_loss_rise: float = 0.05,
                    seed: int = 0, device=None) -> UnlearnResult:
    """GA (``retain_weight=0``) or GA+FT: maximise the forget loss, bounded.

    The ascent term is ``-min(L_forget, ascent_bound)``: once a forget batch's SSIM
    loss exceeds ``ascent_bound`` it stops pushing (no unbounded divergence).
    """
    check_inputs(model, forget, retain, need_retain=retain_weight > 0)
    check_positive(steps=steps, lr=lr, ascent_bound=ascent_bound, batch_size=batch_size)

    def term(work, fb, counter):
        return -torch.clamp(batch_loss(work, fb, counter, backward=True), max=ascent_bound)

    return _forget_objective(model, forget, retain, term, "gradient-ascent", steps, lr, retain_weight, batch_size,
                             max_retain_loss_rise, seed, dict(ascent_bound=ascent_bound), device)


def bad_teacher(model, forget, retain, steps: int = 100, lr: float = 1e-4, batch_size: int = 4,
                bad_teacher_model: torch.nn.Module | None = None, seed: int = 0, device=None) -> UnlearnResult:
    """Bad Teacher distillation for reconstruction.

    Student = copy of the poisoned model. Each step: one retain batch distilled towards
    the poisoned model's output (competent teacher) and one forget batch towards a
    randomly initialised VarNet's output (incompetent teacher), both with the SSIM loss.
    ``bad_teacher_model`` defaults to a fresh VarNet of the same configuration
    (weights seeded by ``seed + 1``; found via ``model.mrilib_config`` if present).
    """
    check_inputs(model, forget, retain, need_retain=True)
    check_positive(steps=steps, lr=lr, batch_size=batch_size)
    work, start = timed_copy(model, device)
    device = module_device(work)
    teacher, _ = timed_copy(model, device)
    teacher.eval()
    if bad_teacher_model is None:
        bad_teacher_model = _random_like(model, seed + 1)
    bad_teacher_model = on_device(bad_teacher_model, device)
    bad_teacher_model.eval()
    counter = PassCounter()
    f_stream, r_stream = cycle(forget, batch_size, seed), cycle(retain, batch_size, seed + 1)

    def teach(net, batch):
        with torch.no_grad():
            out, _ = forward_batch(net, batch, device)
        counter.add(out.shape[0], backward=False)
        return out

    def step_loss(_):
        rb, fb = next(r_stream), next(f_stream)
        return (batch_loss(work, rb, counter, backward=True, target=teach(teacher, rb))
                + batch_loss(work, fb, counter, backward=True, target=teach(bad_teacher_model, fb)))

    log = _optimise(work, steps, lr, step_loss, "bad teacher")
    return UnlearnResult(work, time.perf_counter() - start, counter.forward, counter.backward,
                         dict(method="bad-teacher", steps=log["steps"], lr=lr))


def _random_like(model, seed: int) -> torch.nn.Module:
    """A randomly initialised copy of ``model``'s architecture (re-initialised parameters), on the CPU."""
    torch.manual_seed(seed)
    net = copy.deepcopy(model).to("cpu")  # RNG: re-initialised by the CPU generator, the same weights on every device
    for m in net.modules():
        if hasattr(m, "reset_parameters") and m is not net:
            m.reset_parameters()
    return net
