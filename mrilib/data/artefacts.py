"""Motion and metal artefacts: a robustness axis simulated in k-space, and paired data.

The seed's "ExBox" data (real motion and metal artefacts) has no public release, so
the book simulates both artefacts where they arise, in multi-coil k-space, and reads
paired clean/corrupted images from a simple folder layout for users who have them.

**Rigid motion** (:func:`motion_corrupt`). A Cartesian scan acquires one
phase-encode line (a column of ``(C, H, W)`` k-space, ``H`` readout, ``W`` phase
encode) per repetition; if the head moved while a line was acquired, that line holds
the k-space of the *moved* object. A translation by ``(dy, dx)`` pixels multiplies
k-space by the linear phase ramp ``exp(-2πi[(r − H//2)·dy/H + (c − W//2)·dx/W])``
(the shift theorem for the centred FFT); a rotation rotates the object. Given only
multi-coil k-space, the coil images move with the object (exact for translations of
coil k-space, an approximation of static coils for rotations); given ``image`` and
``maps``, the object moves under static coils. :func:`sample_motion` draws seeded
motion: ``"step"`` (the subject moves once; every later line is displaced) or
``"random"`` (a random subset of lines, each with its own displacement: ghosting).

**Metal susceptibility** (:func:`metal_corrupt`). A small metal sphere of radius
``R`` and susceptibility difference ``Δχ`` perturbs the field outside it as a
dipole: ``Δf = γ̄·B0·Δχ/3·(R/r)³·(3cos²θ − 1)`` (θ to B0; in an axial slice with
B0 through-plane, ``3cos²θ − 1 = −1``). The simulation gives (i) a signal void
inside the sphere, (ii) the off-resonance phase ``2π·Δf·TE`` with intravoxel
dephasing (voxel-averaged: ``sinc`` of the phase gradient), and (iii) the geometric
distortion along the readout, each voxel displaced by ``Δf / bandwidth-per-pixel``
pixels (pile-up and further voids). All seeded.

**Paired data** (:class:`PairedImageDataset`). Folder layout::

    <root>/clean/<name>.npy|.png|.nii.gz|.nii       the artefact-free image
    <root>/corrupted/<name>.<same extension>        the same slice(s) with the artefact
    <root>/mask/<name>.<same extension>             optional: where the artefact is (non-zero)
    (or <root>/{train,val,test}/{clean,corrupted,mask}/ with the dataset's own split)

``.npy`` holds ``(H, W)`` or ``(slices, H, W)`` (real or complex), ``.png`` one
grayscale slice, NIfTI a 2-D slice or a 3-D volume (axial slices, RAS+). Through
``open_dataset("paired", root, …)`` each pair becomes a run slice whose input
k-space is simulated from the *corrupted* image and whose target is the *clean* one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from scipy import ndimage

from mrilib.data.h5layout import DataFormatError
from mrilib.data.resample import fft2c_np, ifft2c_np

__all__ = [
    "GAMMA_BAR_HZ_PER_T",
    "MotionParams",
    "sample_motion",
    "translation_ramp",
    "motion_corrupt",
    "metal_field_hz",
    "metal_corrupt",
    "PAIRED_SUFFIXES",
    "PairedSample",
    "PairedImageDataset",
    "load_image_file",
]

#: proton gyromagnetic ratio / 2π
GAMMA_BAR_HZ_PER_T = 42.577478e6


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


# ----------------------------------------------------------------------------- motion


@dataclass(frozen=True)
class MotionParams:
    """Which phase-encode lines were acquired with the object displaced, and how.

    Attributes:
        lines: ``(L,)`` phase-encode column indices.
        shifts: ``(L, 2)`` translation per line in pixels, ``(rows = readout, columns = phase encode)``.
        angles: ``(L,)`` in-plane rotation per line in degrees (``scipy.ndimage.rotate``'s sense).
    """

    lines: np.ndarray
    shifts: np.ndarray
    angles: np.ndarray

    def __post_init__(self):
        lines = np.asarray(self.lines, dtype=int).reshape(-1)
        shifts = np.asarray(self.shifts, dtype=float).reshape(len(lines), 2)
        angles = np.asarray(self.angles, dtype=float).reshape(len(lines))
        object.__setattr__(self, "lines", lines)
        object.__setattr__(self, "shifts", shifts)
        object.__setattr__(self, "angles", angles)

    @classmethod
    def none(cls) -> "MotionParams":
        """No motion at all."""
        return cls(np.zeros(0, int), np.zeros((0, 2)), np.zeros(0))


def sample_motion(
    num_lines: int,
    *,
    fraction: float = 0.3,
    max_shift: float = 2.0,
    max_angle: float = 2.0,
    mode: str = "step",
    protect_center: float = 0.0,
    seed=0,
) -> MotionParams:
    """Draw seeded rigid motion for a scan of ``num_lines`` phase-encode lines.

    Args:
        num_lines: phase-encode lines ``W`` (acquired in order ``0 … W-1``).
        fraction: fraction of the lines acquired while displaced.
        max_shift: largest translation per axis, pixels (uniform in ``±max_shift``).
        max_angle: largest rotation, degrees (uniform in ``±max_angle``; 0 = translations only).
        mode: ``"step"``: the subject moves once, the last ``fraction`` of the lines
            share one displacement; ``"random"``: that many random lines, each with its
            own displacement.
        protect_center: fraction of central lines never affected (e.g. calibration lines).
        seed: int or ``numpy.random.Generator``.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if mode not in ("step", "random"):
        raise ValueError(f"mode must be 'step' or 'random', got {mode!r}")
    rng = _rng(seed)
    half = int(round(protect_center * num_lines / 2))
    protected = set(range(num_lines // 2 - half, num_lines // 2 + half)) if half else set()
    candidates = np.array([i for i in range(num_lines) if i not in protected], dtype=int)
    n = int(round(fraction * num_lines))
    n = min(n, len(candidates))
    if n == 0:
        return MotionParams.none()
    if mode == "step":
        lines = candidates[-n:]
        shift = rng.uniform(-max_shift, max_shift, 2)
        angle = rng.uniform(-max_angle, max_angle) if max_angle > 0 else 0.0
        return MotionParams(lines, np.tile(shift, (n, 1)), np.full(n, angle))
    lines = np.sort(rng.choice(candidates, size=n, replace=False))
    shifts = rng.uniform(-max_shift, max_shift, (n, 2))
    angles = rng.uniform(-max_angle, max_angle, n) if max_angle > 0 else np.zeros(n)
    return MotionParams(lines, shifts, angles)


def translation_ramp(shape: tuple[int, int], shift: tuple[float, float]) -> np.ndarray:
    """The k-space phase ramp ``(H, W)`` of a translation by ``shift = (dy, dx)`` pixels (centred FFT)."""
    h, w = shape
    r = (np.arange(h) - h // 2)[:, None]
    c = (np.arange(w) - w // 2)[None, :]
    dy, dx = shift
    return np.exp(-2j * np.pi * (r * dy / h + c * dx / w)).astype(np.complex64)


def _rotate_complex(x: np.ndarray, angle: float) -> np.ndarray:
    """Rotate the last two axes of a complex array by ``angle`` degrees about the centre."""
    if angle == 0:
        return x
    axes = (x.ndim - 1, x.ndim - 2)
    rot = lambda a: ndimage.rotate(a, angle, axes=axes, reshape=False, order=1, mode="constant")  # noqa: E731
    return (rot(x.real) + 1j * rot(x.imag)).astype(np.complex64)


def motion_corrupt(
    kspace: np.ndarray | None = None,
    *,
    image: np.ndarray | None = None,
    maps: np.ndarray | None = None,
    params: MotionParams | None = None,
    seed=0,
    **sample_kwargs,
) -> np.ndarray:
    """Rigid-motion-corrupted multi-coil k-space.

    Give either ``kspace`` ``(C, H, W)`` (or ``(H, W)``) — the coil images move with
    the object — or ``image`` ``(H, W)`` and ``maps`` ``(C, H, W)`` — the object moves
    under static coils. Only the lines in ``params.lines`` change: each holds the
    k-space of the object rotated by its angle, then translated by its shift (a
    linear phase ramp). ``params=None`` draws them with :func:`sample_motion`
    (``seed`` and ``sample_kwargs``). Returns complex64 ``(C, H, W)`` (or ``(H, W)``).
    """
    if kspace is None:
        if image is None or maps is None:
            raise ValueError("motion_corrupt needs kspace, or image and maps")
        image = np.asarray(image, dtype=np.complex64)
        maps = np.asarray(maps, dtype=np.complex64)
        clean = fft2c_np(maps * image).astype(np.complex64)
    else:
        clean = np.asarray(kspace, dtype=np.complex64)
    h, w = clean.shape[-2:]
    if params is None:
        params = sample_motion(w, seed=seed, **sample_kwargs)
    if np.any((params.lines < 0) | (params.lines >= w)):
        raise ValueError(f"motion lines outside 0..{w - 1}: {params.lines}")
    out = clean.copy()
    states: dict[tuple[float, float, float], list[int]] = {}
    for line, (dy, dx), ang in zip(params.lines, params.shifts, params.angles):
        states.setdefault((float(dy), float(dx), float(ang)), []).append(int(line))
    coil_images = None
    for (dy, dx, ang), lines in states.items():
        ramp = translation_ramp((h, w), (dy, dx))[:, lines]
        if kspace is None:
            moved = _rotate_complex(image, ang)
            moved = ifft2c_np(fft2c_np(moved) * translation_ramp((h, w), (dy, dx)))
            out[..., :, lines] = fft2c_np(maps * moved)[..., :, lines]
        elif ang == 0:
            out[..., :, lines] = clean[..., :, lines] * ramp
        else:
            if coil_images is None:
                coil_images = ifft2c_np(clean)
            out[..., :, lines] = fft2c_np(_rotate_complex(coil_images, ang))[..., :, lines] * ramp
    return out.astype(np.complex64)


# ----------------------------------------------------------------------------- metal


def metal_field_hz(
    shape: tuple[int, int],
    center: tuple[float, float],
    radius: float,
    *,
    delta_chi_ppm: float = 200.0,
    b0_t: float = 1.5,
    b0_in_plane: bool = False,
) -> np.ndarray:
    """Off-resonance (Hz) around a metal sphere in the slice through its centre; 0 inside.

    ``Δf = γ̄·B0·Δχ/3·(R/r)³·(3cos²θ − 1)`` with θ the angle to B0: B0 through-plane
    (axial slice, default) gives ``3cos²θ − 1 = −1``; ``b0_in_plane`` puts B0 along
    the rows (readout) axis.
    """
    h, w = shape
    y, x = np.meshgrid(np.arange(h) - center[0], np.arange(w) - center[1], indexing="ij")
    r = np.hypot(y, x)
    outside = r > radius
    rs = np.where(outside, r, 1.0)
    geom = 3 * (y / rs) ** 2 - 1 if b0_in_plane else -np.ones_like(r)
    f = GAMMA_BAR_HZ_PER_T * b0_t * delta_chi_ppm * 1e-6 / 3 * (radius / rs) ** 3 * geom
    return np.where(outside, f, 0.0).astype(np.float64)


def _splat_rows(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Move each pixel of ``x`` (``(..., H, W)``) along the rows by ``shift`` (H, W), linear splatting."""
    h, w = shift.shape
    rows = np.arange(h)[:, None] + shift
    r0 = np.floor(rows).astype(int)
    w1 = (rows - r0).astype(np.float32)
    cols = np.broadcast_to(np.arange(w)[None, :], (h, w))
    flat = x.reshape(-1, h * w)
    out = np.zeros_like(flat)
    for rr, ww in ((r0, 1 - w1), (r0 + 1, w1)):
        ok = (rr >= 0) & (rr < h)
        tgt = (rr * w + cols)[ok]
        for i in range(flat.shape[0]):
            np.add.at(out[i], tgt, flat[i][ok.reshape(-1)] * ww[ok])
    return out.reshape(x.shape)


def metal_corrupt(
    kspace: np.ndarray | None = None,
    *,
    image: np.ndarray | None = None,
    maps: np.ndarray | None = None,
    center: tuple[float, float] | None = None,
    radius: float = 2.0,
    delta_chi_ppm: float = 200.0,
    b0_t: float = 1.5,
    te_ms: float = 4.0,
    bandwidth_hz_per_px: float = 250.0,
    b0_in_plane: bool = False,
    seed=0,
    return_void: bool = False,
):
    """Metal-susceptibility-corrupted multi-coil k-space (signal void, dephasing, readout distortion).

    Args:
        kspace: multi-coil k-space ``(C, H, W)`` (or ``(H, W)``); the artefact is applied
            to each coil image. Alternatively ``image`` ``(H, W)`` + ``maps`` ``(C, H, W)``.
        center: metal centre ``(row, col)`` in pixels; ``None`` draws one (seeded)
            inside the object, at least ``radius + 1`` pixels from the edges.
        radius: sphere radius in pixels (the signal void).
        delta_chi_ppm: susceptibility difference (titanium ≈ 180, stainless steel ≫ 1000).
        b0_t: main field in tesla.
        te_ms: echo time (dephasing); 0 for a spin echo.
        bandwidth_hz_per_px: readout bandwidth per pixel (distortion = Δf / this).
        b0_in_plane: B0 along the rows instead of through-plane.
        seed: int or ``numpy.random.Generator`` (only used when ``center`` is ``None``).
        return_void: also return the boolean void mask ``(H, W)``.

    Returns:
        complex64 k-space like the input (and the void mask if asked).
    """
    if kspace is None:
        if image is None or maps is None:
            raise ValueError("metal_corrupt needs kspace, or image and maps")
        objs = np.asarray(image, dtype=np.complex64)[None]
        ref = np.abs(objs[0])
    else:
        objs = ifft2c_np(np.asarray(kspace, dtype=np.complex64))
        ref = np.sqrt(np.sum(np.abs(objs.reshape(-1, *objs.shape[-2:])) ** 2, axis=0))
    h, w = objs.shape[-2:]
    if center is None:
        rng = _rng(seed)
        m = int(np.ceil(radius)) + 1
        inner = np.zeros((h, w), bool)
        inner[m : h - m, m : w - m] = True
        cand = np.argwhere(inner & (ref > 0.3 * ref.max()))
        if len(cand) == 0:
            cand = np.argwhere(inner)
        center = tuple(float(v) for v in cand[rng.integers(len(cand))])
    f = metal_field_hz((h, w), center, radius, delta_chi_ppm=delta_chi_ppm, b0_t=b0_t, b0_in_plane=b0_in_plane)
    y, x = np.meshgrid(np.arange(h) - center[0], np.arange(w) - center[1], indexing="ij")
    void = np.hypot(y, x) <= radius
    phi = 2 * np.pi * f * te_ms * 1e-3
    gy, gx = np.gradient(phi)
    atten = np.abs(np.sinc(gy / (2 * np.pi)) * np.sinc(gx / (2 * np.pi)))
    objs = objs * (atten * np.exp(1j * phi) * ~void).astype(np.complex64)
    objs = _splat_rows(objs, f / bandwidth_hz_per_px)
    if kspace is None:
        out = fft2c_np(np.asarray(maps, dtype=np.complex64) * objs[0])
    else:
        out = fft2c_np(objs)
    out = out.astype(np.complex64)
    return (out, void) if return_void else out


# ----------------------------------------------------------------------------- paired data

PAIRED_SUFFIXES = (".npy", ".png", ".nii.gz", ".nii")


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in PAIRED_SUFFIXES if name.endswith(s)), None)


def _stem(path: Path) -> str:
    s = _suffix(path)
    return path.name[: -len(s)] if s else path.stem


def load_image_file(path: str | os.PathLike) -> np.ndarray:
    """An image file as ``(slices, H, W)``: ``.npy`` (real/complex), ``.png`` (grayscale), NIfTI (axial, RAS+).

    Raises :class:`DataFormatError` naming the file for an unreadable file, an
    unsupported suffix or a rank other than 2 or 3.
    """
    path = Path(path)
    suffix = _suffix(path)
    try:
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
            if data.ndim == 2:
                data = data[None]
        elif suffix == ".png":
            from PIL import Image

            with Image.open(path) as im:
                if im.mode in ("I;16", "I;16B", "I"):
                    data = np.asarray(im, dtype=np.float32) / (65535.0 if im.mode.startswith("I;16") else 1.0)
                else:
                    data = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
            data = data[None]
        elif suffix in (".nii", ".nii.gz"):
            import nibabel as nib

            img = nib.load(str(path))
            data = np.asarray(img.dataobj, dtype=np.float32)
            if data.ndim == 3:
                data = np.asarray(nib.as_closest_canonical(img).dataobj, dtype=np.float32)
                data = np.stack([np.rot90(data[:, :, z]) for z in range(data.shape[2])])
            elif data.ndim == 2:
                data = np.rot90(data)[None]
        else:
            raise DataFormatError(f"{path}: unsupported image file (use one of {', '.join(PAIRED_SUFFIXES)})")
    except DataFormatError:
        raise
    except Exception as err:
        raise DataFormatError(f"{path}: cannot read image: {err}") from None
    if data.ndim != 3:
        raise DataFormatError(f"{path}: expected a 2-D image or a stack (slices, H, W), got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise DataFormatError(f"{path}: contains NaN or Inf values")
    return data


@dataclass
class PairedSample:
    """One slice of a paired dataset: the clean image, the corrupted one, and the artefact mask if given."""

    name: str
    slice: int
    clean: np.ndarray
    corrupted: np.ndarray
    mask: np.ndarray | None
    split: str | None


class PairedImageDataset:
    """Paired clean/corrupted images in ``clean/``, ``corrupted/`` (and optional ``mask/``).

    Every file in ``clean/`` needs a file of the same name in ``corrupted/`` and
    vice versa, and both must hold the same shape; otherwise
    :class:`DataFormatError` names the file. ``split`` selects
    ``<root>/<split>/clean`` etc. when the data carry their own split folders.
    """

    def __init__(self, root: str | os.PathLike, split: str | None = None):
        root = Path(root)
        base = root / split if split is not None and (root / split / "clean").is_dir() else root
        self.root, self.split = base, split if base != root else None
        self.clean_dir, self.corrupted_dir, self.mask_dir = base / "clean", base / "corrupted", base / "mask"
        for d in (self.clean_dir, self.corrupted_dir):
            if not d.is_dir():
                raise DataFormatError(f"{d}: missing folder (paired layout: clean/, corrupted/ and optional mask/)")
        clean = {p.name: p for p in self.clean_dir.iterdir() if _suffix(p)}
        corrupted = {p.name: p for p in self.corrupted_dir.iterdir() if _suffix(p)}
        missing = sorted(set(clean) - set(corrupted))
        if missing:
            raise DataFormatError(f"{self.corrupted_dir / missing[0]}: missing (clean/{missing[0]} has no corrupted twin)")
        extra = sorted(set(corrupted) - set(clean))
        if extra:
            raise DataFormatError(f"{self.clean_dir / extra[0]}: missing (corrupted/{extra[0]} has no clean twin)")
        if not clean:
            raise DataFormatError(f"{self.clean_dir}: no images ({', '.join(PAIRED_SUFFIXES)})")
        self.files = sorted(clean)

    def names(self) -> list[str]:
        """File stems (one subject each)."""
        return [_stem(Path(f)) for f in self.files]

    def load(self, file_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(clean, corrupted, mask|None)`` stacks ``(slices, H, W)`` of one file, shapes checked."""
        clean = load_image_file(self.clean_dir / file_name)
        corrupted = load_image_file(self.corrupted_dir / file_name)
        if clean.shape != corrupted.shape:
            raise DataFormatError(
                f"{self.corrupted_dir / file_name}: shape {corrupted.shape} differs from clean {clean.shape}"
            )
        mask = None
        if (self.mask_dir / file_name).is_file():
            mask = load_image_file(self.mask_dir / file_name) != 0
            if mask.shape != clean.shape:
                raise DataFormatError(f"{self.mask_dir / file_name}: shape {mask.shape} differs from clean {clean.shape}")
        return clean, corrupted, mask

    def __iter__(self) -> Iterator[PairedSample]:
        for f in self.files:
            clean, corrupted, mask = self.load(f)
            for i in range(clean.shape[0]):
                yield PairedSample(_stem(Path(f)), i, clean[i], corrupted[i], None if mask is None else mask[i], self.split)
