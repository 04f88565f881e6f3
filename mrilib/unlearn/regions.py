"""Where the poison sits on an identified slice: regions for region-targeted SSD.

Whole-image SSD asks which parameters matter to the *whole* reconstruction of the
forget slices; the anatomy, which the model must keep, fills almost all of it, so the
poison's share of that signal is small (chapter 5, *Why SSD stops short*). A defender
who has identified a poisoned slice can do better without any knowledge of the attack:
in the fastMRI layout every training label ``reconstruction_rss`` is the root-sum-of-
squares image of the slice's own fully sampled k-space, so a label that was edited
disagrees with its measurement exactly where it was edited.

- :func:`label_disagreement`: that disagreement for one slice - the label minus the RSS
  of its k-space, low-pass filtered (a Gaussian of ``sigma`` pixels, which removes fine
  structure such as a k-space spike's stripes and noise) and thresholded at ``level`` ×
  its maximum (the half-maximum region for ``level = 0.5``);
- :func:`disagreement_regions`: the same for every slice of a forget set, read from the
  training files (the defender's signal: it uses nothing but the identified slices);
- :func:`scan_disagreement`: the same check on *every* training slice - a detector of edited
  labels, which in this simulation flags every poisoned slice (chapter 5 measures it; the
  identified fraction is then an assumption of the threat model, not of the data);
- :func:`lesion_regions`: the ROI the poison recipe recorded (``lesion_roi``) - the
  attacker's ground truth, for analysis only (the dose-response of chapter 5), never for
  selecting anything.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from scipy.ndimage import gaussian_filter

from mrilib.data.h5layout import rss_target
from mrilib.run.progress import progress
from mrilib.unlearn.base import UnlearnError

__all__ = ["disagreement_peak", "label_disagreement", "disagreement_regions", "scan_disagreement", "lesion_regions"]


def _measured(kspace: np.ndarray, shape) -> np.ndarray:
    """The label the fastMRI layout stores for ``kspace``: its RSS image, centre-cropped to ``shape``."""
    try:
        return rss_target(kspace, tuple(shape))
    except ValueError as err:  # the label is larger than its k-space image
        raise UnlearnError(f"label of shape {tuple(shape)}: {err}") from None


def _low_pass_disagreement(kspace: np.ndarray, target: np.ndarray, sigma: float) -> np.ndarray:
    """``|G_sigma * (target - RSS(IFFT(kspace)))|`` relative to the label's maximum, ``(h, w)``."""
    if sigma < 0:
        raise UnlearnError(f"sigma must be ≥ 0, got {sigma}")
    if kspace.ndim != 3 or target.ndim != 2:
        raise UnlearnError(f"expected kspace (coils, H, W) and target (h, w), got {kspace.shape} and {target.shape}")
    measured = _measured(kspace, target.shape)
    diff = np.abs(gaussian_filter((target - measured).astype(np.float64), sigma))
    return diff / max(float(np.abs(target).max()), 1e-30)


def disagreement_peak(kspace: np.ndarray, target: np.ndarray, sigma: float = 2.0) -> float:
    """The largest low-pass disagreement between a label and its own k-space, as a share of the
    label's maximum: 0 for a label that is the RSS of its k-space (see :func:`label_disagreement`)."""
    return float(_low_pass_disagreement(kspace, target, sigma).max())


def label_disagreement(kspace: np.ndarray, target: np.ndarray, sigma: float = 2.0, level: float = 0.5) -> np.ndarray:
    """Boolean ``(h, w)`` mask where the label ``target`` disagrees with its own k-space.

    Args:
        kspace: ``(coils, H, W)`` complex, fully sampled (the file's ``kspace`` slice).
        target: ``(h, w)`` label (``reconstruction_rss``), the centre crop of the RSS image.
        sigma: low-pass width in pixels.
        level: share of the largest disagreement that marks a pixel (0 < level < 1).

    A label that is the RSS of its k-space gives an empty mask.
    """
    if not 0 < level < 1:
        raise UnlearnError(f"level must be in (0, 1), got {level}")
    diff = _low_pass_disagreement(kspace, target, sigma)
    peak = diff.max()
    if peak <= 1e-6:
        return np.zeros(target.shape, bool)
    return diff > level * peak


def scan_disagreement(data_dir: str | os.PathLike, sigma: float = 2.0):
    """:func:`disagreement_peak` of every slice of every volume under ``data_dir`` - the same check
    as a detector of edited labels. A DataFrame with ``file`` (name relative to ``data_dir``),
    ``slice`` and ``peak``; it reads only k-space and labels (no poison flags)."""
    rows = []
    data_dir = Path(data_dir)
    files = sorted(data_dir.glob("*.h5"))
    if not files:
        raise FileNotFoundError(f"no .h5 volumes in {data_dir}")
    for path in progress(files, desc="label vs k-space", leave=False):
        with h5py.File(path, "r") as f:
            k, y = f["kspace"], f["reconstruction_rss"]
            for s in range(y.shape[0]):
                rows.append(dict(file=path.name, slice=s, peak=disagreement_peak(k[s], y[s], sigma)))
    return pd.DataFrame(rows, columns=["file", "slice", "peak"])


def _forget_records(manifest: dict, forget) -> list[dict]:
    """The manifest's record (file, slice) of every forget slice, in the forget set's order."""
    by_id = {int(r["id"]): r for r in manifest["poisoned"]}
    missing = [int(g) for g in forget.ids if int(g) not in by_id]
    if missing:
        raise UnlearnError(f"forget slices {missing[:5]} are not poisoned slices of the manifest")
    return [by_id[int(g)] for g in forget.ids]


def disagreement_regions(train_dir: str | os.PathLike, manifest: dict, forget, sigma: float = 2.0,
                         level: float = 0.5) -> torch.Tensor:
    """:func:`label_disagreement` of every forget slice, ``(N, h, w)`` float masks in the forget set's order.

    Raises :class:`UnlearnError` when no identified label disagrees with its measurement
    (nothing to target).
    """
    masks = []
    for r in _forget_records(manifest, forget):
        with h5py.File(Path(train_dir) / r["file"], "r") as f:
            s = int(r["slice"])
            masks.append(label_disagreement(f["kspace"][s], f["reconstruction_rss"][s], sigma, level))
    masks = torch.from_numpy(np.stack(masks).astype(np.float32))
    if not masks.any():
        raise UnlearnError("every identified label agrees with its own k-space: no region to target")
    return masks


def lesion_regions(train_dir: str | os.PathLike, manifest: dict, forget) -> torch.Tensor:
    """The poison's recorded ROI (``lesion_roi``) of every forget slice, ``(N, h, w)`` float (analysis only)."""
    masks = []
    for r in _forget_records(manifest, forget):
        with h5py.File(Path(train_dir) / r["file"], "r") as f:
            masks.append(f["lesion_roi"][int(r["slice"])])
    return torch.from_numpy(np.stack(masks).astype(np.float32))
