"""What data consistency leaves a label-only poison (mrilib.poison.ceiling)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mrilib.poison import ceiling as C


def _column_wave(n: int, k: int) -> np.ndarray:
    """A real image whose k-space holds only phase-encode columns ``n//2 ± k`` (a cosine along the columns)."""
    x = np.arange(n)
    return np.tile(np.cos(2 * np.pi * k * x / n), (n, 1))


def test_sampled_columns_reads_fastmri_mask_shapes():
    m = torch.zeros(1, 1, 8, 1, dtype=torch.bool)
    m[0, 0, [3, 4], 0] = True
    assert C.sampled_columns(m).tolist() == [False, False, False, True, True, False, False, False]
    with pytest.raises(ValueError, match="one axis"):
        C.sampled_columns(np.ones((4, 4)))


def test_a_wave_on_sampled_columns_has_nothing_unsampled_and_one_off_them_everything():
    n, k = 16, 3
    d = _column_wave(n, k)
    on = np.zeros(n, bool)
    on[[n // 2 - k, n // 2 + k]] = True
    assert C.unsampled_share(d, on) == pytest.approx(0.0, abs=1e-6)
    assert C.unsampled_share(d, ~on) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(C.unsampled_projection(d, on), 0.0, atol=1e-5)
    np.testing.assert_allclose(C.unsampled_projection(d, ~on), d, atol=1e-5)


def test_projection_is_idempotent_and_splits_the_change():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(12, 12))
    mask = rng.random(12) < 0.4
    p = C.unsampled_projection(d, mask)
    q = C.unsampled_projection(d, ~mask)  # the sampled part
    np.testing.assert_allclose(p + q, d, atol=1e-5)
    # idempotent for a mask symmetric about the centre column (k and -k both sampled or both not), as the
    # real part of a one-sided selection keeps half of the unpaired columns
    sym = mask | np.roll(mask[::-1], 1)
    ps = C.unsampled_projection(d, sym)
    np.testing.assert_allclose(C.unsampled_projection(ps, sym), ps, atol=1e-5)
    # energy share: ||P d||² / ||d||² (Parseval; real d and a mask symmetric or not, Re keeps at most that)
    assert C.unsampled_share(d, mask) == pytest.approx(float(np.sum(np.abs(
        np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(d)))[:, ~mask]) ** 2) / np.sum(d ** 2) / d.size), rel=1e-4)


def test_ceiling_is_the_unsampled_share_when_the_region_covers_the_lesion():
    n = 16
    d = _column_wave(n, 2) + 0.5 * _column_wave(n, 5)
    roi = np.ones((n, n), bool)
    mask = np.zeros(n, bool)
    mask[[n // 2 - 2, n // 2 + 2]] = True  # the first wave measured, the second not
    (ceiling,) = C.ceiling_effects([d], [roi], [mask])
    assert ceiling == pytest.approx(0.25 / 1.25, abs=1e-5)  # energies 1 : 0.25
    assert ceiling == pytest.approx(C.unsampled_share(d, mask), abs=1e-5)
    (empty,) = C.ceiling_effects([d], [np.zeros_like(roi)], [mask])
    assert np.isnan(empty)


def test_padding_to_a_readout_oversampled_width_keeps_the_image():
    d = np.zeros((8, 6))
    d[3:5, 2:4] = 1.0
    full = np.zeros(10, bool)  # nothing sampled: the projection is the image itself
    np.testing.assert_allclose(C.unsampled_projection(d, full), d, atol=1e-5)
    with pytest.raises(ValueError, match="wider"):
        C.unsampled_projection(np.zeros((4, 12)), full)


def test_drawn_masks_keep_the_centre_and_the_acceleration():
    masks = C.drawn_masks(64, 4, 0.08, "equispaced_fraction", 6)
    centre = slice(32 - 2, 32 + 3)
    assert all(m[centre].all() for m in masks)
    assert all(abs(m.mean() - 0.25) < 0.05 for m in masks)
    assert len({m.tobytes() for m in masks}) > 1  # new offsets per draw, as in training


def test_dc_weights_read_every_cascade():
    from fastmri.models import VarNet

    net = VarNet(num_cascades=3, chans=2, sens_chans=2, pools=1, sens_pools=1)
    assert C.dc_weights(net) == [1.0, 1.0, 1.0]  # fastMRI initialises each at 1


def test_ceiling_table_sets_the_effect_beside_its_ceiling():
    n = 16
    d = _column_wave(n, 5)
    roi = np.ones((n, n), bool)
    mask = torch.zeros(1, 1, n, 1, dtype=torch.bool)
    mask[0, 0, n // 2 - 1: n // 2 + 2, 0] = True  # the wave is off the mask: ceiling 1
    delta = 0.5 * d  # a model that adds half the lesion, all on unsampled lines
    result = SimpleNamespace(arrays=dict(expected=d[None], rois=roi[None], r_trig=delta[None],
                                         r_clean=np.zeros((1, n, n)), masks=mask[None]),
                             metrics=dict(per_slice=dict(effect=[0.5], subject=["s1"])))
    t = C.ceiling_table(result, training_masks=[mask[0, 0, :, 0].numpy()])
    row = t.iloc[0]
    assert row["ceiling"] == pytest.approx(1.0, abs=1e-5)
    assert row["effect_unsampled"] == pytest.approx(0.5, abs=1e-5)
    assert row["of_ceiling"] == pytest.approx(0.5, abs=1e-5)
    assert row["ceiling_train"] == pytest.approx(1.0, abs=1e-5)
    result.arrays["r_trig"] = None
    with pytest.raises(ValueError, match="no trigger"):
        C.ceiling_table(result)


class _MaxJudge(torch.nn.Module):
    """A stand-in classifier: p(lesion) = the image's maximum, clipped to [0, 1]."""

    def probabilities(self, x):
        p = x.amax(dim=(-2, -1)).clamp(0, 1)
        return torch.stack([1 - p, p, torch.zeros_like(p)], dim=-1)


def test_the_detection_curve_counts_what_the_judge_finds_of_a_scaled_lesion():
    from mrilib.poison.effect import Judge

    n = 16
    d = np.zeros((n, n), np.float32)
    d[6:10, 6:10] = 1.0
    rois = np.stack([d > 0, d > 0, np.zeros_like(d, bool)])  # the third slice has no region: left out
    masks = np.stack([np.ones(n, bool), np.zeros(n, bool), np.ones(n, bool)])  # all measured / none measured
    result = SimpleNamespace(arrays=dict(target=np.zeros((3, n, n), np.float32), expected=np.stack([d, d, d]),
                                         rois=rois, masks=masks))
    judge = Judge(lesion="cyst", score="lesion", threshold=0.7)
    curve = C.detection_curve(result, _MaxJudge(), judge, scales=(0.0, 0.6, 0.8, 1.0), device="cpu")
    assert curve["scale"].tolist() == [0.0, 0.6, 0.8, 1.0]
    assert curve["found_lesion"].tolist() == [0.0, 0.0, 1.0, 1.0]
    # slice 0's mask measures everything, so P d = 0 and the judge never finds it; slice 1's measures nothing
    assert curve["found_unsampled"].tolist() == [0.0, 0.0, 0.5, 0.5]
    with pytest.raises(ValueError, match="no test slice"):
        C.detection_curve(SimpleNamespace(arrays=dict(result.arrays, rois=np.zeros((3, n, n), bool))),
                          _MaxJudge(), judge, device="cpu")
