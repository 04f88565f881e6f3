"""Realistic synthetic brain slices from the MNI152 (2009c) template.

nilearn ships the 1 mm MNI152 template and its grey- and white-matter probability
maps inside its wheel (no download). From them each synthetic *subject* gets

- tissue fractions: grey matter, white matter, cerebrospinal fluid (the brain mask
  minus GM and WM: ventricles, sulci), plus a skull and a scalp layer grown
  outside the brain, so that the field of view holds a whole head;
- a contrast (``T1w``, ``T2w`` or ``FLAIR``-like) with per-subject jitter of the
  tissue intensities;
- a random 3-D rotation, anisotropic scaling and shift (head size and position),
  a smooth in-plane elastic deformation (anatomical variability), a multiplicative
  bias field (receive inhomogeneity), fine tissue texture and a smooth background
  phase (field inhomogeneity), so that the complex image resembles a real
  acquisition rather than a magnitude picture.

All randomness comes from one seed per subject: the same seed gives identical
slices, another seed another subject.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

__all__ = ["CONTRASTS", "Template", "load_template", "Subject", "sample_subject", "render_subject"]

# Relative signal of each tissue class per contrast (before per-subject jitter).
CONTRASTS: dict[str, dict[str, float]] = {
    "T1w": dict(wm=1.00, gm=0.62, csf=0.16, skull=0.06, scalp=0.85),
    "T2w": dict(wm=0.40, gm=0.58, csf=1.00, skull=0.05, scalp=0.55),
    "FLAIR": dict(wm=0.52, gm=0.80, csf=0.07, skull=0.04, scalp=0.60),
}

# Axial slab (MNI z, mm) that subjects' slices are drawn from: from the basal
# ganglia to the upper lateral ventricles, where the anatomy is richest.
_Z_RANGE_MM = (-12.0, 48.0)
_BRAIN_CENTRE_MM = np.array([0.0, -18.0, 0.0])


@dataclass(frozen=True)
class Template:
    """MNI152 tissue maps on the 1 mm grid (x: left→right, y: posterior→anterior, z: up)."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    affine: np.ndarray  # voxel → MNI mm

    def world_to_voxel(self, points_mm: np.ndarray) -> np.ndarray:
        """Map ``(..., 3)`` MNI millimetres to fractional voxel indices ``(3, ...)``."""
        inv = np.linalg.inv(self.affine)
        vox = points_mm @ inv[:3, :3].T + inv[:3, 3]
        return np.moveaxis(vox, -1, 0)


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    """Load the 1 mm MNI152 template's GM / WM / brain maps shipped with nilearn (cached)."""
    from nilearn import datasets

    gm_img = datasets.load_mni152_gm_template(resolution=1)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj, dtype=np.float32)
    gm = np.asarray(gm_img.dataobj, dtype=np.float32)
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj, dtype=np.float32)
    brain = ndimage.gaussian_filter(brain, 0.7)  # soften the binary mask's staircase
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    return Template(gm=gm, wm=wm, csf=csf, brain=brain, affine=np.asarray(gm_img.affine, dtype=float))


@dataclass(frozen=True)
class Subject:
    """Every random choice that defines one synthetic subject."""

    seed: int
    contrast: str
    rotation_deg: tuple[float, float, float]  # about x (pitch), y (roll), z (yaw)
    scale: tuple[float, float, float]
    shift_mm: tuple[float, float, float]
    z_start_mm: float
    intensities: dict[str, float] = field(default_factory=dict)
    elastic_mm: float = 3.0
    bias_strength: float = 0.2
    phase_strength: float = 1.5  # radians of smooth background phase


def sample_subject(seed: int, contrasts: tuple[str, ...] = tuple(CONTRASTS)) -> Subject:
    """Draw a subject's anatomy, pose and contrast from ``seed``."""
    unknown = set(contrasts) - set(CONTRASTS)
    if unknown or not contrasts:
        raise ValueError(f"unknown contrast(s) {sorted(unknown)}: choose from {sorted(CONTRASTS)}")
    rng = np.random.default_rng(seed)
    contrast = str(contrasts[rng.integers(len(contrasts))])
    base = CONTRASTS[contrast]
    return Subject(
        seed=int(seed),
        contrast=contrast,
        rotation_deg=tuple(float(a) for a in rng.normal(0.0, [4.0, 3.0, 8.0])),
        scale=tuple(float(s) for s in rng.uniform(0.88, 1.10, 3)),
        shift_mm=tuple(float(s) for s in rng.normal(0.0, [6.0, 6.0, 0.0])),
        z_start_mm=float(rng.uniform(_Z_RANGE_MM[0], _Z_RANGE_MM[0] + 12.0)),
        intensities={k: float(v * rng.uniform(0.9, 1.1)) for k, v in base.items()},
        elastic_mm=float(rng.uniform(2.0, 4.5)),
        bias_strength=float(rng.uniform(0.1, 0.3)),
        phase_strength=float(rng.uniform(0.5, 2.5)),
    )


def _rotation(deg: tuple[float, float, float]) -> np.ndarray:
    """Rotation matrix from angles (degrees) about x, y, z."""
    ax, ay, az = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _smooth_field(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Gaussian-smoothed white noise scaled to unit standard deviation."""
    f = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma_px, mode="wrap")
    return f / (f.std() + 1e-12)


def _polynomial_field(rng: np.random.Generator, size: int, order: int = 2) -> np.ndarray:
    """A random smooth 2-D polynomial on [-1, 1]^2, scaled to max |value| = 1."""
    t = np.linspace(-1, 1, size)
    yy, xx = np.meshgrid(t, t, indexing="ij")
    out = np.zeros((size, size))
    for i in range(order + 1):
        for j in range(order + 1 - i):
            out += rng.normal() * xx**i * yy**j
    return out / (np.abs(out).max() + 1e-12)


def slice_positions(subject: Subject, num_slices: int) -> np.ndarray:
    """MNI z (mm) of the subject's slices: evenly spaced, within the anatomical slab."""
    top = _Z_RANGE_MM[1]
    spacing = min(5.0, (top - subject.z_start_mm) / max(num_slices, 1))
    return subject.z_start_mm + spacing * np.arange(num_slices)


def render_subject(
    subject: Subject, num_slices: int, size: int, fov_mm: float = 240.0
) -> tuple[np.ndarray, np.ndarray]:
    """Render a subject's axial slices.

    Returns:
        ``image``: complex64 ``(num_slices, size, size)``, rows anterior → posterior,
        columns right → left (radiological display), magnitude about 0..1;
        ``brain``: float32 brain-tissue fraction ``(num_slices, size, size)``.
    """
    tpl = load_template()
    rng = np.random.default_rng([subject.seed, 1])
    px = fov_mm / size
    coords = (np.arange(size) - size / 2 + 0.5) * px
    vv, uu = np.meshgrid(coords, coords, indexing="ij")  # v: rows (mm), u: cols (mm)
    # In-plane elastic deformation: smooth displacement, same for every slice.
    sigma_px = 18.0 / px
    du = subject.elastic_mm * _smooth_field(rng, size, sigma_px)
    dv = subject.elastic_mm * _smooth_field(rng, size, sigma_px)
    texture = 0.04 * _smooth_field(rng, size, max(0.6, 1.5 / px))
    bias = np.exp(subject.bias_strength * _polynomial_field(rng, size))
    phase = subject.phase_strength * _polynomial_field(rng, size) + rng.uniform(-np.pi, np.pi)

    rot = _rotation(subject.rotation_deg) * np.asarray(subject.scale)  # subject → MNI
    out = np.empty((num_slices, size, size), dtype=np.complex64)
    brain_out = np.empty((num_slices, size, size), dtype=np.float32)
    w = subject.intensities
    for k, z in enumerate(slice_positions(subject, num_slices)):
        # Subject coordinates: x = -u (right of the image = subject's left), y = -v.
        pts = np.stack([-(uu + du), -(vv + dv), np.full_like(uu, z)], axis=-1)
        world = (pts - [0.0, 0.0, 0.0]) @ rot.T + _BRAIN_CENTRE_MM + np.asarray(subject.shift_mm)
        vox = tpl.world_to_voxel(world)
        gm, wm, csf, brain = (
            ndimage.map_coordinates(m, vox, order=1, mode="constant", cval=0.0)
            for m in (tpl.gm, tpl.wm, tpl.csf, tpl.brain)
        )
        skull, scalp = _head_layers(brain, px)
        mag = w["gm"] * gm + w["wm"] * wm + w["csf"] * csf + w["skull"] * skull + w["scalp"] * scalp
        mag = mag * bias * (1.0 + texture)
        out[k] = (np.clip(mag, 0.0, None) * np.exp(1j * phase)).astype(np.complex64)
        brain_out[k] = brain
    return out, brain_out


def _head_layers(brain: np.ndarray, px_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Skull and scalp fractions grown outward from a slice's brain mask.

    Distance (mm) from the brain surface: 1.5-6 mm skull (dark), 6-11 mm scalp (bright),
    with smooth edges one pixel wide so the layers do not alias at coarse matrices.
    """
    inside = brain > 0.5
    if not inside.any():
        zeros = np.zeros_like(brain)
        return zeros, zeros
    dist = ndimage.distance_transform_edt(~inside) * px_mm
    soft = max(px_mm, 1.0)

    def band(lo, hi):
        return np.clip((dist - lo) / soft + 0.5, 0, 1) * np.clip((hi - dist) / soft + 0.5, 0, 1)

    outside = 1.0 - brain
    return band(1.5, 6.0) * outside, band(6.0, 11.0) * outside
