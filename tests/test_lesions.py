"""Procedural lesions: masks cover every change, contrast behaviour, phase, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mrilib.data import generate_subject
from mrilib.poison.lesions import (
    LESION_KINDS,
    POISON_CYST_ANCHOR,
    add_cyst,
    add_lesion,
    add_tumour,
    anchor_center,
    contrast_from_acquisition,
)


@pytest.fixture(scope="module")
def subjects():
    """One noise-free 64x64 slice per contrast: (complex image, brain mask)."""
    out = {}
    for contrast in ("T1w", "T2w", "FLAIR"):
        sim = generate_subject(11, image_size=64, num_slices=3, num_coils=2, snr=None, contrasts=(contrast,))
        out[contrast] = (sim["image"][1], sim["brain_mask"][1].astype(bool))
    return out


@pytest.mark.parametrize("kind", LESION_KINDS)
@pytest.mark.parametrize("contrast", ["T1w", "T2w", "FLAIR"])
def test_masks_cover_every_changed_pixel(subjects, kind, contrast):
    image, brain = subjects[contrast]
    mag = np.abs(image).astype(np.float32)
    for seed in range(3):
        les = add_lesion(kind, mag, brain, contrast, seed=seed)
        changed = les.image != mag
        assert changed.sum() > 5, "the lesion changed almost nothing"
        assert not np.any(changed & ~les.roi), "pixels changed outside the returned ROI"
        assert les.mask.any() and np.all(les.mask <= les.roi)
        # inside brain tissue (the soft edge may touch the mask's boundary pixels)
        assert np.all(les.mask <= ndimage.binary_dilation(brain, iterations=1))
        assert les.image.dtype == mag.dtype and les.image.shape == mag.shape


def test_cyst_contrast_bright_on_t2_dark_on_t1_and_flair(subjects):
    for contrast, sign in (("T2w", +1), ("T1w", -1), ("FLAIR", -1)):
        image, brain = subjects[contrast]
        mag = np.abs(image)
        les = add_cyst(mag, brain, contrast, seed=3, radius_mm=15)
        core = ndimage.binary_erosion(les.mask, iterations=1)
        ring = ndimage.binary_dilation(les.roi, iterations=3) & ~les.roi & brain
        inside, around = les.image[core].mean(), mag[ring].mean()
        assert sign * (inside - around) > 0.15 * around, f"{contrast}: cyst {inside:.3f} vs surround {around:.3f}"


def test_tumour_has_oedema_beyond_the_mass(subjects):
    image, brain = subjects["FLAIR"]
    les = add_tumour(np.abs(image), brain, "FLAIR", seed=1, radius_mm=16)
    assert les.roi.sum() > 1.3 * les.mask.sum(), "oedema should extend the changed region beyond the mass"


def test_complex_images_keep_their_phase(subjects):
    image, brain = subjects["T2w"]
    for kind in LESION_KINDS:
        les = add_lesion(kind, image, brain, "AXT2W", seed=5)
        assert np.iscomplexobj(les.image) and les.image.dtype == image.dtype
        np.testing.assert_allclose(np.angle(les.image[les.roi]), np.angle(image[les.roi]), atol=1e-5)
        np.testing.assert_array_equal(les.image[~les.roi], image[~les.roi])
        # the magnitude behaves exactly like the magnitude-only call
        mag_les = add_lesion(kind, np.abs(image), brain, "T2w", seed=5)
        np.testing.assert_allclose(np.abs(les.image), mag_les.image, rtol=1e-5, atol=1e-6)


def test_seeded_and_anchored(subjects):
    image, brain = subjects["T1w"]
    mag = np.abs(image)
    a = add_cyst(mag, brain, "T1w", seed=7)
    b = add_cyst(mag, brain, "T1w", seed=7)
    c = add_cyst(mag, brain, "T1w", seed=8)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)
    fixed = [add_cyst(mag, brain, "T1w", seed=s, anchor=POISON_CYST_ANCHOR, radius_mm=15) for s in range(4)]
    target = anchor_center(brain, POISON_CYST_ANCHOR, fixed[0].radius_px + 1)
    for les in fixed:
        assert np.hypot(les.center[0] - target[0], les.center[1] - target[1]) < 1e-6
        com = ndimage.center_of_mass(les.mask)
        assert np.hypot(com[0] - target[0], com[1] - target[1]) < 2.0


def test_contrast_names_and_errors(subjects):
    assert contrast_from_acquisition("AXT1POST") == "T1w"
    assert contrast_from_acquisition(b"AXT2W") == "T2w"
    assert contrast_from_acquisition("AXFLAIR") == "FLAIR"
    with pytest.raises(ValueError, match="contrast"):
        contrast_from_acquisition("CORPD_FBK")
    assert contrast_from_acquisition("CORPD_FBK", default="T2w") == "T2w"
    image, _ = subjects["T1w"]
    with pytest.raises(ValueError, match="brain mask is empty"):
        add_cyst(np.abs(image), np.zeros(image.shape, bool), "T1w", seed=0)
    with pytest.raises(ValueError, match="unknown lesion kind"):
        add_lesion("polyp", np.abs(image), subjects["T1w"][1], "T1w")
