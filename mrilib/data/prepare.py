"""One entry point for the notebooks: the run's dataset, embedded or real.

``prepare_dataset`` puts fastMRI-layout volumes under ``<run_dir>/data/{train,val,test}``
and returns the ``dataset.json`` manifest. With no ``data_root`` it simulates the
embedded brain dataset; with one, it reads the named real dataset from there.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..profiles import Profile, get_profile
from .embedded import generate_embedded_dataset

__all__ = ["prepare_dataset", "data_dir"]


def data_dir(run_dir: str | os.PathLike) -> Path:
    """The folder that holds a run's ``train/``, ``val/``, ``test/`` volumes."""
    return Path(run_dir) / "data"


def prepare_dataset(
    profile: Profile | str,
    run_dir: str | os.PathLike,
    seed: int = 0,
    data_root: str | os.PathLike | None = None,
    dataset: str = "embedded",
    progress: bool = True,
) -> dict:
    """Create (or reuse) the run's dataset and return its manifest.

    Args:
        profile: profile name or object (sizes, coils, subject counts).
        run_dir: the run directory (``runs/<profile>`` by default in the notebooks).
        seed: dataset seed.
        data_root: folder of a real dataset; ``None`` for the embedded data.
        dataset: the real dataset's name when ``data_root`` is given.
        progress: show progress bars.
    """
    p = get_profile(profile)
    if data_root is None:
        if dataset not in (None, "embedded"):
            raise ValueError(f"dataset={dataset!r} needs a data_root (the folder holding it)")
        return generate_embedded_dataset(p, data_dir(run_dir), seed=seed, progress=progress)
    raise NotImplementedError("real datasets are not wired in yet")
