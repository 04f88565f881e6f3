"""Poisoning: the k-space trigger, the CycleGAN lesion translator, the lesion classifier,
the poisoned datasets with their manifests, and the poison-effect metrics.

Submodules are imported by their users (``from mrilib.poison.build import build_poisoned_dataset``)
so that importing one does not pull in the others.
"""
