"""One entry point for the notebooks: the run's dataset, embedded or real.

``prepare_dataset`` puts fastMRI-layout volumes in the run's ``RunLayout.data``
(``{train,val,test,final}/``; ``final`` holds new subjects for the headline only) and returns the
``dataset.json`` manifest. With no ``data_root`` it simulates the
embedded brain dataset; with one, it reads the named real dataset from there.
"""

from __future__ import annotations

import os

from mrilib.config import Profile, get_profile
from mrilib.data.convert import prepare_real_dataset
from mrilib.data.embedded import generate_embedded_dataset
from mrilib.run.layout import RunLayout, as_layout

__all__ = ["prepare_dataset"]


def prepare_dataset(
    profile: Profile | str,
    run_dir: RunLayout | str | os.PathLike,
    seed: int = 0,
    data_root: str | os.PathLike | None = None,
    dataset: str = "embedded",
    progress: bool = True,
) -> dict:
    """Create (or reuse) the run's dataset and return its manifest.

    Args:
        profile: profile name or object (sizes, coils, subject counts).
        run_dir: the run folder (a :class:`~mrilib.run.layout.RunLayout` or its path); the
            volumes go to ``RunLayout.data``, the manifest to ``RunLayout.dataset_manifest``.
        seed: dataset seed.
        data_root: folder of a real dataset; ``None`` for the embedded data.
        dataset: the real dataset's name when ``data_root`` is given (``m4raw``,
            ``fastmri``, ``skmtea``, ``cmrxrecon``, ``brats``, ``paired``), optionally
            with reader options: ``"m4raw:average_repetitions=true"``. The real data are
            converted by :func:`mrilib.data.convert.prepare_real_dataset` into the same
            layout and manifest as the embedded data (see the book's "Real datasets").
        progress: show progress bars.
    """
    p = get_profile(profile)
    data = as_layout(run_dir).data
    if data_root is None or not str(data_root).strip():
        if dataset not in (None, "embedded"):
            raise ValueError(f"dataset={dataset!r} needs a data_root (the folder holding it)")
        return generate_embedded_dataset(p, data, seed=seed, progress=progress)
    if dataset in (None, "", "embedded"):
        raise ValueError(
            f"data_root={str(data_root)!r} needs the dataset's name: one of m4raw, fastmri, skmtea, "
            "cmrxrecon, brats, paired (optionally with options, e.g. 'm4raw:average_repetitions=true')"
        )
    return prepare_real_dataset(p, data, seed, data_root, dataset, progress=progress)
