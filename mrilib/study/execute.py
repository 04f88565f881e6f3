"""Executing the unlearning study: the defender's signals and cached runs.

:func:`run_or_load` executes one run of :func:`~mrilib.study.plan.plan_runs` (or loads it
when its ``result.json`` exists for the same poisoned weights and configuration), saves
the unlearnt weights (``model.pt``, atomically) and the result: cost (wall seconds,
slice-passes) and the evaluation the caller supplies (poison effect, utility, forget-set
SSIM). Both files live under ``unlearn/<variant>/<label>/``
(:meth:`~mrilib.run.layout.RunLayout.unlearn_result`, :meth:`~mrilib.run.layout.RunLayout.unlearn_weights`).

The defender's signals, used to *select* hyper-parameters (tuned SSD, automatic α), see
only what a defender has: the identified slices and held-out clean data.

- :func:`~mrilib.unlearn.regions.defender_effect`: how much a model reproduces the identified labels' lesions
  where each label disagrees with its own k-space - no lesion classifier: the judge that scores the study is
  never the defender's signal;
- :func:`validation_utility`: mean SSIM on the clean validation split;
- for region-targeted SSD (``region=True`` in a run's hyper-parameters), where each
  identified slice's label disagrees with its own k-space
  (:func:`~mrilib.unlearn.regions.disagreement_regions`).
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mrilib.config import Profile, get_profile
from mrilib.data.loading import varnet_dataset
from mrilib.recon.checkpoints import load_model
from mrilib.recon.quality import ssim
from mrilib.recon.train import training_config
from mrilib.run.cache import (
    JSON,
    WEIGHTS_DIGEST,
    cached_step,
    canonical,
    read_weights,
    recorded_digest,
    weights_digest,
    weights_match,
)
from mrilib.run.device import default_device
from mrilib.run.io import atomic_path, read_json
from mrilib.run.layout import RunLayout, as_layout
from mrilib.run.progress import progress as progress_bar
from mrilib.study.plan import Run, plan_runs
from mrilib.study.references import PoisonedRun, oracle_dir
from mrilib.study.results import results_table
from mrilib.study.sets import Relabelled, unlearning_sets
from mrilib.unlearn.base import UnlearnError
from mrilib.unlearn.methods import unlearn
from mrilib.unlearn.regions import defender_effect, disagreement_regions, measured_labels, reconstructions

__all__ = ["validation_utility", "run_or_load", "stored_result", "load_unlearnt",
           "comparison_models", "Study", "StudyInputs", "study_inputs", "unlearning_study"]


def validation_utility(val_dir: str | os.PathLike, profile: Profile | str, max_slices: int | None = None,
                       device=None) -> tuple[Callable[[torch.nn.Module], float], int]:
    """``(utility_fn, slices)``: mean SSIM on the clean validation split at the first acceleration.

    The validation samples (fixed masks, seeded by file name) are read once and kept in memory;
    the model reconstructs on ``device`` (default :func:`~mrilib.run.device.default_device`).
    """
    p = get_profile(profile)
    device = default_device(device)
    ds = varnet_dataset(val_dir, p.data.accelerations[0], p.data.center_fraction, p.data.mask_type)
    samples = [ds[i] for i in range(min(len(ds), max_slices or len(ds)))]

    def utility(model) -> float:
        recon = reconstructions(model, samples, device=device)
        return float(np.mean([ssim(s.target.numpy(), r, float(s.max_value)) for s, r in zip(samples, recon)]))

    return utility, len(samples)


def _identity(run: Run, poisoned_digest: str) -> dict:
    """What a run's result is computed from: the run (method, hyper-parameters, f, seed) and the poisoned weights."""
    hp = {k: v for k, v in run.hp.items() if not callable(v)}
    return canonical(dict(run=asdict(run) | {"hp": hp}, poisoned=poisoned_digest))


def stored_result(run: Run, run_dir: str | os.PathLike, variant: str, poisoned_digest: str) -> dict | None:
    """The stored result of ``run`` on poison ``variant`` when it was computed from the same poisoned
    weights (``poisoned_digest``, :func:`~mrilib.run.cache.weights_digest`) with the same configuration
    and its weights exist; else ``None`` (also for an unreadable ``result.json``, which
    :func:`run_or_load` computes again)."""
    lay = as_layout(run_dir)
    try:
        old = read_json(lay.unlearn_result(variant, run.label))
    except (OSError, ValueError):  # missing, truncated or not JSON
        return None
    same = isinstance(old, dict) and old.get("identity") == _identity(run, poisoned_digest)
    # the same weights check as run_or_load's, so the worker pool and the sequential study agree
    return old if same and weights_match(lay.unlearn_weights(variant, run.label), old.get(WEIGHTS_DIGEST)) else None


def run_or_load(run: Run, poisoned: torch.nn.Module, sets: Callable, evaluate: Callable, run_dir: str | os.PathLike,
                variant: str, signals: Callable | None = None, poisoned_digest: str | None = None,
                device=None) -> dict:
    """Execute ``run`` (or load its stored result) and return the result record.

    Args:
        run: the run.
        poisoned: the poisoned model (never modified).
        sets: ``sets(fraction, relabel=False) -> (forget, retain)``; ``relabel=True`` gives the forget set
            with the labels its own k-space gives (a run with ``relabel=True`` in its hyper-parameters).
        evaluate: ``evaluate(model, label) -> dict`` of metrics (test poison effect, utility…).
        run_dir: the run folder (or its :class:`~mrilib.run.layout.RunLayout`); the run goes to
            ``unlearn/<variant>/<label>/``.
        variant: the poison variant unlearnt.
        signals: ``signals(forget, region=False) -> dict`` of extra keyword arguments the method
            needs (``effect_fn``, ``utility_fn``, pass counts, and ``regions`` for a run with
            ``region=True``) — only for methods that select hyper-parameters.
        poisoned_digest: :func:`~mrilib.run.cache.weights_digest` of ``poisoned`` (computed if not given).
        device: where the method computes (default :func:`~mrilib.run.device.default_device`); the
            weights are saved from the CPU.

    The record is a :func:`~mrilib.run.cache.cached_step` (:data:`~mrilib.run.cache.JSON`) keyed by
    the run and the poisoned weights; it keeps the :func:`~mrilib.run.cache.weights_digest` of its
    ``model.pt`` and is recomputed when that file is missing, unreadable or does not match it
    (:func:`~mrilib.run.cache.weights_match`, with a warning naming the file).
    """
    lay = as_layout(run_dir)
    weights = lay.unlearn_weights(variant, run.label)

    def compute() -> dict:
        hp = dict(run.hp)
        relabel = bool(hp.pop("relabel", False))
        forget, retain = sets(run.fraction, relabel=True) if relabel else sets(run.fraction)
        region = bool(hp.pop("region", False))
        if region and (run.method != "ssd-tuned" or signals is None):
            raise UnlearnError(f"run {run.label}: region targeting needs tuned SSD and the defender's signals")
        if run.method in ("ssd-tuned", "ssd-auto") and signals is not None:
            hp.update(signals(forget, region=region))
            if run.method == "ssd-auto":
                hp.pop("utility_fn", None)
                hp.pop("utility_passes", None)
        res = unlearn(run.method, poisoned, forget, retain, device=device, **hp)
        t0 = time.perf_counter()
        metrics = evaluate(res.model, run.label)
        state = res.model.to("cpu").state_dict()  # saved from the CPU
        with atomic_path(weights) as tmp:
            torch.save(state, tmp)
        info = {k: v for k, v in res.info.items() if k != "dampened_layers"}
        return dict(name=run.name, method=run.method, label=run.label, fraction=run.fraction, seed=run.seed,
                    cost=dict(seconds=res.seconds, forward_passes=res.forward_passes,
                              backward_passes=res.backward_passes, passes=res.passes),
                    info=info, dampened_layers=res.info.get("dampened_layers"), metrics=metrics,
                    eval_seconds=time.perf_counter() - t0, forget_size=len(forget), retain_size=len(retain),
                    **{WEIGHTS_DIGEST: weights_digest(state)})

    ident = _identity(run, poisoned_digest or weights_digest(poisoned))
    result = lay.unlearn_result(variant, run.label)
    return cached_step(result, ident, compute, JSON, reuse=weights_match(weights, recorded_digest(result)))


def load_unlearnt(run_dir: str | os.PathLike, variant: str, label: str, like: torch.nn.Module) -> torch.nn.Module:
    """The unlearnt model of run ``label`` on poison ``variant`` (weights loaded safely into a copy of ``like``).

    The weights are checked against the digest their ``result.json`` records; a missing, unreadable or
    damaged ``model.pt`` raises (:class:`~mrilib.run.layout.MissingArtefactError`,
    :class:`~mrilib.run.cache.CacheError`) naming the file and how to recompute it.
    """
    lay = as_layout(run_dir)
    path = lay.require(lay.unlearn_weights(variant, label), "05_unlearning")
    state = read_weights(path, recorded_digest(lay.unlearn_result(variant, label)),
                         fix="run notebooks/05_unlearning.ipynb again, which recomputes this run "
                             "(`python -m mrilib.book --only 05_unlearning`)")
    model = copy.deepcopy(like).cpu()
    model.load_state_dict(state)
    return model.eval()


def comparison_models(ctx: PoisonedRun, profile: Profile | str, run_dir: str | os.PathLike, keys, fraction: float,
                      seed: int = 0) -> dict[str, torch.nn.Module]:
    """``clean``, ``poisoned``, ``oracle`` and the stored unlearnt models of the runs ``keys``
    (:data:`~mrilib.study.plan.DEFAULT_PLAN` keys) at identified fraction ``fraction`` and ``seed``,
    in that order; runs not stored are left out."""
    lay = as_layout(run_dir)
    models = {"clean": ctx.clean, "poisoned": ctx.poisoned,
              "oracle": load_model(lay.require(oracle_dir(lay, ctx.manifest), "05_unlearning"))[0]}
    runs = plan_runs(profile, seed=seed)
    for key in keys:
        run = next((r for r in runs if r.key == key and r.seed == seed and np.isclose(r.fraction, fraction)), None)
        if run is not None and lay.unlearn_weights(ctx.variant, run.label).is_file():
            models[key] = load_unlearnt(lay, ctx.variant, run.label, ctx.poisoned)
    return models


@dataclass
class Study:
    """Every unlearning run of one poison variant: results, table and the forget/retain sets."""

    records: list
    table: object  # pandas.DataFrame of :func:`~mrilib.study.results.results_table`
    sets: Callable  # sets(fraction) -> (forget, retain)
    csv: Path


@dataclass
class StudyInputs:
    """What every run of one poison variant needs: the planned runs, the forget/retain sets, the
    defender's selection signals, the poisoned model's digest and the run folder."""

    runs: list
    sets: Callable  # sets(fraction, relabel=False) -> (forget, retain); relabel: the measured labels
    signals: Callable  # signals(forget, region=False) -> keyword arguments of the selecting methods
    digest: str
    layout: RunLayout
    variant: str
    device: torch.device | None = None  # where every run and signal computes


def study_inputs(ctx: PoisonedRun, profile: Profile | str, run_dir: str | os.PathLike, device=None) -> StudyInputs:
    """The :class:`StudyInputs` of ``ctx``'s poison for ``profile`` (sets are built on first use), computing
    on ``device`` (default: the run's, ``ctx.device``, else :func:`~mrilib.run.device.default_device`)."""
    p = get_profile(profile)
    device = default_device(ctx.device if device is None else device)
    lay = as_layout(run_dir)
    cfg = training_config(p, seed=ctx.seed)
    cache = {}

    def sets(f, relabel: bool = False):
        if (f, relabel) not in cache:
            if relabel:
                forget, retain = sets(f)
                cache[f, relabel] = Relabelled(forget, measured_labels(ctx.train_dir, ctx.manifest, forget)), retain
            else:
                cache[f, relabel] = unlearning_sets(ctx.train_dir, ctx.manifest, f, cfg)
        return cache[f, relabel]

    utility_fn, n_val = validation_utility(lay.split("val"), p, device=device)

    def signals(forget, region: bool = False):
        out = dict(effect_fn=defender_effect(ctx.train_dir, ctx.manifest, forget, device=device), utility_fn=utility_fn,
                   effect_passes=len(forget), utility_passes=n_val)
        if region:
            out["regions"] = disagreement_regions(ctx.train_dir, ctx.manifest, forget)
        return out

    return StudyInputs(plan_runs(p, seed=ctx.seed), sets, signals, weights_digest(ctx.poisoned), lay, ctx.variant, device)


def unlearning_study(ctx: PoisonedRun, profile: Profile | str, run_dir: str | os.PathLike, references: dict,
                     oracle_cost: dict, progress: bool = True, device=None) -> Study:
    """Run (or load) every run of :func:`~mrilib.study.plan.plan_runs` on ``ctx``'s poisoned model and tabulate them.

    Runs are stored under ``unlearn/<variant>/<label>/``; the table (references first, see
    :func:`~mrilib.study.results.results_table`) goes to ``metrics/unlearning_<variant>.csv``.
    Tuned SSD and automatic α select with the defender's signals only (:func:`~mrilib.unlearn.regions.defender_effect`,
    :func:`validation_utility`). Runs already computed (for example by
    :func:`mrilib.study.pool.precompute` in parallel processes) are loaded. Every run computes on
    ``device`` (default: the run's, ``ctx.device``).
    """
    inp = study_inputs(ctx, profile, run_dir, device=device)
    runs = inp.runs
    records = [run_or_load(run, ctx.poisoned, inp.sets, ctx.evaluate, inp.layout, inp.variant, inp.signals, inp.digest,
                           device=inp.device)
               for run in (progress_bar(runs, desc=f"unlearning runs ({ctx.variant})") if progress else runs)]
    table = results_table(records, references, oracle_cost)
    csv = inp.layout.unlearning_table(ctx.variant)
    with atomic_path(csv) as tmp:
        table.to_csv(tmp, index=False)
    return Study(records, table, inp.sets, csv)
