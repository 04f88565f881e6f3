"""The fastMRI multi-coil HDF5 layout: writing, validating and reading volumes.

A volume file holds

- ``kspace``: complex64 ``(slices, coils, H, W)`` (``H`` = readout, ``W`` = phase encode);
- ``reconstruction_rss``: float32 ``(slices, h, w)``, the RSS of the fully sampled
  coil images, centre-cropped to the recon size;
- ``ismrmrd_header``: the ISMRMRD XML header, read by ``fastmri.data.SliceDataset``
  for the encoded / recon matrix sizes and the phase-encode limits (padding);
- attributes ``max`` (of the RSS volume), ``norm`` (its L2 norm), ``acquisition``,
  ``patient_id``.

Extra datasets (the noise-free image, coil maps, brain mask of the embedded data)
are ignored by fastMRI's readers.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from mrilib.data.kspace import ifft2c, rss
from mrilib.run.io import atomic_path

__all__ = [
    "DataFormatError",
    "LABEL_SOURCE",
    "ismrmrd_header",
    "write_volume",
    "validate_volume",
    "read_volume",
    "center_crop",
    "rss_target",
]

_NS = "http://www.ismrm.org/ISMRMRD"


class DataFormatError(ValueError):
    """A data file does not have the layout its reader expects (names the file)."""


#: The attribute of a volume whose labels are not the RSS of its own k-space, saying what they are instead
#: (e.g. M4RAW's references averaged over repetitions); the dataset audit (:mod:`mrilib.audit`) then says
#: it cannot check them.
LABEL_SOURCE = "label_source"


def ismrmrd_header(
    encoded_size: tuple[int, int],
    recon_size: tuple[int, int],
    fov_mm: tuple[float, float] = (240.0, 240.0),
    pe_limits: tuple[int, int, int] | None = None,
    num_coils: int = 1,
    field_strength_t: float = 3.0,
) -> str:
    """A minimal valid ISMRMRD XML header for a 2-D Cartesian multi-coil scan.

    Args:
        encoded_size: ``(readout, phase)`` matrix of the stored k-space (``H, W``).
        recon_size: ``(x, y)`` of the reconstructed image (``reconstruction_rss``).
        fov_mm: field of view (readout, phase) in millimetres.
        pe_limits: ``(minimum, maximum, center)`` of the phase-encoding index
            (``kspace_encoding_step_1``); default: the whole matrix, centre ``W // 2``.
        num_coils: receiver channels.
        field_strength_t: main field in tesla.
    """
    ex, ey = (int(v) for v in encoded_size)
    rx, ry = (int(v) for v in recon_size)
    lo, hi, ctr = pe_limits if pe_limits is not None else (0, ey - 1, ey // 2)
    fx, fy = fov_mm
    return f"""<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="{_NS}" xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <acquisitionSystemInformation>
    <systemFieldStrength_T>{field_strength_t}</systemFieldStrength_T>
    <receiverChannels>{num_coils}</receiverChannels>
  </acquisitionSystemInformation>
  <experimentalConditions><H1resonanceFrequency_Hz>{int(42577478 * field_strength_t)}</H1resonanceFrequency_Hz></experimentalConditions>
  <encoding>
    <encodedSpace>
      <matrixSize><x>{ex}</x><y>{ey}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>{fx}</x><y>{fy}</y><z>5.0</z></fieldOfView_mm>
    </encodedSpace>
    <reconSpace>
      <matrixSize><x>{rx}</x><y>{ry}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>{fx * rx / ex}</x><y>{fy * ry / ey}</y><z>5.0</z></fieldOfView_mm>
    </reconSpace>
    <trajectory>cartesian</trajectory>
    <encodingLimits>
      <kspace_encoding_step_1><minimum>{lo}</minimum><maximum>{hi}</maximum><center>{ctr}</center></kspace_encoding_step_1>
      <kspace_encoding_step_2><minimum>0</minimum><maximum>0</maximum><center>0</center></kspace_encoding_step_2>
      <slice><minimum>0</minimum><maximum>0</maximum><center>0</center></slice>
    </encodingLimits>
  </encoding>
</ismrmrdHeader>
"""


def center_crop(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centre-crop the last two axes of ``x`` to ``shape`` (fastMRI's convention)."""
    h, w = x.shape[-2:]
    ch, cw = shape
    if ch > h or cw > w:
        raise ValueError(f"crop {shape} larger than image {(h, w)}")
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top : top + ch, left : left + cw]


def rss_target(kspace: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The ``reconstruction_rss`` of fully sampled ``kspace`` (``(..., coils, H, W)``): the RSS of its
    inverse FFT, centre-cropped to ``shape``."""
    return center_crop(rss(ifft2c(kspace)), shape)


def write_volume(
    path: str | os.PathLike,
    kspace: np.ndarray,
    *,
    patient_id: str,
    acquisition: str,
    recon_size: tuple[int, int] | None = None,
    fov_mm: tuple[float, float] = (240.0, 240.0),
    extras: dict[str, np.ndarray] | None = None,
    extra_attrs: dict | None = None,
) -> Path:
    """Write one volume in the fastMRI multi-coil layout, atomically.

    ``reconstruction_rss`` is computed from ``kspace`` (RSS of the inverse FFT,
    centre-cropped to ``recon_size``), and ``max``/``norm`` from it.
    ``extras`` are stored as additional datasets (e.g. ``image``, ``sens_maps``).
    """
    kspace = np.asarray(kspace)
    _check_kspace_array(kspace, Path(path))
    s, c, h, w = kspace.shape
    recon_size = recon_size or (h, w)
    target = rss_target(kspace, recon_size).astype(np.float32)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("kspace", data=kspace.astype(np.complex64))
            f.create_dataset("reconstruction_rss", data=target)
            f.create_dataset("ismrmrd_header", data=ismrmrd_header((h, w), recon_size, fov_mm, num_coils=c))
            for name, arr in (extras or {}).items():
                f.create_dataset(name, data=arr)
            f.attrs["max"] = float(target.max())
            f.attrs["norm"] = float(np.linalg.norm(target))
            f.attrs["acquisition"] = acquisition
            f.attrs["patient_id"] = patient_id
            for k, v in (extra_attrs or {}).items():
                f.attrs[k] = v
    return Path(path)


def _check_kspace_array(kspace: np.ndarray, path: Path) -> None:
    """Raise :class:`DataFormatError` if ``kspace`` is not a finite complex 4-D array."""
    if kspace.ndim != 4:
        raise DataFormatError(
            f"{path}: 'kspace' must have rank 4 (slices, coils, H, W), got shape {kspace.shape}"
        )
    if not np.iscomplexobj(kspace):
        raise DataFormatError(f"{path}: 'kspace' must be complex, got dtype {kspace.dtype}")
    if not np.all(np.isfinite(kspace)):
        raise DataFormatError(f"{path}: 'kspace' contains NaN or Inf values")


def validate_volume(path: str | os.PathLike, check_values: bool = True) -> dict:
    """Check that ``path`` is a readable fastMRI multi-coil volume; return its summary.

    Raises :class:`DataFormatError` naming the file and the problem for: a missing,
    truncated or non-HDF5 file, a missing ``kspace`` or ``ismrmrd_header``, k-space
    of the wrong rank or dtype, NaN/Inf values (when ``check_values``), a
    ``reconstruction_rss`` whose slice count disagrees with ``kspace``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataFormatError(f"{path}: not a readable HDF5 file (truncated or wrong format): {err}") from None
    with f:
        if "kspace" not in f:
            raise DataFormatError(f"{path}: missing dataset 'kspace' (found: {sorted(f.keys())})")
        ks = f["kspace"]
        if ks.ndim != 4:
            raise DataFormatError(
                f"{path}: 'kspace' must have rank 4 (slices, coils, H, W), got shape {ks.shape}"
            )
        if ks.dtype.kind != "c":
            raise DataFormatError(f"{path}: 'kspace' must be complex, got dtype {ks.dtype}")
        if "ismrmrd_header" not in f:
            raise DataFormatError(f"{path}: missing dataset 'ismrmrd_header'")
        if "reconstruction_rss" in f and f["reconstruction_rss"].shape[0] != ks.shape[0]:
            raise DataFormatError(
                f"{path}: 'reconstruction_rss' has {f['reconstruction_rss'].shape[0]} slices, "
                f"'kspace' has {ks.shape[0]}"
            )
        if check_values:
            for i in range(ks.shape[0]):
                try:
                    sl = ks[i]
                except OSError as err:
                    raise DataFormatError(f"{path}: slice {i} of 'kspace' cannot be read (truncated?): {err}") from None
                if not np.all(np.isfinite(sl)):
                    raise DataFormatError(f"{path}: 'kspace' slice {i} contains NaN or Inf values")
        return {"path": str(path), "shape": tuple(ks.shape), "attrs": dict(f.attrs)}


def read_volume(path: str | os.PathLike, keys: tuple[str, ...] = ("kspace", "reconstruction_rss")) -> dict:
    """Validate ``path`` and return the requested datasets plus ``attrs`` as a dict."""
    validate_volume(path)
    with h5py.File(path, "r") as f:
        out = {k: f[k][()] for k in keys if k in f}
        out["attrs"] = dict(f.attrs)
    return out
