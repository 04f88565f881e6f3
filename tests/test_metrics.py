"""SSIM / PSNR / NMSE wrappers and split evaluation against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mrilib.evaluate import metrics as M
from mrilib.recon import quality as Q
from mrilib.recon.baselines import zero_filled

# one_thread and smoke_data: tests/conftest.py
pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(seed=0, shape=(2, 24, 24)):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0, 1, shape)
    pred = gt + 0.05 * rng.standard_normal(shape)
    return gt, pred


def test_nmse_and_psnr_match_their_formulas():
    gt, pred = _pair()
    assert Q.nmse(gt, pred) == pytest.approx(np.sum((gt - pred) ** 2) / np.sum(gt**2), rel=1e-12)
    mse = np.mean((gt - pred) ** 2)
    assert Q.psnr(gt, pred, maxval=2.0) == pytest.approx(10 * math.log10(4.0 / mse), rel=1e-10)
    assert Q.psnr(gt, pred) == pytest.approx(10 * math.log10(gt.max() ** 2 / mse), rel=1e-10)  # default: gt max


def test_ssim_identical_is_one_and_returns_float():
    gt, pred = _pair()
    value = Q.ssim(gt, gt)
    assert isinstance(value, float) and value == pytest.approx(1.0)
    worse = Q.ssim(gt, pred, maxval=1.0)
    assert isinstance(worse, float) and 0 < worse < 0.99
    # a 2-D slice works and equals the 3-D stack of one slice
    assert Q.ssim(gt[0], pred[0], 1.0) == pytest.approx(Q.ssim(gt[:1], pred[:1], 1.0))
    # a larger data range makes the same error look smaller
    assert Q.ssim(gt, pred, maxval=4.0) > worse
    # the stack's SSIM is the mean of its slices' SSIM (fastMRI's volume SSIM)
    assert Q.ssim(gt, pred, 1.0) == pytest.approx(np.mean([Q.ssim(g, p, 1.0) for g, p in zip(gt, pred)]))


def test_inputs_are_checked():
    gt, pred = _pair()
    with pytest.raises(ValueError, match="shape"):
        Q.ssim(gt, pred[:, :-1])
    with pytest.raises(ValueError, match="2-D image or a 3-D stack"):
        Q.nmse(gt[None], pred[None])
    assert Q.image_metrics(torch.from_numpy(gt), torch.from_numpy(pred), 1.0)["nmse"] == pytest.approx(Q.nmse(gt, pred))


def test_evaluate_split_and_volume_metrics(smoke_data):
    df = M.evaluate_split(zero_filled, smoke_data / "test", acceleration=4, method="zf")
    assert len(df) == 6 and set(df["method"]) == {"zf"}  # 2 subjects x 3 slices
    assert {"file", "slice", "ssim", "psnr", "nmse", "maxval"} <= set(df.columns)
    assert (df["ssim"] < 1).all() and (df["nmse"] > 0).all()
    # per-volume metrics from the per-slice sums equal direct volume computations
    vol = M.volume_metrics(df)
    assert len(vol) == 2
    import h5py

    from mrilib.data import varnet_dataset

    ds = varnet_dataset(smoke_data / "test", 4)
    fname = vol["file"].iloc[0]
    idx = [i for i in range(len(ds)) if ds.raw_samples[i].fname.name == fname]
    gt = np.stack([ds[i].target.numpy() for i in idx])
    pred = np.stack([zero_filled(ds[i]).numpy() for i in idx])
    with h5py.File(smoke_data / "test" / fname) as f:
        maxval = float(f.attrs["max"])
    direct = M.volume_metrics(gt, pred, maxval)
    row = vol.iloc[0]
    for k in ("ssim", "psnr", "nmse"):
        assert row[k] == pytest.approx(direct[k], rel=1e-5)


def test_mean_sd_table():
    df = pd.DataFrame(dict(method=["a", "a", "b"], acceleration=[4, 4, 4], ssim=[0.5, 0.7, 0.9],
                           psnr=[20.0, 22.0, 30.0], nmse=[0.1, 0.3, 0.01]))
    table = M.mean_sd_table(df)
    assert table.loc[("a", 4), "SSIM"] == f"0.600 ± {np.std([0.5, 0.7], ddof=1):.3f}"
    assert table.loc[("b", 4), "slices"] == 1 and table.loc[("b", 4), "PSNR (dB)"] == "30.00 ± 0.00"
