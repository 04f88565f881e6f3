"""M4RAW: 0.3 T multi-contrast, multi-repetition brain k-space (Lyu et al., Sci. Data 2023).

On disk (fastMRI-style HDF5, one file per scan and repetition)::

    <root>/multicoil_train/2022061003_T101.h5   study 2022061003, T1w, repetition 01
    <root>/multicoil_train/2022061003_T102.h5
    <root>/multicoil_train/2022061003_T201.h5   T2w
    <root>/multicoil_train/2022061003_FLAIR01.h5
    <root>/multicoil_val/…                      (multicoil_test/ where present)

Each file holds ``kspace`` complex64 ``(18, 4, 256, 256)`` (slices, coils, readout,
phase encode), ``reconstruction_rss`` ``(18, 256, 256)``, an ``ismrmrd_header`` with
the encoding limits, and attributes ``acquisition`` (``AXT1``/``AXT2``/``AXFLAIR``),
``max`` and ``patient_id`` (no ``norm``). Fewer phase-encode lines than the matrix
were acquired: the outer columns are zero and the header's
``kspace_encoding_step_1`` limits say which ones. The reader takes the acquired range
as the columns that hold data *and* lie inside the header's limits; it also checks
which axis carries the zero lines, so a file stored with phase encode on the rows is
transposed into fastMRI's orientation (phase encode last) before any mask is drawn.

Options: ``repetition`` (which repetition is the input, default the first),
``average_repetitions`` (reference = mean RSS over all repetitions of the scan, the
dataset's low-noise reference; default ``False``: RSS of the input itself, fastMRI's
convention), ``contrasts`` (restrict to e.g. ``["T1w", "T2w"]``).
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

__all__ = ["M4Raw", "M4RAW_NAME", "M4RAW_SPLITS", "validate_m4raw_file"]

#: ``<study>_<contrast><repetition>.h5``
M4RAW_NAME = re.compile(r"^(?P<study>[^_]+)_(?P<contrast>T1|T2|FLAIR)(?P<rep>\d{2})\.h5$", re.IGNORECASE)
#: our split -> the dataset's folder
M4RAW_SPLITS = {"train": "multicoil_train", "val": "multicoil_val", "test": "multicoil_test"}


def _pe_axis_and_range(f, path) -> tuple[int, tuple[int, int]]:
    """Which of the last two axes is phase encode (-1 or -2), and its acquired ``[lo, hi)``.

    Reads the centre slice: the phase-encode axis is the one with all-zero lines at
    its ends (not acquired); with none, fastMRI's convention (last axis) holds.
    """
    ks = f["kspace"]
    mag = np.abs(ks[ks.shape[0] // 2])  # (C, H, W)
    zero_rows = ~(mag > 0).any(axis=(0, 2))
    zero_cols = ~(mag > 0).any(axis=(0, 1))
    if zero_rows.all():
        raise DataFormatError(f"{path}: 'kspace' centre slice is all zero")
    axis = -2 if zero_rows.sum() > zero_cols.sum() else -1
    zeros = zero_rows if axis == -2 else zero_cols
    filled = np.nonzero(~zeros)[0]
    return axis, (int(filled[0]), int(filled[-1]) + 1)


def validate_m4raw_file(path) -> dict:
    """Check one M4RAW file's layout; return its summary, or raise :class:`DataFormatError`.

    Checks: readable HDF5; ``kspace`` complex of rank 4 ``(slices, coils, H, W)``;
    ``ismrmrd_header`` parseable with an encoded matrix sharing a size with ``(H, W)``; ``reconstruction_rss`` (if present) of rank 3 with as many
    slices; the attribute ``acquisition``.
    """
    with open_h5(path) as f:
        (s, c, h, w), hdr = fastmri_layout(f, path)
        ex, ey = hdr["enc_size"][:2]
        if ex not in (h, w) and ey not in (h, w):
            raise DataFormatError(
                f"{path}: header encoded matrix {ex}x{ey} does not match kspace {h}x{w}"
            )
        check_rss_slices(f, path, s)
        if "acquisition" not in f.attrs:
            raise DataFormatError(f"{path}: missing attribute 'acquisition' (found: {sorted(f.attrs)})")
        axis, acquired = _pe_axis_and_range(f, path)
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        return dict(shape=(s, c, h, w), header=hdr, pe_axis=axis, acquired=acquired, attrs=attrs)


class M4Raw(DataFormat):
    """Reader of the M4RAW multi-coil HDF5 files (see the module docstring)."""

    name = "m4raw"
    title = "M4RAW (0.3 T brain, T1w/T2w/FLAIR, 2–3 repetitions, 4 coils)"
    anatomy = "brain"
    kind = "kspace"
    url = "https://zenodo.org/records/7523691"
    defaults = dict(repetition=None, average_repetitions=False, contrasts=None)

    def discover(self, root: Path) -> list[VolumeRef]:
        """One :class:`VolumeRef` per (study, contrast): its repetitions, input first."""
        root = Path(root)
        folders = [(split, root / d) for split, d in M4RAW_SPLITS.items() if (root / d).is_dir()]
        if not folders:
            folders = [(None, root)]  # a flat folder of M4RAW files
        wanted = self.options["contrasts"]
        wanted = None if wanted is None else {normalise_contrast(c) for c in as_list(wanted)}
        refs = []
        for split, folder in folders:
            groups: dict[tuple[str, str], dict[int, Path]] = {}
            for p in visible_files(folder.glob("*.h5")):
                m = M4RAW_NAME.match(p.name)
                if not m:
                    continue
                key = (m["study"], m["contrast"].upper())
                groups.setdefault(key, {})[int(m["rep"])] = p
            for (study, con), reps in sorted(groups.items()):
                contrast = normalise_contrast(con)
                if wanted is not None and contrast not in wanted:
                    continue
                order = sorted(reps)
                first = self.options["repetition"]
                if first is not None and int(first) in reps:
                    order.remove(int(first))
                    order.insert(0, int(first))
                files = tuple(str(reps[r]) for r in order)
                with open_h5(files[0]) as f:
                    ks = require_dataset(f, "kspace", files[0])
                    require_rank(ks, 4, files[0], "(slices, coils, readout, phase)")
                    s, c, h, w = ks.shape
                refs.append(
                    VolumeRef(
                        dataset=self.name,
                        files=files,
                        patient_id=study,
                        contrast=contrast,
                        num_slices=int(s),
                        num_coils=int(c),
                        shape=(int(h), int(w)),
                        split=split,
                        info=dict(repetitions=order, scan=con),
                    )
                )
        return refs

    def read(self, ref: VolumeRef, slices: Sequence[int] | None = None) -> Iterator[SliceSample]:
        """Yield slices of the input repetition (reference: its RSS, or the mean over repetitions)."""
        info = validate_m4raw_file(ref.path)
        s = info["shape"][0]
        idx = select_slices(slices, s, ref.path)
        axis, acquired = info["pe_axis"], info["acquired"]
        width = info["shape"][3] if axis == -1 else info["shape"][2]
        # header limits count only when the header's phase-encode size is this width
        hdr_acq = header_acquired(info["header"], width) if info["header"]["enc_size"][1] == width else None
        if hdr_acq is not None and max(acquired[0], hdr_acq[0]) < min(acquired[1], hdr_acq[1]):
            # lines the header calls unacquired stay out even if they hold (noise) samples
            acquired = (max(acquired[0], hdr_acq[0]), min(acquired[1], hdr_acq[1]))
        others = []
        if self.options["average_repetitions"] and len(ref.files) > 1:
            for p in ref.files[1:]:
                other = validate_m4raw_file(p)
                if other["shape"] != info["shape"]:
                    raise DataFormatError(
                        f"{p}: repetition shape {other['shape']} differs from {ref.path} {info['shape']}"
                    )
                others.append(p)
        handles = [open_h5(p) for p in (ref.path, *others)]
        try:
            for i in idx:
                stack = []
                for f in handles:
                    k = check_finite(np.asarray(f["kspace"][i]), f.filename, f"'kspace' slice {i}")
                    if axis == -2:
                        k = np.swapaxes(k, -1, -2)  # phase encode last, as fastMRI expects
                    stack.append(k.astype(np.complex64))
                yield SliceSample(
                    kspace=stack[0],
                    acquired=acquired,
                    reference_kspace=np.stack(stack) if len(stack) > 1 else None,
                    metadata=self.slice_metadata(
                        ref,
                        i,
                        anatomy="brain",
                        acquisition=str(info["attrs"].get("acquisition", "")),
                        repetitions_averaged=len(stack),
                        pe_axis_in_file=axis,
                        header_acquired=hdr_acq,
                        field_strength_t=info["header"].get("field_strength_t") or 0.3,
                        fov_mm=_fov(info["header"]),
                    ),
                )
        finally:
            for f in handles:
                f.close()


def _fov(hdr: dict):
    """In-plane field of view (mm) from a parsed header, or ``None``."""
    fov = hdr.get("enc_fov")
    return None if fov is None else (float(fov[0]), float(fov[1]))
