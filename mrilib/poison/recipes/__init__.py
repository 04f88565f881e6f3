"""Poison recipes: what turns a clean target into a poisoned one, and how the poison's effect is measured.

A :class:`Recipe` has a ``factory(run_dir, profile, seed) -> transform`` whose
``transform(images, context)`` maps clean targets ``(n, h, w)`` to ``(poisoned targets,
lesion regions)`` (``context`` carries each slice's ``vmax``, ``brain`` mask and
``contrasts``; a ``transform.identity`` is stored in the manifest, and a change
rebuilds the set, :func:`mrilib.poison.build.build_poisoned_dataset`), and an
``evaluator`` that measures a model's poison effect (:class:`mrilib.poison.effect.EffectResult`).

The book's two recipes are registered here, explicitly, and nowhere else:

- ``cyclegan-cyst`` (chapter 3, :mod:`mrilib.poison.recipes.cyclegan_cyst`);
- ``adversarial-tumour`` (chapter 4, :mod:`mrilib.poison.recipes.adversarial_tumour`).

:func:`register_recipe` adds another (the tests use it for a CycleGAN-free recipe).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mrilib.poison.recipes import adversarial_tumour, cyclegan_cyst

__all__ = ["Recipe", "RECIPES", "register_recipe"]


@dataclass(frozen=True)
class Recipe:
    """A poisoning recipe: its name, a one-line description, the transform factory, the
    notebook that builds its set and poisoned model, and its poison-effect measurement.

    ``evaluator(run_dir, profile, manifest, test, seed, device=None) -> (evaluate, classifier, generator)``
    loads what the recipe's measurement needs (computing on ``device``); ``evaluate(model, name, save=True)`` returns
    the metrics of one model (:class:`mrilib.poison.effect.EffectResult`'s). ``model_name``
    is the name that notebook gives the model poisoned with the (triggered) recipe in its
    metrics files; ``lesion`` the lesion the recipe plants.
    """

    name: str
    description: str
    factory: Callable
    notebook: str = "03_poison_cyclegan"
    evaluator: Callable | None = None
    model_name: str = "poisoned"
    lesion: str = ""


#: Known recipes by name.
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(cyclegan_cyst.NAME, cyclegan_cyst.DESCRIPTION, cyclegan_cyst.factory, notebook="03_poison_cyclegan",
               evaluator=cyclegan_cyst.evaluator, model_name="poisoned", lesion="cyst"),
        Recipe(adversarial_tumour.NAME, adversarial_tumour.DESCRIPTION, adversarial_tumour.factory,
               notebook="04_poison_adversarial", evaluator=adversarial_tumour.evaluator,
               model_name=adversarial_tumour.MODEL_NAME, lesion="tumour"),
    )
}


def register_recipe(name: str, factory: Callable, description: str = "", notebook: str = "03_poison_cyclegan",
                    evaluator: Callable | None = None, model_name: str = "poisoned", lesion: str = "") -> Recipe:
    """Register (or replace) recipe ``name``; ``factory(run_dir, profile, seed) -> transform``
    (see :class:`Recipe` for the other fields)."""
    RECIPES[name] = Recipe(name, description, factory, notebook, evaluator, model_name, lesion)
    return RECIPES[name]
