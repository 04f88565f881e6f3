"""What every dataset reader shares: the slice record, the volume reference, validation.

A reader (one module per dataset) turns files in the dataset's own layout into
:class:`SliceSample` records in the fastMRI orientation: multi-coil k-space
``(coils, H, W)`` with ``H`` the readout and ``W`` the phase-encode axis (the axis
fastMRI's masks subsample), plus the reference image and what else the dataset
knows (ground-truth complex image, coil sensitivities, tumour masks). Readers never
resize; :meth:`SliceSample.fit` (and the run conversion) does that, with the rules
of :mod:`mrilib.data.resample`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import h5py
import numpy as np

from mrilib.data.h5layout import DataFormatError
from mrilib.data.resample import fit_image, fit_kspace, ifft2c_np
from mrilib.run.io import is_hidden_or_temporary

__all__ = [
    "as_list",
    "DataFormatError",
    "SliceSample",
    "VolumeRef",
    "DataFormat",
    "open_h5",
    "parse_ismrmrd_header",
    "normalise_contrast",
    "stable_seed",
    "rss_np",
    "visible_files",
]

_NS = "{http://www.ismrm.org/ISMRMRD}"


def rss_np(coil_images: np.ndarray, coil_axis: int = -3) -> np.ndarray:
    """Root-sum-of-squares over the coil axis (numpy)."""
    return np.sqrt(np.sum(np.abs(coil_images) ** 2, axis=coil_axis))


def visible_files(paths: Iterable[Path]) -> list[Path]:
    """``paths`` sorted, without hidden or temporary files (``._name.h5`` of macOS, ``.name.h5.x.tmp``
    of an interrupted copy): readers' :meth:`DataFormat.discover` never opens those."""
    return sorted(Path(q) for q in paths if not is_hidden_or_temporary(q))


def stable_seed(*parts) -> int:
    """A 63-bit seed from any parts (strings, ints), stable across runs and platforms."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class SliceSample:
    """One 2-D slice, ready for the VarNet pipeline once fitted to the run's matrix.

    Attributes:
        kspace: complex64 ``(C, H, W)``; ``H`` readout, ``W`` phase encode.
        acquired: phase-encode columns ``[lo, hi)`` holding measured data (outside:
            zero-filled; fastMRI's masks leave them out through the header limits).
        target: float32 ``(H, W)`` reference magnitude, or ``None`` for the RSS of
            ``kspace`` (fastMRI's ``reconstruction_rss``).
        reference_kspace: ``(R, C, H, W)`` k-spaces whose mean RSS is the reference
            (M4RAW repetition averaging), or ``None``.
        image: complex64 ``(H, W)`` ground truth (SENSE target, simulated image), or ``None``.
        sens_maps: complex64 ``(C, H, W)`` coil sensitivities, or ``None``.
        masks: per-slice ``(H, W)`` arrays, e.g. ``tumour_mask``, ``tumour_labels``,
            ``brain_mask``.
        readout_keep: image rows to keep when removing readout oversampling (``None``: none).
        metadata: dataset, file, slice index, patient_id, contrast, …
    """

    kspace: np.ndarray
    acquired: tuple[int, int]
    target: np.ndarray | None = None
    reference_kspace: np.ndarray | None = None
    image: np.ndarray | None = None
    sens_maps: np.ndarray | None = None
    masks: dict = field(default_factory=dict)
    readout_keep: int | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def num_coils(self) -> int:
        """Number of receive channels."""
        return int(self.kspace.shape[0])

    def reference(self) -> np.ndarray:
        """The reference magnitude image (``target``, mean RSS of ``reference_kspace``, or RSS of ``kspace``)."""
        if self.target is not None:
            return self.target
        if self.reference_kspace is not None:
            return rss_np(ifft2c_np(self.reference_kspace)).mean(axis=0).astype(np.float32)
        return rss_np(ifft2c_np(self.kspace)).astype(np.float32)

    def fit(self, size: int | tuple[int, int]) -> "SliceSample":
        """This slice on a ``size × size`` (or ``(H, W)``) matrix (see :func:`mrilib.data.resample.fit_kspace`).

        K-space is cropped/padded after readout-oversampling removal; the image,
        coil maps, reference k-spaces and masks follow the same geometry. A given
        ``target`` is replaced by the RSS of the fitted k-space(s) unless it already
        has the fitted shape, because a magnitude image cannot be refitted exactly.
        """
        shape = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
        kspace, acquired = fit_kspace(self.kspace, shape, self.acquired, self.readout_keep)
        out = dataclasses.replace(self, kspace=kspace, acquired=acquired, readout_keep=None, masks={})
        if self.reference_kspace is not None:
            out.reference_kspace = fit_kspace(self.reference_kspace, shape, None, self.readout_keep)[0]
        if self.image is not None:
            out.image = fit_image(self.image, shape, self.readout_keep)
        if self.sens_maps is not None:
            out.sens_maps = fit_image(self.sens_maps, shape, self.readout_keep)
        if self.target is not None and self.target.shape != shape:
            out.target = None
        for name, m in self.masks.items():
            if m.shape == shape:
                out.masks[name] = m
            else:
                fitted = np.abs(fit_image(m.astype(np.float32), shape, self.readout_keep))
                out.masks[name] = (fitted >= 0.5).astype(m.dtype)
        return out


@dataclass
class VolumeRef:
    """One source volume (a file, or a set of files such as repetitions) of a dataset.

    Attributes:
        dataset: the reader's registry name.
        files: source files; the first holds the input k-space or image.
        patient_id: subject identifier (splits group by it, never by slice).
        contrast: normalised contrast label (``T1w``, ``T2w``, ``FLAIR``, ``PD``, …).
        num_slices: 2-D slices the volume yields.
        num_coils: receive channels (``None`` for image-only data).
        shape: native ``(H, W)`` of a slice in the fastMRI orientation.
        split: the dataset's own split of this volume, or ``None``.
        info: reader-specific details (repetitions, echo, modality …).
    """

    dataset: str
    files: tuple[str, ...]
    patient_id: str
    contrast: str
    num_slices: int
    num_coils: int | None
    shape: tuple[int, int]
    split: str | None = None
    info: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """The main source file."""
        return Path(self.files[0])


class DataFormat:
    """Base class of a dataset reader.

    Subclasses set ``name``, ``title``, ``kind`` (``"kspace"`` or ``"image"``),
    ``url`` and ``defaults`` (the options they accept), and implement
    :meth:`discover` and :meth:`read`.
    """

    name: str = ""
    title: str = ""
    kind: str = "kspace"
    url: str = ""
    #: what the format images ("brain", "knee", "heart"); None: either, chosen by an option
    anatomy: str | None = None
    defaults: dict = {}

    def __init__(self, **options):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise TypeError(f"{self.name}: unknown option(s) {unknown}; options: {known}")
        self.options = {**self.defaults, **options}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"

    def discover(self, root: Path) -> list[VolumeRef]:
        """Every usable volume under ``root``, with its native split (or ``None``)."""
        raise NotImplementedError

    def read(self, ref: VolumeRef, slices: Sequence[int] | None = None) -> Iterator[SliceSample]:
        """Yield the requested slices (default: all) of ``ref`` as :class:`SliceSample`."""
        raise NotImplementedError

    def slice_metadata(self, ref: VolumeRef, index: int, **extra) -> dict:
        """A slice's ``metadata``: this reader, ``ref``'s file, patient and contrast, the slice ``index``, then ``extra``."""
        return dict(
            dataset=self.name,
            file=str(ref.path),
            slice=index,
            patient_id=ref.patient_id,
            contrast=ref.contrast,
            **extra,
        )

    def source_files(self, root: Path) -> list[Path]:
        """Files whose names and sizes identify the dataset's content (for cache keys)."""
        files: list[Path] = []
        for ref in self.discover(root):
            files.extend(Path(f) for f in ref.files)
        return sorted(set(files))


def open_h5(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 (or MATLAB v7.3) file read-only; :class:`DataFormatError` naming it if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataFormatError(f"{path}: not a readable HDF5 file (truncated or wrong format): {err}") from None


def require_dataset(f: h5py.File, key: str, path, hint: str = "") -> h5py.Dataset:
    """``f[key]`` as a dataset, or :class:`DataFormatError` naming the file and what it holds."""
    if key not in f or not isinstance(f[key], h5py.Dataset):
        raise DataFormatError(f"{path}: missing dataset {key!r}{hint} (found: {sorted(f.keys())})")
    return f[key]


def require_rank(ds, rank: int, path, layout: str) -> None:
    """Raise :class:`DataFormatError` unless ``ds`` has ``rank`` dimensions (``layout`` names them)."""
    if len(ds.shape) != rank:
        raise DataFormatError(
            f"{path}: {ds.name.lstrip('/')!r} must have rank {rank} {layout}, got shape {tuple(ds.shape)}"
        )


def require_complex(ds, path) -> None:
    """Raise :class:`DataFormatError` unless ``ds`` has a complex dtype."""
    if ds.dtype.kind != "c":
        raise DataFormatError(f"{path}: {ds.name.lstrip('/')!r} must be complex, got dtype {ds.dtype}")


def select_slices(slices: Sequence[int] | None, num_slices: int, path) -> list[int]:
    """The slice indices to read: ``slices`` as ints, or all ``num_slices`` when ``None``.

    Raises :class:`IndexError` naming ``path`` and the indices outside ``0..num_slices-1``.
    """
    idx = list(range(num_slices)) if slices is None else [int(i) for i in slices]
    bad = [i for i in idx if not 0 <= i < num_slices]
    if bad:
        raise IndexError(f"{path}: slices {bad} out of range 0..{num_slices - 1}")
    return idx


def check_finite(x: np.ndarray, path, what: str) -> np.ndarray:
    """Return ``x``; :class:`DataFormatError` if it holds NaN or Inf."""
    if not np.all(np.isfinite(x)):
        raise DataFormatError(f"{path}: {what} contains NaN or Inf values")
    return x


def parse_ismrmrd_header(xml, path) -> dict:
    """The fields of an ISMRMRD XML header the readers need.

    Returns ``enc_size`` / ``recon_size`` ``(x, y, z)``, ``enc_fov`` / ``recon_fov``
    (mm, or ``None``), ``pe_limits`` ``(minimum, maximum, center)`` of
    ``kspace_encoding_step_1`` (or ``None``) and ``field_strength_t`` (or ``None``).
    Raises :class:`DataFormatError` naming ``path`` when it cannot be parsed.
    """
    if isinstance(xml, np.ndarray):
        xml = xml.item() if xml.shape == () else xml.tobytes()
    if isinstance(xml, bytes):
        xml = xml.decode("utf-8", errors="replace")
    try:
        root = ET.fromstring(xml.strip())
    except ET.ParseError as err:
        raise DataFormatError(f"{path}: 'ismrmrd_header' is not valid XML: {err}") from None

    def find(*tags):
        node = root
        for t in tags:
            node = node.find(_NS + t) if node is not None else None
            if node is None:
                # headers written without the namespace
                node2 = root
                for t2 in tags:
                    node2 = node2.find(t2) if node2 is not None else None
                return node2
        return node

    def triple(space: str, what: str, cast):
        vals = []
        for ax in ("x", "y", "z"):
            node = find("encoding", space, what, ax)
            if node is None or node.text is None:
                return None
            vals.append(cast(float(node.text)))
        return tuple(vals)

    enc = triple("encodedSpace", "matrixSize", int)
    rec = triple("reconSpace", "matrixSize", int)
    if enc is None or rec is None:
        raise DataFormatError(f"{path}: 'ismrmrd_header' lacks encodedSpace/reconSpace matrixSize")
    lims = None
    vals = [find("encoding", "encodingLimits", "kspace_encoding_step_1", k) for k in ("minimum", "maximum", "center")]
    if all(v is not None and v.text is not None for v in vals):
        lims = tuple(int(float(v.text)) for v in vals)
    fs = find("acquisitionSystemInformation", "systemFieldStrength_T")
    return dict(
        enc_size=enc,
        recon_size=rec,
        enc_fov=triple("encodedSpace", "fieldOfView_mm", float),
        recon_fov=triple("reconSpace", "fieldOfView_mm", float),
        pe_limits=lims,
        field_strength_t=float(fs.text) if fs is not None and fs.text else None,
    )


def fastmri_layout(f: h5py.File, path) -> tuple[tuple[int, int, int, int], dict]:
    """Check the ``kspace`` and header of a fastMRI-style HDF5 file (fastMRI, M4RAW); return its shape and header.

    ``kspace`` must be complex of rank 4 ``(slices, coils, readout, phase)`` and
    ``ismrmrd_header`` parseable (see :func:`parse_ismrmrd_header`); otherwise
    :class:`DataFormatError` naming ``path``.
    """
    ks = require_dataset(f, "kspace", path)
    require_rank(ks, 4, path, "(slices, coils, readout, phase)")
    require_complex(ks, path)
    hdr = parse_ismrmrd_header(require_dataset(f, "ismrmrd_header", path)[()], path)
    return tuple(ks.shape), hdr


def check_rss_slices(f: h5py.File, path, num_slices: int) -> None:
    """Where ``f`` holds ``reconstruction_rss``: :class:`DataFormatError` naming ``path`` unless it
    has rank 3 ``(slices, H, W)`` and ``num_slices`` slices, as ``kspace`` has."""
    if "reconstruction_rss" in f:
        rec = f["reconstruction_rss"]
        require_rank(rec, 3, path, "(slices, H, W)")
        if rec.shape[0] != num_slices:
            raise DataFormatError(f"{path}: 'reconstruction_rss' has {rec.shape[0]} slices, 'kspace' has {num_slices}")


def header_acquired(hdr: dict, width: int) -> tuple[int, int] | None:
    """Acquired phase-encode columns ``[lo, hi)`` implied by header limits (fastMRI's rule), or ``None``."""
    if hdr.get("pe_limits") is None:
        return None
    _, maximum, center = hdr["pe_limits"]
    lo = hdr["enc_size"][1] // 2 - center
    hi = lo + maximum + 1
    if not (0 <= lo < hi <= width):
        return None
    return int(lo), int(hi)


_CONTRASTS = [
    (r"FLAIR|T2F$", "FLAIR"),
    (r"T1(POST|CE|C|GD)", "T1c"),
    (r"T1(PRE|N)?$|^AXT1$|^T1$|T1W", "T1w"),
    (r"T2(W)?$|^AXT2$", "T2w"),
    (r"PDFS", "PDFS"),
    (r"^CORPD|^PD", "PD"),
]


def normalise_contrast(label: str) -> str:
    """Map a dataset's contrast name (``AXT2``, ``T101``→``T1``, ``t1ce``, ``CORPD_FBK``) to ours.

    Ours: ``T1w``, ``T1c`` (post-contrast), ``T2w``, ``FLAIR``, ``PD``, ``PDFS``;
    anything else is returned unchanged.
    """
    s = re.sub(r"[^A-Z0-9]", "", label.upper())
    s = re.sub(r"^AX", "", s)
    s = re.sub(r"FBK$", "", s)
    for pattern, name in _CONTRASTS:
        if re.search(pattern, s):
            return name
    return label


def as_list(x) -> list:
    """A string or a sequence as a list (``"T1w,T2w"`` → ``["T1w", "T2w"]``)."""
    if isinstance(x, str):
        return [s for s in re.split(r"[,+ ]+", x) if s]
    return list(x)
