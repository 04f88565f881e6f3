"""Poisoning: lesions, the k-space trigger, the lesion classifier (trained in :mod:`~mrilib.poison.classifier`,
used as the judge in :mod:`~mrilib.poison.judge`), the CycleGAN lesion translator, the recipes
(:mod:`mrilib.poison.recipes`, all registered there; :mod:`~mrilib.poison.consistent` embeds a
recipe's lesion into the k-space), the poisoned sets with their manifests
(:mod:`~mrilib.poison.build`, :mod:`~mrilib.poison.manifest`) and the poison effect, one result for every
recipe (:mod:`~mrilib.poison.effect`).

Submodules are imported by their users (``from mrilib.poison.build import build_poisoned_dataset``)
so that importing one does not pull in the others.
"""
