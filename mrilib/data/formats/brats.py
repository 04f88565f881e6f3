"""BraTS: skull-stripped multi-contrast glioma MRI with tumour segmentations (NIfTI).

On disk, one folder per subject (1 mm isotropic, co-registered, 240×240×155)::

    BraTS 2018–2021:  BraTS20_Training_001/BraTS20_Training_001_{t1,t1ce,t2,flair,seg}.nii.gz
                      labels 0 background, 1 necrotic / non-enhancing core, 2 oedema, 4 enhancing
    BraTS 2023+:      BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz
                      labels 0, 1 necrotic core, 2 oedema, 3 enhancing

(any parent folders, ``.nii`` or ``.nii.gz``). Validation-set subjects without a
``seg`` file are skipped unless ``require_seg=False``.

The images are magnitude only, so each axial slice is turned into multi-coil
k-space with the embedded data's model (:mod:`mrilib.data.formats.simulate`): the
volume is normalised (99.5th percentile of the brain = 1), the slice resampled to
``image_size`` (Fourier truncation = a lower-resolution acquisition), given a smooth
phase, birdcage coils and noise at ``snr``. The segmentation becomes per-slice
``tumour_mask`` (any tumour label) and ``tumour_labels`` (unified 1 necrotic core,
2 oedema, 3 enhancing): real tumour ROIs for the lesion classifier, the CycleGAN's
lesion domain and the evaluation. Slices are shown with anterior up (RAS+ volume,
``np.rot90`` of each axial slice).

Options: ``image_size`` (default: native), ``num_coils`` (4), ``snr`` (30; ``None``
= noise-free), ``contrasts`` (e.g. ``["FLAIR"]``), ``require_seg`` (``True``),
``phase`` (``True``), ``seed`` (0).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from mrilib.data.formats.base import (
    DataFormat,
    DataFormatError,
    SliceSample,
    VolumeRef,
    as_list,
    normalise_contrast,
    select_slices,
    stable_seed,
    visible_files,
)
from mrilib.data.formats.simulate import simulate_slice, smooth_phase, subject_coil_maps, volume_sigma
from mrilib.data.resample import resample_image, resample_labels, resample_mask

__all__ = ["BraTS", "BRATS_FILE", "LABELS_OLD", "LABELS_2023", "load_nifti_ras", "unify_labels"]

BRATS_FILE = re.compile(
    r"^(?P<id>.+?)[_-](?P<mod>t1ce|t1c|t1n|t1|t2w|t2f|t2|flair|seg)\.nii(\.gz)?$", re.IGNORECASE
)
#: allowed label values, 2018–2021 naming and 2023 naming
LABELS_OLD = (0, 1, 2, 4)
LABELS_2023 = (0, 1, 2, 3)
_NEW_MODS = {"t1n", "t1c", "t2w", "t2f"}


def load_nifti_ras(path) -> np.ndarray:
    """A NIfTI volume as a float32 array reoriented to RAS+ (closest canonical); validated rank 3."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        img = nib.as_closest_canonical(img)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as err:  # nibabel raises several types for broken files
        raise DataFormatError(f"{path}: not a readable NIfTI file: {err}") from None
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataFormatError(f"{path}: expected a 3-D volume (x, y, z), got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise DataFormatError(f"{path}: contains NaN or Inf values")
    return data


def unify_labels(seg: np.ndarray, scheme: str, path) -> np.ndarray:
    """BraTS labels to 0 background, 1 necrotic core, 2 oedema, 3 enhancing; checks the values."""
    allowed = LABELS_2023 if scheme == "2023" else LABELS_OLD
    vals = np.unique(seg)
    if np.any(vals != np.round(vals)):
        raise DataFormatError(f"{path}: segmentation holds non-integer values")
    bad = sorted(set(vals.astype(int).tolist()) - set(allowed))
    if bad:
        raise DataFormatError(
            f"{path}: segmentation labels {bad} not in {list(allowed)} "
            f"(the {'2023 (-t1n/-t1c/-t2w/-t2f)' if scheme == '2023' else '2018-2021 (_t1/_t1ce/_t2/_flair)'} naming)"
        )
    out = seg.astype(np.uint8)
    if scheme != "2023":
        out[out == 4] = 3
    return out


def _canonical_shape(path) -> tuple[int, int, int]:
    """Shape of a NIfTI volume once reoriented to RAS+, from its header only."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as err:
        raise DataFormatError(f"{path}: not a readable NIfTI file: {err}") from None
    shape = img.shape[:3]
    if len(img.shape) not in (3, 4) or (len(img.shape) == 4 and img.shape[3] != 1):
        raise DataFormatError(f"{path}: expected a 3-D volume (x, y, z), got shape {img.shape}")
    ornt = nib.orientations.io_orientation(img.affine)
    return tuple(int(shape[int(i)]) for i in np.argsort(ornt[:, 0]))


class BraTS(DataFormat):
    """Reader of BraTS NIfTI folders with simulated multi-coil k-space (see the module docstring)."""

    name = "brats"
    title = "BraTS glioma MRI (image-only; simulated k-space, real tumour masks)"
    anatomy = "brain"
    kind = "image"
    url = "https://www.synapse.org/brats"
    defaults = dict(image_size=None, num_coils=4, snr=30.0, contrasts=None, require_seg=True, phase=True, seed=0)

    def discover(self, root: Path) -> list[VolumeRef]:
        """One :class:`VolumeRef` per (subject, image modality)."""
        root = Path(root)
        subjects: dict[tuple[str, str], dict[str, Path]] = {}
        for p in visible_files(root.rglob("*.nii*")):
            m = BRATS_FILE.match(p.name)
            if m:
                subjects.setdefault((str(p.parent), m["id"]), {})[m["mod"].lower()] = p
        wanted = self.options["contrasts"]
        wanted = None if wanted is None else {normalise_contrast(c) for c in as_list(wanted)}
        refs, no_seg = [], []
        for (_, sid), files in sorted(subjects.items()):
            if "seg" not in files and self.options["require_seg"]:
                no_seg.append(sid)
                continue
            scheme = "2023" if _NEW_MODS & set(files) else "2018-2021"
            for mod, path in sorted(files.items()):
                if mod == "seg":
                    continue
                contrast = normalise_contrast(mod)
                if wanted is not None and contrast not in wanted:
                    continue
                x, y, z = _canonical_shape(path)
                size = self.options["image_size"]
                refs.append(
                    VolumeRef(
                        dataset=self.name,
                        files=(str(path),) + ((str(files["seg"]),) if "seg" in files else ()),
                        patient_id=sid,
                        contrast=contrast,
                        num_slices=z,
                        num_coils=None,
                        shape=(size, size) if size else (y, x),
                        split=None,
                        info=dict(modality=mod, label_scheme=scheme, has_seg="seg" in files),
                    )
                )
        if no_seg:
            warnings.warn(f"brats: {len(no_seg)} subject(s) without a segmentation skipped (e.g. {no_seg[0]})", stacklevel=2)
        return refs

    def read(self, ref: VolumeRef, slices: Sequence[int] | None = None) -> Iterator[SliceSample]:
        """Yield axial slices with simulated k-space and per-slice tumour masks."""
        vol = load_nifti_ras(ref.files[0])
        seg = None
        if ref.info.get("has_seg"):
            seg_raw = load_nifti_ras(ref.files[1])
            if seg_raw.shape != vol.shape:
                raise DataFormatError(f"{ref.files[1]}: shape {seg_raw.shape} differs from {ref.files[0]} {vol.shape}")
            seg = unify_labels(seg_raw, ref.info["label_scheme"], ref.files[1])
        n = vol.shape[2]
        idx = select_slices(slices, n, ref.path)
        brain = vol > 0
        scale = float(np.percentile(vol[brain], 99.5)) if brain.any() else float(vol.max() or 1.0)
        vol = vol / (scale or 1.0)
        size = self.options["image_size"] or max(vol.shape[0], vol.shape[1])
        seed = stable_seed(self.options["seed"], self.name, ref.patient_id, ref.contrast)
        maps = subject_coil_maps(int(self.options["num_coils"]), size, seed)
        phase = smooth_phase(size, seed) if self.options["phase"] else None
        sigma = volume_sigma(vol, self.options["snr"], brain)
        meta = dict(
            acquisition=f"AX{ref.contrast.upper()}",
            modality=ref.info.get("modality"),
            anatomy="brain",
            label_scheme=ref.info.get("label_scheme"),
            noise_sigma=sigma,
            intensity_scale=1.0 / (scale or 1.0),
            simulated=True,
            fov_mm=(float(max(vol.shape[0], vol.shape[1], size)),) * 2,  # 1 mm voxels
        )
        for z in idx:
            mag = np.abs(resample_image(np.rot90(vol[:, :, z]), size))
            bmask = resample_mask(np.rot90(brain[:, :, z]), size)
            image, kspace = simulate_slice(mag, maps, sigma, seed, z, phase)
            masks = {"brain_mask": bmask.astype(np.uint8)}
            if seg is not None:
                labels = resample_labels(np.rot90(seg[:, :, z]), size)
                masks["tumour_labels"] = labels.astype(np.uint8)
                masks["tumour_mask"] = (labels > 0).astype(np.uint8)
            yield SliceSample(
                kspace=kspace,
                acquired=(0, size),
                image=image,
                sens_maps=maps,
                masks=masks,
                metadata=self.slice_metadata(ref, z, **meta),
            )
