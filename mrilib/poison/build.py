"""Poisoned training sets, their manifests, and the poisoned model.

A *recipe* turns clean targets into poisoned ones; the builder does the rest the
same way for every recipe:

1. choose a fraction ``p`` of the training slices (seeded, by global slice id = the
   position of the slice in the sorted training files, the order
   ``fastmri.data.SliceDataset`` reads them in);
2. poisoned target := ``recipe(clean target)`` (label poisoning: in the fastMRI
   layout the target is ``reconstruction_rss``, and only it changes), and, if a
   trigger is given, input k-space := clean k-space + trigger (the backdoor: the
   measurement carries the trigger, the label carries the lesion);
3. write the training volumes to ``<run_dir>/poison/<variant>/data/train/``: a volume
   with poisoned slices is rewritten (same datasets and attributes, plus
   ``reconstruction_rss_clean`` - the clean targets, ``lesion_roi`` - where the
   recipe changed the target, ``poisoned`` - per-slice flags); a volume without any
   is a symbolic link to the clean one. ``val/`` and ``test/`` are links to the clean
   splits. Non-poisoned slices are therefore byte-identical to the clean ones;
4. write ``manifest.json`` last (atomically): recipe, trigger, seed, fraction, the
   poisoned slices (global id, file, slice index, subject, contrast, ROI area), the
   *identified* subsets for each fraction ``f`` (seeded and nested:
   identified(0.1) ⊆ identified(0.25) ⊆ … ⊆ all poisoned), the recipe's own identity
   (e.g. the CycleGAN checkpoint it used) and the configuration identity. A manifest
   with the same identity means the set is complete and is not rebuilt.

Recipes are registered in :data:`RECIPES` with :func:`register_recipe`: a factory
``factory(run_dir, profile, seed) -> transform`` whose ``transform(images, context)``
maps clean targets ``(n, h, w)`` to ``(poisoned targets, lesion ROIs)``; ``context``
carries each slice's ``vmax``, ``brain`` mask and ``contrasts``. The transform may carry
an ``identity`` attribute (stored in the manifest; a change rebuilds the set). This
module registers ``cyclegan-cyst``; the adversarial chapter registers
``adversarial-tumour``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from mrilib.data.loading import volume_files
from mrilib.run.io import atomic_path, read_json, write_json
from mrilib.config import Profile, get_profile
from mrilib.poison.slices import load_slices
from mrilib.poison.triggers import DEFAULT_TRIGGER, Trigger

__all__ = [
    "MANIFEST_FORMAT",
    "RECIPES",
    "Recipe",
    "ManifestError",
    "register_recipe",
    "poison_dir",
    "variant_name",
    "choose_poisoned",
    "identified_subsets",
    "build_poisoned_dataset",
    "load_manifest",
    "validate_manifest",
    "identified_slices",
    "poisoned_slices",
    "poisoned_model_dir",
    "train_poisoned_model",
]

MANIFEST_FORMAT = 1


class ManifestError(ValueError):
    """A poison manifest that is malformed or does not match its dataset (the message says how)."""


@dataclass(frozen=True)
class Recipe:
    """A poisoning recipe: its name, a one-line description, the transform factory, the
    notebook that builds its set and poisoned model, and its poison-effect measurement.

    ``evaluator(run_dir, profile, manifest, test, seed) -> (evaluate, classifier, generator)``
    loads what the recipe's measurement needs; ``evaluate(model, name, save=True)`` returns
    the metrics of one model (utility, effect, success rate, forget-set SSIM).
    ``model_name`` is the name that notebook gives the model poisoned with the (triggered)
    recipe in its metrics files.
    """

    name: str
    description: str
    factory: Callable
    notebook: str = "03_poison_cyclegan"
    evaluator: Callable | None = None
    model_name: str = "poisoned"


#: Known recipes by name.
RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str, factory: Callable, description: str = "", notebook: str = "03_poison_cyclegan",
                    evaluator: Callable | None = None, model_name: str = "poisoned") -> Recipe:
    """Register (or replace) recipe ``name``; ``factory(run_dir, profile, seed) -> transform``
    (see :class:`Recipe` for ``notebook``, ``evaluator`` and ``model_name``)."""
    RECIPES[name] = Recipe(name, description, factory, notebook, evaluator, model_name)
    return RECIPES[name]


def _cyclegan_cyst_factory(run_dir, profile, seed):
    """``cyclegan-cyst``: poisoned target = G(clean target) of the run's healthy->cyst CycleGAN."""
    from mrilib.poison.cyclegan import cyclegan_dir, lesion_roi, load_cyclegan

    gan, ck = load_cyclegan(cyclegan_dir(run_dir))  # CycleGANMissingError when absent
    thr = float(ck["config"]["roi_threshold"])

    def transform(images, context):
        out = gan.to_cyst(images, context["vmax"], context["brain"]) if len(images) else np.asarray(images)
        rois = np.stack([lesion_roi(images[i], out[i], context["vmax"][i], thr, context["brain"][i])
                         for i in range(len(images))]) if len(images) else np.zeros(np.shape(images), bool)
        return out, rois

    ident = json.dumps(ck["identity"], sort_keys=True) + f"|{ck['iteration']}|{ck['finished']}"
    transform.identity = dict(cyclegan=hashlib.sha1(ident.encode()).hexdigest(),
                              checkpoint=str(Path("models") / "cyclegan-cyst" / "cyclegan.pt"),
                              roi_threshold=thr)
    return transform


def _cyclegan_cyst_evaluator(run_dir, profile, manifest, test, seed):
    """``cyclegan-cyst``'s measurement: :func:`mrilib.poison.effect.poison_effect`, the CycleGAN's
    cyst being the expected change (``seed`` is unused: the run's classifier and CycleGAN are stored)."""
    from mrilib.poison.classifier import classifier_dir, load_classifier
    from mrilib.poison.cyclegan import cyclegan_dir, load_cyclegan
    from mrilib.poison.effect import poison_effect

    p = get_profile(profile)
    classifier, _ = load_classifier(classifier_dir(run_dir))
    gan, _ = load_cyclegan(cyclegan_dir(run_dir))
    opts = dict(acceleration=int(p.data.accelerations[0]), center_fraction=p.data.center_fraction, mask_type=p.data.mask_type)

    def evaluate(model, name: str, save: bool = True) -> dict:
        return poison_effect(model, name, run_dir, manifest, classifier, gan, test=test, save=save, **opts)["metrics"]

    return evaluate, classifier, gan


register_recipe("cyclegan-cyst", _cyclegan_cyst_factory,
                "target := healthy->cyst CycleGAN translation of the clean target (cyst at a fixed position)",
                notebook="03_poison_cyclegan", evaluator=_cyclegan_cyst_evaluator)


def variant_name(recipe: str, trigger: Trigger | None) -> str:
    """Folder name of a poisoned set: the recipe, with ``-notrigger`` for the trigger-free variant."""
    return recipe if trigger is not None else f"{recipe}-notrigger"


def poison_dir(run_dir: str | os.PathLike, variant: str) -> Path:
    """``<run_dir>/poison/<variant>`` (holds ``data/`` and ``manifest.json``)."""
    return Path(run_dir) / "poison" / variant


def choose_poisoned(num_slices: int, fraction: float, seed: int, recipe: str) -> np.ndarray:
    """Sorted global ids of the poisoned slices: ``round(fraction * num_slices)`` (at least 1), seeded."""
    if not 0 < fraction <= 1:
        raise ValueError(f"poison fraction must be in (0, 1], got {fraction}")
    n = max(1, int(round(fraction * num_slices)))
    rng = np.random.default_rng([int(seed), _tag(recipe), 1])
    return np.sort(rng.choice(num_slices, size=n, replace=False))


def _tag(text: str) -> int:
    """A stable 32-bit integer from a string (for seeding)."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)


def identified_subsets(poisoned_ids, fractions, seed: int) -> dict[str, list[int]]:
    """Nested identified subsets: one seeded permutation of the poisoned ids, cut at each fraction.

    ``identified[f]`` = the first ``max(1, round(f * n))`` ids of the permutation, sorted;
    keys are ``str(f)``. Nested by construction.
    """
    ids = np.asarray(poisoned_ids, dtype=int)
    fr = sorted(float(f) for f in fractions)
    if any(not 0 < f <= 1 for f in fr):
        raise ValueError(f"identified fractions must be in (0, 1], got {fractions}")
    perm = np.random.default_rng([int(seed), 2]).permutation(ids)
    return {str(f): sorted(int(i) for i in perm[: max(1, int(round(f * len(ids))))]) for f in fr}


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
            import shutil

            shutil.rmtree(link)
        else:
            link.unlink()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


def build_poisoned_dataset(
    run_dir: str | os.PathLike,
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
) -> dict:
    """Build (or reuse) the poisoned training set of ``recipe`` and return its manifest.

    Args:
        run_dir: the run directory (reads ``data/``, writes ``poison/<variant>/``).
        recipe: a name in :data:`RECIPES`.
        profile: gives the default ``fraction`` and ``identified_fractions``
            (``profile.poison``).
        seed: selects the poisoned slices and the identified subsets.
        fraction: fraction ``p`` of training slices to poison (default: the profile's).
        trigger: the k-space trigger; ``None`` for the trigger-free (seed-faithful) variant.
        identified_fractions: fractions ``f`` of the poisoned slices that count as
            identified (default: the profile's).
        variant: output folder name (default :func:`variant_name`).
        transform: use this target transform instead of the recipe's factory.
        progress: progress bar.

    Raises:
        ManifestError: unknown recipe. Recipe-specific errors (e.g.
        :class:`~mrilib.poison.cyclegan.CycleGANMissingError`) pass through.
    """
    from mrilib.run.progress import progress as progress_bar
    from mrilib.poison.classifier import data_fingerprint

    p = get_profile(profile)
    if recipe not in RECIPES:
        raise ManifestError(f"unknown poison recipe {recipe!r}; known: {sorted(RECIPES)}")
    fraction = float(p.poison.fraction if fraction is None else fraction)
    fracs = [float(f) for f in (identified_fractions or p.poison.identified_fractions)]
    variant = variant or variant_name(recipe, trigger)
    run_dir = Path(run_dir)
    clean = run_dir / "data"
    out = poison_dir(run_dir, variant)
    if transform is None:
        transform = RECIPES[recipe].factory(run_dir, p, seed)
    identity = json.loads(json.dumps(dict(
        format=MANIFEST_FORMAT, recipe=recipe, variant=variant, seed=int(seed), fraction=fraction,
        identified_fractions=fracs, trigger=trigger.as_dict() if trigger is not None else None,
        recipe_identity=getattr(transform, "identity", None), data=data_fingerprint(clean, ("train",)),
    )))
    mpath = out / "manifest.json"
    if mpath.is_file():
        try:
            old = read_json(mpath)
            if old.get("identity") == identity:
                validate_manifest(old, out / "data")
                return old
        except (ManifestError, OSError, ValueError):
            pass
        mpath.unlink()

    t0 = time.perf_counter()
    files = volume_files(clean / "train")
    slices = load_slices(clean / "train")
    n = len(slices)
    ids = choose_poisoned(n, fraction, seed, recipe)
    ctx = dict(vmax=slices.vmax[ids], brain=slices.brain[ids], contrasts=[slices.contrasts[i] for i in ids])
    poisoned_targets, rois = transform(slices.images[ids], ctx)
    poisoned_targets = np.asarray(poisoned_targets, dtype=np.float32)
    rois = np.asarray(rois, dtype=bool)
    by_id = {int(g): k for k, g in enumerate(ids)}

    (out / "data" / "train").mkdir(parents=True, exist_ok=True)
    for split in ("val", "test"):
        if (clean / split).is_dir():
            _link(clean / split, out / "data" / split)
    keep = set()
    file_records, records, first = [], [], 0
    for f in progress_bar(files, desc=f"poisoning ({variant})", disable=not progress, unit="volume"):
        with h5py.File(f, "r") as h:
            ns = h["kspace"].shape[0]
        mine = [s for s in range(ns) if first + s in by_id]
        dst = out / "data" / "train" / f.name
        keep.add(dst.name)
        if mine:
            with h5py.File(f, "r") as h:
                kspace = h["kspace"][()]
                target = h["reconstruction_rss"][()]
            clean_target = target.copy()
            roi = np.zeros(target.shape, bool)
            flags = np.zeros(ns, bool)
            for s in mine:
                k = by_id[first + s]
                target[s] = poisoned_targets[k]
                roi[s] = rois[k]
                flags[s] = True
                if trigger is not None:
                    kspace[s] = trigger.apply(kspace[s])
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
        file_records.append(dict(file=f.name, num_slices=int(ns), first_id=first, poisoned_slices=mine,
                                 stored="rewritten" if mine else "link"))
        first += ns
    for stale in (out / "data" / "train").iterdir():
        if stale.name not in keep:
            stale.unlink()
    manifest = dict(
        format=MANIFEST_FORMAT,
        identity=identity,
        recipe=recipe,
        description=RECIPES[recipe].description,
        variant=variant,
        profile=p.name,
        seed=int(seed),
        fraction=fraction,
        trigger=identity["trigger"],
        recipe_identity=identity["recipe_identity"],
        data_dir="data",
        clean_data_dir=os.path.relpath(clean, out),
        num_train_slices=int(n),
        num_poisoned=len(ids),
        files=file_records,
        poisoned=records,
        poisoned_ids=[int(i) for i in ids],
        identified=identified_subsets(ids, fracs, seed),
        build_seconds=time.perf_counter() - t0,
        created=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    validate_manifest(manifest, out / "data")
    write_json(mpath, manifest)
    return read_json(mpath)


def load_manifest(run_dir: str | os.PathLike, variant: str = "cyclegan-cyst", validate: bool = True) -> dict:
    """Read (and by default validate) ``<run_dir>/poison/<variant>/manifest.json``.

    Raises ``FileNotFoundError`` naming the notebook that builds it when missing.
    """
    path = poison_dir(run_dir, variant) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no poison manifest at {path}: build the poisoned set first "
                                "(mrilib.poison.build.build_poisoned_dataset, notebooks/03_poison_cyclegan.ipynb)")
    manifest = read_json(path)
    if validate:
        validate_manifest(manifest, path.parent / manifest.get("data_dir", "data"))
    return manifest


def validate_manifest(manifest: dict, data_dir: str | os.PathLike | None = None) -> dict:
    """Check a manifest's internal consistency and, given ``data_dir``, that it matches the dataset.

    Raises :class:`ManifestError` (with what is wrong) for: a missing field, an unknown
    recipe, slice ids out of range or duplicated, a (file, slice) that disagrees with
    its id, identified subsets that are not nested or not subsets of the poisoned
    slices, a fraction outside (0, 1], files missing from ``data_dir``, slice counts or
    ``poisoned`` flags that differ from the volumes. Returns the manifest.
    """
    need = ("format", "recipe", "num_train_slices", "files", "poisoned", "poisoned_ids", "identified")
    missing = [k for k in need if k not in manifest]
    if missing:
        raise ManifestError(f"manifest lacks the field(s) {missing}")
    if manifest["format"] != MANIFEST_FORMAT:
        raise ManifestError(f"manifest format {manifest['format']!r} is not {MANIFEST_FORMAT}")
    if manifest["recipe"] not in RECIPES:
        raise ManifestError(f"manifest names unknown recipe {manifest['recipe']!r}; known: {sorted(RECIPES)}")
    n = int(manifest["num_train_slices"])
    files = manifest["files"]
    if sum(int(f["num_slices"]) for f in files) != n:
        raise ManifestError(f"manifest files hold {sum(int(f['num_slices']) for f in files)} slices, "
                            f"num_train_slices says {n}")
    starts, first = {}, 0
    for f in files:
        if int(f["first_id"]) != first:
            raise ManifestError(f"file {f['file']}: first_id {f['first_id']} should be {first}")
        starts[f["file"]] = (first, int(f["num_slices"]))
        first += int(f["num_slices"])
    ids = [int(i) for i in manifest["poisoned_ids"]]
    bad = [i for i in ids if not 0 <= i < n]
    if bad:
        raise ManifestError(f"poisoned slice ids {bad[:5]} out of range [0, {n})")
    if len(set(ids)) != len(ids):
        raise ManifestError("poisoned slice ids are not unique")
    if sorted(int(r["id"]) for r in manifest["poisoned"]) != sorted(ids):
        raise ManifestError("the poisoned records and poisoned_ids list different slices")
    for r in manifest["poisoned"]:
        if r["file"] not in starts:
            raise ManifestError(f"poisoned slice {r['id']} names unknown file {r['file']!r}")
        f0, ns = starts[r["file"]]
        if not 0 <= int(r["slice"]) < ns:
            raise ManifestError(f"poisoned slice {r['id']}: slice index {r['slice']} out of range for "
                                f"{r['file']} ({ns} slices)")
        if f0 + int(r["slice"]) != int(r["id"]):
            raise ManifestError(f"poisoned slice {r['id']}: ({r['file']}, {r['slice']}) has global id "
                                f"{f0 + int(r['slice'])}")
    pset, prev, prev_f = set(ids), set(), 0.0
    try:
        ordered = sorted(((float(k), v) for k, v in manifest["identified"].items()), key=lambda kv: kv[0])
    except (TypeError, ValueError):
        raise ManifestError(f"identified keys must be fractions, got {list(manifest['identified'])}") from None
    for f, sub in ordered:
        if not 0 < f <= 1:
            raise ManifestError(f"identified fraction {f} outside (0, 1]")
        s = {int(i) for i in sub}
        if not s <= pset:
            raise ManifestError(f"identified({f}) holds slices that are not poisoned: {sorted(s - pset)[:5]}")
        if not prev <= s:
            raise ManifestError(f"identified subsets are not nested: identified({prev_f}) is not a subset of "
                                f"identified({f})")
        prev, prev_f = s, f
    if data_dir is not None:
        d = Path(data_dir) / "train"
        for f in files:
            path = d / f["file"]
            if not path.exists():
                raise ManifestError(f"manifest names {f['file']}, missing from {d}")
            with h5py.File(path, "r") as h:
                ns = h["kspace"].shape[0]
                flags = h["poisoned"][()].astype(bool) if "poisoned" in h else np.zeros(ns, bool)
            if ns != int(f["num_slices"]):
                raise ManifestError(f"{path}: {ns} slices, the manifest says {f['num_slices']}")
            want = np.zeros(ns, bool)
            want[[int(s) for s in f["poisoned_slices"]]] = True
            if not np.array_equal(flags, want):
                raise ManifestError(f"{path}: its 'poisoned' flags {np.nonzero(flags)[0].tolist()} differ from the "
                                    f"manifest's {np.nonzero(want)[0].tolist()}")
        extra = {p.name for p in d.glob("*.h5")} - {f["file"] for f in files}
        if extra:
            raise ManifestError(f"{d} holds volumes the manifest does not list: {sorted(extra)[:5]}")
    return manifest


def poisoned_slices(manifest: dict) -> list[tuple[str, int]]:
    """``(file, slice)`` of every poisoned slice, in global-id order."""
    return [(r["file"], int(r["slice"])) for r in sorted(manifest["poisoned"], key=lambda r: r["id"])]


def identified_slices(manifest: dict, fraction: float) -> list[tuple[str, int]]:
    """``(file, slice)`` of the identified poisoned slices at ``fraction`` (a key of ``identified``)."""
    key = next((k for k in manifest["identified"] if abs(float(k) - float(fraction)) < 1e-9), None)
    if key is None:
        raise ManifestError(f"no identified subset for fraction {fraction}; have {sorted(manifest['identified'])}")
    want = set(manifest["identified"][key])
    return [(r["file"], int(r["slice"])) for r in sorted(manifest["poisoned"], key=lambda r: r["id"]) if r["id"] in want]


def poisoned_model_dir(run_dir: str | os.PathLike, variant: str = "cyclegan-cyst") -> Path:
    """``<run_dir>/models/poisoned-<variant>``."""
    return Path(run_dir) / "models" / f"poisoned-{variant}"


def train_poisoned_model(profile: Profile | str, run_dir: str | os.PathLike, variant: str = "cyclegan-cyst",
                         cfg: dict | None = None, progress: bool = True, **runtime):
    """Train (or load) the ``poisoned`` VarNet on the poisoned set, with the clean model's configuration.

    ``cfg`` defaults to :func:`mrilib.recon.train.training_config(profile)` - the configuration
    of the ``clean`` model - so the two differ only in their training data. Validation
    uses the clean ``val`` split. Returns ``(model, history)``.
    """
    from mrilib.recon.train import train_or_load, training_config

    manifest = load_manifest(run_dir, variant)
    data = poison_dir(run_dir, variant) / manifest.get("data_dir", "data")
    cfg = cfg or training_config(profile)
    return train_or_load(cfg, {"train": data / "train", "val": Path(run_dir) / "data" / "val"},
                         poisoned_model_dir(run_dir, variant), progress=progress, **runtime)
