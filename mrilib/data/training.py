"""The datasets that VarNet training reads: per-epoch masks for training, fixed masks for validation.

:class:`TrainSlices` reads split folders through ``fastmri.data.SliceDataset`` (so any
fastMRI-layout data, clean or poisoned, trains the same way) and undersamples every
slice with fastMRI's mask function seeded by ``(seed, epoch, index)``: a new mask per
slice and epoch, identical after a resume and in every DataLoader worker (a fixed mask type,
:func:`mrilib.data.loading.fixed_mask_type`, gives every slice and epoch the same mask).
:func:`validation_datasets` gives the validation slices with fixed masks (seeded by the
file name), one dataset per acceleration. :func:`collate_slices` stacks
``VarNetSample``s into a batch for ``DataLoader(..., collate_fn=collate_slices)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch
from fastmri.data import transforms as T
from torch.utils.data import ConcatDataset, Dataset

from mrilib.data.loading import mask_function, slice_dataset, varnet_dataset, volume_files
from mrilib.run.cache import data_identity

__all__ = ["as_folders", "cache_bytes", "TrainSlices", "CachedSamples", "validation_datasets", "collate_slices"]

#: Training slices are kept in memory when they take less than this ("auto" cache).
TRAIN_CACHE_BYTES = 2 * 2**30
#: Validation samples (all accelerations together) are kept in memory below this.
VAL_CACHE_BYTES = 2**30


def as_folders(source) -> list[Path] | None:
    """``source`` (a folder or a sequence of folders) as a list of split folders; ``None`` for a Dataset or ``None``."""
    if source is None or isinstance(source, Dataset):
        return None
    if isinstance(source, (str, os.PathLike)):
        return [Path(source)]
    return [Path(s) for s in source]


def cache_bytes(dirs: Sequence[Path]) -> int:
    """Bytes that keeping the k-space and targets of ``dirs`` in memory would take."""
    total = 0
    for d in dirs:
        for f in volume_files(d):
            with h5py.File(f, "r") as h:
                total += h["kspace"].size * 8
                if "reconstruction_rss" in h:
                    total += h["reconstruction_rss"].size * 4
    return total


class _RawSlices(Dataset):
    """The slices of several split folders as fastMRI raw tuples, optionally kept in memory.

    Items are ``(kspace (C,H,W,2) tensor, target (h,w) tensor, attrs, fname, slice)``.
    """

    def __init__(self, dirs: Sequence[Path], cache: bool):
        self.datasets = []
        for d in dirs:
            volume_files(d)  # clear error for a missing or empty folder
            self.datasets.append(slice_dataset(d))
        self.concat = ConcatDataset(self.datasets)
        self.cache = {} if cache else None

    def __len__(self) -> int:
        return len(self.concat)

    def __getitem__(self, i: int):
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        kspace, _mask, target, attrs, fname, slice_num = self.concat[i]
        item = (T.to_tensor(kspace), torch.from_numpy(np.asarray(target)), attrs, fname, int(slice_num))
        if self.cache is not None:
            self.cache[i] = item
        return item


class TrainSlices(Dataset):
    """Training slices with a fresh, reproducible undersampling mask per epoch.

    Reads split folders through ``fastmri.data.SliceDataset`` and undersamples with
    fastMRI's mask function seeded by ``(seed, epoch, index)``: a new mask per slice and
    epoch (the acceleration drawn from ``accelerations``), identical after a resume and
    in every DataLoader worker. Call :meth:`set_epoch` before each epoch. ``identity``
    is :func:`mrilib.run.cache.data_identity` of the folders.

    Args:
        dirs: split folders of fastMRI multi-coil volumes.
        accelerations, center_fraction, mask_type: the mask family (fastMRI).
        seed: the run's seed.
        cache: keep the slices in memory after the first read (``"auto"``: when
            they take less than 2 GiB).
    """

    def __init__(
        self,
        dirs,
        accelerations: Sequence[int] = (4,),
        center_fraction: float = 0.08,
        mask_type: str = "equispaced_fraction",
        seed: int = 0,
        cache: bool | str = "auto",
    ):
        dirs = as_folders(dirs)
        if not dirs:
            raise ValueError("TrainSlices needs at least one split folder")
        if cache == "auto":
            cache = cache_bytes(dirs) < TRAIN_CACHE_BYTES
        self.raw = _RawSlices(dirs, bool(cache))
        self.mask_func = mask_function(accelerations, center_fraction, mask_type)
        self.seed = int(seed)
        self.epoch = 0
        self.identity = data_identity(dirs)

    def set_epoch(self, epoch: int) -> None:
        """Select the masks of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, i: int) -> T.VarNetSample:
        kspace, target, attrs, fname, slice_num = self.raw[i]
        masked, mask, num_low = T.apply_mask(
            kspace,
            self.mask_func,
            seed=(self.seed, self.epoch, int(i)),
            padding=(attrs["padding_left"], attrs["padding_right"]),
        )
        return T.VarNetSample(
            masked_kspace=masked,
            mask=mask.to(torch.bool),
            num_low_frequencies=int(num_low),
            target=target,
            fname=fname,
            slice_num=slice_num,
            max_value=float(attrs["max"]),
            crop_size=(int(attrs["recon_size"][0]), int(attrs["recon_size"][1])),
        )


class CachedSamples(Dataset):
    """A dataset whose items are computed once and kept (validation samples: fixed masks)."""

    def __init__(self, ds: Dataset, cache: bool):
        self.ds, self.items = ds, ({} if cache else None)

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        if self.items is None:
            return self.ds[i]
        if i not in self.items:
            self.items[i] = self.ds[i]
        return self.items[i]


def validation_datasets(source, train: dict, cache: bool | str = "auto") -> dict[int, Dataset]:
    """Validation datasets per acceleration, with fixed masks (seeded by the file name).

    Args:
        source: split folder(s), a Dataset of ``VarNetSample``s (its own masks; used for
            the first validation acceleration), or ``None`` (no validation: ``{}``).
        train: the training part of a configuration (``val_accelerations``,
            ``center_fraction``, ``mask_type``).
        cache: keep the samples in memory (``"auto"``: when all accelerations take less
            than 1 GiB).
    """
    if source is None:
        return {}
    dirs = as_folders(source)
    if dirs is None:
        return {int(train["val_accelerations"][0]): source}
    if cache == "auto":
        cache = cache_bytes(dirs) * len(train["val_accelerations"]) < VAL_CACHE_BYTES
    out = {}
    for a in train["val_accelerations"]:
        parts = [varnet_dataset(d, a, train["center_fraction"], train["mask_type"]) for d in dirs]
        out[int(a)] = CachedSamples(parts[0] if len(parts) == 1 else ConcatDataset(parts), bool(cache))
    return out


def collate_slices(samples: list[T.VarNetSample]) -> T.VarNetSample:
    """Stack ``VarNetSample``s of equal shape into a batch (fname, slice, crop as lists)."""
    nlf = [s.num_low_frequencies for s in samples]
    return T.VarNetSample(
        masked_kspace=torch.stack([s.masked_kspace for s in samples]),
        mask=torch.stack([s.mask for s in samples]),
        num_low_frequencies=nlf[0] if all(n == nlf[0] for n in nlf) else None,
        target=torch.stack([torch.as_tensor(s.target) for s in samples]),
        fname=[s.fname for s in samples],
        slice_num=[int(s.slice_num) for s in samples],
        max_value=torch.tensor([float(s.max_value) for s in samples], dtype=torch.float32),
        crop_size=[tuple(int(c) for c in s.crop_size) for s in samples],
    )
