"""Reading fastMRI-layout volumes for training and figures.

Training and evaluation read through ``fastmri.data.SliceDataset`` with
``fastmri.data.transforms.VarNetDataTransform`` and a fastMRI mask function, so the
embedded data and real fastMRI-layout data go through exactly the same code.

Hidden and temporary files in a split folder (``.<name>.h5.<random>.tmp``, what a run
killed while writing a volume leaves; ``.DS_Store``) are not volumes: every reader here
skips them (:func:`volume_files`, :class:`VolumeSliceDataset`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from fastmri.data import SliceDataset
from fastmri.data.subsample import MaskFunc, create_mask_for_mask_type
from fastmri.data.transforms import VarNetDataTransform, apply_mask, to_tensor

from mrilib.data.h5layout import DataFormatError, validate_volume
from mrilib.data.kspace import ifft2c, rss
from mrilib.run.io import is_hidden_or_temporary

__all__ = ["FIXED_MASK_SEP", "fixed_mask_type", "split_mask_type", "FixedMaskFunc", "mask_function", "make_mask_func", "volume_files", "VolumeSliceDataset", "slice_dataset", "varnet_dataset", "undersample",
           "zero_filled_rss"]


#: The separator of a fixed mask type, ``"<family>@<seed>"`` (:func:`fixed_mask_type`).
FIXED_MASK_SEP = "@"


def fixed_mask_type(mask_type: str, seed: int = 0) -> str:
    """The mask type of one fixed mask of the family ``mask_type``: ``"<family>@<seed>"``.

    Every slice and every epoch gets the mask the family draws with ``seed`` (at a given acceleration and
    width): a scanner protocol that always samples the same phase-encode columns, which an attacker can know.
    Every function here that takes a ``mask_type`` accepts it."""
    family, _ = split_mask_type(mask_type)
    return f"{family}{FIXED_MASK_SEP}{int(seed)}"


def split_mask_type(mask_type: str) -> tuple[str, int | None]:
    """``(family, seed)`` of a mask type: the seed of a fixed mask (:func:`fixed_mask_type`), else ``None``.
    ``ValueError`` for a seed that is not an integer."""
    family, sep, seed = str(mask_type).partition(FIXED_MASK_SEP)
    if not sep:
        return family, None
    try:
        return family, int(seed)
    except ValueError:
        raise ValueError(f"a fixed mask type is '<family>{FIXED_MASK_SEP}<integer seed>', got {mask_type!r}") from None


class FixedMaskFunc:
    """A fastMRI mask function that ignores the seed it is called with and always draws with its own."""

    def __init__(self, mask_func: MaskFunc, seed: int):
        self.mask_func, self.seed = mask_func, int(seed)

    def __call__(self, shape, offset=None, seed=None):
        """fastMRI's ``MaskFunc`` call; ``seed`` is ignored."""
        return self.mask_func(shape, offset, self.seed)


def mask_function(accelerations, center_fraction: float = 0.08, mask_type: str = "equispaced_fraction"):
    """A fastMRI Cartesian mask function drawing its acceleration from ``accelerations`` (``random``, ``equispaced``,
    ``equispaced_fraction``…, or one fixed mask of a family, :func:`fixed_mask_type`)."""
    accelerations = [int(a) for a in np.atleast_1d(accelerations)]
    if not accelerations or min(accelerations) < 1:
        raise ValueError(f"accelerations must be >= 1, got {accelerations}")
    if not 0 < center_fraction <= 1:
        raise ValueError(f"center_fraction must be in (0, 1], got {center_fraction}")
    family, seed = split_mask_type(mask_type)
    func = create_mask_for_mask_type(family, [center_fraction] * len(accelerations), accelerations)
    return func if seed is None else FixedMaskFunc(func, seed)


def make_mask_func(acceleration: int, center_fraction: float = 0.08, mask_type: str = "equispaced_fraction") -> MaskFunc:
    """A fastMRI Cartesian mask function at one acceleration (:func:`mask_function`)."""
    return mask_function([acceleration], center_fraction, mask_type)


def volume_files(split_dir: str | os.PathLike) -> list[Path]:
    """The ``.h5`` volumes of a split folder, sorted; a clear error when there are none.

    Hidden and temporary files (:func:`mrilib.run.io.is_hidden_or_temporary`) are skipped;
    any other file that is not a ``.h5`` volume is an error (it would reach ``SliceDataset``).
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir}: no such data folder (generate the data with 01_data first)")
    visible = [p for p in split_dir.iterdir() if not is_hidden_or_temporary(p)]
    files = sorted(p for p in visible if p.suffix == ".h5")
    if not files:
        raise DataFormatError(f"{split_dir}: contains no .h5 volumes")
    others = sorted(p.name for p in visible if p.suffix != ".h5")
    if others:
        raise DataFormatError(f"{split_dir}: holds non-volume files {others} (SliceDataset reads every file)")
    return files


class VolumeSliceDataset(SliceDataset):
    """``fastmri.data.SliceDataset`` that skips hidden and temporary files of its folder.

    ``SliceDataset`` opens every file of its root; a half-written ``.<name>.h5.<random>.tmp``
    left by a killed run would stop it. Here such files give no slices; every other file
    is read exactly as ``SliceDataset`` reads it (same order, same slices).
    """

    def _retrieve_metadata(self, fname):
        if is_hidden_or_temporary(fname):
            return {}, 0
        return super()._retrieve_metadata(fname)


def slice_dataset(split_dir: str | os.PathLike, transform=None) -> VolumeSliceDataset:
    """The multi-coil :class:`VolumeSliceDataset` of a split folder with ``transform`` (``None``: raw samples)."""
    return VolumeSliceDataset(root=split_dir, challenge="multicoil", transform=transform)


def varnet_dataset(
    split_dir: str | os.PathLike,
    acceleration: int = 4,
    center_fraction: float = 0.08,
    mask_type: str = "equispaced_fraction",
    validate: bool = True,
) -> SliceDataset:
    """A ``SliceDataset`` of ``split_dir`` yielding ``VarNetSample``s.

    The mask is seeded by the file name (``use_seed=True``), so evaluation sees the
    same mask every time. Every volume is validated first (see
    :func:`mrilib.data.h5layout.validate_volume`).
    """
    files = volume_files(split_dir)
    if validate:
        for f in files:
            validate_volume(f)
    transform = VarNetDataTransform(make_mask_func(acceleration, center_fraction, mask_type), use_seed=True)
    return slice_dataset(split_dir, transform)


def undersample(kspace: np.ndarray, acceleration: int, center_fraction: float = 0.08,
                mask_type: str = "equispaced_fraction", seed: int | tuple = 0) -> tuple[np.ndarray, np.ndarray]:
    """Apply a fastMRI mask to k-space ``(..., C, H, W)``; returns (masked k-space, 1-D column mask)."""
    masked, mask, _ = apply_mask(to_tensor(np.ascontiguousarray(kspace)),
                                 make_mask_func(acceleration, center_fraction, mask_type), seed=seed)
    return torch.view_as_complex(masked).numpy(), mask.numpy().reshape(-1)


def zero_filled_rss(masked_kspace: np.ndarray) -> np.ndarray:
    """RSS of the inverse FFT of (masked) multi-coil k-space ``(..., C, H, W)``."""
    return rss(ifft2c(masked_kspace))
