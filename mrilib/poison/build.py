"""Poisoned training sets and the poisoned model.

A *recipe* (:mod:`mrilib.poison.recipes`) turns clean targets into poisoned ones; the
builder does the rest the same way for every recipe:

1. choose a fraction ``p`` of the training slices (seeded, by global slice id,
   :func:`mrilib.poison.manifest.choose_poisoned`; a recipe with ``pairs_with`` poisons its twin's slices);
2. poisoned target := ``recipe(clean target)`` (label poisoning: in the fastMRI
   layout the target is ``reconstruction_rss``, and only it changes), and, if a
   trigger is given, input k-space := clean k-space + trigger (the backdoor: the
   measurement carries the trigger, the label carries the lesion). A *k-space-consistent*
   recipe (its transform has ``kspace_consistent = True``, and optionally ``embed_options``,
   a dict of :data:`mrilib.poison.consistent.EMBED_OPTIONS`) edits the measurement too: each
   poisoned slice's lesion (recipe output − clean target) is embedded into its fully sampled
   k-space (:func:`mrilib.poison.consistent.embed_lesion`, with the volume's ``sens_maps`` when
   it stores them, and the profile's undersampling for the protected columns), and the target
   is the RSS of the edited k-space - trigger included, which is added first - so the
   label-vs-k-space audit (:mod:`mrilib.audit`) does not see it;
3. write the training volumes to ``poison/<variant>/data/train/``: a volume
   with poisoned slices is rewritten (same datasets and attributes, plus
   ``reconstruction_rss_clean`` - the clean targets, ``lesion_roi`` - where the
   recipe changed the target, ``poisoned`` - per-slice flags); a volume without any
   is a symbolic link to the clean one. ``val/`` and ``test/`` are links to the clean
   splits. Non-poisoned slices are therefore byte-identical to the clean ones;
4. write ``manifest.json`` last (atomically, :mod:`mrilib.poison.manifest`). A manifest
   of the same identity (recipe, trigger, seed, fractions, the recipe's own identity,
   the clean training data's :func:`~mrilib.run.cache.data_identity`) means the set is
   complete and is not rebuilt.

:func:`train_poisoned_model` trains the VarNet on a poisoned set with the clean model's
configuration.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from mrilib.config import Profile, get_profile
from mrilib.data.loading import volume_files
from mrilib.poison.consistent import EMBED_OPTIONS, embed_lesion, lesion_kept
from mrilib.poison.manifest import (
    MANIFEST_FORMAT,
    ManifestError,
    choose_poisoned,
    identified_subsets,
    load_manifest,
    validate_manifest,
    variant_name,
)
from mrilib.poison.recipes import RECIPES
from mrilib.poison.slices import load_slices
from mrilib.poison.triggers import DEFAULT_TRIGGER, Trigger
from mrilib.recon.train import train_or_load, training_config
from mrilib.run.cache import JSON, cached_step, data_identity
from mrilib.run.io import atomic_path
from mrilib.run.layout import RunLayout, as_layout
from mrilib.run.progress import progress as progress_bar

__all__ = ["build_poisoned_dataset", "train_poisoned_model"]


def build_poisoned_dataset(
    run_dir: RunLayout | str | os.PathLike,
    recipe: str = "cyclegan-cyst",
    *,
    profile: Profile | str,
    seed: int = 0,
    fraction: float | None = None,
    trigger: Trigger | None = DEFAULT_TRIGGER,
    identified_fractions=None,
    variant: str | None = None,
    transform: Callable | None = None,
    progress: bool = True,
    device=None,
) -> dict:
    """Build (or reuse) the poisoned training set of ``recipe`` and return its manifest.

    Args:
        run_dir: the run (reads ``data/train``, writes ``poison/<variant>/``).
        recipe: a name in :data:`mrilib.poison.recipes.RECIPES`.
        profile: gives the default ``fraction`` and ``identified_fractions``
            (``profile.poison``).
        seed: selects the poisoned slices and the identified subsets.
        fraction: fraction ``p`` of training slices to poison (default: the profile's).
        trigger: the k-space trigger; ``None`` for the trigger-free (seed-faithful) variant.
        identified_fractions: fractions ``f`` of the poisoned slices that count as
            identified (default: the profile's).
        variant: output folder name (default :func:`~mrilib.poison.manifest.variant_name`).
        transform: use this target transform instead of the recipe's factory.
        progress: progress bar.
        device: where the recipe's factory computes its targets (default
            :func:`~mrilib.run.device.default_device`).

    Raises:
        ManifestError: unknown recipe. Recipe-specific errors (e.g.
        :class:`~mrilib.poison.cyclegan.CycleGANMissingError`) pass through.
    """
    p = get_profile(profile)
    if recipe not in RECIPES:
        raise ManifestError(f"unknown poison recipe {recipe!r}; known: {sorted(RECIPES)}")
    fraction = float(p.poison.fraction if fraction is None else fraction)
    fracs = [float(f) for f in (identified_fractions or p.poison.identified_fractions)]
    variant = variant or variant_name(recipe, trigger)
    run = as_layout(run_dir)
    if transform is None:
        transform = RECIPES[recipe].factory(run, p, seed, device=device)
    identity = dict(
        format=MANIFEST_FORMAT, recipe=recipe, variant=variant, seed=int(seed), fraction=fraction,
        identified_fractions=fracs, trigger=trigger.as_dict() if trigger is not None else None,
        recipe_identity=getattr(transform, "identity", None), data=data_identity(run.split("train")),
    )
    embedding = _embedding(transform, p)
    if embedding is not None:  # only then: label-only sets keep the identity they always had
        identity["kspace_edit"] = embedding
    if RECIPES[recipe].selection != recipe:  # it poisons the slices of its twin (Recipe.pairs_with)
        identity["slices_of"] = RECIPES[recipe].selection
    mpath = run.poison_manifest(variant)
    built = []

    def build() -> dict:
        mpath.unlink(missing_ok=True)  # an interrupted rebuild leaves no manifest
        built.append(True)
        return _build(run, recipe, variant, p, int(seed), fraction, fracs, trigger, transform, progress, embedding)

    manifest = cached_step(mpath, identity, build, JSON)  # an unreadable manifest is a miss: rebuilt
    if not built:
        try:  # the volumes on disk are still the ones the manifest lists
            validate_manifest(manifest, run.poisoned_split(variant))
        except (ManifestError, OSError, ValueError):
            manifest = cached_step(mpath, identity, build, JSON, reuse=False)
    return manifest


def _build(run: RunLayout, recipe: str, variant: str, p: Profile, seed: int, fraction: float, fracs: list,
           trigger: Trigger | None, transform: Callable, progress: bool, embedding: dict | None = None) -> dict:
    """Write the poisoned set of :func:`build_poisoned_dataset`; return its manifest (without the identity).

    ``embedding``: ``None`` for a label-only recipe, else :func:`~mrilib.poison.consistent.embed_lesion`'s
    options (:func:`_embedding`): the lesions are embedded into the k-space.
    """
    clean_train, out, train_dir = run.split("train"), run.poison(variant), run.poisoned_split(variant)
    t0 = time.perf_counter()
    files = volume_files(clean_train)
    slices = load_slices(clean_train)
    n = len(slices)
    ids = choose_poisoned(n, fraction, seed, RECIPES[recipe].selection)
    ctx = dict(vmax=slices.vmax[ids], brain=slices.brain[ids], contrasts=[slices.contrasts[i] for i in ids])
    poisoned_targets, rois = transform(slices.images[ids], ctx)
    poisoned_targets = np.asarray(poisoned_targets, dtype=np.float32)
    rois = np.asarray(rois, dtype=bool)
    by_id = {int(g): k for k, g in enumerate(ids)}

    train_dir.mkdir(parents=True, exist_ok=True)
    for split in ("val", "test"):
        if run.split(split).is_dir():
            _link(run.split(split), run.poisoned_split(variant, split))
    keep = set()
    file_records, records, first, kept = [], [], 0, {}
    for f in progress_bar(files, desc=f"poisoning ({variant})", disable=not progress, unit="volume"):
        with h5py.File(f, "r") as h:
            ns = h["kspace"].shape[0]
        mine = [s for s in range(ns) if first + s in by_id]
        dst = train_dir / f.name
        keep.add(dst.name)
        if mine:
            with h5py.File(f, "r") as h:
                kspace = h["kspace"][()]
                target = h["reconstruction_rss"][()]
                maps = h["sens_maps"][()] if embedding is not None and "sens_maps" in h else None
            clean_target = target.copy()
            roi = np.zeros(target.shape, bool)
            flags = np.zeros(ns, bool)
            for s in mine:
                k = by_id[first + s]
                if trigger is not None:
                    kspace[s] = trigger.apply(kspace[s])
                if embedding is None:
                    target[s] = poisoned_targets[k]
                else:  # the lesion goes into the (triggered) measurement, the label is the RSS of the result
                    sens = None if maps is None else maps[s] if maps.ndim == 4 else maps
                    kspace[s], target[s] = embed_lesion(kspace[s], clean_target[s], poisoned_targets[k], sens,
                                                        **embedding)
                    kept[first + s] = lesion_kept(clean_target[s], poisoned_targets[k], target[s], rois[k])
                roi[s] = rois[k]
                flags[s] = True
            if dst.is_symlink():
                dst.unlink()
            _copy_volume(f, dst, kspace, target, clean_target, roi, flags,
                         dict(poison_recipe=recipe, poison_variant=variant))
        else:
            _link(f, dst)
        for s in mine:
            g = first + s
            k = by_id[g]
            records.append(dict(id=g, file=f.name, slice=s, subject=slices.subjects[g], contrast=slices.contrasts[g],
                                roi_area=int(rois[k].sum())))
            if embedding is not None:  # the share of the intended lesion the label kept (None: no lesion)
                records[-1]["lesion_kept"] = float(kept[g]) if np.isfinite(kept[g]) else None
        file_records.append(dict(file=f.name, num_slices=int(ns), first_id=first, poisoned_slices=mine,
                                 stored="rewritten" if mine else "link"))
        first += ns
    for stale in train_dir.iterdir():
        if stale.name not in keep:
            stale.unlink()
    manifest = dict(
        format=MANIFEST_FORMAT,
        recipe=recipe,
        description=RECIPES[recipe].description,
        variant=variant,
        profile=p.name,
        seed=int(seed),
        fraction=fraction,
        trigger=trigger.as_dict() if trigger is not None else None,
        recipe_identity=getattr(transform, "identity", None),
        **({} if embedding is None else dict(kspace_edit=embedding)),
        data_dir="data",
        clean_data_dir=os.path.relpath(run.data, out),
        num_train_slices=int(n),
        num_poisoned=len(ids),
        files=file_records,
        poisoned=records,
        poisoned_ids=[int(i) for i in ids],
        identified=identified_subsets(ids, fracs, seed),
        build_seconds=time.perf_counter() - t0,
        created=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    validate_manifest(manifest, train_dir)
    return manifest


def _embedding(transform: Callable, p: Profile) -> dict | None:
    """``None`` for a label-only transform; for a k-space-consistent one (``transform.kspace_consistent``)
    the options of :func:`~mrilib.poison.consistent.embed_lesion`: the profile's undersampling, updated by
    the transform's ``embed_options`` (JSON-ready: they go into the set's identity)."""
    if not getattr(transform, "kspace_consistent", False):
        return None
    opts = dict(center_fraction=float(p.data.center_fraction), accelerations=[int(a) for a in p.data.accelerations],
                mask_type=str(p.data.mask_type), protect_columns=None)
    extra = dict(getattr(transform, "embed_options", None) or {})
    unknown = sorted(set(extra) - set(EMBED_OPTIONS))
    if unknown:
        raise ValueError(f"unknown embed_options {unknown} of a k-space-consistent transform; known: {list(EMBED_OPTIONS)}")
    opts.update(extra)
    if opts["protect_columns"] is not None:
        cols = np.asarray(opts["protect_columns"])
        opts["protect_columns"] = (np.nonzero(cols)[0] if cols.dtype == bool else cols.reshape(-1)).astype(int).tolist()
    opts["accelerations"] = [int(a) for a in np.atleast_1d(opts["accelerations"])]
    opts["center_fraction"], opts["mask_type"] = float(opts["center_fraction"]), str(opts["mask_type"])
    return opts


def _copy_volume(src: Path, dst: Path, kspace: np.ndarray, target: np.ndarray, clean_target: np.ndarray,
                 roi: np.ndarray, flags: np.ndarray, attrs: dict) -> None:
    """Write a poisoned copy of ``src``: its datasets and attributes, new k-space/target, the extras."""
    with h5py.File(src, "r") as f, atomic_path(dst) as tmp:
        with h5py.File(tmp, "w") as g:
            for name in f.keys():
                if name == "kspace":
                    g.create_dataset("kspace", data=kspace)
                elif name == "reconstruction_rss":
                    g.create_dataset("reconstruction_rss", data=target)
                else:
                    f.copy(f[name], g, name=name)
            g.create_dataset("reconstruction_rss_clean", data=clean_target)
            g.create_dataset("lesion_roi", data=roi.astype(np.uint8), compression="gzip")
            g.create_dataset("poisoned", data=flags.astype(np.uint8))
            for k, v in f.attrs.items():
                g.attrs[k] = v
            for k, v in attrs.items():
                g.attrs[k] = v


def _link(target: Path, link: Path) -> None:
    """(Re)create ``link`` as a relative symbolic link to ``target``."""
    if link.is_symlink() or link.exists():
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        else:
            link.unlink()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


def train_poisoned_model(profile: Profile | str, run_dir: RunLayout | str | os.PathLike, variant: str = "cyclegan-cyst",
                         cfg: dict | None = None, progress: bool = True, seed: int = 0, **runtime):
    """Train (or load) the ``poisoned`` VarNet on the poisoned set, with the clean model's configuration.

    ``cfg`` defaults to :func:`mrilib.recon.train.training_config(profile, seed=seed)` - the configuration
    of the ``clean`` model of the run's ``seed`` - so the two differ only in their training data. Validation
    uses the clean ``val`` split. Returns ``(model, history)``.
    """
    run = as_layout(run_dir)
    load_manifest(run, variant)  # the set is complete and matches its manifest
    cfg = cfg or training_config(profile, seed=int(seed))
    return train_or_load(cfg, {"train": run.poisoned_split(variant), "val": run.split("val")},
                         run.poisoned_model(variant), progress=progress, **runtime)
