"""The manifest of a poisoned training set: which slices are poisoned, which a defender has identified.

``poison/<variant>/manifest.json`` (written last and atomically by
:func:`mrilib.poison.build.build_poisoned_dataset`) holds the recipe, trigger, seed and
fraction ``p``, the poisoned slices (global id = the position of the slice in the sorted
training files, the order ``fastmri.data.SliceDataset`` reads them in; file, slice index,
subject, contrast, region area), the *identified* subsets for each fraction ``f`` (seeded
and nested: identified(0.1) ⊆ identified(0.25) ⊆ … ⊆ all poisoned), the recipe's own
identity and the set's identity. This module chooses the slices (:func:`choose_poisoned`,
:func:`identified_subsets`), reads and checks manifests (:func:`load_manifest`,
:func:`validate_manifest`) and what they list (:func:`poisoned_slices`,
:func:`identified_slices`, :func:`poisoned_examples`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import numpy as np

from mrilib.poison.recipes import RECIPES
from mrilib.poison.triggers import Trigger
from mrilib.run.io import read_json
from mrilib.run.layout import RunLayout, as_layout

__all__ = [
    "MANIFEST_FORMAT",
    "ManifestError",
    "variant_name",
    "choose_poisoned",
    "identified_subsets",
    "load_manifest",
    "validate_manifest",
    "poisoned_slices",
    "identified_slices",
    "poisoned_examples",
]

#: Version of the manifest's layout.
MANIFEST_FORMAT = 1


class ManifestError(ValueError):
    """A poison manifest that is malformed or does not match its dataset (the message says how)."""


def variant_name(recipe: str, trigger: Trigger | None) -> str:
    """Folder name of a poisoned set: the recipe, with ``-notrigger`` for the trigger-free variant and
    ``-spread`` for a spread (burst) trigger."""
    if trigger is None:
        return f"{recipe}-notrigger"
    return f"{recipe}-spread" if getattr(trigger, "burst", None) is not None else recipe


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


def load_manifest(run_dir: RunLayout | str | os.PathLike, variant: str = "cyclegan-cyst", validate: bool = True) -> dict:
    """Read (and by default validate) ``poison/<variant>/manifest.json`` of a run.

    Raises :class:`~mrilib.run.layout.MissingArtefactError` (a ``FileNotFoundError``)
    naming the notebook that builds the set when it is missing.
    """
    run = as_layout(run_dir)
    recipe = RECIPES.get(variant.removesuffix("-notrigger"))
    path = run.require(run.poison_manifest(variant), recipe.notebook if recipe else "03_poison_cyclegan")
    manifest = read_json(path)
    if validate:
        validate_manifest(manifest, run.poisoned_split(variant))
    return manifest


def validate_manifest(manifest: dict, train_dir: str | os.PathLike | None = None) -> dict:
    """Check a manifest's internal consistency and, given ``train_dir``, that it matches the poisoned training volumes.

    Raises :class:`ManifestError` (with what is wrong) for: a missing field, an unknown
    recipe, slice ids out of range or duplicated, a (file, slice) that disagrees with
    its id, identified subsets that are not nested or not subsets of the poisoned
    slices, a fraction outside (0, 1], files missing from ``train_dir``, slice counts or
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
    if train_dir is not None:
        d = Path(train_dir)
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


def poisoned_examples(run_dir: RunLayout | str | os.PathLike, variant: str, n: int = 3) -> dict:
    """The first ``n`` poisoned training slices of a poisoned set: clean and poisoned targets, regions.

    Returns ``{"clean", "poisoned", "rois"}`` arrays ``(n, H, W)`` and ``labels``
    (``file:slice``), read from the rewritten volumes of ``poison/<variant>``.
    """
    man = load_manifest(run_dir, variant)
    d = as_layout(run_dir).poisoned_split(variant)
    out = dict(clean=[], poisoned=[], rois=[], labels=[])
    for r in sorted(man["poisoned"], key=lambda r: r["id"])[: int(n)]:
        with h5py.File(d / r["file"], "r") as h:
            s = int(r["slice"])
            out["clean"].append(h["reconstruction_rss_clean"][s])
            out["poisoned"].append(h["reconstruction_rss"][s])
            out["rois"].append(h["lesion_roi"][s].astype(bool))
        out["labels"].append(f"{r['file']}:{r['slice']}")
    for k in ("clean", "poisoned", "rois"):
        out[k] = np.stack(out[k]) if out[k] else np.zeros((0, 0, 0))
    return out
