"""CMRxRecon: multi-coil cardiac cine and mapping k-space (Wang et al. 2023/2024).

On disk (MATLAB v7.3 ``.mat`` = HDF5 with a 512-byte MATLAB user block)::

    <root>/MultiCoil/Cine/TrainingSet/FullSample/P001/cine_sax.mat   (also cine_lax, cine_lvot)
    <root>/MultiCoil/Mapping/TrainingSet/FullSample/P001/T1map.mat   (also T2map)
    <root>/MultiCoil/Cine/TrainingSet/AccFactor04/P001/cine_sax.mat  undersampled: ignored
    <root>/MultiCoil/Cine/TrainingSet/AccFactor04/P001/cine_sax_mask.mat

MATLAB stores ``kspace_full`` with dimensions ``(kx, ky, coil, slice, time)``; h5py
reads the reversed order ``(time, slice, coil, ky, kx)`` and complex values as a
compound dtype with fields ``real`` and ``imag``. Mapping files have weightings
(inversion/echo times) in place of time frames; 2024's BlackBlood has no time axis.
Masks (``mask04|08|10``, 2023; ``mask``, 2024) are ``(ky, kx)`` in h5py order.

The reader yields every (slice, frame) as one 2-D slice, flattened slice-major, in
fastMRI's orientation ``(coil, kx, ky)`` (phase encode ``ky`` last). The files carry
no header; the readout is stored 2× oversampled (the challenge's own evaluation
crops it), so ``readout_oversampling=2`` (default) removes it. Only ``FullSample``
folders are read; a subject keeps its ``P###`` identity across cine and mapping.
Options: ``kinds`` (e.g. ``"cine"``, ``"mapping"``, ``"cine_sax"``), ``readout_oversampling``.
"""

from __future__ import annotations

import re
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
    open_h5,
    require_dataset,
    select_slices,
    visible_files,
)
from mrilib.data.resample import acquired_columns

__all__ = ["CMRxRecon", "CMRX_SPLITS", "validate_cmrx_file", "mat_complex"]

#: the challenge's set folders -> our splits
CMRX_SPLITS = {"TrainingSet": "train", "ValidationSet": "val", "TestSet": "test"}
_KSPACE_KEYS = ("kspace_full",)


def mat_complex(data: np.ndarray, path, what: str) -> np.ndarray:
    """A MATLAB v7.3 complex array (compound ``real``/``imag``, or already complex) as complex64."""
    if np.iscomplexobj(data):
        return data.astype(np.complex64)
    names = data.dtype.names
    if names is None or "real" not in names or "imag" not in names:
        raise DataFormatError(
            f"{path}: {what} must be complex (MATLAB compound of 'real' and 'imag'), got dtype {data.dtype}"
        )
    return (data["real"] + 1j * data["imag"]).astype(np.complex64)


def validate_cmrx_file(path) -> dict:
    """Check a fully sampled CMRxRecon multi-coil ``.mat``; return its layout or raise :class:`DataFormatError`.

    Checks: readable HDF5/MATLAB v7.3; a ``kspace_full`` dataset of rank 5
    ``(t, slice, coil, ky, kx)`` or 4 ``(slice, coil, ky, kx)``; complex layout
    (compound ``real``/``imag`` or complex dtype). Single-coil files
    (``kspace_single_full``) are rejected with a message saying so.
    """
    with open_h5(path) as f:
        if "kspace_single_full" in f and "kspace_full" not in f:
            raise DataFormatError(f"{path}: single-coil file ('kspace_single_full'); use the MultiCoil folders")
        ds = require_dataset(f, "kspace_full", path, " (fully sampled multi-coil k-space)")
        if ds.ndim not in (4, 5):
            raise DataFormatError(
                f"{path}: 'kspace_full' must have rank 5 (t, slice, coil, ky, kx) or 4 (slice, coil, ky, kx) "
                f"in h5py order, got shape {ds.shape}"
            )
        if ds.dtype.kind != "c" and (ds.dtype.names is None or not {"real", "imag"} <= set(ds.dtype.names)):
            raise DataFormatError(
                f"{path}: 'kspace_full' must be complex (compound 'real'/'imag'), got dtype {ds.dtype}"
            )
        shape = ds.shape if ds.ndim == 5 else (1,) + ds.shape
        t, z, c, ky, kx = shape
        return dict(shape=shape, frames=t, slices=z, coils=c, ky=ky, kx=kx)


class CMRxRecon(DataFormat):
    """Reader of CMRxRecon multi-coil cine / mapping k-space (see the module docstring)."""

    name = "cmrxrecon"
    title = "CMRxRecon (3 T cardiac cine and T1/T2 mapping, 10 coils)"
    anatomy = "heart"
    kind = "kspace"
    url = "https://cmrxrecon.github.io/"
    defaults = dict(kinds=None, readout_oversampling=2)

    def _wanted(self, modality: str, stem: str) -> bool:
        kinds = self.options["kinds"]
        if kinds is None:
            return True
        kinds = {k.lower() for k in as_list(kinds)}
        return modality.lower() in kinds or stem.lower() in kinds

    def discover(self, root: Path) -> list[VolumeRef]:
        """Every fully sampled multi-coil ``.mat`` under ``FullSample`` folders."""
        root = Path(root)
        refs = []
        fulls = sorted(p for p in root.rglob("FullSample") if p.is_dir())
        if root.name == "FullSample":
            fulls.insert(0, root)
        for full in fulls:
            parts = full.resolve().parts
            if any(p.lower() == "singlecoil" for p in parts):
                continue
            sets = [i for i, p in enumerate(parts) if p in CMRX_SPLITS]
            split = CMRX_SPLITS[parts[sets[-1]]] if sets else None
            modality = parts[sets[-1] - 1] if sets and sets[-1] > 0 else full.parent.name
            for mat in visible_files(full.rglob("*.mat")):
                if "mask" in mat.stem.lower() or not self._wanted(modality, mat.stem):
                    continue
                info = validate_cmrx_file(mat)
                patient = mat.parent.relative_to(full).as_posix()
                refs.append(
                    VolumeRef(
                        dataset=self.name,
                        files=(str(mat),),
                        patient_id=patient,
                        contrast=mat.stem,
                        num_slices=info["frames"] * info["slices"],
                        num_coils=info["coils"],
                        shape=(info["kx"], info["ky"]),
                        split=split,
                        info=dict(modality=modality, frames=info["frames"], slices=info["slices"]),
                    )
                )
        return refs

    def read(self, ref: VolumeRef, slices: Sequence[int] | None = None) -> Iterator[SliceSample]:
        """Yield (slice, frame) images as ``(coil, kx, ky)`` k-space, flattened slice-major."""
        info = validate_cmrx_file(ref.path)
        t, z = info["frames"], info["slices"]
        n = t * z
        idx = select_slices(slices, n, ref.path)
        ovs = self.options["readout_oversampling"]
        keep = int(round(info["kx"] / float(ovs))) if ovs and float(ovs) > 1 else None
        meta = dict(
            acquisition=re.sub(r"\W", "_", ref.contrast.upper()),
            modality=ref.info.get("modality"),
            anatomy="heart",
            field_strength_t=3.0,
        )
        with open_h5(ref.path) as f:
            ds = f["kspace_full"]

            def frame(zi: int, ti: int) -> np.ndarray:
                raw = np.asarray(ds[ti, zi] if ds.ndim == 5 else ds[zi])  # (coil, ky, kx)
                k = mat_complex(raw, ref.path, f"'kspace_full' slice {zi} frame {ti}")
                return np.ascontiguousarray(np.swapaxes(k, -1, -2))  # (coil, kx, ky)

            acquired = acquired_columns(frame(z // 2, 0))
            for i in idx:
                zi, ti = divmod(i, t)
                k = check_finite(frame(zi, ti), ref.path, f"'kspace_full' slice {zi} frame {ti}")
                yield SliceSample(
                    kspace=k,
                    acquired=acquired,
                    readout_keep=keep,
                    metadata=self.slice_metadata(ref, i, slice_position=zi, frame=ti, **meta),
                )
