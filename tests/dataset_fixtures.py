"""Tiny files in the exact on-disk layout of each real dataset, for tests and dry runs.

None of the real datasets can be downloaded here, so every reader is tested on
fixtures that reproduce the dataset's layout: folder and file names, dataset keys,
dimension order, dtypes (incl. MATLAB's compound complex), attributes and headers —
only the sizes are small. The images are smooth, asymmetric head-like phantoms
(asymmetric so that a transposed or flipped reader is caught), imaged through
birdcage coils; each writer returns the ground truth it used.

Command line (e.g. for an end-to-end run of the book on a fake M4RAW)::

    python tests/dataset_fixtures.py m4raw /tmp/m4raw-fixture
    make book PROFILE=smoke DATA_ROOT=/tmp/m4raw-fixture DATASET=m4raw
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage

from mrilib.data.artefacts import motion_corrupt
from mrilib.data.coils import birdcage_maps
from mrilib.data.h5layout import ismrmrd_header
from mrilib.data.resample import crop_or_pad, fft2c_np, ifft2c_np

__all__ = [
    "phantom",
    "phantom_volume",
    "write_m4raw_fixture",
    "write_fastmri_fixture",
    "write_skmtea_fixture",
    "write_cmrxrecon_fixture",
    "write_brats_fixture",
    "write_paired_fixture",
    "FIXTURE_WRITERS",
    "main",
]


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float, angle: float = 0.0) -> np.ndarray:
    """Boolean ellipse on an ``(h, w)`` grid; centre and radii as fractions of the size."""
    y, x = np.meshgrid((np.arange(h) + 0.5) / h - 0.5, (np.arange(w) + 0.5) / w - 0.5, indexing="ij")
    y, x = y - cy, x - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * x + s * y, -s * x + c * y
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def phantom(h: int, w: int, seed: int = 0, position: float = 0.5, complex_phase: bool = True) -> np.ndarray:
    """A smooth, asymmetric head-like phantom ``(h, w)`` (complex64 with a smooth phase).

    ``position`` in ``[0, 1]`` is the slice's place in the volume (the head shrinks
    toward the ends); ``seed`` varies sizes and offsets per subject. A bright spot in
    the upper-left quadrant and off-centre "ventricles" break every symmetry.
    """
    rng = np.random.default_rng(seed)
    shrink = 0.75 + 0.25 * np.sin(np.pi * np.clip(position, 0.05, 0.95))
    jit = rng.uniform(-0.02, 0.02, 4)
    img = np.zeros((h, w), np.float32)
    img[_ellipse(h, w, jit[0], jit[1], 0.40 * shrink, 0.32 * shrink, 0.1)] = 0.8  # scalp
    img[_ellipse(h, w, jit[0], jit[1], 0.34 * shrink, 0.26 * shrink, 0.1)] = 0.6  # brain
    img[_ellipse(h, w, jit[0] - 0.05, jit[1] - 0.07, 0.10 * shrink, 0.04, 0.3)] = 0.25  # ventricles
    img[_ellipse(h, w, jit[0] + 0.04, jit[1] + 0.08, 0.07 * shrink, 0.035, -0.2)] = 0.3
    img[_ellipse(h, w, jit[0] - 0.18 * shrink, jit[1] - 0.12 * shrink, 0.05, 0.05)] = 1.0  # landmark
    img = ndimage.gaussian_filter(img, sigma=max(0.8, min(h, w) / 40))
    if not complex_phase:
        return img.astype(np.complex64)
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    phase = rng.uniform(-0.6, 0.6) * x + rng.uniform(-0.6, 0.6) * y + rng.uniform(-0.3, 0.3)
    return (img * np.exp(1j * phase)).astype(np.complex64)


def phantom_volume(num_slices: int, h: int, w: int, seed: int = 0, complex_phase: bool = True) -> np.ndarray:
    """``num_slices`` phantom slices ``(S, h, w)`` of one subject."""
    pos = (np.arange(num_slices) + 0.5) / num_slices
    return np.stack([phantom(h, w, seed, p, complex_phase) for p in pos])


def _noise(shape, sigma: float, rng) -> np.ndarray:
    """Complex Gaussian noise of sd ``sigma`` (``sigma/√2`` per part)."""
    if sigma <= 0:
        return np.zeros(shape, np.complex64)
    return ((rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * sigma / np.sqrt(2)).astype(np.complex64)


def _rss(coil_images: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(np.abs(coil_images) ** 2, axis=-3)).astype(np.float32)


# ----------------------------------------------------------------------------- M4RAW


def write_m4raw_fixture(
    root: str | os.PathLike,
    studies: dict[str, int] | None = None,
    contrasts: tuple[tuple[str, int], ...] = (("T1", 2), ("T2", 2), ("FLAIR", 1)),
    num_slices: int = 6,
    num_coils: int = 4,
    matrix: int = 48,
    pad_columns: int = 4,
    noise: float = 0.01,
    pe_axis: int = -1,
    seed: int = 0,
) -> dict:
    """M4RAW layout: ``multicoil_{train,val,…}/<study>_<T1|T2|FLAIR><rep>.h5``.

    Each file: ``kspace`` complex64 ``(num_slices, num_coils, matrix, matrix)`` with
    ``pad_columns`` all-zero phase-encode columns on each side (not acquired; the
    header's ``kspace_encoding_step_1`` limits say so), ``reconstruction_rss``,
    ``ismrmrd_header`` (0.3 T), attributes ``acquisition``/``max``/``patient_id``
    and no ``norm``. Repetitions share the image and differ in noise. ``pe_axis=-2``
    stores phase encode on the rows (to test the reader's orientation check).
    Default ``studies``: 8 in ``multicoil_train``, 2 in ``multicoil_val`` (no test
    folder, as in the real release: ``test`` and ``final`` are carved from the training
    studies, 2 each at the ``smoke`` profile, leaving 4 to train on).

    Returns ``{"root", "files": {path: {"image", "maps", "acquired", "study", "contrast", "rep"}}}``
    with ``image`` ``(S, H, W)`` and ``maps`` in fastMRI orientation (phase encode last).
    """
    root = Path(root)
    studies = studies or {"train": 8, "val": 2}
    out = {"root": root, "files": {}}
    lo, hi = pad_columns, matrix - pad_columns
    k = 0
    for split, n in studies.items():
        folder = root / f"multicoil_{split}"
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            study = f"{2022061000 + k:d}"
            k += 1
            maps = birdcage_maps(num_coils, matrix, rotation=0.3 * k)
            for ci, (con, reps) in enumerate(contrasts):
                image = phantom_volume(num_slices, matrix, matrix, seed=seed * 1000 + k * 10 + ci)
                clean = fft2c_np(maps[None] * image[:, None])
                for rep in range(1, reps + 1):
                    rng = np.random.default_rng([seed, k, ci, rep])
                    ks = (clean + _noise(clean.shape, noise, rng)).astype(np.complex64)
                    ks[..., :lo] = 0
                    ks[..., hi:] = 0
                    rss = _rss(ifft2c_np(ks))
                    stored = np.swapaxes(ks, -1, -2).copy() if pe_axis == -2 else ks
                    path = folder / f"{study}_{con}{rep:02d}.h5"
                    with h5py.File(path, "w") as f:
                        f.create_dataset("kspace", data=stored)
                        f.create_dataset("reconstruction_rss", data=np.swapaxes(rss, -1, -2) if pe_axis == -2 else rss)
                        f.create_dataset(
                            "ismrmrd_header",
                            data=ismrmrd_header((matrix, matrix), (matrix, matrix), (240.0, 240.0),
                                                pe_limits=(0, hi - lo - 1, matrix // 2 - lo), num_coils=num_coils,
                                                field_strength_t=0.3),
                        )
                        f.attrs["acquisition"] = f"AX{con}"
                        f.attrs["max"] = float(rss.max())
                        f.attrs["patient_id"] = hashlib.md5(study.encode()).hexdigest()
                    out["files"][str(path)] = dict(image=image, maps=maps, acquired=(lo, hi), study=study,
                                                   contrast=con, rep=rep, split=split)
    return out


# ----------------------------------------------------------------------------- fastMRI


def write_fastmri_fixture(
    root: str | os.PathLike,
    anatomy: str = "brain",
    splits: dict[str, int] | None = None,
    num_slices: int = 4,
    num_coils: int = 4,
    recon: int = 32,
    width: int = 40,
    pad_columns: int = 3,
    with_test_file: bool = True,
    seed: int = 0,
) -> dict:
    """fastMRI layout: ``multicoil_{train,val}/file_brain_AXT2_…h5`` (or knee ``file1000000.h5``).

    ``kspace`` ``(S, C, 2·recon, width)`` (2× oversampled readout; zero columns
    outside the header's phase-encode limits), ``reconstruction_rss``
    ``(S, recon, recon)`` (centre crop), ``ismrmrd_header`` (encoded ``2·recon × width``,
    recon ``recon × recon``), attributes ``acquisition``, ``max``, ``norm``,
    ``patient_id``. ``with_test_file`` adds an undersampled ``multicoil_test`` file
    (``mask``, no target) that readers must skip. Default ``splits``: 4 train and 1 val
    subjects, so that a run carves one ``test`` and one ``final`` subject and keeps 2 to train.

    Returns ``{"root", "files": {path: {"image" (S, recon, width) = the object, "maps", …}}}``.
    """
    root = Path(root)
    splits = splits or {"train": 4, "val": 1}
    out = {"root": root, "files": {}}
    h2 = 2 * recon
    lo, hi = pad_columns, width - pad_columns
    contrasts = ["T2", "FLAIR", "T1"] if anatomy == "brain" else ["CORPD_FBK", "CORPDFS_FBK"]
    k = 0
    for split, n in list(splits.items()) + ([("test", 1)] if with_test_file else []):
        folder = root / f"multicoil_{split}"
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            con = contrasts[k % len(contrasts)]
            acq = f"AX{con}" if anatomy == "brain" else con
            name = f"file_brain_{acq}_{200 + k}_{2000000 + k}.h5" if anatomy == "brain" else f"file{1000000 + k}.h5"
            obj = phantom_volume(num_slices, recon, width, seed=seed * 1000 + k)
            full = crop_or_pad(obj, (h2, width))  # object in the central half of the readout FOV
            maps = birdcage_maps(num_coils, (h2, width), rotation=0.2 * k)
            ks = fft2c_np(maps[None] * full[:, None]).astype(np.complex64)
            ks[..., :lo] = 0
            ks[..., hi:] = 0
            rss = crop_or_pad(_rss(ifft2c_np(ks)), (recon, recon))
            path = folder / name
            hdr = ismrmrd_header((h2, width), (recon, recon), (2 * 220.0, 220.0 * width / recon),
                                 pe_limits=(0, hi - lo - 1, width // 2 - lo), num_coils=num_coils, field_strength_t=3.0)
            with h5py.File(path, "w") as f:
                if split == "test":
                    mask = np.zeros(width, bool)
                    mask[::4] = True
                    mask[width // 2 - 2 : width // 2 + 2] = True
                    f.create_dataset("kspace", data=ks * mask)
                    f.create_dataset("mask", data=mask)
                else:
                    f.create_dataset("kspace", data=ks)
                    f.create_dataset("reconstruction_rss", data=rss)
                f.create_dataset("ismrmrd_header", data=hdr)
                f.attrs["acquisition"] = acq
                f.attrs["max"] = float(rss.max())
                f.attrs["norm"] = float(np.linalg.norm(rss))
                f.attrs["patient_id"] = hashlib.sha1(f"{anatomy}{k}".encode()).hexdigest()
            out["files"][str(path)] = dict(image=obj, maps=maps, acquired=(lo, hi), split=split, acquisition=acq)
            k += 1
    return out


# ----------------------------------------------------------------------------- SKM-TEA


def write_skmtea_fixture(
    root: str | os.PathLike,
    splits: dict[str, int] | None = None,
    shape: tuple[int, int, int] = (6, 32, 24),
    num_coils: int = 4,
    num_echoes: int = 2,
    version: str = "v1.0.0",
    seed: int = 0,
) -> dict:
    """SKM-TEA raw-data layout: ``files_recon_calib-24/MTR_###.h5`` + ``annotations/<version>/*.json``.

    Each file: complex64 ``kspace`` ``(x, ky, kz, echo, coil)`` (hybrid: FFT over
    ``ky, kz`` only), ``maps`` ``(x, ky, kz, coil, 1)``, ``target``
    ``(x, ky, kz, echo, 1)`` with ``kspace = F_yz(maps · target)`` exactly, and a
    ``masks`` group of Poisson-like masks. Subject ids repeat across two scans of
    the first subject (two time points), as in the real annotations. Default ``splits``:
    3 train scans (2 subjects), 1 val, 2 test (one stays ``test``, one goes to ``final``).

    Returns ``{"root", "files": {path: {"target" (x, ky, kz, echo), "maps" (x, coil, ky, kz), …}}}``.
    """
    root = Path(root)
    splits = splits or {"train": 3, "val": 1, "test": 2}
    data = root / "files_recon_calib-24"
    data.mkdir(parents=True, exist_ok=True)
    ann = root / "annotations" / version
    ann.mkdir(parents=True, exist_ok=True)
    x, y, z = shape
    out = {"root": root, "files": {}}
    k = 0
    for split, n in splits.items():
        images = []
        for _ in range(n):
            scan = f"MTR_{k + 1:03d}"
            subject = 100 + (k if k > 1 else 0)  # scans 0 and 1: one subject, two time points
            maps2 = birdcage_maps(num_coils, (y, z), rotation=0.4 * k)
            maps = np.broadcast_to(maps2, (x, num_coils, y, z)).copy()
            target = np.stack(
                [phantom_volume(x, y, z, seed=seed * 1000 + 10 * k + e) * (1.0 - 0.4 * e) for e in range(num_echoes)],
                axis=-1,
            )  # (x, y, z, e)
            ks = fft2c_np(maps[:, None] * np.moveaxis(target, -1, 1)[:, :, None])  # (x, e, c, y, z)
            path = data / f"{scan}.h5"
            with h5py.File(path, "w") as f:
                f.create_dataset("kspace", data=np.transpose(ks, (0, 3, 4, 1, 2)).astype(np.complex64))
                f.create_dataset("maps", data=np.transpose(maps, (0, 2, 3, 1))[..., None].astype(np.complex64))
                f.create_dataset("target", data=target[..., None].astype(np.complex64))
                g = f.create_group("masks")
                rng = np.random.default_rng([seed, k])
                for acc in (4.0, 8.0):
                    g.create_dataset(f"poisson_{acc}x", data=rng.random((y - 4, z - 4)) < 1 / acc)
            images.append(dict(id=k + 1, file_name=path.name, msp_id=f"{k:07d}_V00", scan_id=scan,
                               subject_id=subject, timepoint=0 if k != 1 else 1,
                               voxel_spacing=[0.3125, 0.3125, 0.8], matrix_shape=[x, y, z],
                               orientation=["SI", "AP", "LR"], num_echoes=num_echoes, inspected=True))
            out["files"][str(path)] = dict(target=target, maps=maps, split=split, subject=str(subject))
            k += 1
        doc = dict(info=dict(description=f"SKM-TEA fixture - {split}", version=version), categories=[],
                   images=images, annotations=[])
        (ann / f"{split}.json").write_text(json.dumps(doc, indent=1))
    return out


# ----------------------------------------------------------------------------- CMRxRecon

_MAT_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."


def _write_mat73(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 file: HDF5 with a 512-byte user block (MATLAB header), complex as compound ``real``/``imag``.

    ``arrays`` are given in MATLAB order and stored reversed, as MATLAB does.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as f:
        for key, arr in arrays.items():
            a = np.asarray(arr).transpose()  # MATLAB column-major -> h5py sees reversed dims
            if np.iscomplexobj(a):
                comp = np.empty(a.shape, dtype=[("real", "<f4"), ("imag", "<f4")])
                comp["real"], comp["imag"] = a.real, a.imag
                ds = f.create_dataset(key, data=comp)
                ds.attrs["MATLAB_class"] = np.bytes_("single")
            else:
                ds = f.create_dataset(key, data=a)
                ds.attrs["MATLAB_class"] = np.bytes_("double" if a.dtype.kind == "f" else "logical")
    head = _MAT_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as fh:
        fh.write(head)


def write_cmrxrecon_fixture(
    root: str | os.PathLike,
    patients: int = 5,
    kinds: tuple[str, ...] = ("cine_sax", "T1map"),
    frames: int = 3,
    slices: int = 2,
    num_coils: int = 4,
    kx: int = 48,
    ky: int = 20,
    with_undersampled: bool = True,
    seed: int = 0,
) -> dict:
    """CMRxRecon layout: ``MultiCoil/{Cine,Mapping}/TrainingSet/FullSample/P###/<kind>.mat``.

    ``kspace_full`` in MATLAB order ``(kx, ky, coil, slice, time)`` (h5py reads
    ``(time, slice, coil, ky, kx)``), compound ``real``/``imag`` single precision,
    MATLAB v7.3 user block; the readout ``kx`` is 2× oversampled (the object fills
    the central half). ``with_undersampled`` adds ``AccFactor04`` folders with
    ``kspace_sub04`` and ``<kind>_mask.mat`` (``mask04``), which readers ignore. The
    default 5 patients give a ``smoke`` run 2 to train on and one each for val, test, final.

    Returns ``{"root", "files": {path: {"image" (time, slice, kx, ky), "maps" (coil, kx, ky), …}}}``.
    """
    root = Path(root)
    out = {"root": root, "files": {}}
    for pi in range(1, patients + 1):
        maps = birdcage_maps(num_coils, (kx, ky), rotation=0.5 * pi)
        for kind in kinds:
            modality = "Cine" if kind.startswith("cine") else "Mapping"
            base = root / "MultiCoil" / modality / "TrainingSet"
            obj = np.stack(
                [phantom_volume(slices, kx // 2, ky, seed=seed * 1000 + pi * 10 + t) * (1 + 0.1 * t) for t in range(frames)]
            )  # (t, z, kx/2, ky)
            image = crop_or_pad(obj, (kx, ky))
            ks = fft2c_np(maps[None, None] * image[:, :, None])  # (t, z, c, kx, ky)
            matlab = np.transpose(ks, (3, 4, 2, 1, 0))  # (kx, ky, c, z, t)
            path = base / "FullSample" / f"P{pi:03d}" / f"{kind}.mat"
            _write_mat73(path, {"kspace_full": matlab})
            if kind == "T1map":
                (path.parent / "T1map.csv").write_text("TI\n" + "\n".join(str(100 + 80 * t) for t in range(frames)))
            if with_undersampled:
                mask = np.zeros((kx, ky), np.float64)
                mask[:, ::4] = 1
                mask[:, ky // 2 - 2 : ky // 2 + 2] = 1
                sub = base / "AccFactor04" / f"P{pi:03d}"
                _write_mat73(sub / f"{kind}.mat", {"kspace_sub04": matlab * mask[:, :, None, None, None]})
                _write_mat73(sub / f"{kind}_mask.mat", {"mask04": mask})
            out["files"][str(path)] = dict(image=image, maps=maps, patient=f"P{pi:03d}", kind=kind)
    return out


# ----------------------------------------------------------------------------- BraTS


def write_brats_fixture(
    root: str | os.PathLike,
    subjects: int = 5,
    naming: str = "2020",
    shape: tuple[int, int, int] = (40, 40, 12),
    lps: bool = True,
    missing_seg: int = 0,
    seed: int = 0,
) -> dict:
    """BraTS layout: one folder per subject with ``t1, t1ce, t2, flair, seg`` NIfTI (``.nii.gz``).

    ``naming="2020"``: ``MICCAI_BraTS2020_TrainingData/BraTS20_Training_###/…_t1ce.nii.gz``,
    labels 0/1/2/4; ``naming="2023"``: ``…/BraTS-GLI-#####-000/…-t1c.nii.gz`` (``t1n,
    t1c, t2w, t2f``), labels 0/1/2/3. Images int16, ``seg`` uint8, 1 mm voxels; the
    affine is LPS-like (``diag(-1, -1, 1)``) when ``lps`` (readers must reorient).
    A spherical tumour: necrotic core, enhancing rim, oedema. ``missing_seg`` extra
    subjects have no ``seg`` (validation-set style). The default 5 subjects give a ``smoke``
    run 2 to train on and one each for val, test and final.

    Returns ``{"root", "subjects": {id: {"volumes": {mod: array}, "seg": array, "affine"}}}``
    with arrays as stored.
    """
    import nibabel as nib

    root = Path(root)
    top = root / ("MICCAI_BraTS2020_TrainingData" if naming == "2020" else "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData")
    mods = ("t1", "t1ce", "t2", "flair") if naming == "2020" else ("t1n", "t1c", "t2w", "t2f")
    enh = 4 if naming == "2020" else 3
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) if lps else np.eye(4)
    out = {"root": root, "subjects": {}}
    nx, ny, nz = shape
    for i in range(subjects + missing_seg):
        sid = f"BraTS20_Training_{i + 1:03d}" if naming == "2020" else f"BraTS-GLI-{i:05d}-000"
        sep = "_" if naming == "2020" else "-"
        folder = top / sid
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, i])
        head = np.stack([np.abs(phantom(nx, ny, seed * 100 + i, (z + 0.5) / nz, complex_phase=False)) for z in range(nz)], -1)
        brain = head > 0.05
        c = np.array([nx * rng.uniform(0.35, 0.6), ny * rng.uniform(0.35, 0.6), nz / 2])
        xx, yy, zz = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
        r = np.sqrt((xx - c[0]) ** 2 + (yy - c[1]) ** 2 + ((zz - c[2]) * 2.5) ** 2)
        seg = np.zeros(shape, np.uint8)
        seg[(r < 7) & brain] = 2
        seg[(r < 5) & brain] = enh
        seg[(r < 3) & brain] = 1
        vols = {}
        for j, mod in enumerate(mods):
            tumour_gain = {0: 0.8, 1: 1.6, 2: 1.4, 3: 1.5}[j]
            v = head * (1.0 + 0.2 * j) * (1 + (tumour_gain - 1) * (seg > 0))
            vols[mod] = np.round(v / v.max() * 900).astype(np.int16) * brain
            nib.save(nib.Nifti1Image(vols[mod], affine), folder / f"{sid}{sep}{mod}.nii.gz")
        if i < subjects:
            nib.save(nib.Nifti1Image(seg, affine), folder / f"{sid}{sep}seg.nii.gz")
        out["subjects"][sid] = dict(volumes=vols, seg=seg if i < subjects else None, affine=affine)
    return out


# ----------------------------------------------------------------------------- paired


def write_paired_fixture(
    root: str | os.PathLike,
    files: int = 5,
    size: int = 32,
    suffix: str = ".npy",
    slices: int = 2,
    with_mask: bool = True,
    splits: bool = False,
    seed: int = 0,
) -> dict:
    """Paired layout: ``clean/<name><suffix>``, ``corrupted/<name><suffix>``, optional ``mask/``.

    ``corrupted`` is the clean phantom with simulated rigid motion (single coil,
    magnitude); ``mask`` marks where they differ most. ``suffix`` ``.npy`` stores
    ``(slices, H, W)``; ``.png`` one 8-bit slice per file. ``splits`` puts the files
    under ``train/``, ``val/``, ``test/`` (2/1/1 for 4 files). Without ``splits``, the
    default 5 files give a ``smoke`` run 2 to train on and one each for val, test and final.

    Returns ``{"root", "pairs": {path_of_clean: (clean, corrupted)}}`` as stored.
    """
    root = Path(root)
    out = {"root": root, "pairs": {}}
    for i in range(files):
        split = ("train", "train", "val", "test")[i % 4] if splits else None
        base = root / split if split else root
        n = slices if suffix == ".npy" else 1
        clean = np.abs(phantom_volume(n, size, size, seed=seed * 100 + i, complex_phase=False)).astype(np.float32)
        cor = np.stack([
            np.abs(ifft2c_np(motion_corrupt(fft2c_np(c.astype(np.complex64)), seed=seed * 100 + i, fraction=0.3,
                                            max_shift=2.0, max_angle=0.0, mode="random")))
            for c in clean
        ]).astype(np.float32)
        diff = np.abs(cor - clean)
        mask = (diff > 0.5 * diff.max()).astype(np.uint8)
        name = f"case{i:03d}{suffix}"
        for sub, arr in (("clean", clean), ("corrupted", cor), ("mask", mask)):
            if sub == "mask" and not with_mask:
                continue
            d = base / sub
            d.mkdir(parents=True, exist_ok=True)
            if suffix == ".npy":
                np.save(d / name, arr)
            else:
                from PIL import Image

                a = arr[0]
                a8 = (a * 255).clip(0, 255).astype(np.uint8) if sub != "mask" else (a * 255).astype(np.uint8)
                Image.fromarray(a8).save(d / name)
        out["pairs"][str(base / "clean" / name)] = (clean, cor)
    return out


FIXTURE_WRITERS = {
    "m4raw": write_m4raw_fixture,
    "fastmri": write_fastmri_fixture,
    "skmtea": write_skmtea_fixture,
    "cmrxrecon": write_cmrxrecon_fixture,
    "brats": write_brats_fixture,
    "paired": write_paired_fixture,
}


def main(argv=None) -> int:
    """``python tests/dataset_fixtures.py <dataset> <dir>``: write a fixture dataset to ``dir``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", choices=sorted(FIXTURE_WRITERS))
    ap.add_argument("root", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    FIXTURE_WRITERS[args.dataset](args.root, seed=args.seed)
    print(f"wrote a {args.dataset} fixture to {args.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
