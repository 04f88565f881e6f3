"""Motion and metal artefacts in k-space, and the paired clean/corrupted loader."""

from __future__ import annotations

import re

import numpy as np
import pytest

from dataset_fixtures import phantom, write_paired_fixture
from mrilib.data.artefacts import (
    MotionParams,
    PairedImageDataset,
    load_image_file,
    metal_corrupt,
    metal_field_hz,
    motion_corrupt,
    sample_motion,
    translation_ramp,
)
from mrilib.data.coils import birdcage_maps
from mrilib.data.datasets import open_dataset
from mrilib.data.formats.base import DataFormatError, rss_np
from mrilib.data.kspace import fft2c, ifft2c

H, W, C = 32, 24, 4


@pytest.fixture(scope="module")
def scan():
    """A phantom, coil maps and its fully sampled multi-coil k-space ``(C, H, W)``."""
    image = phantom(H, W, seed=3)
    maps = birdcage_maps(C, (H, W))
    return image, maps, fft2c(maps * image)


def test_zero_motion_is_the_identity(scan):
    image, maps, k = scan
    assert np.array_equal(motion_corrupt(k, params=MotionParams.none()), k)
    still = sample_motion(W, fraction=0.4, max_shift=0.0, max_angle=0.0, seed=1)
    assert len(still.lines) == round(0.4 * W)
    assert np.allclose(motion_corrupt(k, params=still), k, atol=1e-6)
    assert np.allclose(motion_corrupt(image=image, maps=maps, params=still), k, atol=1e-5)
    assert np.array_equal(motion_corrupt(k, fraction=0.0, seed=5), k)


def test_translation_is_a_linear_phase_ramp_on_the_affected_lines_only(scan):
    _, _, k = scan
    lines = [2, 7, 11, 20]
    params = MotionParams(lines, [(1.0, 2.0)] * 4, [0.0] * 4)
    out = motion_corrupt(k, params=params)
    untouched = np.setdiff1d(np.arange(W), lines)
    assert np.array_equal(out[..., untouched], k[..., untouched])
    # hand check of the shift theorem: k-space row r, column c gets exp(-2πi((r-H/2)·1/H + (c-W/2)·2/W))
    r, c = 5, 7
    expected = k[:, r, c] * np.exp(-2j * np.pi * ((r - H // 2) * 1.0 / H + (c - W // 2) * 2.0 / W))
    assert np.allclose(out[:, r, c], expected, atol=1e-5)
    assert np.allclose(out[..., lines], (k * translation_ramp((H, W), (1.0, 2.0)))[..., lines], atol=1e-6)
    # and it is the k-space of the coil images rolled by (1, 2) pixels on those lines
    rolled = fft2c(np.roll(ifft2c(k), shift=(1, 2), axis=(-2, -1)))
    assert np.allclose(out[..., lines], rolled[..., lines], atol=1e-4)
    assert np.abs(out - k)[..., lines].max() > 1e-3


def test_rotation_changes_only_its_lines_and_is_seeded(scan):
    image, maps, k = scan
    p = sample_motion(W, fraction=0.25, max_shift=1.0, max_angle=5.0, mode="random", seed=7)
    again = sample_motion(W, fraction=0.25, max_shift=1.0, max_angle=5.0, mode="random", seed=7)
    assert np.array_equal(p.lines, again.lines) and np.array_equal(p.angles, again.angles)
    for out in (motion_corrupt(k, params=p), motion_corrupt(image=image, maps=maps, params=p)):
        changed = np.nonzero(np.abs(out - k).max(axis=(0, 1)) > 1e-5)[0]
        assert set(changed) <= set(p.lines.tolist()) and len(changed) > 0
    step = sample_motion(W, fraction=0.5, protect_center=0.25, seed=0)
    assert len(step.lines) == W // 2 and not set(step.lines.tolist()) & set(range(W // 2 - 3, W // 2 + 3))
    assert step.lines[-1] == W - 1 and len(set(map(tuple, step.shifts))) == 1  # one move, late lines
    a = motion_corrupt(k, seed=3, mode="random", max_angle=3.0)
    assert np.array_equal(a, motion_corrupt(k, seed=3, mode="random", max_angle=3.0))
    assert not np.array_equal(a, motion_corrupt(k, seed=4, mode="random", max_angle=3.0))


def test_metal_void_lowers_signal_inside_the_region(scan):
    image, maps, k = scan
    centre = (14.0, 11.0)
    out, void = metal_corrupt(k, center=centre, radius=2.5, return_void=True)
    before, after = rss_np(ifft2c(k)), rss_np(ifft2c(out))
    assert void.sum() > 10 and void[14, 11]
    assert after[void].mean() < 0.2 * before[void].mean()
    # outside the void and far from the metal the image barely changes
    y, x = np.meshgrid(np.arange(H) - centre[0], np.arange(W) - centre[1], indexing="ij")
    far = np.hypot(y, x) > 10
    assert np.abs(after - before)[far].mean() < 0.05 * before.max()
    # image + maps gives the same void; a random centre is seeded and lies inside the object
    out2 = metal_corrupt(image=image, maps=maps, center=centre, radius=2.5)
    assert rss_np(ifft2c(out2))[void].mean() < 0.2 * before[void].mean()
    a, va = metal_corrupt(k, seed=1, return_void=True)
    b, vb = metal_corrupt(k, seed=1, return_void=True)
    assert np.array_equal(a, b) and np.array_equal(va, vb)
    assert before[va].mean() > 0.2 * before.max()


def test_metal_field_is_a_dipole():
    f = metal_field_hz((41, 41), (20, 20), 3.0, delta_chi_ppm=100, b0_t=3.0)
    assert f[20, 20] == 0 and f[20, 30] < 0  # through-plane B0: negative in-plane
    assert np.isclose(f[20, 26] / f[20, 32], 8.0)  # falls off as r^-3
    g = metal_field_hz((41, 41), (20, 20), 3.0, b0_in_plane=True)
    assert g[30, 20] > 0 > g[20, 30]  # along B0 positive, across negative


def test_paired_loader_round_trip_and_open_dataset(tmp_path):
    info = write_paired_fixture(tmp_path, files=3, size=24, slices=2)
    ds = PairedImageDataset(tmp_path)
    assert ds.names() == ["case000", "case001", "case002"]
    pairs = list(ds)
    assert len(pairs) == 6
    clean, cor = info["pairs"][str(tmp_path / "clean" / "case001.npy")]
    p = next(s for s in pairs if s.name == "case001" and s.slice == 1)
    assert np.array_equal(p.clean, clean[1]) and np.array_equal(p.corrupted, cor[1]) and p.mask is not None
    # as a run dataset: input k-space from the corrupted image, target the clean one
    rd = open_dataset("paired:snr=none,phase=false", tmp_path, None)
    s = rd.read(next(v for v in rd.volumes if v.patient_id == "case001"), [1])[0]
    scale = s.target.max() / clean[1].max()
    assert np.allclose(s.target, clean[1] * scale, atol=1e-4)
    assert np.allclose(rss_np(ifft2c(s.kspace)), cor[1] * scale, atol=1e-3)
    assert s.masks["artefact_mask"].shape == (24, 24)


def test_paired_png_and_split_folders(tmp_path):
    write_paired_fixture(tmp_path, files=4, size=16, suffix=".png", splits=True)
    assert load_image_file(tmp_path / "train" / "clean" / "case000.png").shape == (1, 16, 16)
    assert [len(open_dataset("paired", tmp_path, s).volumes) for s in ("train", "val", "test")] == [2, 1, 1]


def test_paired_malformed_raises_naming_the_file(tmp_path):
    write_paired_fixture(tmp_path, files=2, size=16, with_mask=False)
    (tmp_path / "corrupted" / "case001.npy").unlink()
    with pytest.raises(DataFormatError, match=re.escape(str(tmp_path / "corrupted" / "case001.npy")) + ": missing"):
        PairedImageDataset(tmp_path)
    np.save(tmp_path / "corrupted" / "case001.npy", np.zeros((2, 8, 8), np.float32))
    with pytest.raises(DataFormatError, match=r"shape \(2, 8, 8\) differs from clean \(2, 16, 16\)"):
        list(PairedImageDataset(tmp_path))
