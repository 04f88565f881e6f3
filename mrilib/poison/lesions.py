"""Procedural brain lesions: cysts and tumours, each returned with its mask.

Two kinds of lesion are drawn inside the brain tissue of a slice (the ``brain_mask``
of the embedded data, or any binary brain mask):

- **cyst** - a fluid-filled cavity with a smooth, slightly elliptical boundary and a
  thin wall (rim). The fluid behaves like cerebrospinal fluid: bright on T2w, dark on
  T1w, suppressed (dark) on FLAIR, where the gliotic rim is bright.
- **tumour** - an irregular mass (a boundary with random low-order harmonics) with a
  necrotic core, an enhancing rim and surrounding vasogenic oedema that spreads
  irregularly into the neighbouring tissue (bright on T2w/FLAIR, darker on T1w).

Intensities are *contrast-aware*: :data:`LESION_LEVELS` gives every component's
signal relative to the brightest brain tissue of the contrast (the same scale as
:data:`mrilib.data.brain.CONTRASTS`), and the image's own scale is estimated from the
median of its magnitude inside the (eroded) brain mask. Complex images keep
their phase: only the magnitude is changed.

Every function is deterministic given its ``seed`` (or ``numpy`` generator). Each
result carries two masks: ``mask`` (the lesion itself: fluid and wall, or core and
rim) and ``roi`` (every pixel whose value changed, oedema and soft edges included),
so ``image != original`` only inside ``roi``.

The poisoning chapter places its cysts at a *fixed anatomical position*
(:data:`POISON_CYST_ANCHOR`, in the posterior white matter of the brain's right
hemisphere, which is the lower-left quadrant of the radiological display): a
backdoor must put its lesion where the trigger can tell the network to, and the
trigger carries no position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from mrilib.config import POISON_CYST_ANCHOR, TUMOUR_ANCHOR

__all__ = [
    "LESION_KINDS",
    "LESION_LEVELS",
    "MEDIAN_LEVEL",
    "POISON_CYST_ANCHOR",
    "TUMOUR_ANCHOR",
    "Lesion",
    "contrast_from_acquisition",
    "intensity_reference",
    "anchor_center",
    "place_center",
    "add_cyst",
    "add_tumour",
    "add_lesion",
]

LESION_KINDS = ("cyst", "tumour")

#: Signal of each lesion component relative to the contrast's brightest brain tissue
#: (WM for T1w, CSF for T2w, GM for FLAIR - cf. ``mrilib.data.brain.CONTRASTS``).
#: ``oedema`` is the level the surrounding tissue is pulled towards.
LESION_LEVELS: dict[str, dict[str, float]] = {
    "T1w": dict(fluid=0.12, wall=0.70, necrosis=0.22, enhancing=1.30, oedema=0.55),
    "T2w": dict(fluid=1.00, wall=0.42, necrosis=0.92, enhancing=0.52, oedema=0.85),
    "FLAIR": dict(fluid=0.09, wall=0.95, necrosis=0.35, enhancing=0.95, oedema=1.05),
}

#: Median brain-tissue signal of each contrast on the scale of :data:`LESION_LEVELS`
#: (a WM/GM/CSF mixture; measured on the embedded data: T1w 0.79, T2w 0.50, FLAIR 0.62).
MEDIAN_LEVEL: dict[str, float] = {"T1w": 0.78, "T2w": 0.50, "FLAIR": 0.62}



@dataclass
class Lesion:
    """A slice with a lesion drawn into it, and where.

    Attributes:
        image: the new slice (same shape, dtype and complexness as the input).
        mask: bool, the lesion itself (cyst fluid + wall, or tumour core + rim).
        roi: bool, every pixel whose value changed (soft edge and oedema included).
        kind: ``"cyst"`` or ``"tumour"``.
        contrast: ``"T1w"``, ``"T2w"`` or ``"FLAIR"``.
        center: (row, column) of the lesion centre in pixels.
        radius_px: mean radius of the lesion in pixels.
        params: every other random choice (for reproducibility and reports).
    """

    image: np.ndarray
    mask: np.ndarray
    roi: np.ndarray
    kind: str
    contrast: str
    center: tuple[float, float]
    radius_px: float
    params: dict = field(default_factory=dict)


def contrast_from_acquisition(acquisition: str | bytes, default: str | None = None) -> str:
    """Map a volume's ``acquisition`` attribute (``AXT1W``, ``AXT2``, ``AXFLAIR``…) to a contrast.

    Also accepts the contrast names themselves. Unknown names raise ``ValueError``
    unless ``default`` is given.
    """
    if isinstance(acquisition, bytes):
        acquisition = acquisition.decode()
    a = str(acquisition).upper()
    if "FLAIR" in a:
        return "FLAIR"
    if "T1" in a:
        return "T1w"
    if "T2" in a:
        return "T2w"
    if default is not None:
        return default
    raise ValueError(f"cannot tell the contrast of acquisition {acquisition!r} (expected T1/T2/FLAIR in the name)")


def _rng(seed) -> np.random.Generator:
    """A numpy generator from a seed, a seed sequence or a generator (passed through)."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def intensity_reference(magnitude: np.ndarray, brain_mask: np.ndarray, contrast: str) -> float:
    """The image's intensity scale: the value that :data:`LESION_LEVELS` calls 1.

    The median magnitude inside the brain mask eroded by two pixels (robust to the
    scalp and to small bright structures), divided by the median brain level of the
    contrast (:data:`MEDIAN_LEVEL`, measured on the embedded data).
    """
    brain = np.asarray(brain_mask) > 0.5
    inner = ndimage.binary_erosion(brain, iterations=2)
    values = magnitude[inner] if inner.sum() >= 16 else magnitude[brain]
    if values.size == 0:
        raise ValueError("brain mask is empty: a lesion must be placed inside brain tissue")
    return float(np.median(values)) / MEDIAN_LEVEL[contrast_from_acquisition(contrast)]


def _brain_box(brain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and half-extent (rows, cols) of the bounding box of a boolean mask."""
    rows, cols = np.nonzero(brain)
    lo = np.array([rows.min(), cols.min()], float)
    hi = np.array([rows.max(), cols.max()], float)
    return (lo + hi) / 2, np.maximum((hi - lo) / 2, 1.0)


def _interior(brain: np.ndarray, margin_px: float) -> np.ndarray:
    """Pixels at least ``margin_px`` inside the brain mask (Euclidean distance)."""
    return ndimage.distance_transform_edt(brain) >= margin_px


def anchor_center(brain_mask: np.ndarray, anchor: tuple[float, float], margin_px: float = 0.0) -> tuple[float, float]:
    """The pixel at normalised brain coordinates ``anchor`` (see :data:`POISON_CYST_ANCHOR`).

    The anchor is mapped through the bounding box of the brain mask, so it follows the
    subject's head size and position; if that pixel is closer than ``margin_px`` to
    the brain's edge, the nearest pixel that is not is returned instead.
    """
    brain = np.asarray(brain_mask) > 0.5
    if not brain.any():
        raise ValueError("brain mask is empty: a lesion must be placed inside brain tissue")
    c, half = _brain_box(brain)
    target = c + np.asarray(anchor, float) * half
    ok = _interior(brain, margin_px)
    if not ok.any():
        ok = _interior(brain, ndimage.distance_transform_edt(brain).max())
    rows, cols = np.nonzero(ok)
    d2 = (rows - target[0]) ** 2 + (cols - target[1]) ** 2
    if ok[int(round(np.clip(target[0], 0, brain.shape[0] - 1))), int(round(np.clip(target[1], 0, brain.shape[1] - 1)))]:
        return float(target[0]), float(target[1])
    k = int(np.argmin(d2))
    return float(rows[k]), float(cols[k])


def place_center(brain_mask: np.ndarray, margin_px: float, rng) -> tuple[float, float]:
    """A random lesion centre at least ``margin_px`` inside the brain (deepest pixels if none is)."""
    rng = _rng(rng)
    brain = np.asarray(brain_mask) > 0.5
    if not brain.any():
        raise ValueError("brain mask is empty: a lesion must be placed inside brain tissue")
    dist = ndimage.distance_transform_edt(brain)
    ok = dist >= min(margin_px, dist.max())
    rows, cols = np.nonzero(ok)
    k = int(rng.integers(len(rows)))
    jitter = rng.uniform(-0.5, 0.5, 2)
    return float(rows[k] + jitter[0]), float(cols[k] + jitter[1])


def _polar(shape, center, angle: float, aspect: float):
    """Radius and polar angle of every pixel around ``center`` in a rotated, stretched frame."""
    yy, xx = np.meshgrid(np.arange(shape[0], dtype=float), np.arange(shape[1], dtype=float), indexing="ij")
    dy, dx = yy - center[0], xx - center[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) * aspect
    return np.hypot(u, v), np.arctan2(v, u)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, numerically safe."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _apply(image: np.ndarray, new_mag: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """Put ``new_mag`` into ``image`` inside ``roi`` (keeping the phase of complex images)."""
    image = np.asarray(image)
    out = image.copy()
    if np.iscomplexobj(image):
        phase = np.exp(1j * np.angle(image[roi]))
        out[roi] = (new_mag[roi] * phase).astype(image.dtype)
    else:
        out[roi] = new_mag[roi].astype(image.dtype)
    return out


def _prepare(image, brain_mask, contrast, pixel_mm):
    """Common argument checks; returns (magnitude, brain bool mask, contrast, pixel_mm, reference)."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"lesions are drawn on one 2-D slice, got shape {image.shape}")
    brain = np.asarray(brain_mask) > 0.5
    if brain.shape != image.shape:
        raise ValueError(f"brain mask shape {brain.shape} differs from image shape {image.shape}")
    contrast = contrast_from_acquisition(contrast)
    if pixel_mm is None:
        pixel_mm = 240.0 / image.shape[-1]
    mag = np.abs(image).astype(np.float64)
    return mag, brain, contrast, float(pixel_mm), intensity_reference(mag, brain, contrast)


def add_cyst(
    image: np.ndarray,
    brain_mask: np.ndarray,
    contrast: str,
    seed=None,
    *,
    center: tuple[float, float] | None = None,
    anchor: tuple[float, float] | None = None,
    radius_mm: float | None = None,
    pixel_mm: float | None = None,
    wall_mm: float | None = None,
    contrast_scale: float = 1.0,
) -> Lesion:
    """Draw a cyst into a slice.

    Args:
        image: 2-D magnitude or complex slice.
        brain_mask: where brain tissue is (the cyst is placed inside it).
        contrast: ``T1w``/``T2w``/``FLAIR`` or an acquisition name (``AXT2W``…).
        seed: seed or ``numpy`` generator for every random choice.
        center: (row, col) of the cyst; default: at ``anchor`` if given, else random
            inside the brain.
        anchor: normalised brain coordinates of the centre (see :func:`anchor_center`),
            e.g. :data:`POISON_CYST_ANCHOR` for the poison's fixed position.
        radius_mm: mean radius; default uniform in [8, 16] mm.
        pixel_mm: pixel size; default 240 mm / width (the profiles' field of view).
        wall_mm: thickness of the wall (rim); default ``max(1.5 mm, 0.5 pixel)``.
        contrast_scale: multiplies the fluid's deviation from the surrounding level
            (1 = the table's fluid level; > 1 exaggerates the lesion).

    Returns:
        a :class:`Lesion` (``image`` with the cyst, ``mask`` = fluid + wall, ``roi``).
    """
    rng = _rng(seed)
    mag, brain, contrast, pixel_mm, ref = _prepare(image, brain_mask, contrast, pixel_mm)
    radius_mm = float(rng.uniform(8.0, 16.0)) if radius_mm is None else float(radius_mm)
    radius = max(radius_mm / pixel_mm, 1.0)
    wall = max(wall_mm if wall_mm is not None else 1.5, 0.5 * pixel_mm) / pixel_mm
    aspect = float(rng.uniform(1.0, 1.3))
    angle = float(rng.uniform(0, np.pi))
    wobble = rng.normal(0, 0.04, 3) * np.array([1.0, 0.5, 0.25])  # smooth: mostly elliptical
    phases = rng.uniform(0, 2 * np.pi, 3)
    if center is None:
        center = anchor_center(brain, anchor, radius + 1) if anchor is not None else place_center(brain, radius + 1.5, rng)
    r, theta = _polar(mag.shape, center, angle, aspect)
    boundary = radius * (1 + sum(w * np.cos((k + 2) * theta + p) for k, (w, p) in enumerate(zip(wobble, phases))))
    d = r - boundary  # signed distance to the boundary (pixels, < 0 inside)
    soft = 0.35  # edge width in pixels: smooth but sharp boundary
    alpha = _sigmoid(-d / soft)
    levels = LESION_LEVELS[contrast]
    fluid = levels["fluid"] * ref
    surround = float(np.median(mag[(d > 1) & (d < 3) & brain])) if np.any((d > 1) & (d < 3) & brain) else ref
    fluid = surround + contrast_scale * (fluid - surround)
    wall_w = np.exp(-0.5 * ((d + 0.5 * wall) / max(0.5 * wall, 0.3)) ** 2)  # thin band inside the edge
    target = fluid + (levels["wall"] * ref - fluid) * wall_w
    alpha = alpha * ndimage.gaussian_filter(brain.astype(float), 0.5)
    alpha[alpha < 1e-3] = 0.0
    new = (1 - alpha) * mag + alpha * target
    roi = alpha > 0
    mask = (d <= 0) & roi
    return Lesion(
        image=_apply(image, new, roi),
        mask=mask,
        roi=roi,
        kind="cyst",
        contrast=contrast,
        center=(float(center[0]), float(center[1])),
        radius_px=float(radius),
        params=dict(radius_mm=radius_mm, aspect=aspect, angle=angle, wall_px=wall, reference=ref,
                    fluid=float(fluid), contrast_scale=contrast_scale),
    )


def add_tumour(
    image: np.ndarray,
    brain_mask: np.ndarray,
    contrast: str,
    seed=None,
    *,
    center: tuple[float, float] | None = None,
    anchor: tuple[float, float] | None = None,
    radius_mm: float | None = None,
    pixel_mm: float | None = None,
    oedema_extent: float | None = None,
) -> Lesion:
    """Draw a tumour (necrotic core, enhancing rim, oedema) into a slice.

    Args:
        image: 2-D magnitude or complex slice.
        brain_mask: where brain tissue is (tumour and oedema stay inside it).
        contrast: ``T1w``/``T2w``/``FLAIR`` or an acquisition name.
        seed: seed or ``numpy`` generator.
        center, anchor: as for :func:`add_cyst`.
        radius_mm: mean radius of the mass (core + rim); default uniform in [10, 20] mm.
        pixel_mm: pixel size; default 240 mm / width.
        oedema_extent: how far the oedema reaches beyond the rim, in units of the
            radius; default uniform in [0.5, 1.0].

    Returns:
        a :class:`Lesion` (``mask`` = core + enhancing rim, ``roi`` includes oedema).
    """
    rng = _rng(seed)
    mag, brain, contrast, pixel_mm, ref = _prepare(image, brain_mask, contrast, pixel_mm)
    radius_mm = float(rng.uniform(10.0, 20.0)) if radius_mm is None else float(radius_mm)
    radius = max(radius_mm / pixel_mm, 1.2)
    extent = float(rng.uniform(0.5, 1.0)) if oedema_extent is None else float(oedema_extent)
    aspect = float(rng.uniform(1.0, 1.4))
    angle = float(rng.uniform(0, np.pi))
    harmonics = [(k, float(rng.uniform(0.06, 0.16) / np.sqrt(k - 1)), float(rng.uniform(0, 2 * np.pi))) for k in range(2, 7)]
    if center is None:
        center = anchor_center(brain, anchor, radius + 1) if anchor is not None else place_center(brain, radius + 1.0, rng)
    r, theta = _polar(mag.shape, center, angle, aspect)
    shape_fn = 1 + sum(a * np.cos(k * theta + p) for k, a, p in harmonics)
    s = r / (radius * shape_fn)  # normalised radius: 1 at the irregular boundary
    core_frac = float(rng.uniform(0.45, 0.65))
    soft = 0.35 / radius
    levels = LESION_LEVELS[contrast]
    in_mass = _sigmoid((1 - s) / soft)
    in_core = _sigmoid((core_frac - s) / soft)
    # Heterogeneous components: smooth texture inside the mass.
    texture = ndimage.gaussian_filter(rng.standard_normal(mag.shape), max(0.7, 0.25 * radius))
    texture = 0.08 * texture / (texture.std() + 1e-12)
    mass = ref * (levels["enhancing"] + (levels["necrosis"] - levels["enhancing"]) * in_core) * (1 + texture)
    # Oedema: finger-like spread, a smooth noisy field decaying with distance.
    spread = ndimage.gaussian_filter(rng.standard_normal(mag.shape), max(1.0, 0.5 * radius))
    spread = spread / (np.abs(spread).max() + 1e-12)
    reach = 1 + extent * (1 + 0.6 * spread)
    oed = _sigmoid((reach - s) / (3 * soft)) * (1 - in_mass)
    soft_brain = ndimage.gaussian_filter(brain.astype(float), 0.5)
    alpha = in_mass * soft_brain
    oed = 0.8 * oed * soft_brain
    alpha[alpha < 1e-3] = 0.0
    oed[oed < 1e-3] = 0.0
    base = (1 - oed) * mag + oed * levels["oedema"] * ref
    new = (1 - alpha) * base + alpha * mass
    roi = (alpha > 0) | (oed > 0)
    mask = (s <= 1) & (alpha > 0)
    return Lesion(
        image=_apply(image, new, roi),
        mask=mask,
        roi=roi,
        kind="tumour",
        contrast=contrast,
        center=(float(center[0]), float(center[1])),
        radius_px=float(radius),
        params=dict(radius_mm=radius_mm, aspect=aspect, angle=angle, core_fraction=core_frac,
                    oedema_extent=extent, reference=ref),
    )


def add_lesion(kind: str, image: np.ndarray, brain_mask: np.ndarray, contrast: str, seed=None, **kwargs) -> Lesion:
    """:func:`add_cyst` or :func:`add_tumour` by name (``kind`` in :data:`LESION_KINDS`)."""
    if kind == "cyst":
        return add_cyst(image, brain_mask, contrast, seed, **kwargs)
    if kind == "tumour":
        return add_tumour(image, brain_mask, contrast, seed, **kwargs)
    raise ValueError(f"unknown lesion kind {kind!r}: choose one of {LESION_KINDS}")
