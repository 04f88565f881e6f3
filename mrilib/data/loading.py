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

__all__ = ["make_mask_func", "volume_files", "VolumeSliceDataset", "slice_dataset", "varnet_dataset", "undersample",
           "zero_filled_rss"]


def make_mask_func(acceleration: int, center_fraction: float = 0.08, mask_type: str = "equispaced_fraction") -> MaskFunc:
    """A fastMRI Cartesian mask function (``random``, ``equispaced``, ``equispaced_fraction``…)."""
    if acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    if not 0 < center_fraction <= 1:
        raise ValueError(f"center_fraction must be in (0, 1], got {center_fraction}")
    return create_mask_for_mask_type(mask_type, [center_fraction], [acceleration])


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
