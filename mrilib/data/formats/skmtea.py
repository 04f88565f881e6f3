"""SKM-TEA raw-data track: 3-D qDESS knee k-space with SENSE targets (Desai et al. 2021).

On disk (after extracting the release)::

    <root>/files_recon_calib-24/MTR_005.h5 …
    <root>/annotations/v1.0.0/{train,val,test}.json   (COCO-style; "images" lists the scans)

Each HDF5 file holds (all complex64)

- ``kspace`` ``(x, ky, kz, echo, coil)``: *hybrid* k-space, the readout ``kx``
  already inverse-transformed, so every ``x`` is an independent 2-D slice in the
  ``(ky, kz)`` plane; ``echo`` = 2 (qDESS), ``coil`` = 8 or 16;
- ``maps`` ``(x, ky, kz, coil, 1)``: JSENSE sensitivity maps;
- ``target`` ``(x, ky, kz, echo, 1)``: the SENSE reconstruction;

and may hold a ``masks`` group of Poisson-disc masks (unused here). The reader
yields slices ``(coil, ky, kz)``: ``kz`` (left-right) is the last axis, the one
fastMRI's 1-D masks subsample; ``ky`` plays the readout's role. The SENSE target is
the ``image``, the dataset's maps are ``sens_maps`` (usable by CG-SENSE), the
reference for training is the RSS of the k-space as for every dataset.

Splits come from the newest ``annotations/<version>/`` (or ``annotation_version``);
``subject_id`` groups scans of one subject. Options: ``echo`` (0 or 1),
``use_maps`` (default ``True``), ``annotation_version``.
"""

from __future__ import annotations

import json
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
    check_finite,
    open_h5,
    require_complex,
    require_dataset,
    require_rank,
    select_slices,
    visible_files,
)
from mrilib.data.resample import acquired_columns

__all__ = ["SkmTea", "SKMTEA_DATA_DIR", "validate_skmtea_file"]

SKMTEA_DATA_DIR = "files_recon_calib-24"


def validate_skmtea_file(path, echo: int = 0) -> dict:
    """Check one SKM-TEA raw-data file; return its shapes or raise :class:`DataFormatError`.

    Checks ranks, complex dtypes and that ``kspace`` ``(x, ky, kz, echo, coil)``,
    ``maps`` ``(x, ky, kz, coil, maps)`` and ``target`` ``(x, ky, kz, echo, maps)``
    agree in ``x, ky, kz``, coils and echoes, and that ``echo`` exists.
    """
    with open_h5(path) as f:
        ks = require_dataset(f, "kspace", path)
        require_rank(ks, 5, path, "(x, ky, kz, echo, coil)")
        require_complex(ks, path)
        x, y, z, e, c = ks.shape
        shapes = dict(kspace=ks.shape)
        for key, layout in (("maps", "(x, ky, kz, coil, maps)"), ("target", "(x, ky, kz, echo, maps)")):
            ds = require_dataset(f, key, path)
            require_rank(ds, 5, path, layout)
            require_complex(ds, path)
            if ds.shape[:3] != (x, y, z):
                raise DataFormatError(f"{path}: {key!r} spatial shape {ds.shape[:3]} != kspace {(x, y, z)}")
            shapes[key] = ds.shape
        if shapes["maps"][3] != c:
            raise DataFormatError(f"{path}: 'maps' has {shapes['maps'][3]} coils, 'kspace' has {c}")
        if shapes["target"][3] != e:
            raise DataFormatError(f"{path}: 'target' has {shapes['target'][3]} echoes, 'kspace' has {e}")
        if not 0 <= echo < e:
            raise DataFormatError(f"{path}: echo {echo} requested, the file has {e} echo(es)")
        return dict(shapes=shapes, num_slices=x, num_coils=c, num_echoes=e, plane=(y, z))


def _version_key(name: str):
    """Sort key of ``v1.0.0``-style folder names."""
    nums = re.findall(r"\d+", name)
    return tuple(int(n) for n in nums)


def _read_annotations(root: Path, version: str | None) -> dict[str, tuple[str, str]]:
    """``file_name -> (split, subject_id)`` from ``annotations/<version>/*.json`` (empty if none)."""
    ann = root / "annotations"
    if not ann.is_dir():
        return {}
    versions = sorted((d for d in ann.iterdir() if d.is_dir()), key=lambda d: _version_key(d.name))
    if version is not None:
        versions = [d for d in versions if d.name == version]
        if not versions:
            raise DataFormatError(f"{ann}: no annotation version {version!r}")
    if not versions:
        return {}
    chosen = versions[-1]
    out: dict[str, tuple[str, str]] = {}
    for split in ("train", "val", "test"):
        p = chosen / f"{split}.json"
        if not p.is_file():
            continue
        try:
            doc = json.loads(p.read_text())
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{p}: not valid JSON: {err}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
            raise DataFormatError(f"{p}: expected a COCO-style object with an 'images' list")
        for im in doc["images"]:
            if "file_name" not in im:
                raise DataFormatError(f"{p}: an 'images' entry lacks 'file_name': {im}")
            subject = im.get("subject_id", im.get("scan_id", Path(im["file_name"]).stem))
            out[im["file_name"]] = (split, str(subject))
    return out


class SkmTea(DataFormat):
    """Reader of the SKM-TEA raw-data track (see the module docstring)."""

    name = "skmtea"
    title = "SKM-TEA raw data (3 T qDESS knee, hybrid k-space, SENSE targets and maps)"
    anatomy = "knee"
    kind = "kspace"
    url = "https://github.com/StanfordMIMI/skm-tea"
    defaults = dict(echo=0, use_maps=True, annotation_version=None)

    def _raw_folder(self, root: Path) -> Path:
        d = root / SKMTEA_DATA_DIR
        return d if d.is_dir() else root

    def discover(self, root: Path) -> list[VolumeRef]:
        """One :class:`VolumeRef` per scan, split and subject from the annotation files."""
        root = Path(root)
        data = self._raw_folder(root)
        ann = _read_annotations(root, self.options["annotation_version"])
        echo = int(self.options["echo"])
        refs, unlisted = [], []
        for p in visible_files(data.glob("*.h5")):
            if ann and p.name not in ann:
                unlisted.append(p.name)
                continue
            split, subject = ann.get(p.name, (None, p.stem))
            with open_h5(p) as f:
                ks = require_dataset(f, "kspace", p)
                require_rank(ks, 5, p, "(x, ky, kz, echo, coil)")
                x, y, z, e, c = ks.shape
            refs.append(
                VolumeRef(
                    dataset=self.name,
                    files=(str(p),),
                    patient_id=subject,
                    contrast=f"qDESS-E{echo + 1}",
                    num_slices=int(x),
                    num_coils=int(c),
                    shape=(int(y), int(z)),
                    split=split,
                    info=dict(echo=echo, scan_id=p.stem),
                )
            )
        if unlisted:
            warnings.warn(f"skmtea: {len(unlisted)} file(s) not in any annotation split ignored (e.g. {unlisted[0]})", stacklevel=2)
        return refs

    def read(self, ref: VolumeRef, slices: Sequence[int] | None = None) -> Iterator[SliceSample]:
        """Yield ``(coil, ky, kz)`` slices with the SENSE target as ``image`` and the maps."""
        echo = int(self.options["echo"])
        info = validate_skmtea_file(ref.path, echo)
        n = info["num_slices"]
        idx = select_slices(slices, n, ref.path)
        with open_h5(ref.path) as f:
            ks, maps, target = f["kspace"], f["maps"], f["target"]
            acquired = acquired_columns(np.moveaxis(np.asarray(ks[n // 2, :, :, echo, :]), -1, 0))
            for i in idx:
                k = np.moveaxis(np.asarray(ks[i, :, :, echo, :]), -1, 0).astype(np.complex64)
                check_finite(k, ref.path, f"'kspace' slice x={i}")
                img = check_finite(np.asarray(target[i, :, :, echo, 0]).astype(np.complex64), ref.path, f"'target' x={i}")
                m = None
                if self.options["use_maps"]:
                    m = np.moveaxis(np.asarray(maps[i, :, :, :, 0]), -1, 0).astype(np.complex64)
                yield SliceSample(
                    kspace=k,
                    acquired=acquired,
                    image=img,
                    sens_maps=m,
                    metadata=self.slice_metadata(
                        ref,
                        i,
                        acquisition=f"SAG_QDESS_E{echo + 1}",
                        anatomy="knee",
                        echo=echo,
                        field_strength_t=3.0,
                    ),
                )
