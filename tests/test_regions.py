"""Regions for region-targeted SSD: where a label disagrees with its own k-space."""

from __future__ import annotations

from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from mrilib.data import generate_subject
from mrilib.data.kspace import ifft2c, rss
from mrilib.unlearn.methods import UnlearnError, disagreement_regions, label_disagreement, lesion_regions

N = 32


def _subject(num_slices: int = 2):
    return generate_subject(3, image_size=N, num_slices=num_slices, num_coils=4, snr=None, contrasts=("T2w",))


def _blob(shape, centre, radius: float = 2.5) -> np.ndarray:
    yy, xx = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return (((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) <= radius ** 2).astype(np.float32)


def test_a_label_that_is_its_measurement_has_no_region():
    k = _subject()["kspace"][0]
    assert not label_disagreement(k, rss(ifft2c(k)).astype(np.float32)).any()


def test_the_region_is_where_the_label_was_edited():
    k = _subject()["kspace"][0]
    label = rss(ifft2c(k)).astype(np.float32)
    edit = _blob(label.shape, (10, 21))
    mask = label_disagreement(k, label + 0.5 * label.max() * edit, sigma=1.0)
    assert mask[10, 21] and mask.sum() <= 4 * edit.sum()  # the edit's centre, and not much more
    assert not mask[:, :12].any() and not mask[20:].any()  # nothing far from it


def test_fine_stripes_in_the_measurement_are_filtered_out():
    """A spike in k-space (stripes of period 2 px in the image) disagrees with the label everywhere
    at full resolution; the low-pass leaves the edited blob as the region."""
    k = _subject()["kspace"][0].copy()
    label = rss(ifft2c(k)).astype(np.float32)
    k[:, N - 1, N // 2] += 0.1 * np.abs(k).max()  # readout frequency near Nyquist
    edit = _blob(label.shape, (22, 8))
    mask = label_disagreement(k, label + 0.5 * label.max() * edit, sigma=2.0)
    assert mask[22, 8] and not mask[:12].any()


def test_a_cropped_label_is_compared_with_the_centre_of_its_image():
    k = _subject()["kspace"][0]
    full = rss(ifft2c(k)).astype(np.float32)
    label = full[4:-4, 4:-4].copy()
    assert not label_disagreement(k, label).any()
    label[6, 6] += full.max()
    assert label_disagreement(k, label, sigma=0.0)[6, 6]


def test_bad_arguments_are_rejected():
    k = _subject()["kspace"][0]
    label = rss(ifft2c(k)).astype(np.float32)
    with pytest.raises(UnlearnError, match="level"):
        label_disagreement(k, label, level=1.0)
    with pytest.raises(UnlearnError, match="sigma"):
        label_disagreement(k, label, sigma=-1.0)
    with pytest.raises(UnlearnError, match="larger"):
        label_disagreement(k[:, 4:-4, 4:-4], label)


def _write_volume(path, kspace, labels, roi):
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace)
        f.create_dataset("reconstruction_rss", data=labels)
        f.create_dataset("lesion_roi", data=roi)


def test_regions_of_a_forget_set_are_read_in_its_order(tmp_path):
    sim = _subject(num_slices=3)
    labels = rss(ifft2c(sim["kspace"])).astype(np.float32)
    roi = np.zeros(labels.shape, bool)
    for s, centre in ((0, (8, 8)), (2, (20, 24))):  # slices 0 and 2 are edited, slice 1 is not
        roi[s] = _blob(labels.shape[1:], centre) > 0
        labels[s] += 0.5 * labels[s].max() * roi[s]
    _write_volume(tmp_path / "vol.h5", sim["kspace"], labels, roi)
    manifest = {"poisoned": [{"id": 11, "file": "vol.h5", "slice": 0}, {"id": 12, "file": "vol.h5", "slice": 2},
                             {"id": 13, "file": "vol.h5", "slice": 1}]}
    forget = SimpleNamespace(ids=[12, 11, 13])
    masks = disagreement_regions(tmp_path, manifest, forget, sigma=1.0)
    assert masks.shape == (3, N, N)
    assert masks[0, 20, 24] == 1 and masks[1, 8, 8] == 1 and masks[2].sum() == 0
    np.testing.assert_array_equal(lesion_regions(tmp_path, manifest, forget).numpy(), roi[[2, 0, 1]])
    with pytest.raises(UnlearnError, match="not poisoned"):
        disagreement_regions(tmp_path, manifest, SimpleNamespace(ids=[12, 99]))
    with pytest.raises(UnlearnError, match="agrees"):
        disagreement_regions(tmp_path, manifest, SimpleNamespace(ids=[13]))


def test_scanning_every_label_scores_the_edited_ones(tmp_path):
    from mrilib.evaluate import findings
    from mrilib.unlearn.methods import scan_disagreement

    sim = _subject(num_slices=3)
    labels = rss(ifft2c(sim["kspace"])).astype(np.float32)
    edit = _blob(labels.shape[1:], (8, 8))
    labels[1] += 0.3 * labels[1].max() * edit
    _write_volume(tmp_path / "vol.h5", sim["kspace"], labels, np.zeros(labels.shape, bool))
    scan = scan_disagreement(tmp_path, sigma=1.0)
    assert list(scan["slice"]) == [0, 1, 2] and set(scan["file"]) == {"vol.h5"}
    assert scan["peak"][0] == 0 and scan["peak"][2] == 0 and 0.05 < scan["peak"][1] < 0.3
    manifest = {"poisoned": [{"file": "vol.h5", "slice": 1}]}
    text = findings.consistency_findings(scan, manifest)
    assert "the 1 poisoned slices a peak of" in text and "the 2 clean ones at most 0" in text
    assert "separates them completely" in text and "f = 1" in text
    overlap = scan.assign(peak=[0.5, 0.2, 0.0])  # a clean slice disagrees more than the poisoned one
    assert "finds 0 of the 1 poisoned slices" in findings.consistency_findings(overlap, manifest)
    with pytest.raises(FileNotFoundError, match="no .h5"):
        scan_disagreement(tmp_path / "empty")
