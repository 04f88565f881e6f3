"""What the study compares against: the poisoned run it starts from and the retrained references.

- :func:`load_poisoned_run`: the manifest, the ``clean`` and ``poisoned`` models and the
  recipe's own poison-effect measurement of one poison variant (a :class:`PoisonedRun`);
- :func:`retrain_reference`: ``oracle`` (retrained without any poisoned slice) or
  ``rewod`` (retrained without the identified ones), stored under ``models/`` by
  :class:`~mrilib.run.layout.RunLayout` (``oracle_model``, ``rewod_model``);
- :func:`reference_models`: the four references evaluated, with the retrainings' cost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from mrilib.config import Profile, get_profile
from mrilib.data.training import TrainSlices
from mrilib.poison.manifest import ManifestError, load_manifest
from mrilib.poison.recipes import RECIPES, evaluation
from mrilib.recon.checkpoints import CheckpointNotFoundError, load_model
from mrilib.recon.train import train_or_load, training_config
from mrilib.run.device import default_device
from mrilib.run.layout import as_layout
from mrilib.study.results import reference_cost
from mrilib.study.sets import SliceSubset, forget_ids
from mrilib.unlearn.base import UnlearnError

__all__ = ["PoisonedRun", "load_poisoned_run", "oracle_twin", "oracle_dir", "retrain_reference", "rewod_is_oracle",
           "reference_models"]


@dataclass
class PoisonedRun:
    """What the unlearning and evaluation chapters load from the poisoning chapter."""

    variant: str
    manifest: dict
    poisoned: torch.nn.Module
    clean: torch.nn.Module
    classifier: object
    generator: object
    evaluate: Callable  # evaluate(model, name, save=True) -> metrics dict (written to metrics/poison_<name>.json)
    train_dir: Path
    device: torch.device | None = None  # where the run computes: evaluations, unlearning, retraining
    seed: int = 0  # the run's seed: VarNet trainings, identified subsets and unlearning runs follow it


def load_poisoned_run(profile: Profile | str, run_dir: str | os.PathLike, variant: str = "cyclegan-cyst",
                      seed: int = 0, device=None) -> PoisonedRun:
    """Load the manifest, ``clean`` and ``poisoned`` models and the lesion classifier of a run's poison ``variant``.

    ``evaluate`` is the recipe's own poison-effect measurement (``Recipe.evaluator`` in
    :data:`mrilib.poison.recipes.RECIPES`), the same :class:`~mrilib.poison.effect.EffectResult` for
    every recipe: for ``cyclegan-cyst`` the CycleGAN's cyst is the expected change, for
    ``adversarial-tumour`` the objective's perturbation of each test target is. Missing artefacts raise errors that
    name the notebook that makes them. ``device`` (default :func:`~mrilib.run.device.default_device`) is the
    run's: ``evaluate`` computes there, and the study's entry points take it from ``PoisonedRun.device``.
    """
    p = get_profile(profile)
    device = default_device(device)
    run = as_layout(run_dir)
    manifest = load_manifest(run, variant)
    recipe = RECIPES[manifest["recipe"]]  # load_manifest has checked that the recipe is known
    try:
        poisoned, _ = load_model(run.poisoned_model(variant))
        clean, _ = load_model(run.clean_model)
    except CheckpointNotFoundError as err:
        raise FileNotFoundError(f"{err} — run notebooks/02_varnet.ipynb and {recipe.notebook}.ipynb first") from None
    ev = evaluation(run, p, manifest, "test", seed, device=device)
    return PoisonedRun(variant, manifest, poisoned, clean, ev.judge, ev.generator, ev.evaluate,
                       run.poisoned_split(variant), device, int(seed))


def oracle_twin(run_dir: str | os.PathLike, manifest: dict) -> str:
    """The poison variant whose ``oracle`` serves ``manifest``'s set: its recipe's twin (``Recipe.pairs_with``, or the
    recipe itself, whose default variant carries its name) when that set is built and poisons the same slices,
    else the set's own variant.

    The oracle trains on every slice that is not poisoned, and those are byte-identical in every set that poisons
    the same slices (the clean volumes): the spread-trigger and k-space-consistent sets of a lesion share the
    oracle of the book's set of that lesion, trained once on its folder.
    """
    own = manifest["variant"]
    twin = RECIPES[manifest["recipe"]].selection
    if twin == own:
        return own
    try:
        other = load_manifest(as_layout(run_dir), twin)
    except (ManifestError, OSError, ValueError):  # not built (or damaged): the set trains its own
        return own
    return twin if list(other["poisoned_ids"]) == list(manifest["poisoned_ids"]) else own


def oracle_dir(run_dir: str | os.PathLike, manifest: dict) -> Path:
    """The model folder of the ``oracle`` of ``manifest``'s set (:func:`oracle_twin`'s)."""
    return as_layout(run_dir).oracle_model(oracle_twin(run_dir, manifest))


def retrain_reference(kind: str, profile, run_dir: str | os.PathLike, train_dir: str | os.PathLike, manifest: dict,
                      fraction: float | None = None, progress: bool = True, variant: str = "cyclegan-cyst",
                      device=None, seed: int = 0):
    """Train (or load) ``oracle`` (no poisoned slice) or ``rewod`` (no identified slice at ``fraction``).

    Same configuration as the clean and poisoned models, validated on the clean ``val``
    split; stored in ``models/oracle-<variant>`` or ``models/rewod-<variant>-f<fraction>``
    (:class:`~mrilib.run.layout.RunLayout`); the oracle is that of the set's twin (:func:`oracle_twin`). An interrupted training resumes; it trains on ``device``
    (default :func:`~mrilib.run.device.default_device`) with the run's ``seed`` (initialisation, data order,
    masks: :func:`~mrilib.recon.train.training_config`). Returns ``(model, history)``.
    """
    run = as_layout(run_dir)
    if kind == "oracle" or (kind == "rewod" and fraction is not None and rewod_is_oracle(manifest, fraction)):
        # every poisoned slice left out: the oracle, trained on its twin's folder (the same clean slices)
        twin = oracle_twin(run, manifest)
        out, drop, train_dir = run.oracle_model(twin), {int(i) for i in manifest["poisoned_ids"]}, run.poisoned_split(twin)
    elif kind == "rewod":
        if fraction is None:
            raise UnlearnError("rewod needs the identified fraction it leaves out")
        out, drop = run.rewod_model(variant, fraction), set(forget_ids(manifest, fraction))
    else:
        raise UnlearnError(f"unknown retrain reference {kind!r}: oracle or rewod")
    cfg = training_config(profile, seed=int(seed))
    t = cfg["train"]
    base = TrainSlices(train_dir, t["accelerations"], t["center_fraction"], t["mask_type"], t["seed"])
    data = SliceSubset(base, sorted(set(range(len(base))) - drop), out.name)
    return train_or_load(cfg, {"train": data, "val": run.split("val")}, out, progress=progress,
                         device=default_device(device))


def rewod_is_oracle(manifest: dict, fraction: float) -> bool:
    """Whether ``rewod`` at ``fraction`` leaves out every poisoned slice: then it *is* the oracle (same training
    set, configuration and seed), and the oracle's training is reused instead of repeated."""
    return set(forget_ids(manifest, fraction)) == {int(i) for i in manifest["poisoned_ids"]}


def reference_models(ctx: PoisonedRun, profile: Profile | str, run_dir: str | os.PathLike,
                     progress: bool = False) -> tuple[dict, dict]:
    """Evaluate ``clean`` and ``poisoned`` and train (or load) ``oracle`` and ``rewod`` for ``ctx``'s poison.

    Returns ``(references, oracle_cost)``: metrics per reference model (``"rewod f=…"``
    for each of the profile's ``rewod_fractions``; retrained ones carry a ``cost``) and
    :func:`~mrilib.study.results.reference_cost` of the oracle, the yardstick of every
    unlearning run.
    """
    p = get_profile(profile)
    run = as_layout(run_dir)
    recipe = RECIPES[ctx.manifest["recipe"]]
    # the name the poisoning chapter gave this model, so its metrics file is the chapter's, not a second copy
    poisoned_name = recipe.model_name if ctx.variant == recipe.name else run.poisoned_model(ctx.variant).name
    refs = {"clean": ctx.evaluate(ctx.clean, "clean"), "poisoned": ctx.evaluate(ctx.poisoned, poisoned_name)}
    oracle, hist = retrain_reference("oracle", p, run, ctx.train_dir, ctx.manifest, progress=progress,
                                     variant=ctx.variant, device=ctx.device, seed=ctx.seed)
    oracle_cost = reference_cost(hist)
    refs["oracle"] = ctx.evaluate(oracle, run.oracle_model(ctx.variant).name) | {"cost": oracle_cost}
    for f in p.unlearn.rewod_fractions:
        if rewod_is_oracle(ctx.manifest, f):  # the oracle's training: its evaluation too
            refs[f"rewod f={f:g}"] = refs["oracle"]
            continue
        model, hist = retrain_reference("rewod", p, run, ctx.train_dir, ctx.manifest, fraction=f,
                                        progress=progress, variant=ctx.variant, device=ctx.device, seed=ctx.seed)
        refs[f"rewod f={f:g}"] = (ctx.evaluate(model, run.rewod_model(ctx.variant, f).name)
                                  | {"cost": reference_cost(hist)})
    return refs, oracle_cost
