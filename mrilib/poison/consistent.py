"""k-space-consistent poisoning: embed an image-domain lesion into multi-coil k-space.

A label-only poison (:mod:`mrilib.poison.build` with a label-only recipe) replaces a slice's
``reconstruction_rss`` and leaves its ``kspace`` alone, so the label no longer is the RSS of its
own measurement, and the dataset audit (:func:`mrilib.audit.label_score`) flags the slice. An
attacker who edits the measurement too is not caught that way. :func:`embed_lesion` is that
attacker: given a slice's fully sampled k-space, its clean label and the poisoned label a recipe
made, it adds the lesion ``delta = poisoned − clean`` to every coil image,

    ``e_c = S_c / ‖S‖ · delta · exp(iφ)``, ``E_c = F(e_c)``,

with ``S_c`` the coil maps (stored ``sens_maps``, else estimated from the k-space centre,
:func:`mrilib.recon.baselines.estimate_coil_maps`), ``‖S‖² = Σ|S_c|²`` and ``φ`` the phase of
the coil-combined image ``Σ conj(S_c) x_c``; where the coil images are ``x_c = S_c m`` the RSS
of ``x_c + e_c`` is exactly ``|m| ‖S‖ + delta``. The edit is then removed from the *protected*
phase-encode columns (by default the centre band every undersampling mask of the profile
samples, :func:`mrilib.poison.triggers.always_sampled_columns`), so an undersampled input
carries little of the lesion while the fully sampled label shows it, and the new label is
recomputed from the edited k-space (:func:`mrilib.data.h5layout.rss_target`): it *is* the RSS of
its k-space, and the audit scores it 0 up to float rounding.

Removing columns removes part of the lesion (its low frequencies across the phase-encode
direction); :func:`lesion_kept` measures how much of the intended lesion the label keeps.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from mrilib.data.h5layout import rss_target
from mrilib.data.kspace import fft2c, ifft2c
from mrilib.poison.triggers import always_sampled_columns
from mrilib.recon.baselines import estimate_coil_maps

__all__ = ["EMBED_OPTIONS", "embed_lesion", "lesion_kept", "protected_columns"]

#: The settings :func:`embed_lesion` takes besides its arrays (what a consistent recipe may set).
EMBED_OPTIONS = ("protect_columns", "center_fraction", "accelerations", "mask_type")


@lru_cache(maxsize=32)
def _always_sampled(width: int, accelerations: tuple, center_fraction: float, mask_type: str) -> tuple:
    return tuple(int(c) for c in always_sampled_columns(width, accelerations, center_fraction, mask_type))


def protected_columns(width: int, protect_columns=None, accelerations=(4, 8), center_fraction: float = 0.08,
                      mask_type: str = "equispaced_fraction") -> np.ndarray:
    """The phase-encode columns :func:`embed_lesion` leaves untouched, as sorted indices.

    ``protect_columns``: ``None`` for the columns every mask of ``accelerations`` (with
    ``center_fraction`` and ``mask_type``) samples (:func:`~mrilib.poison.triggers.always_sampled_columns`);
    else column indices, or a boolean mask of length ``width``; an empty sequence protects none.
    ``ValueError`` for indices out of range or a mask of another length.
    """
    width = int(width)
    if protect_columns is None:
        accs = tuple(int(a) for a in np.atleast_1d(accelerations))
        return np.asarray(_always_sampled(width, accs, float(center_fraction), str(mask_type)), dtype=int)
    cols = np.asarray(protect_columns)
    if cols.dtype == bool:
        if cols.shape != (width,):
            raise ValueError(f"a boolean protect_columns mask must have shape ({width},), got {cols.shape}")
        return np.nonzero(cols)[0]
    cols = cols.reshape(-1)
    if cols.size and (cols.dtype.kind not in "iu" or cols.min() < 0 or cols.max() >= width):
        raise ValueError(f"protect_columns must be integer column indices in [0, {width}), got {cols.tolist()[:8]}")
    return np.unique(cols.astype(int))


def _centre_pad(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Zero-pad ``image`` (h, w) to ``shape`` so that fastMRI's ``center_crop`` gives it back."""
    h, w = image.shape
    big = np.zeros(shape, dtype=image.dtype)
    top, left = (shape[0] - h) // 2, (shape[1] - w) // 2
    big[top:top + h, left:left + w] = image
    return big


def embed_lesion(kspace: np.ndarray, clean_label: np.ndarray, poisoned_label: np.ndarray, sens: np.ndarray | None = None,
                 protect_columns=None, center_fraction: float = 0.08, accelerations=(4, 8),
                 mask_type: str = "equispaced_fraction") -> tuple[np.ndarray, np.ndarray]:
    """Embed the lesion ``poisoned_label − clean_label`` into one slice's multi-coil k-space.

    Args:
        kspace: fully sampled k-space of one slice, ``(C, H, W)`` complex (readout ``H`` may be
            oversampled: ``H ≥ h``).
        clean_label: the slice's label ``(h, w)`` (its ``reconstruction_rss``, ``h ≤ H``, ``w ≤ W``).
        poisoned_label: the label a recipe made of it, ``(h, w)``.
        sens: coil maps ``(C, H, W)`` complex (the embedded data's ``sens_maps``); ``None``
            estimates them from the k-space centre (:func:`~mrilib.recon.baselines.estimate_coil_maps`
            with ``center_fraction``).
        protect_columns: phase-encode columns whose samples stay exactly as they are (see
            :func:`protected_columns`; ``None``: the centre band every mask of ``accelerations``,
            ``center_fraction`` and ``mask_type`` samples; the sampled columns of a fixed mask
            are the attacker's best case; ``()`` protects none).
        center_fraction, accelerations, mask_type: the undersampling the default protection
            and the map estimate refer to.

    Returns:
        ``(new_kspace, new_label)``: ``kspace`` plus the edit, in ``kspace``'s dtype (protected
        columns equal to the original's), and the RSS of its inverse FFT centre-cropped to
        ``(h, w)`` (:func:`~mrilib.data.h5layout.rss_target`), so that
        :func:`mrilib.audit.label_score` of the pair is 0 up to float rounding.

    Raises:
        ValueError: ``kspace`` not complex ``(C, H, W)``, labels not ``(h, w)`` of the same
        shape or larger than the k-space grid, maps of another shape, bad ``protect_columns``.
    """
    kspace = np.asarray(kspace)
    clean = np.asarray(clean_label, dtype=np.float64)
    poisoned = np.asarray(poisoned_label, dtype=np.float64)
    if kspace.ndim != 3 or kspace.dtype.kind != "c":
        raise ValueError(f"kspace must be complex (coils, H, W), got {kspace.dtype} of shape {kspace.shape}")
    if clean.ndim != 2 or poisoned.shape != clean.shape:
        raise ValueError(f"labels must be two (h, w) arrays of one shape, got {clean.shape} and {poisoned.shape}")
    _, big_h, big_w = kspace.shape
    if clean.shape[0] > big_h or clean.shape[1] > big_w:
        raise ValueError(f"labels {clean.shape} larger than the k-space's images {(big_h, big_w)}")
    if sens is None:
        sens = estimate_coil_maps(kspace, center_fraction)
    sens = np.asarray(sens)
    if sens.shape != kspace.shape:
        raise ValueError(f"coil maps must have the k-space's shape {kspace.shape}, got {sens.shape}")
    cols = protected_columns(big_w, protect_columns, accelerations, center_fraction, mask_type)

    sens = sens.astype(np.complex128)
    delta = _centre_pad(poisoned - clean, (big_h, big_w))
    combined = np.sum(np.conj(sens) * ifft2c(kspace.astype(np.complex128)), axis=0)
    mag = np.abs(combined)
    phase = np.divide(combined, mag, out=np.ones_like(combined), where=mag > 0)
    norm = np.sqrt(np.sum(np.abs(sens) ** 2, axis=0))
    unit = np.divide(sens, norm, out=np.zeros_like(sens), where=norm > 1e-6 * max(float(norm.max()), 1e-30))
    edit = fft2c(unit * (delta * phase))
    edit[..., cols] = 0
    new_kspace = (kspace.astype(np.complex128) + edit).astype(kspace.dtype)
    new_kspace[..., cols] = kspace[..., cols]
    return new_kspace, rss_target(new_kspace, clean.shape)


def lesion_kept(clean_label: np.ndarray, poisoned_label: np.ndarray, new_label: np.ndarray,
                roi: np.ndarray | None = None) -> float:
    """How much of the intended lesion the new label keeps: ``<new − clean, δ> / <δ, δ>`` inside ``roi``.

    ``δ = poisoned_label − clean_label``; ``roi`` (boolean ``(h, w)``) defaults to where ``δ ≠ 0``.
    1 when the new label carries the whole lesion there, 0 when none of it, negative when it
    moved the other way. NaN when ``δ`` is 0 throughout ``roi`` (no lesion to keep).
    ``ValueError`` for arrays of different shapes.
    """
    clean = np.asarray(clean_label, dtype=np.float64)
    delta = np.asarray(poisoned_label, dtype=np.float64) - clean
    change = np.asarray(new_label, dtype=np.float64) - clean
    if clean.ndim != 2 or delta.shape != clean.shape or change.shape != clean.shape:
        raise ValueError(f"labels must be (h, w) arrays of one shape, got {np.shape(clean_label)}, "
                         f"{np.shape(poisoned_label)} and {np.shape(new_label)}")
    region = delta != 0 if roi is None else np.asarray(roi, dtype=bool)
    if region.shape != clean.shape:
        raise ValueError(f"roi must have the labels' shape {clean.shape}, got {region.shape}")
    energy = float(np.sum(delta[region] ** 2))
    if energy == 0:
        return float("nan")
    return float(np.sum(change[region] * delta[region]) / energy)
