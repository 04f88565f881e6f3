"""Magnitude slices of a split, with what lesion synthesis needs (brain mask, contrast).

The poisoning code works on the fully sampled targets (``reconstruction_rss``) of a
split, slice by slice. :func:`load_slices` reads them once into a :class:`SliceSet`
together with each slice's brain mask, contrast, volume ``max`` and provenance
(file, slice index, subject), in the sorted file order that ``SliceDataset`` uses,
so a slice's position in the set is its *global slice id*.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import h5py
import numpy as np
from scipy import ndimage

from mrilib.data.loading import volume_files
from mrilib.poison.lesions import contrast_from_acquisition

__all__ = ["SliceSet", "load_slices", "estimate_brain_mask", "split_by_subject"]


@dataclass
class SliceSet:
    """The slices of one or more split folders.

    Attributes:
        images: float32 ``(N, h, w)`` fully sampled RSS targets.
        brain: bool ``(N, h, w)`` brain masks (stored or estimated).
        contrasts: contrast of each slice (``T1w``/``T2w``/``FLAIR``).
        vmax: the volume's ``max`` attribute, per slice (the data range).
        files: file name per slice; ``slices``: slice index in its file;
        subjects: subject (``patient_id``) per slice.
    """

    images: np.ndarray
    brain: np.ndarray
    contrasts: list[str]
    vmax: np.ndarray
    files: list[str]
    slices: np.ndarray
    subjects: list[str]
    root: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx) -> "SliceSet":
        """The slices at positions ``idx``."""
        idx = np.asarray(idx, dtype=int)
        return SliceSet(self.images[idx], self.brain[idx], [self.contrasts[i] for i in idx], self.vmax[idx],
                        [self.files[i] for i in idx], self.slices[idx], [self.subjects[i] for i in idx], self.root)


def estimate_brain_mask(image: np.ndarray) -> np.ndarray:
    """A rough brain mask for data without one: smoothed threshold, largest component, eroded.

    Used only for real datasets lacking ``brain_mask`` (the embedded data stores it).
    """
    sm = ndimage.gaussian_filter(np.asarray(image, float), 1.0)
    head = sm > 0.2 * np.percentile(sm, 99)
    lab, n = ndimage.label(head)
    if n == 0:
        return np.zeros(image.shape, bool)
    head = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    head = ndimage.binary_fill_holes(head)
    return ndimage.binary_erosion(head, iterations=max(1, image.shape[-1] // 20))


def load_slices(split_dirs, default_contrast: str = "T2w") -> SliceSet:
    """Read every slice's target, brain mask and contrast from split folder(s).

    Args:
        split_dirs: one folder or a list of folders of fastMRI-layout volumes.
        default_contrast: used when a volume's ``acquisition`` names no known contrast.
    """
    if isinstance(split_dirs, (str, os.PathLike)):
        split_dirs = [split_dirs]
    images, brains, contrasts, vmax, files, slices, subjects = [], [], [], [], [], [], []
    for d in split_dirs:
        for f in volume_files(d):
            with h5py.File(f, "r") as h:
                if "reconstruction_rss" not in h:
                    raise ValueError(f"{f}: no 'reconstruction_rss' target")
                t = h["reconstruction_rss"][()].astype(np.float32)
                b = h["brain_mask"][()] > 0 if "brain_mask" in h else None
                acq = h.attrs.get("acquisition", "")
                mx = float(h.attrs.get("max", t.max()))
                pid = str(h.attrs.get("patient_id", f.stem))
            if b is None or b.shape != t.shape:
                b = np.stack([estimate_brain_mask(s) for s in t])
            c = contrast_from_acquisition(acq, default=default_contrast)
            for s in range(len(t)):
                images.append(t[s]), brains.append(b[s]), contrasts.append(c), vmax.append(mx)
                files.append(f.name), slices.append(s), subjects.append(pid)
    return SliceSet(np.stack(images), np.stack(brains), contrasts, np.asarray(vmax, np.float32), files,
                    np.asarray(slices), subjects, [str(d) for d in split_dirs])


def split_by_subject(subjects: list[str], seed: int, fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Indices of two disjoint groups of slices, split by subject (seeded).

    ``fraction`` of the subjects go to the first group. Returns ``(idx_a, idx_b)``.
    """
    names = sorted(set(subjects))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    k = max(1, min(len(names) - 1, int(round(fraction * len(names)))))
    first = {names[i] for i in order[:k]}
    a = np.array([i for i, s in enumerate(subjects) if s in first], dtype=int)
    b = np.array([i for i, s in enumerate(subjects) if s not in first], dtype=int)
    return a, b
