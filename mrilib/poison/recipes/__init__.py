"""Poison recipes: what turns a clean target into a poisoned one, and how the poison's effect is measured.

A :class:`Recipe` has a ``factory(run_dir, profile, seed, device=None) -> transform`` whose
``transform(images, context)`` maps clean targets ``(n, h, w)`` to ``(poisoned targets,
lesion regions)`` (``context`` carries each slice's ``vmax``, ``brain`` mask and
``contrasts``; a ``transform.identity`` is stored in the manifest, and a change
rebuilds the set, :func:`mrilib.poison.build.build_poisoned_dataset`), and an
``evaluator`` that measures a model's poison effect (:class:`mrilib.poison.effect.EffectResult`),
scored by the evaluation judge (:func:`mrilib.poison.judge.load_run_judge`), on the test slices
of any split of the run (:func:`evaluation` reads them and builds it).

The book's recipes are registered here, explicitly, and nowhere else:

- ``cyclegan-cyst`` (chapter 3, :mod:`mrilib.poison.recipes.cyclegan_cyst`);
- ``adversarial-tumour`` (chapter 4, :mod:`mrilib.poison.recipes.adversarial_tumour`);
- ``consistent-cyst`` and ``consistent-tumour`` (:mod:`mrilib.poison.recipes.consistent`): the same
  two lesions embedded into the k-space, so that each label stays the RSS of its k-space (the
  two above change the label only); a transform with ``kspace_consistent = True`` is built that way.
  Each poisons the same slices as its label-only twin (``pairs_with``), so the attacks are paired.

:func:`register_recipe` adds another (the tests use it for a CycleGAN-free recipe).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from mrilib.config import Profile, get_profile
from mrilib.poison.effect import TestSlices, load_test_slices
from mrilib.poison.recipes import adversarial_tumour, consistent, cyclegan_cyst
from mrilib.poison.triggers import Trigger
from mrilib.run.layout import RunLayout, as_layout

__all__ = ["Recipe", "RECIPES", "register_recipe", "Evaluation", "evaluation"]


@dataclass(frozen=True)
class Recipe:
    """A poisoning recipe: its name, a one-line description, the transform factory, the
    notebook that builds its set and poisoned model, and its poison-effect measurement.

    ``evaluator(run_dir, profile, manifest, test, seed, device=None) -> (evaluate, judge, generator)``
    loads what the recipe's measurement needs (computing on ``device``): ``test`` holds the
    slices of one split (:func:`mrilib.poison.effect.load_test_slices`, whose ``split`` names
    it), ``judge`` is the lesion classifier that scores (the run's evaluation judge, never the
    attacker's classifier); ``evaluate(model, name, save=True)`` returns
    the metrics of one model (:class:`mrilib.poison.effect.EffectResult`'s). ``model_name``
    is the name that notebook gives the model poisoned with the (triggered) recipe in its
    metrics files; ``lesion`` the lesion the recipe plants. ``pairs_with`` names the recipe whose
    poisoned slices (and so identified subsets, ``oracle`` and ``rewod``) this one poisons, so that two
    attacks with one lesion differ only in how it is planted (empty: its own selection).
    """

    name: str
    description: str
    factory: Callable
    notebook: str = "03_poison_cyclegan"
    evaluator: Callable | None = None
    model_name: str = "poisoned"
    lesion: str = ""
    pairs_with: str = ""

    @property
    def selection(self) -> str:
        """The name that seeds the choice of its poisoned slices (:func:`mrilib.poison.manifest.choose_poisoned`)."""
        return self.pairs_with or self.name


#: Known recipes by name.
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(cyclegan_cyst.NAME, cyclegan_cyst.DESCRIPTION, cyclegan_cyst.factory, notebook="03_poison_cyclegan",
               evaluator=cyclegan_cyst.evaluator, model_name="poisoned", lesion="cyst"),
        Recipe(adversarial_tumour.NAME, adversarial_tumour.DESCRIPTION, adversarial_tumour.factory,
               notebook="04_poison_adversarial", evaluator=adversarial_tumour.evaluator,
               model_name=adversarial_tumour.MODEL_NAME, lesion="tumour"),
        Recipe(consistent.CYST_NAME, consistent.CYST_DESCRIPTION, consistent.cyst_factory,
               notebook="03_poison_cyclegan", evaluator=cyclegan_cyst.evaluator,
               model_name=f"poisoned-{consistent.CYST_NAME}", lesion="cyst", pairs_with=cyclegan_cyst.NAME),
        Recipe(consistent.TUMOUR_NAME, consistent.TUMOUR_DESCRIPTION, consistent.tumour_factory,
               notebook="04_poison_adversarial", evaluator=adversarial_tumour.evaluator,
               model_name=f"poisoned-{consistent.TUMOUR_NAME}", lesion="tumour",
               pairs_with=adversarial_tumour.NAME),
    )
}


def register_recipe(name: str, factory: Callable, description: str = "", notebook: str = "03_poison_cyclegan",
                    evaluator: Callable | None = None, model_name: str = "poisoned", lesion: str = "",
                    pairs_with: str = "") -> Recipe:
    """Register (or replace) recipe ``name``; ``factory(run_dir, profile, seed, device=None) -> transform``
    (see :class:`Recipe` for the other fields)."""
    RECIPES[name] = Recipe(name, description, factory, notebook, evaluator, model_name, lesion, pairs_with)
    return RECIPES[name]


@dataclass
class Evaluation:
    """A recipe's poison-effect measurement on one split of a run (see :func:`evaluation`)."""

    evaluate: Callable  # evaluate(model, name, save=True) -> metrics dict
    judge: object  # the lesion classifier that scores: the run's evaluation judge
    generator: object  # the recipe's generator (the CycleGAN), or None
    test: TestSlices  # the slices measured on


def evaluation(run_dir: RunLayout | str | os.PathLike, profile: Profile | str, manifest: dict, split: str = "test",
               seed: int = 0, device=None) -> Evaluation:
    """The poison-effect measurement of ``manifest``'s recipe on the run's ``split`` (``test``, ``final``...).

    Reads the split's slices with the manifest's trigger at the profile's first
    acceleration (:func:`mrilib.poison.effect.load_test_slices`) and builds the recipe's
    ``evaluator`` on them, computing on ``device``. ``evaluate`` writes the metrics of a split
    other than ``test`` to ``metrics/poison_<name>@<split>.json`` (the recipe's prefix), so the
    chapters' test-split files stay as they are. ``ValueError`` for a recipe without an evaluator.
    """
    p = get_profile(profile)
    run = as_layout(run_dir)
    recipe = RECIPES[manifest["recipe"]]
    if recipe.evaluator is None:
        raise ValueError(f"recipe {recipe.name!r} has no poison-effect evaluator")
    test = load_test_slices(run.split(split), Trigger.from_dict(manifest.get("trigger")), int(p.data.accelerations[0]),
                            p.data.center_fraction, p.data.mask_type)
    evaluate, judge, generator = recipe.evaluator(run, p, manifest, test, seed, device=device)
    return Evaluation(evaluate, judge, generator, test)
