"""The evaluation chapter's helpers: aggregation by hand, missing artefacts, null-space maps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mrilib import evaluation as ev
from mrilib.data.kspace import fft2c, ifft2c
from mrilib.unlearn.study import healed


def test_aggregate_matches_hand_computation():
    df = pd.DataFrame({
        "method": ["poisoned", "SSD tuned", "SSD tuned", "SSD tuned", "CF"],
        "f": [np.nan, 0.25, 0.25, 0.25, 0.25],
        "seed": [np.nan, 0, 1, 2, 0],
        "SSIM": [0.80, 0.70, 0.74, 0.78, 0.79],
        "healed": [0.0, 0.9, 1.0, 0.8, 0.1],
    })
    agg = ev.aggregate(df, metrics=("SSIM", "healed")).set_index("method")
    # mean (0.70+0.74+0.78)/3 = 0.74; sd (ddof=1) = sqrt(((-.04)^2+0+.04^2)/2) = 0.04
    assert agg.loc["SSD tuned", "SSIM mean"] == pytest.approx(0.74)
    assert agg.loc["SSD tuned", "SSIM sd"] == pytest.approx(0.04)
    assert agg.loc["SSD tuned", "healed mean"] == pytest.approx(0.9)
    assert agg.loc["SSD tuned", "healed sd"] == pytest.approx(0.1)
    assert agg.loc["SSD tuned", "n"] == 3 and agg.loc["CF", "n"] == 1
    assert np.isnan(agg.loc["poisoned", "f"])
    assert ev.mean_sd([0.70, 0.74, 0.78]) == "0.7400 ± 0.0400"
    assert ev.mean_sd([0.5]) == "0.5000 ± 0.0000"
    assert ev.formatted(ev.aggregate(df, metrics=("SSIM",)), metrics=("SSIM",)).loc[("SSD tuned", 0.25), "SSIM"] == "0.7400 ± 0.0400"


def test_healed_is_relative_to_oracle():
    assert healed(0.1, 1.0, 0.1) == pytest.approx(1.0)
    assert healed(1.0, 1.0, 0.1) == pytest.approx(0.0)
    assert healed(0.55, 1.0, 0.1) == pytest.approx(0.5)
    assert np.isnan(healed(0.5, 0.2, 0.2))


def test_missing_artefact_names_the_notebook(tmp_path):
    with pytest.raises(ev.MissingArtefactError, match="05_unlearning"):
        ev.load_unlearning_table(tmp_path)
    with pytest.raises(FileNotFoundError, match="03_poison_cyclegan"):
        ev.require(tmp_path / "metrics" / "poison_poisoned.json", "03_poison_cyclegan")


def test_nullspace_map_keeps_only_unsampled_columns():
    rng = np.random.default_rng(0)
    target = rng.random((16, 16)).astype(np.float32)
    mask = np.zeros(16, bool)
    mask[::4] = True
    # an error that lives on sampled columns only is invisible in the null-space map
    k = np.zeros((16, 16), np.complex64)
    k[:, mask] = rng.standard_normal((16, mask.sum()))
    err_sampled = ifft2c(k)
    np.testing.assert_allclose(ev.nullspace_map(target + err_sampled, target, mask), 0, atol=1e-5)
    # an error on unsampled columns is kept whole
    k = np.zeros((16, 16), np.complex64)
    k[:, ~mask] = rng.standard_normal((16, (~mask).sum()))
    err_null = ifft2c(k)
    np.testing.assert_allclose(ev.nullspace_map(target + err_null, target, mask), np.abs(err_null), atol=1e-5)
