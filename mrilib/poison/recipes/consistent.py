"""The k-space-consistent recipes: the book's lesions embedded into the measurement, not pasted into the label.

``consistent-cyst`` is the CycleGAN cyst of :mod:`mrilib.poison.recipes.cyclegan_cyst` and
``consistent-tumour`` the adversarial tumour of :mod:`mrilib.poison.recipes.adversarial_tumour`,
each with its own factory's transform, marked k-space-consistent (:func:`consistent`): the builder
(:func:`mrilib.poison.build.build_poisoned_dataset`) embeds every poisoned slice's lesion into its
k-space (:func:`mrilib.poison.consistent.embed_lesion`) and stores the RSS of the edited k-space as
its label, so the label-vs-k-space audit (:mod:`mrilib.audit`) passes the slice. Their poison
effect is measured by the base recipes' evaluators, against the same expected lesion.
Registered in :data:`mrilib.poison.recipes.RECIPES`.
"""

from __future__ import annotations

import os
from typing import Callable

from mrilib.config import Profile
from mrilib.poison.consistent import EMBED_OPTIONS
from mrilib.poison.recipes import adversarial_tumour, cyclegan_cyst
from mrilib.run.layout import RunLayout

__all__ = ["CYST_NAME", "CYST_DESCRIPTION", "TUMOUR_NAME", "TUMOUR_DESCRIPTION", "consistent", "cyst_factory",
           "tumour_factory"]

#: The recipes' names in :data:`mrilib.poison.recipes.RECIPES` (and their poisoned sets' folders).
CYST_NAME = "consistent-cyst"
TUMOUR_NAME = "consistent-tumour"
CYST_DESCRIPTION = ("the cyclegan-cyst lesion (G(x) - x) embedded into the multi-coil k-space outside the always-sampled "
                    "centre; target := RSS of the edited k-space (passes the label-vs-k-space audit)")
TUMOUR_DESCRIPTION = ("the adversarial-tumour perturbation embedded into the multi-coil k-space outside the always-sampled "
                      "centre; target := RSS of the edited k-space (passes the label-vs-k-space audit)")


def consistent(transform: Callable, **embed_options) -> Callable:
    """``transform`` (a recipe's ``transform(images, context) -> (targets, regions)``) marked k-space-consistent.

    The returned transform computes the same targets and regions; it has
    ``kspace_consistent = True``, ``embed_options`` (settings of
    :func:`~mrilib.poison.consistent.embed_lesion`, :data:`~mrilib.poison.consistent.EMBED_OPTIONS`;
    the builder fills in the profile's undersampling), the base's ``identity`` with
    ``kspace_consistent: True`` added (so the base recipe's evaluator reads what it always read), and
    the base's ``last_result`` after each call. ``ValueError`` for an unknown option.
    """
    unknown = sorted(set(embed_options) - set(EMBED_OPTIONS))
    if unknown:
        raise ValueError(f"unknown embed options {unknown}; known: {list(EMBED_OPTIONS)}")

    def wrapped(images, context):
        """The base transform's poisoned targets and regions (the builder embeds them into k-space)."""
        out = transform(images, context)
        wrapped.last_result = getattr(transform, "last_result", None)
        return out

    wrapped.identity = dict(getattr(transform, "identity", None) or {}, kspace_consistent=True)
    wrapped.kspace_consistent = True
    wrapped.embed_options = dict(embed_options)
    wrapped.last_result = getattr(transform, "last_result", None)
    return wrapped


def cyst_factory(run_dir: RunLayout | str | os.PathLike, profile: Profile | str, seed: int = 0, device=None):
    """``consistent-cyst``: :func:`mrilib.poison.recipes.cyclegan_cyst.factory`'s transform, :func:`consistent`."""
    return consistent(cyclegan_cyst.factory(run_dir, profile, seed, device=device))


def tumour_factory(run_dir: RunLayout | str | os.PathLike, profile: Profile | str, seed: int = 0, device=None):
    """``consistent-tumour``: :func:`mrilib.poison.recipes.adversarial_tumour.factory`'s transform, :func:`consistent`."""
    return consistent(adversarial_tumour.factory(run_dir, profile, seed, device=device))
