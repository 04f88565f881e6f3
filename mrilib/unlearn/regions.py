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
  its maximum (the half-maximum region for ``level = 0.5``). The measure itself is the dataset
  audit's (:mod:`mrilib.audit`: :func:`~mrilib.audit.disagreement_map`, whose maximum is
  :func:`~mrilib.audit.label_score`); this module only thresholds and applies it;
- :func:`disagreement_regions`: the same for every slice of a forget set, read from the
  training files (the defender's signal: it uses nothing but the identified slices);
- :func:`scan_disagreement`: the same check on *every* training slice - a detector of edited
  labels, which in this simulation flags every poisoned slice (chapter 5 measures it; the
  identified fraction is then an assumption of the threat model, not of the data);
- :func:`defender_effect`: the defender's poison signal, from the identified slices alone
  (no lesion classifier, no test data): how far a model's reconstruction of an identified
  slice's (triggered, undersampled) input follows its edited label rather than its own
  k-space, inside the region where the two disagree;
- :func:`lesion_regions`: the ROI the poison recipe recorded (``lesion_roi``) - the
  attacker's ground truth, for analysis only (the dose-response of chapter 5), never for
  selecting anything.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import torch

from mrilib.audit import (
    AuditError,
    audit_folder,
    disagreement_map,
    label_score,
    low_pass,
    measured_label,
    relative,
    residual,
)
from mrilib.recon.steps import forward_batch
from mrilib.run.device import default_device, on_device
from mrilib.unlearn.base import UnlearnError, batches

__all__ = ["disagreement_peak", "label_disagreement", "disagreement_regions", "scan_disagreement", "lesion_regions",
           "measured_labels",
           "reconstructions", "defender_effect"]


def _unlearn_errors(fn):
    """Re-raise the label check's :class:`~mrilib.audit.AuditError` (bad sigma, shapes) as :class:`UnlearnError`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AuditError as err:
            raise UnlearnError(str(err)) from None

    return wrapper


def _above(diff: np.ndarray, level: float) -> np.ndarray:
    """Where a relative disagreement map exceeds ``level`` × its maximum (empty when it is ~0)."""
    if not 0 < level < 1:
        raise UnlearnError(f"level must be in (0, 1), got {level}")
    peak = diff.max()
    if peak <= 1e-6:
        return np.zeros(diff.shape, bool)
    return diff > level * peak


@_unlearn_errors
def disagreement_peak(kspace: np.ndarray, target: np.ndarray, sigma: float = 2.0) -> float:
    """The largest low-pass disagreement between a label and its own k-space, as a share of the
    label's maximum: 0 for a label that is the RSS of its k-space - the dataset audit's score
    (:func:`mrilib.audit.label_score`; see :func:`label_disagreement`)."""
    return label_score(kspace, target, sigma)


@_unlearn_errors
def label_disagreement(kspace: np.ndarray, target: np.ndarray, sigma: float = 2.0, level: float = 0.5) -> np.ndarray:
    """Boolean ``(h, w)`` mask where the label ``target`` disagrees with its own k-space.

    Args:
        kspace: ``(coils, H, W)`` complex, fully sampled (the file's ``kspace`` slice).
        target: ``(h, w)`` label (``reconstruction_rss``), the centre crop of the RSS image.
        sigma: low-pass width in pixels.
        level: share of the largest disagreement that marks a pixel (0 < level < 1).

    A label that is the RSS of its k-space gives an empty mask.
    """
    return _above(disagreement_map(kspace, target, sigma), level)


def scan_disagreement(data_dir: str | os.PathLike, sigma: float = 2.0):
    """:func:`disagreement_peak` of every slice of every volume under ``data_dir`` - the same check
    as a detector of edited labels, run by the dataset audit (:func:`mrilib.audit.audit_folder`).
    A DataFrame with ``file`` (name relative to ``data_dir``), ``slice`` and ``peak``; it reads only
    k-space and labels (no poison flags). Raises ``FileNotFoundError`` for a folder without volumes
    and :class:`UnlearnError` when any volume or slice could not be checked (a partial scan would
    miscount the slices it detects)."""
    audit = _unlearn_errors(audit_folder)(data_dir, sigma=sigma, leave=False, all_labels=True)
    if audit.errors:
        raise UnlearnError(f"{len(audit.errors)} problem(s) in {data_dir}: "
                           + "; ".join(f"{e['file']}: {e['error']}" for e in audit.errors[:5]))
    return audit.slices.rename(columns={"score": "peak"})[["file", "slice", "peak"]]


def _forget_records(manifest: dict, forget) -> list[dict]:
    """The manifest's record (file, slice) of every forget slice, in the forget set's order."""
    by_id = {int(r["id"]): r for r in manifest["poisoned"]}
    missing = [int(g) for g in forget.ids if int(g) not in by_id]
    if missing:
        raise UnlearnError(f"forget slices {missing[:5]} are not poisoned slices of the manifest")
    return [by_id[int(g)] for g in forget.ids]


def _identified(train_dir: str | os.PathLike, manifest: dict, forget):
    """``(kspace, label)`` of every forget slice, read from the training files in the forget set's order."""
    for r in _forget_records(manifest, forget):
        with h5py.File(Path(train_dir) / r["file"], "r") as f:
            s = int(r["slice"])
            yield f["kspace"][s], f["reconstruction_rss"][s]


def measured_labels(train_dir: str | os.PathLike, manifest: dict, forget) -> np.ndarray:
    """``(N, h, w)``: the label each forget slice's own k-space gives (the RSS of its inverse FFT,
    centre-cropped: :func:`mrilib.audit.measured_label`), in the forget set's order - what a defender
    who trusts the measurement puts in place of an edited label."""
    return np.stack([measured_label(k, y.shape) for k, y in _identified(train_dir, manifest, forget)]).astype(np.float32)


def disagreement_regions(train_dir: str | os.PathLike, manifest: dict, forget, sigma: float = 2.0,
                         level: float = 0.5) -> torch.Tensor:
    """:func:`label_disagreement` of every forget slice, ``(N, h, w)`` float masks in the forget set's order.

    Raises :class:`UnlearnError` when no identified label disagrees with its measurement
    (nothing to target).
    """
    masks = [label_disagreement(k, y, sigma, level) for k, y in _identified(train_dir, manifest, forget)]
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


@torch.no_grad()
def reconstructions(model: torch.nn.Module, dataset, batch_size: int = 8, device=None) -> np.ndarray:
    """Reconstructions ``(N, h, w)`` of a dataset of VarNetSamples (the fixed masks of epoch 0),
    cropped to the targets, computed on ``device`` (default :func:`~mrilib.run.device.default_device`)."""
    model.eval()
    device = default_device(device)
    net = on_device(model, device)
    out = [forward_batch(net, b, device)[0].cpu().numpy() for b in batches(dataset, batch_size)]  # to numpy
    return np.concatenate(out) if out else np.zeros((0, 0, 0), np.float32)


@_unlearn_errors
def defender_effect(train_dir: str | os.PathLike, manifest: dict, forget, sigma: float = 2.0, level: float = 0.5,
                    batch_size: int = 8, device=None) -> Callable[[torch.nn.Module], float]:
    """``effect_fn(model)``: the defender's poison signal, computed from the identified slices alone.

    Each identified training slice has its (poisoned) label ``x_label`` and its own fully
    sampled (triggered) k-space, whose RSS image ``x_k`` is the anatomy that was measured
    (plus the trigger). In the region ``R`` where the two disagree (:func:`label_disagreement`
    with ``sigma`` and ``level``), the model's reconstruction ``r`` of the slice's
    undersampled, triggered input (the forget set's sample, the masks of epoch 0) is compared
    with both: per slice, the least-squares coefficient

        ``<G(r - x_k), G(x_label - x_k)>_R / <G(x_label - x_k), G(x_label - x_k)>_R``

    with ``G`` the same Gaussian low-pass of ``sigma`` pixels that finds ``R`` (it removes the
    trigger's fine stripes, which ``x_k`` holds and the label does not, so that removing
    them does not count as reproducing the label; ``sigma=0`` compares the raw images).
    1 = the model reproduces the poisoned label's lesion, 0 = it follows the k-space
    (negative: the opposite change). ``effect_fn`` returns the mean over the identified slices
    with a non-empty region.

    It uses only what a defender has: the identified slices' labels and k-space (read from
    ``train_dir``, the records in ``manifest``), and the model; no lesion classifier (neither
    the attacker's nor the judge), no test data, no recorded lesion region. ``x_k``,
    ``x_label`` and ``R`` are computed once here; each call reconstructs the ``len(forget)``
    identified inputs (batches of ``batch_size``, on ``device``, default
    :func:`~mrilib.run.device.default_device`). ``effect_fn.regions`` holds ``R`` (``(N, h, w)``
    bool, the forget set's order). Raises :class:`UnlearnError` when no identified label
    disagrees with its measurement.
    """
    device = default_device(device)
    measured, expected, regions = [], [], []
    for kspace, label in _identified(train_dir, manifest, forget):
        x_k, d = residual(kspace, label, sigma)
        measured.append(x_k), expected.append(d), regions.append(_above(relative(d, label), level))
    regions = np.stack(regions)
    keep = np.flatnonzero(regions.any(axis=(1, 2)))
    if not len(keep):
        raise UnlearnError("every identified label agrees with its own k-space: no region to measure the poison in")
    measured, expected = np.stack(measured), np.stack(expected)
    d_in = [expected[i][regions[i]] for i in keep]
    norms = [float(np.sum(d ** 2)) for d in d_in]

    def effect(model) -> float:
        """Mean least-squares coefficient of the model's departure from the k-space on the label's."""
        recon = reconstructions(model, forget, batch_size, device)
        if recon.shape != measured.shape:
            raise UnlearnError(f"reconstructions of shape {recon.shape[1:]} for labels of shape {measured.shape[1:]}")
        coef = [float(np.sum(low_pass(recon[i] - measured[i], sigma)[regions[i]] * d) / n)
                for i, d, n in zip(keep, d_in, norms)]
        return float(np.mean(coef))

    effect.regions = regions
    return effect
