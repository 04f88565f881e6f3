"""Forget and retain sets from a poison manifest.

Global slice id = position of the slice in the sorted training volumes (the order in
which ``fastmri.data.SliceDataset`` and :class:`mrilib.data.training.TrainSlices` read them),
as the manifest records it. For identified fraction ``f``:

- **forget** = the identified poisoned slices (``manifest["identified"][f]``);
- **retain** = every other training slice — including the poisoned slices that were
  *not* identified, because the defender does not know them;
- **rewod** = retrain from scratch on retain (without the identified slices);
- **oracle** = retrain from scratch without any poisoned slice (needs knowledge the
  defender lacks: the gold standard).

The two retrainings are :func:`mrilib.study.references.retrain_reference`.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from mrilib.data.training import TrainSlices
from mrilib.unlearn.base import UnlearnError, set_epoch

__all__ = ["SliceSubset", "Relabelled", "forget_ids", "unlearning_sets"]


class SliceSubset(Dataset):
    """Slices ``ids`` of a :class:`~mrilib.data.training.TrainSlices` set (keeps ``set_epoch`` and an ``identity``)."""

    def __init__(self, base: TrainSlices, ids, name: str):
        self.dataset = base
        self.ids = [int(i) for i in ids]
        bad = [i for i in self.ids if not 0 <= i < len(base)]
        if bad:
            raise UnlearnError(f"slice ids {bad[:5]} out of range for a training set of {len(base)} slices")
        self.identity = {"base": base.identity, "subset": name, "ids": self.ids}

    def set_epoch(self, epoch: int) -> None:
        """Select the undersampling masks of ``epoch`` (see ``TrainSlices``)."""
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        return self.dataset[self.ids[i]]


def forget_ids(manifest: dict, fraction: float | None = None, ids=None) -> list[int]:
    """The forget set's global ids: the identified subset at ``fraction``, or explicit ``ids``.

    Raises :class:`UnlearnError` for a fraction the manifest does not hold (f = 0
    included), an empty set, or ids that are not poisoned slices of the manifest.
    """
    poisoned = {int(i) for i in manifest["poisoned_ids"]}
    if ids is None:
        if fraction is None or not fraction > 0:
            raise UnlearnError(f"identified fraction must be > 0, got {fraction!r}: nothing to forget")
        key = next((k for k in manifest["identified"] if abs(float(k) - float(fraction)) < 1e-9), None)
        if key is None:
            raise UnlearnError(f"the manifest has no identified subset for f={fraction}; "
                               f"it has {sorted(float(k) for k in manifest['identified'])}")
        ids = manifest["identified"][key]
    ids = sorted(int(i) for i in ids)
    if not ids:
        raise UnlearnError("the forget set is empty")
    unknown = [i for i in ids if i not in poisoned]
    if unknown:
        raise UnlearnError(f"forget ids {unknown[:5]} are not poisoned slices of this manifest")
    return ids


class Relabelled(Dataset):
    """A forget set whose labels are replaced by ``labels`` (``(N, h, w)``, in its order), e.g. what each
    slice's own k-space gives (:func:`~mrilib.unlearn.regions.measured_labels`); keeps ``set_epoch``."""

    def __init__(self, forget: Dataset, labels):
        if len(labels) != len(forget):
            raise UnlearnError(f"{len(labels)} labels for a forget set of {len(forget)} slices")
        self.forget = forget
        self.labels = torch.as_tensor(np.asarray(labels, np.float32))
        self.identity = dict(getattr(forget, "identity", {}), relabelled="measured")

    def set_epoch(self, epoch: int) -> None:
        """Select the undersampling masks of ``epoch`` in the forget set (see ``TrainSlices``)."""
        set_epoch(self.forget, epoch)

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, i: int):
        sample = self.forget[i]
        if tuple(sample.target.shape) != tuple(self.labels[i].shape):
            raise UnlearnError(f"relabelled slice {i}: label {tuple(self.labels[i].shape)} for a target of "
                               f"{tuple(sample.target.shape)}")
        return sample._replace(target=self.labels[i])


def unlearning_sets(train_dir: str | os.PathLike, manifest: dict, fraction: float, cfg: dict,
                    ids=None) -> tuple[SliceSubset, SliceSubset]:
    """``(forget, retain)`` datasets over the poisoned training volumes in ``train_dir``."""
    t = cfg["train"]
    base = TrainSlices(train_dir, t["accelerations"], t["center_fraction"], t["mask_type"], t["seed"])
    if len(base) != int(manifest["num_train_slices"]):
        raise UnlearnError(f"{train_dir} holds {len(base)} slices, the manifest {manifest['num_train_slices']}")
    f_ids = forget_ids(manifest, fraction, ids)
    keep = sorted(set(range(len(base))) - set(f_ids))
    return SliceSubset(base, f_ids, f"forget f={fraction}"), SliceSubset(base, keep, f"retain f={fraction}")
