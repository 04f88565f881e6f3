"""The embedded dataset: synthetic subjects written as fastMRI multi-coil volumes.

One HDF5 file per subject (its slices are one volume), in ``<root>/<split>/``, so
splits are by subject, never by slice. Every subject has its own seed, drawn from the
dataset seed, its split and its index in the split, so adding a split or subjects to one
(``final`` came after ``train``/``val``/``test``) leaves the others' volumes as they were. All
subjects, ``test`` and ``final`` too, are deformations of one template brain: new poses and
shapes of the same anatomy, not new people. A ``dataset.json`` beside the split folders
records the configuration (:mod:`mrilib.data.manifest`); it is written last, so its
presence with the same configuration means a complete dataset that is not regenerated.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mrilib.config import Profile, get_profile
from mrilib.data.brain import render_subject, sample_subject
from mrilib.data.coils import birdcage_maps
from mrilib.data.h5layout import write_volume
from mrilib.data.kspace import noise_sigma, simulate_kspace
from mrilib.data.manifest import SPLITS, build_or_load, remove_stale_volumes, split_subjects
from mrilib.run.progress import progress as progress_bar

__all__ = ["SPLITS", "DATA_VERSION", "generate_subject", "generate_embedded_dataset", "dataset_config"]

DATA_VERSION = 1  # bump when the simulation changes, so cached datasets are rebuilt


def dataset_config(profile: Profile | str, seed: int) -> dict:
    """Everything that determines the embedded dataset's content."""
    p = get_profile(profile)
    return dict(
        version=DATA_VERSION,
        seed=int(seed),
        image_size=p.data.image_size,
        fov_mm=p.data.fov_mm,
        num_coils=p.data.num_coils,
        snr=p.data.snr,
        contrasts=list(p.data.contrasts),
        subjects=dict(p.data.subjects),
        slices_per_subject=p.data.slices_per_subject,
    )


def _subject_seed(seed: int, split: str, index: int) -> int:
    """A subject's seed: distinct per (dataset seed, split, index), stable across runs.

    The split enters by its place in :data:`SPLITS`, which only ever grows at the end, so the
    subjects of the existing splits keep their seeds (and volumes) when a split is added.
    """
    ss = np.random.SeedSequence([int(seed), SPLITS.index(split), int(index)])
    return int(ss.generate_state(1)[0])


def generate_subject(
    subject_seed: int,
    *,
    image_size: int,
    num_slices: int,
    num_coils: int,
    snr: float | None,
    contrasts: tuple[str, ...],
    fov_mm: float = 240.0,
) -> dict:
    """Simulate one subject: image, coil maps and noisy k-space.

    Returns a dict with ``kspace`` (S, C, H, W) complex64, ``image`` (S, H, W)
    complex64 (noise-free ground truth), ``sens_maps`` (C, H, W), ``brain_mask``
    (S, H, W) uint8, ``sigma`` (noise sd) and ``subject`` (the drawn parameters).
    ``snr=None`` gives noise-free k-space.
    """
    subject = sample_subject(subject_seed, tuple(contrasts))
    image, brain = render_subject(subject, num_slices, image_size, fov_mm)
    rng = np.random.default_rng([subject_seed, 2])
    maps = birdcage_maps(num_coils, image_size, radius=rng.uniform(1.3, 1.6), rotation=rng.uniform(0, 2 * np.pi))
    mask = brain > 0.5
    sigma = 0.0 if snr is None else noise_sigma(image, snr, mask)
    kspace = simulate_kspace(image, maps, sigma, rng)
    return dict(
        kspace=kspace,
        image=image,
        sens_maps=maps,
        brain_mask=mask.astype(np.uint8),
        sigma=sigma,
        subject=subject,
    )


def generate_embedded_dataset(
    profile: Profile | str,
    root: str | os.PathLike,
    seed: int = 0,
    progress: bool = True,
    snr: float | None | str = "profile",
) -> dict:
    """Create (or reuse) the embedded dataset for ``profile`` under ``root``.

    Args:
        profile: a profile name or :class:`~mrilib.config.Profile`.
        root: output folder; gets ``train/``, ``val/``, ``test/``, ``final/`` and ``dataset.json``.
        seed: dataset seed (same seed → byte-identical k-space; another → other subjects).
        progress: show a tqdm progress bar.
        snr: override the profile's SNR (``None`` = noise-free); default: the profile's.

    Returns:
        the content of ``dataset.json``: configuration, one record per file, and each split's subjects.
    """
    p = get_profile(profile)
    root = Path(root)
    config = dataset_config(p, seed)
    if snr != "profile":
        config["snr"] = snr
    return build_or_load(root, config, lambda: _simulate(p, root, seed, config["snr"], progress))


def _simulate(p: Profile, root: Path, seed: int, snr: float | None, progress: bool) -> dict:
    """Simulate and write every subject of ``p`` under ``root``; the manifest's ``profile``, ``files`` and ``splits``."""
    plan = [(split, i) for split in SPLITS for i in range(p.data.subjects[split])]
    records = []
    for split, i in progress_bar(plan, desc=f"simulating {p.name} subjects", disable=not progress, unit="subject"):
        sseed = _subject_seed(seed, split, i)
        sim = generate_subject(
            sseed,
            image_size=p.data.image_size,
            num_slices=p.data.slices_per_subject,
            num_coils=p.data.num_coils,
            snr=snr,
            contrasts=p.data.contrasts,
            fov_mm=p.data.fov_mm,
        )
        subj = sim["subject"]
        patient_id = f"{split}{i:03d}-{hashlib.sha1(str(sseed).encode()).hexdigest()[:8]}"
        rel = Path(split) / f"{patient_id}_{subj.contrast}.h5"
        write_volume(
            root / rel,
            sim["kspace"],
            patient_id=patient_id,
            acquisition=f"AX{subj.contrast.upper()}",
            fov_mm=(p.data.fov_mm, p.data.fov_mm),
            extras={"image": sim["image"], "sens_maps": sim["sens_maps"], "brain_mask": sim["brain_mask"]},
            extra_attrs={"noise_sigma": sim["sigma"], "subject_seed": sseed},
        )
        records.append(
            dict(
                file=str(rel),
                split=split,
                patient_id=patient_id,
                contrast=subj.contrast,
                num_slices=p.data.slices_per_subject,
                subject=asdict(subj),
            )
        )
    remove_stale_volumes(root, records)
    splits = {s: dict(origin="simulated", subjects=ids) for s, ids in split_subjects(records).items()}
    return dict(profile=p.name, files=records, splits=splits)
