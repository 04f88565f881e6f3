"""Reconstruction baselines and the VarNet reconstruction of one sample.

All functions take a ``fastmri.data.transforms.VarNetSample`` (masked k-space
``(C, H, W, 2)``, mask ``(1, 1, W, 1)``, target crop size) and return the magnitude
image ``(h, w)`` cropped to the target size, as a float32 tensor.

- :func:`zero_filled`: root-sum-of-squares of the zero-filled coil images.
- :func:`cg_sense` / :class:`CGSense`: SENSE (Pruessmann et al. 1999/2001) by
  conjugate gradients on the Tikhonov-regularised normal equations
  ``(AᴴA + λI) x = Aᴴy`` with ``A = M F S`` (mask, centred orthonormal FFT, coil
  maps). Because the FFT is orthonormal and the maps satisfy ``Σ|S_c|² = 1``,
  ``AᴴA`` has eigenvalues in ``[0, 1]`` and ``λ`` is an absolute, scale-free weight.
  Maps: the true simulated ``sens_maps`` of the embedded data, or maps estimated
  from the fully sampled centre (ACS) of the k-space itself (:func:`acs_maps`).
- :func:`varnet_reconstruct`: a trained VarNet on one sample.
"""

from __future__ import annotations

import os
from pathlib import Path

import fastmri
import h5py
import numpy as np
import torch
from fastmri.data import transforms as T

from mrilib.data.loading import volume_files

__all__ = [
    "crop_to",
    "zero_filled",
    "sense_forward",
    "sense_adjoint",
    "conjugate_gradient",
    "cg_sense",
    "acs_maps",
    "estimate_coil_maps",
    "CGSense",
    "varnet_reconstruct",
    "reconstruct_sample",
]


def crop_to(image: torch.Tensor, shape) -> torch.Tensor:
    """Centre-crop the last two axes of ``image`` to ``shape`` (fastMRI's ``center_crop``)."""
    shape = (int(shape[0]), int(shape[1]))
    if tuple(image.shape[-2:]) == shape:
        return image
    return T.center_crop(image, shape)


def _crop_shape(sample) -> tuple[int, int]:
    """The target's shape (what a reconstruction is compared with)."""
    target = torch.as_tensor(sample.target)
    if target.ndim >= 2:
        return tuple(target.shape[-2:])
    return tuple(int(c) for c in sample.crop_size)


def zero_filled(sample) -> torch.Tensor:
    """Zero-filled reconstruction: RSS over coils of ``|ifft2c(masked k-space)|``, cropped."""
    img = fastmri.rss(fastmri.complex_abs(fastmri.ifft2c(sample.masked_kspace)), dim=0)
    return crop_to(img, _crop_shape(sample)).float()


def sense_forward(x: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``A x = M F (S x)``: image ``(H, W, 2)`` → masked multi-coil k-space ``(C, H, W, 2)``."""
    return fastmri.fft2c(fastmri.complex_mul(maps, x.unsqueeze(0))) * mask


def sense_adjoint(k: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``Aᴴ k = Σ_c conj(S_c) F⁻¹ (M k_c)``: k-space ``(C, H, W, 2)`` → image ``(H, W, 2)``."""
    return fastmri.complex_mul(fastmri.complex_conj(maps), fastmri.ifft2c(k * mask)).sum(dim=0)


def conjugate_gradient(apply_a, b: torch.Tensor, x0: torch.Tensor | None = None, iters: int = 20, tol: float = 1e-6):
    """Solve ``A x = b`` for a Hermitian positive (semi-)definite ``A`` by conjugate gradients.

    Tensors are real views of complex vectors (last axis 2); inner products are
    real parts of ``<u, v>``, which is what CG needs for a Hermitian operator.
    Stops after ``iters`` iterations or when ``||r|| <= tol ||b||``.
    Returns ``(x, residual_norms)``.
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply_a(x)
    p = r.clone()
    rr = torch.sum(r * r)
    bnorm = torch.sqrt(torch.sum(b * b)).clamp_min(1e-30)
    history = [float(torch.sqrt(rr) / bnorm)]
    for _ in range(int(iters)):
        if history[-1] <= tol:
            break
        ap = apply_a(p)
        alpha = rr / torch.sum(p * ap).clamp_min(1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = torch.sum(r * r)
        p = r + (rr_new / rr) * p
        rr = rr_new
        history.append(float(torch.sqrt(rr) / bnorm))
    return x, history


def cg_sense(masked_kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor, lam: float = 1e-2,
             iters: int = 10, tol: float = 1e-6) -> torch.Tensor:
    """CG-SENSE: the complex image ``(H, W, 2)`` minimising ``||A x - y||² + λ||x||²``.

    Args:
        masked_kspace: ``(C, H, W, 2)`` undersampled k-space (zeros where not sampled).
        mask: broadcastable to it (e.g. ``(1, 1, W, 1)``), 1 = sampled.
        maps: coil sensitivities ``(C, H, W, 2)`` (real view) or complex ``(C, H, W)``.
        lam: Tikhonov weight (absolute: ``AᴴA`` has eigenvalues in [0, 1] for maps
            normalised to ``Σ|S_c|² = 1``).
        iters: CG iterations (few iterations regularise too).
    """
    maps = _real_view(maps).to(masked_kspace)
    mask = mask.to(masked_kspace)
    b = sense_adjoint(masked_kspace, maps, mask)

    def normal(x):
        return sense_adjoint(sense_forward(x, maps, mask), maps, mask) + lam * x

    x, _ = conjugate_gradient(normal, b, iters=iters, tol=tol)
    return x


def _real_view(maps) -> torch.Tensor:
    """Coil maps as a real ``(..., 2)`` float32 tensor."""
    if isinstance(maps, np.ndarray):
        maps = torch.from_numpy(np.ascontiguousarray(maps))
    if torch.is_complex(maps):
        return torch.view_as_real(maps.to(torch.complex64)).contiguous()
    return maps.float()


def acs_maps(masked_kspace: torch.Tensor, num_low_frequencies: int, eps: float = 1e-6) -> torch.Tensor:
    """Coil maps estimated from the fully sampled centre of k-space (no ESPIRiT).

    The central ``num_low_frequencies`` phase-encode lines, Hann-windowed, give
    low-resolution coil images; dividing by their RSS gives maps with
    ``Σ|S_c|² = 1`` wherever that RSS exceeds ``eps`` times its maximum (the image's smooth phase and shading go into the maps, which
    does not change the magnitude of the SENSE solution). Returns ``(C, H, W, 2)``.
    """
    c, h, w, _ = masked_kspace.shape
    n = max(int(num_low_frequencies), 2)
    pad = (w - n + 1) // 2
    window = torch.zeros(w, dtype=masked_kspace.dtype)
    window[pad : pad + n] = torch.hann_window(n + 2, periodic=False, dtype=masked_kspace.dtype)[1:-1]
    low = fastmri.ifft2c(masked_kspace * window.view(1, 1, w, 1))
    rss = fastmri.rss_complex(low, dim=0)
    rss = rss.clamp_min(eps * float(rss.max()))
    return low / rss.view(1, h, w, 1)


def estimate_coil_maps(kspace: np.ndarray, center_fraction: float) -> np.ndarray:
    """Coil maps ``(C, H, W)`` complex of one fully sampled k-space slice ``(C, H, W)``, estimated from
    its central ``center_fraction`` of phase-encode columns with :func:`acs_maps` (for data that
    stores no maps)."""
    k = T.to_tensor(np.asarray(kspace, dtype=np.complex64))
    maps = acs_maps(k, int(round(center_fraction * k.shape[-2])))
    return T.tensor_to_complex_np(maps)


class CGSense:
    """CG-SENSE reconstruction of VarNetSamples from one split (a callable ``sample -> image``).

    Args:
        split_dir: folder of the volumes (to read the true ``sens_maps`` by file name;
            not needed for ``maps="acs"``).
        maps: ``"true"`` (the simulated coil maps stored with the embedded data) or
            ``"acs"`` (estimated from the sample's own k-space centre).
        lam: Tikhonov weight; iters: CG iterations.
    """

    def __init__(self, split_dir: str | os.PathLike | None = None, maps: str = "true", lam: float = 1e-2, iters: int = 10):
        if maps not in ("true", "acs"):
            raise ValueError(f"maps must be 'true' or 'acs', got {maps!r}")
        if maps == "true" and split_dir is None:
            raise ValueError("CGSense(maps='true') needs the split folder that holds the volumes' sens_maps")
        self.split_dir = None if split_dir is None else Path(split_dir)
        self.maps, self.lam, self.iters = maps, float(lam), int(iters)
        self._cache: dict[str, torch.Tensor] = {}
        self.__name__ = f"CG-SENSE ({maps} maps)"

    def true_maps(self, fname: str, slice_num: int = 0) -> torch.Tensor:
        """The ``sens_maps`` of volume ``fname`` as ``(C, H, W, 2)``; a clear error if absent.

        Maps stored per slice (``(S, C, H, W)``, e.g. SKM-TEA's) are indexed by ``slice_num``.
        """
        if fname not in self._cache:
            path = self.split_dir / fname
            with h5py.File(path, "r") as f:
                if "sens_maps" not in f:
                    raise KeyError(f"{path}: no 'sens_maps' dataset (only the embedded data has true maps; use maps='acs')")
                self._cache[fname] = _real_view(f["sens_maps"][()])
        maps = self._cache[fname]
        return maps[int(slice_num)] if maps.dim() == 5 else maps

    def __call__(self, sample) -> torch.Tensor:
        """Magnitude of the CG-SENSE image of ``sample``, cropped to the target."""
        if self.maps == "true":
            maps = self.true_maps(sample.fname, sample.slice_num)
        else:
            nlf = sample.num_low_frequencies or 0
            if not nlf:
                raise ValueError("maps='acs' needs the sample's num_low_frequencies")
            maps = acs_maps(sample.masked_kspace, nlf)
        x = cg_sense(sample.masked_kspace, sample.mask, maps, self.lam, self.iters)
        return crop_to(fastmri.complex_abs(x), _crop_shape(sample)).float()


def has_true_maps(split_dir: str | os.PathLike) -> bool:
    """Whether every volume of ``split_dir`` stores coil maps (``sens_maps``) for ``CGSense(maps="true")``."""
    for path in volume_files(split_dir):
        with h5py.File(path, "r") as f:
            if "sens_maps" not in f:
                return False
    return True


@torch.no_grad()
def varnet_reconstruct(model: torch.nn.Module, sample, device=None) -> torch.Tensor:
    """VarNet's image ``(h, w)`` of one VarNetSample (no gradient), cropped to the target, on CPU.

    ``device``: where to run (the model is moved there); default: where the model is.
    """
    model.eval()
    if device is not None:
        model.to(device)
    dev = next(model.parameters()).device
    kspace = sample.masked_kspace.unsqueeze(0).to(dev)
    mask = sample.mask.unsqueeze(0).to(dev)
    nlf = sample.num_low_frequencies
    out = model(kspace, mask, int(nlf) if nlf else None)[0]
    return crop_to(out, _crop_shape(sample)).float().cpu()


def reconstruct_sample(methods: dict, sample, device=None) -> dict:
    """``{name: image (h, w)}`` for every method (a VarNet model or a function ``sample -> image``)."""
    out = {}
    for name, method in methods.items():
        if isinstance(method, torch.nn.Module):
            out[name] = varnet_reconstruct(method, sample, device=device)
        else:
            out[name] = method(sample)
    return out
