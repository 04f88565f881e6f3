"""Baselines: zero-filled RSS, CG on the normal equations, CG-SENSE, VarNet reconstruction."""

from __future__ import annotations

import fastmri
import numpy as np
import pytest
import torch
from fastmri.data import transforms as T

from mrilib.data import generate_subject, varnet_dataset
from mrilib.evaluate.metrics import evaluate_split
from mrilib.models.varnet import build_varnet
from mrilib.recon.baselines import (
    CGSense,
    acs_maps,
    cg_sense,
    conjugate_gradient,
    estimate_coil_maps,
    varnet_reconstruct,
    zero_filled,
)

# one_thread and smoke_data: tests/conftest.py
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def noise_free():
    """One noise-free 32² subject (image, maps, k-space)."""
    return generate_subject(7, image_size=32, num_slices=1, num_coils=4, snr=None, contrasts=("T1w",))


def _mask(width: int, every: int, centre: int = 4) -> torch.Tensor:
    m = torch.zeros(1, 1, width, 1)
    m[:, :, ::every] = 1
    m[:, :, width // 2 - centre // 2 : width // 2 + centre // 2] = 1
    return m


def test_conjugate_gradient_solves_a_spd_system():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(12, 12, generator=g, dtype=torch.float64)
    a = a @ a.T + 0.5 * torch.eye(12, dtype=torch.float64)
    b = torch.randn(12, generator=g, dtype=torch.float64)
    x, res = conjugate_gradient(lambda v: a @ v, b, iters=50, tol=1e-12)
    assert torch.allclose(x, torch.linalg.solve(a, b), atol=1e-8)
    assert res[-1] < 1e-10 and res[0] == pytest.approx(1.0)


def test_cg_sense_recovers_fully_sampled_noise_free_image(noise_free):
    kspace = T.to_tensor(noise_free["kspace"][0])  # (C, H, W, 2)
    image = T.to_tensor(noise_free["image"][0])
    x = cg_sense(kspace, torch.ones(1, 1, 32, 1), torch.from_numpy(noise_free["sens_maps"]), lam=0.0, iters=5)
    assert torch.linalg.norm(x - image) / torch.linalg.norm(image) < 1e-4


def test_cg_sense_beats_zero_filling_on_undersampled_noise_free_data(noise_free):
    kspace = T.to_tensor(noise_free["kspace"][0])
    image = T.to_tensor(noise_free["image"][0])
    mag = fastmri.complex_abs(image)
    mask = _mask(32, 2)
    x = cg_sense(kspace * mask, mask, torch.from_numpy(noise_free["sens_maps"]), lam=1e-4, iters=50)
    zf = fastmri.rss(fastmri.complex_abs(fastmri.ifft2c(kspace * mask)), dim=0)
    err_cg = torch.linalg.norm(fastmri.complex_abs(x) - mag) / torch.linalg.norm(mag)
    err_zf = torch.linalg.norm(zf - mag) / torch.linalg.norm(mag)
    assert err_cg < 0.02 and err_cg < 0.2 * err_zf


def test_acs_maps_are_normalised_and_work(noise_free):
    kspace = T.to_tensor(noise_free["kspace"][0])
    acs = kspace * _mask(32, 32, 8)
    maps = acs_maps(acs, 8)
    rss = fastmri.rss_complex(maps, dim=0)
    low = fastmri.rss_complex(fastmri.ifft2c(acs), dim=0)
    signal = low > 1e-5 * low.max()  # noise-free data: the far background is ~0
    assert signal.float().mean() > 0.5
    assert torch.allclose(rss[signal], torch.ones(int(signal.sum())), atol=1e-4) and rss.max() < 1 + 1e-5
    x = cg_sense(kspace, torch.ones(1, 1, 32, 1), maps, lam=0.0, iters=10)
    mag = np.abs(noise_free["image"][0])
    err = np.linalg.norm(fastmri.complex_abs(x).numpy() - mag) / np.linalg.norm(mag)
    assert err < 0.01  # fully sampled: any normalised maps give back the magnitude


def test_zero_filled_fully_sampled_equals_the_target(smoke_data):
    import h5py

    sample = varnet_dataset(smoke_data / "val", 4)[0]
    with h5py.File(smoke_data / "val" / sample.fname) as f:
        full = T.to_tensor(f["kspace"][sample.slice_num])
    sample = sample._replace(masked_kspace=full, mask=torch.ones_like(sample.mask))
    assert torch.allclose(zero_filled(sample), sample.target, rtol=1e-4, atol=1e-6)


def test_baselines_on_smoke_data(smoke_data):
    d = smoke_data / "test"
    zf = evaluate_split(zero_filled, d, 4)
    cg = evaluate_split(CGSense(d, "true"), d, 4)
    acs = evaluate_split(CGSense(maps="acs"), d, 4)
    assert cg["ssim"].mean() > zf["ssim"].mean()
    assert cg["nmse"].mean() < zf["nmse"].mean() and cg["psnr"].mean() > zf["psnr"].mean()
    # 32² at 8 % centre leaves 3 ACS lines: too few for good maps; it must still run
    assert np.isfinite(acs[["ssim", "psnr", "nmse"]].to_numpy()).all()
    with pytest.raises(ValueError, match="split folder"):
        CGSense(maps="true")


def test_varnet_reconstruct_shape(smoke_data):
    ds = varnet_dataset(smoke_data / "test", 4)
    sample = ds[0]
    model = build_varnet(dict(num_cascades=1, chans=4, sens_chans=2, pools=2, sens_pools=2), seed=0)
    out = varnet_reconstruct(model, sample)
    assert out.shape == sample.target.shape and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_estimated_coil_maps_follow_the_true_ones():
    """On a simulated slice, maps estimated from the k-space centre have Σ|S|² = 1 and the true maps' shape."""
    sim = generate_subject(0, image_size=32, num_coils=4, num_slices=1, snr=None, contrasts=("T1w",))
    kspace, true = sim["kspace"][0], sim["sens_maps"]
    maps = estimate_coil_maps(kspace, 0.25)
    assert maps.shape == true.shape and np.iscomplexobj(maps)
    brain = sim["brain_mask"][0].astype(bool)
    np.testing.assert_allclose((np.abs(maps) ** 2).sum(0)[brain], 1.0, rtol=1e-4)
    # magnitudes agree with the simulated birdcage maps (relative to their sum of squares) inside the brain
    true_rel = np.abs(true) / np.sqrt((np.abs(true) ** 2).sum(0, keepdims=True))
    corr = np.corrcoef(np.abs(maps)[:, brain].ravel(), true_rel[:, brain].ravel())[0, 1]
    assert corr > 0.9
