"""Multi-coil k-space simulation and the centred FFTs (fastMRI's convention).

The forward model is ``y_c = F(S_c x) + n_c`` with ``F`` the centred, orthonormal 2-D
FFT (``fastmri.fft2c``), ``S_c`` the coil sensitivities and ``n_c`` complex white
Gaussian noise. Because ``F`` is orthonormal, noise of standard deviation ``sigma``
per k-space sample has the same standard deviation per pixel in each coil image.
"""

from __future__ import annotations

import fastmri
import numpy as np
import torch
from fastmri.data import transforms as T

__all__ = ["fft2c", "ifft2c", "rss", "simulate_kspace", "noise_sigma"]


def fft2c(x: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2-D FFT over the last two axes of a complex array (fastmri)."""
    out = fastmri.fft2c(T.to_tensor(np.ascontiguousarray(x)))
    return torch.view_as_complex(out).numpy()


def ifft2c(k: np.ndarray) -> np.ndarray:
    """Centred orthonormal inverse 2-D FFT over the last two axes (fastmri)."""
    out = fastmri.ifft2c(T.to_tensor(np.ascontiguousarray(k)))
    return torch.view_as_complex(out).numpy()


def rss(coil_images: np.ndarray, coil_axis: int = -3) -> np.ndarray:
    """Root-sum-of-squares over the coil axis of complex coil images."""
    return np.sqrt(np.sum(np.abs(coil_images) ** 2, axis=coil_axis))


def noise_sigma(image: np.ndarray, snr: float, mask: np.ndarray | None = None) -> float:
    """Noise standard deviation giving ``snr`` = mean magnitude (inside ``mask``) / sigma."""
    if not snr > 0:
        raise ValueError(f"snr must be positive, got {snr}")
    mag = np.abs(image if mask is None else image[mask.astype(bool)])
    return float(mag.mean() / snr)


def simulate_kspace(
    image: np.ndarray,
    maps: np.ndarray,
    sigma: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Fully sampled multi-coil k-space of a complex image.

    Args:
        image: complex image ``(H, W)`` or a stack ``(S, H, W)``.
        maps: coil sensitivities ``(C, H, W)`` (or ``(S, C, H, W)`` per slice).
        sigma: standard deviation of the complex Gaussian noise per sample
            (``sigma / sqrt(2)`` on the real and on the imaginary part); 0 for none.
        rng: generator for the noise (required when ``sigma > 0``).

    Returns:
        complex64 k-space ``(C, H, W)`` or ``(S, C, H, W)``.
    """
    image = np.asarray(image)
    coil_images = image[..., None, :, :] * maps
    kspace = fft2c(coil_images.astype(np.complex64))
    if sigma > 0:
        if rng is None:
            raise ValueError("simulate_kspace needs an rng when sigma > 0")
        noise = rng.standard_normal(kspace.shape + (2,), dtype=np.float32) * np.float32(sigma / np.sqrt(2))
        kspace = kspace + (noise[..., 0] + 1j * noise[..., 1]).astype(np.complex64)
    return kspace.astype(np.complex64)
