"""Simulated receive-coil sensitivities.

Birdcage-style maps: ``C`` coils evenly spaced on a circle around the field of view;
each coil's sensitivity falls off as ``1/distance`` from the coil and its phase turns
with the angle around the coil, as for a loop element seen from its centre. The maps
are normalised so that ``sum_c |S_c|^2 = 1`` at every pixel, which makes the
root-sum-of-squares (RSS) of noise-free coil images equal the magnitude image.
"""

from __future__ import annotations

import numpy as np

__all__ = ["birdcage_maps", "normalise_maps"]


def birdcage_maps(
    num_coils: int,
    size: int | tuple[int, int],
    radius: float = 1.4,
    rotation: float = 0.0,
) -> np.ndarray:
    """Complex coil sensitivities of shape ``(num_coils, H, W)``, normalised (RSS = 1).

    Args:
        num_coils: number of receive elements (>= 1).
        size: image matrix ``N`` or ``(H, W)``.
        radius: radius of the coil circle relative to half the field of view
            (> 1 puts the coils outside the imaged region, as in a head coil).
        rotation: angle (radians) of the first coil, to vary the array per subject.
    """
    if num_coils < 1:
        raise ValueError(f"num_coils must be >= 1, got {num_coils}")
    if radius <= 1.0:
        raise ValueError(f"radius must be > 1 (coils outside the field of view), got {radius}")
    h, w = (size, size) if np.isscalar(size) else size
    y = np.linspace(-1, 1, h, endpoint=False) + 1.0 / h
    x = np.linspace(-1, 1, w, endpoint=False) + 1.0 / w
    yy, xx = np.meshgrid(y, x, indexing="ij")
    maps = np.empty((num_coils, h, w), dtype=np.complex128)
    for c in range(num_coils):
        theta = rotation + 2 * np.pi * c / num_coils
        dx, dy = xx - radius * np.cos(theta), yy - radius * np.sin(theta)
        dist = np.hypot(dx, dy)
        maps[c] = np.exp(1j * (np.arctan2(dy, dx) - theta)) / dist
    return normalise_maps(maps).astype(np.complex64)


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Scale coil maps ``(C, H, W)`` so that ``sum_c |S_c|^2 == 1`` at every pixel."""
    rss = np.sqrt(np.sum(np.abs(maps) ** 2, axis=0, keepdims=True))
    if np.any(rss == 0):
        raise ValueError("coil maps vanish at some pixel; cannot normalise")
    return maps / rss
