"""Fitting slices of any size to a run's square matrix, in k-space or in the image.

Real data come in many matrices (M4RAW 256², fastMRI knee 640×368 with a 2×
oversampled readout, SKM-TEA 512×160, CMRxRecon ~448×204 …) while a run uses one
square ``image_size``. Two rules keep the physics intact:

- **measured k-space** is centre-*cropped* (a lower-resolution acquisition of the same
  field of view) or zero-*padded* (sinc interpolation; the padded phase-encode lines
  count as not acquired), after an optional removal of readout oversampling (inverse
  FFT along the readout, crop the image rows, FFT back, as scanners do);
- **image-only data** (BraTS, paired artefact images) are zero-padded to a square field
  of view and Fourier-resampled to the matrix, i.e. turned into the image a
  lower-resolution acquisition would give, before k-space is simulated.

All transforms use the centred orthonormal FFT of :mod:`mrilib.data.kspace`
(fastMRI's convention: DC at index ``N // 2``). Crops and pads keep that index
aligned and rescale by ``sqrt(new / old)`` so that image intensities do not change
with the matrix size.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "fft1c",
    "ifft1c",
    "fft2c_np",
    "ifft2c_np",
    "crop_or_pad",
    "remove_readout_oversampling",
    "fit_kspace",
    "fit_image",
    "resample_image",
    "resample_mask",
    "resample_labels",
    "acquired_columns",
]


def fft1c(x: np.ndarray, axis: int) -> np.ndarray:
    """Centred orthonormal 1-D FFT along ``axis``."""
    x = np.fft.ifftshift(x, axes=axis)
    return np.fft.fftshift(np.fft.fft(x, axis=axis, norm="ortho"), axes=axis)


def ifft1c(k: np.ndarray, axis: int) -> np.ndarray:
    """Centred orthonormal 1-D inverse FFT along ``axis``."""
    k = np.fft.ifftshift(k, axes=axis)
    return np.fft.fftshift(np.fft.ifft(k, axis=axis, norm="ortho"), axes=axis)


def fft2c_np(x: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2-D FFT over the last two axes (numpy; same as ``kspace.fft2c``)."""
    x = np.fft.ifftshift(x, axes=(-2, -1))
    return np.fft.fftshift(np.fft.fft2(x, axes=(-2, -1), norm="ortho"), axes=(-2, -1))


def ifft2c_np(k: np.ndarray) -> np.ndarray:
    """Centred orthonormal inverse 2-D FFT over the last two axes (numpy)."""
    k = np.fft.ifftshift(k, axes=(-2, -1))
    return np.fft.fftshift(np.fft.ifft2(k, axes=(-2, -1), norm="ortho"), axes=(-2, -1))


def _centre_window(old: int, new: int) -> tuple[int, int, int]:
    """``(src_start, dst_start, length)`` mapping index ``old // 2`` onto ``new // 2``."""
    offset = new // 2 - old // 2  # dst index = src index + offset
    src_start = max(0, -offset)
    dst_start = max(0, offset)
    length = min(old - src_start, new - dst_start)
    return src_start, dst_start, length


def crop_or_pad(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centre-crop or zero-pad the last two axes to ``shape``, keeping index ``N // 2`` centred.

    The centre convention is the centred FFT's (DC / image centre at ``N // 2``), so
    the same call crops k-space and images consistently. No rescaling.
    """
    h, w = x.shape[-2:]
    nh, nw = (int(s) for s in shape)
    if (h, w) == (nh, nw):
        return x.copy()
    out = np.zeros(x.shape[:-2] + (nh, nw), dtype=x.dtype)
    sr, dr, lr = _centre_window(h, nh)
    sc, dc, lc = _centre_window(w, nw)
    out[..., dr : dr + lr, dc : dc + lc] = x[..., sr : sr + lr, sc : sc + lc]
    return out


def _map_acquired(acquired: tuple[int, int], old: int, new: int) -> tuple[int, int]:
    """Where the acquired phase-encode columns ``[lo, hi)`` land after a centred crop/pad."""
    lo, hi = acquired
    offset = new // 2 - old // 2
    lo2, hi2 = max(0, lo + offset), min(new, hi + offset)
    if hi2 <= lo2:
        raise ValueError(f"no acquired phase-encode line survives fitting {old} -> {new} (acquired {acquired})")
    return int(lo2), int(hi2)


def remove_readout_oversampling(kspace: np.ndarray, keep: int, axis: int = -2) -> np.ndarray:
    """Drop readout oversampling: inverse FFT along the readout, keep the central ``keep`` rows, FFT back."""
    n = kspace.shape[axis]
    if keep >= n:
        return kspace
    img = ifft1c(kspace, axis=axis)
    start = n // 2 - keep // 2
    img = np.take(img, np.arange(start, start + keep), axis=axis)
    return fft1c(img, axis=axis).astype(kspace.dtype, copy=False)


def fit_kspace(
    kspace: np.ndarray,
    size: int | tuple[int, int],
    acquired: tuple[int, int] | None = None,
    readout_keep: int | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Fit measured k-space ``(..., H, W)`` (``H`` readout, ``W`` phase encode) to ``size``.

    Steps: remove readout oversampling down to ``readout_keep`` rows (if given and
    smaller than ``H``); then centre-crop (lower resolution, same field of view) or
    zero-pad (interpolation) both axes to ``size``, rescaled so image intensities are
    unchanged.

    Args:
        kspace: complex k-space, coil and slice axes in front.
        size: target matrix ``N`` or ``(H, W)``.
        acquired: phase-encode columns ``[lo, hi)`` that hold measured data
            (default: all).
        readout_keep: image rows to keep along the readout (``None``: no change).

    Returns:
        the fitted k-space and the acquired columns ``[lo, hi)`` in the new matrix.
    """
    nh, nw = (size, size) if np.isscalar(size) else tuple(int(s) for s in size)
    h, w = kspace.shape[-2:]
    acquired = (0, w) if acquired is None else (int(acquired[0]), int(acquired[1]))
    if readout_keep is not None and readout_keep < h:
        kspace = remove_readout_oversampling(kspace, int(readout_keep), axis=-2)
        h = kspace.shape[-2]
    out = crop_or_pad(kspace, (nh, nw))
    out = out * np.float32(np.sqrt((nh * nw) / (h * w)))
    return out.astype(np.complex64), _map_acquired(acquired, w, nw)


def fit_image(image: np.ndarray, size: int | tuple[int, int], readout_keep: int | None = None) -> np.ndarray:
    """Apply to a complex image ``(..., H, W)`` the same fit :func:`fit_kspace` applies to its k-space.

    Used for ground-truth images and coil sensitivities that come with measured
    k-space, so that they stay aligned with the fitted k-space.
    """
    nh, nw = (size, size) if np.isscalar(size) else tuple(int(s) for s in size)
    h, w = image.shape[-2:]
    if readout_keep is not None and readout_keep < h:
        start = h // 2 - int(readout_keep) // 2
        image = image[..., start : start + int(readout_keep), :]
    k = crop_or_pad(fft2c_np(image), (nh, nw)) * np.sqrt((nh * nw) / (image.shape[-2] * image.shape[-1]))
    return ifft2c_np(k).astype(np.complex64)


def _square_pad(x: np.ndarray) -> np.ndarray:
    """Zero-pad the last two axes of ``x`` to a square (the longer side)."""
    h, w = x.shape[-2:]
    n = max(h, w)
    return crop_or_pad(x, (n, n))


def resample_image(image: np.ndarray, size: int) -> np.ndarray:
    """Image-only data to a square ``size × size`` matrix (same field of view, or larger).

    Zero-pads to a square field of view; then, if larger than ``size``,
    Fourier-resamples (k-space truncation: the image a lower-resolution acquisition
    would give), or, if smaller, zero-pads the image (a larger field of view at the
    same resolution). Works on real or complex ``(..., H, W)``; returns complex64.
    """
    x = _square_pad(np.asarray(image).astype(np.complex64))
    n = x.shape[-1]
    if n == size:
        return x
    if n < size:
        return crop_or_pad(x, (size, size))
    k = crop_or_pad(fft2c_np(x), (size, size)) * (size / n)
    return ifft2c_np(k).astype(np.complex64)


def resample_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A binary mask ``(..., H, W)`` resampled like :func:`resample_image` (area fraction ≥ 0.5)."""
    from skimage.transform import resize

    m = _square_pad(np.asarray(mask).astype(np.float32))
    n = m.shape[-1]
    if n == size:
        return m > 0.5
    if n < size:
        return crop_or_pad(m, (size, size)) > 0.5
    out = resize(m, m.shape[:-2] + (size, size), order=1, anti_aliasing=True, preserve_range=True)
    return out >= 0.5


def resample_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """An integer label map ``(..., H, W)`` resampled like :func:`resample_image`.

    Padding adds background (0); downsampling gives each pixel the class covering
    most of its area (background included).
    """
    labels = _square_pad(np.asarray(labels))
    n = labels.shape[-1]
    if n <= size:
        return crop_or_pad(labels, (size, size))
    from skimage.transform import resize

    classes = np.unique(labels)
    scores = [
        resize((labels == c).astype(np.float32), labels.shape[:-2] + (size, size), order=1,
               anti_aliasing=True, preserve_range=True)
        for c in classes
    ]
    return classes[np.argmax(np.stack(scores), axis=0)].astype(labels.dtype)


def acquired_columns(kspace: np.ndarray, tol: float = 0.0) -> tuple[int, int]:
    """Phase-encode columns ``[lo, hi)`` between the first and last column holding data.

    Columns whose every sample (over all leading axes and the readout) has magnitude
    ``<= tol`` count as not acquired (zero-filled partial or padded acquisition).
    """
    mag = np.abs(kspace).reshape(-1, kspace.shape[-2], kspace.shape[-1])
    filled = np.nonzero((mag > tol).any(axis=(0, 1)))[0]
    if filled.size == 0:
        raise ValueError("k-space is all zero")
    return int(filled[0]), int(filled[-1]) + 1
