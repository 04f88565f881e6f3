"""A dataset folder's ``dataset.json``: what its volumes were made from, and which they are.

Both the embedded data (:mod:`mrilib.data.embedded`) and converted real data
(:mod:`mrilib.data.convert`) write their volumes under ``<root>/{train,val,test,final}/``
(:data:`SPLITS`) and then ``<root>/dataset.json`` (a run's is ``RunLayout.dataset_manifest``)::

    {"config": <everything that determines the volumes>, "profile": <name>,
     "files": [{"file": "train/<name>.h5", "split": ..., "patient_id": ..., ...}, ...],
     "splits": {"train": {"subjects": [<patient_id>, ...], ...}, ..., "final": {...}}}

The splits are by subject: ``val`` for tuning, ``test`` for the chapters' analyses, and
``final``, new subjects that no chapter looks at while it is developed, for the headline
computed once every choice is frozen (the book's Methods).

:func:`build_or_load` is their cached step (:func:`mrilib.run.cache.cached_step`): the
``config`` is the identity, stored in the manifest itself (:data:`MANIFEST`), and the
manifest is written last, so a manifest with the same ``config`` whose files all exist
means a complete dataset that is not built again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from mrilib.run.cache import Codec, cached_step
from mrilib.run.io import read_json, write_json

__all__ = ["SPLITS", "MANIFEST_NAME", "MANIFEST", "build_or_load", "split_subjects", "remove_stale_volumes"]

#: A dataset's split folders. The order is part of the embedded subjects' seeds
#: (:func:`mrilib.data.embedded.generate_embedded_dataset`): append, never reorder.
SPLITS = ("train", "val", "test", "final")

#: The manifest's file name in a dataset folder.
MANIFEST_NAME = "dataset.json"


def _save(value: dict, identity, path: Path) -> None:
    write_json(path, {**value, "config": identity})


#: ``dataset.json`` as a cached artefact: its identity is its ``config``.
MANIFEST = Codec(save=_save, load=read_json, identity=lambda p: read_json(p).get("config"))


def split_subjects(records: list[dict]) -> dict[str, list[str]]:
    """The sorted ``patient_id`` of each split (every one of :data:`SPLITS`) in a manifest's ``files`` records."""
    return {s: sorted({str(r["patient_id"]) for r in records if r["split"] == s}) for s in SPLITS}


def remove_stale_volumes(root: str | os.PathLike, records: list[dict]) -> None:
    """Delete the ``.h5`` volumes in ``root``'s split folders that ``records`` (a manifest's ``files``) do not list,
    what an earlier, different configuration (or another dataset) left there."""
    root = Path(root)
    keep = {r["file"] for r in records}
    for split in SPLITS:
        for f in (root / split).glob("*.h5"):
            if str(f.relative_to(root)) not in keep:
                f.unlink()


def _complete(root: Path) -> bool:
    """Whether ``root`` holds a readable manifest whose files all exist."""
    try:
        manifest = read_json(root / MANIFEST_NAME)
        return all((root / r["file"]).is_file() for r in manifest["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def build_or_load(root: str | os.PathLike, config: dict, build: Callable[[], dict]) -> dict:
    """The manifest of the dataset in ``root`` made from ``config``: read when complete, else built.

    Args:
        root: the dataset folder (a run's ``RunLayout.data``).
        config: everything that determines the volumes (the manifest's ``config``).
        build: ``() -> {"profile": ..., "files": [...]}``; writes the volumes (and removes
            those of another configuration). Called only when ``root`` holds no complete
            dataset of ``config``; the stale manifest is deleted first, so an interrupted
            build leaves none.

    Returns:
        the manifest as it reads back from ``dataset.json``.
    """
    root = Path(root)
    path = root / MANIFEST_NAME

    def compute() -> dict:
        path.unlink(missing_ok=True)
        return build()

    return cached_step(path, config, compute, MANIFEST, reuse=_complete(root))
