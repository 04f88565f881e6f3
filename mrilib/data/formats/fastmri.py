"""fastMRI multi-coil brain and knee HDF5 (Zbontar et al. 2018; Knoll et al. 2020).

The reference layout of the book (the embedded data are written in it)::

    <root>/multicoil_train/file_brain_AXT2_200_2000019.h5   (brain)
    <root>/multicoil_train/file1000001.h5                   (knee)
    <root>/multicoil_val/…
    <root>/multicoil_test/…   undersampled k-space + ``mask``, no target: skipped

(``brain_multicoil_train`` / ``knee_multicoil_train`` folder names are accepted
too, and a flat folder of files.) Each file holds ``kspace`` complex64
``(slices, coils, readout, phase)`` — brain e.g. ``(16, 16, 640, 320)``, knee
``(36, 15, 640, 368)`` — with the readout 2× oversampled, ``reconstruction_rss``
centre-cropped to the recon size (320² typically), ``ismrmrd_header`` (encoded and
recon matrices, phase-encode limits: the zero-padded columns outside them were not
acquired) and attributes ``acquisition``, ``max``, ``norm``, ``patient_id``.

The reader removes the readout oversampling down to the header's recon size when
the stored readout equals the encoded one (as scanners do before display) and
reports the acquired phase-encode range (header limits ∩ non-zero columns).
Options: ``contrasts`` (e.g. ``["T2w", "FLAIR"]``), ``anatomy`` (``"brain"`` /
``"knee"`` / ``None``), ``remove_oversampling`` (default ``True``).
"""

from __future__ import annotations

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
    check_finite,
    check_rss_slices,
    fastmri_layout,
    header_acquired,
    normalise_contrast,
    open_h5,
    require_dataset,
    require_rank,
    select_slices,
    visible_files,
)
from mrilib.data.resample import acquired_columns

__all__ = ["FastMRI", "FASTMRI_SPLITS", "validate_fastmri_file"]

#: our split -> folder names the fastMRI archives extract to
FASTMRI_SPLITS = {
    "train": ("multicoil_train", "brain_multicoil_train", "knee_multicoil_train"),
    "val": ("multicoil_val", "brain_multicoil_val", "knee_multicoil_val"),
    "test": ("multicoil_test", "brain_multicoil_test", "knee_multicoil_test", "multicoil_test_full"),
}


def validate_fastmri_file(path) -> dict:
    """Check one fastMRI multi-coil file; return its summary or raise :class:`DataFormatError`.

    Checks: readable HDF5; ``kspace`` complex rank 4; ``ismrmrd_header`` parseable
    with an encoded phase-encode size equal to the stored width; ``reconstruction_rss``
    (if present) rank 3 with as many slices. ``fully_sampled`` is ``False`` for
    challenge/test files (a ``mask`` dataset and no ``reconstruction_rss``).
    """
    with open_h5(path) as f:
        (s, c, h, w), hdr = fastmri_layout(f, path)
        ex, ey = hdr["enc_size"][:2]
        if ey != w:
            raise DataFormatError(f"{path}: header encoded phase-encode size {ey} does not match kspace width {w}")
        check_rss_slices(f, path, s)
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        fully = not ("mask" in f and "reconstruction_rss" not in f)
        return dict(shape=(s, c, h, w), header=hdr, attrs=attrs, fully_sampled=fully)


class FastMRI(DataFormat):
    """Reader of fastMRI multi-coil brain/knee files (see the module docstring)."""

    name = "fastmri"
    title = "fastMRI multi-coil brain / knee (1.5 T and 3 T)"
    kind = "kspace"
    url = "https://fastmri.med.nyu.edu/"
    defaults = dict(contrasts=None, anatomy=None, remove_oversampling=True)

    def discover(self, root: Path) -> list[VolumeRef]:
        """Every fully sampled volume under ``root`` (test/challenge files are skipped)."""
        root = Path(root)
        folders = [(split, root / d) for split, names in FASTMRI_SPLITS.items() for d in names if (root / d).is_dir()]
        if not folders:
            folders = [(None, root)]
        wanted = self.options["contrasts"]
        wanted = None if wanted is None else {normalise_contrast(c) for c in as_list(wanted)}
        anatomy = self.options["anatomy"]
        refs, skipped = [], []
        for split, folder in folders:
            for p in visible_files(folder.glob("*.h5")):
                is_brain = "brain" in p.name
                if anatomy == "brain" and not is_brain or anatomy == "knee" and is_brain:
                    continue
                with open_h5(p) as f:
                    ks = require_dataset(f, "kspace", p)
                    require_rank(ks, 4, p, "(slices, coils, readout, phase)")
                    if "mask" in f and "reconstruction_rss" not in f:
                        skipped.append(p.name)
                        continue
                    acq = f.attrs.get("acquisition", "")
                    acq = acq.decode() if isinstance(acq, bytes) else str(acq)
                    pid = f.attrs.get("patient_id", p.stem)
                    pid = pid.decode() if isinstance(pid, bytes) else str(pid)
                    s, c, h, w = ks.shape
                contrast = normalise_contrast(acq) if acq else "unknown"
                if wanted is not None and contrast not in wanted:
                    continue
                refs.append(
                    VolumeRef(
                        dataset=self.name,
                        files=(str(p),),
                        patient_id=pid or p.stem,
                        contrast=contrast,
                        num_slices=int(s),
                        num_coils=int(c),
                        shape=(int(h), int(w)),
                        split=split,
                        info=dict(acquisition=acq, anatomy="brain" if is_brain else "knee"),
                    )
                )
        if skipped:
            warnings.warn(
                f"fastmri: skipped {len(skipped)} undersampled file(s) without a fully sampled target "
                f"(e.g. {skipped[0]}); the test split is carved from the training data instead",
                stacklevel=2,
            )
        return refs

    def read(self, ref: VolumeRef, slices: Sequence[int] | None = None) -> Iterator[SliceSample]:
        """Yield slices in the fastMRI orientation; readout oversampling marked for removal."""
        info = validate_fastmri_file(ref.path)
        if not info["fully_sampled"]:
            raise DataFormatError(f"{ref.path}: undersampled challenge/test file (has 'mask', no 'reconstruction_rss')")
        s, c, h, w = info["shape"]
        hdr = info["header"]
        idx = select_slices(slices, s, ref.path)
        ex, rx = hdr["enc_size"][0], hdr["recon_size"][0]
        keep = rx if self.options["remove_oversampling"] and h == ex and 0 < rx < h else None
        meta = dict(
            acquisition=ref.info.get("acquisition", ""),
            anatomy=ref.info.get("anatomy"),
            field_strength_t=hdr.get("field_strength_t"),
            fov_mm=_fov_after(hdr, keep),
        )
        with open_h5(ref.path) as f:
            data_acq = acquired_columns(np.asarray(f["kspace"][s // 2]))
            hdr_acq = header_acquired(hdr, w)
            acquired = data_acq if hdr_acq is None else (max(data_acq[0], hdr_acq[0]), min(data_acq[1], hdr_acq[1]))
            if acquired[1] <= acquired[0]:
                acquired = data_acq
            for i in idx:
                k = check_finite(np.asarray(f["kspace"][i]), ref.path, f"'kspace' slice {i}").astype(np.complex64)
                yield SliceSample(
                    kspace=k,
                    acquired=acquired,
                    readout_keep=keep,
                    metadata=self.slice_metadata(ref, i, **meta),
                )


def _fov_after(hdr: dict, keep: int | None):
    """Field of view (mm, readout × phase) of the slice after readout-oversampling removal."""
    enc, rec = hdr.get("enc_fov"), hdr.get("recon_fov")
    if enc is None:
        return None
    fx = rec[0] if keep is not None and rec is not None else enc[0]
    return (float(fx), float(enc[1]))
