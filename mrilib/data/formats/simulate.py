"""Multi-coil k-space for image-only data, with the embedded dataset's coil and noise model.

Image-only datasets (BraTS, paired artefact images) are magnitude images. To feed the
same VarNet pipeline they get, per subject, a smooth background phase, birdcage
coil sensitivities (:func:`mrilib.data.coils.birdcage_maps`, a random radius and
rotation per subject as in :mod:`mrilib.data.embedded`) and complex Gaussian noise
whose standard deviation gives the requested SNR (:func:`mrilib.data.kspace.noise_sigma`:
mean magnitude inside the object / sigma), and :func:`mrilib.data.kspace.simulate_kspace`
computes the fully sampled k-space. Everything is seeded by the subject.
"""

from __future__ import annotations

import numpy as np

from mrilib.data.coils import birdcage_maps
from mrilib.data.kspace import noise_sigma, simulate_kspace

__all__ = ["subject_coil_maps", "smooth_phase", "volume_sigma", "simulate_slice"]


def subject_coil_maps(num_coils: int, size: int, seed: int) -> np.ndarray:
    """Birdcage maps ``(C, size, size)`` with the subject's random radius and rotation."""
    rng = np.random.default_rng([int(seed) % (2**63), 2])
    return birdcage_maps(num_coils, size, radius=rng.uniform(1.3, 1.6), rotation=rng.uniform(0, 2 * np.pi))


def smooth_phase(size: int, seed: int, amplitude: float = np.pi / 2) -> np.ndarray:
    """A smooth (quadratic) background phase map ``(size, size)`` in radians, seeded."""
    rng = np.random.default_rng([int(seed) % (2**63), 3])
    y, x = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    c = rng.uniform(-1, 1, 6)
    phi = c[0] + c[1] * x + c[2] * y + 0.5 * (c[3] * x * x + c[4] * y * y + c[5] * x * y)
    return (amplitude * phi / max(1e-6, np.abs(phi).max())).astype(np.float32)


def volume_sigma(magnitude: np.ndarray, snr: float | None, mask: np.ndarray | None = None) -> float:
    """Noise sd for a whole volume (``snr=None`` → 0): mean magnitude inside ``mask`` / ``snr``."""
    if snr is None:
        return 0.0
    if mask is not None and not np.any(mask):
        mask = None
    return noise_sigma(magnitude, float(snr), mask)


def simulate_slice(
    image: np.ndarray,
    maps: np.ndarray,
    sigma: float,
    seed: int,
    slice_index: int,
    phase: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Complex image (magnitude × ``exp(i·phase)``) and its noisy multi-coil k-space ``(C, H, W)``."""
    img = np.abs(image).astype(np.float32) if phase is not None else np.asarray(image)
    img = (img * np.exp(1j * phase)).astype(np.complex64) if phase is not None else img.astype(np.complex64)
    rng = np.random.default_rng([int(seed) % (2**63), 4, int(slice_index)])
    return img, simulate_kspace(img, maps, sigma, rng)
