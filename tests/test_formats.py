"""Real-dataset readers: each format's fixture round trip, a malformed variant, splits, conversion."""

from __future__ import annotations

import dataclasses
import json
import re
import warnings

import h5py
import numpy as np
import pytest

from dataset_fixtures import (
    FIXTURE_WRITERS,
    write_brats_fixture,
    write_cmrxrecon_fixture,
    write_fastmri_fixture,
    write_m4raw_fixture,
    write_skmtea_fixture,
)
from mrilib.config import get_profile
from mrilib.data.convert import choose_slices, prepare_real_dataset
from mrilib.data.datasets import (
    DATASETS,
    assign_splits,
    final_subjects,
    open_dataset,
    parse_dataset_spec,
    select_volumes,
)
from mrilib.data.formats.base import DataFormatError, VolumeRef, normalise_contrast, parse_ismrmrd_header
from mrilib.data.h5layout import ismrmrd_header
from mrilib.data.kspace import fft2c, ifft2c
from mrilib.data.loading import varnet_dataset
from mrilib.data.prepare import prepare_dataset
from mrilib.data.resample import crop_or_pad, fit_image, fit_kspace, ifft2c_np


def rel_err(a, b) -> float:
    """Largest absolute difference relative to the reference's peak."""
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(b).max())


# ----------------------------------------------------------------------------- shared pieces


def test_centred_fft_helpers_match_fastmri():
    x = (np.random.default_rng(0).standard_normal((3, 10, 12)) + 1j).astype(np.complex64)
    from mrilib.data.resample import fft2c_np

    assert np.allclose(fft2c_np(x), fft2c(x), atol=1e-5)
    assert np.allclose(ifft2c_np(x), ifft2c(x), atol=1e-5)


def test_fit_kspace_keeps_intensity_and_matches_fit_image():
    from dataset_fixtures import phantom

    img = phantom(40, 36, seed=1)
    k = fft2c(img)
    small, acq = fit_kspace(k, 24)
    assert small.shape == (24, 24) and acq == (0, 24)
    # a lower-resolution acquisition of the same field of view: same intensities
    assert abs(np.abs(ifft2c(small)).max() - np.abs(img).max()) < 0.05 * np.abs(img).max()
    assert np.allclose(ifft2c(small), fit_image(img, 24), atol=1e-5)
    # zero-padding maps the acquired columns into the larger matrix
    big, acq = fit_kspace(k, (48, 48), acquired=(2, 34))
    assert acq == (2 + 24 - 18, 34 + 24 - 18)
    assert np.allclose(crop_or_pad(big, (40, 36)) / np.sqrt(48 * 48 / (40 * 36)), k, atol=1e-5)


def test_readout_oversampling_removal_crops_the_image_rows():
    from dataset_fixtures import phantom

    obj = phantom(16, 20, seed=2)
    k = fft2c(crop_or_pad(obj, (32, 20)))
    fitted, _ = fit_kspace(k, (16, 20), readout_keep=16)
    assert rel_err(ifft2c(fitted), obj) < 1e-4


def test_parse_dataset_spec_and_aliases():
    assert parse_dataset_spec("m4raw") == ("m4raw", {})
    name, opts = parse_dataset_spec("M4RAW:average_repetitions=true,contrasts=T1w+T2w,repetition=2")
    assert name == "m4raw" and opts == {"average_repetitions": True, "contrasts": ["T1w", "T2w"], "repetition": 2}
    assert parse_dataset_spec("fastmri-knee") == ("fastmri", {"anatomy": "knee"})
    assert parse_dataset_spec("skm-tea:echo=1") == ("skmtea", {"echo": 1})
    with pytest.raises(ValueError, match="unknown dataset 'ixi'.*m4raw"):
        parse_dataset_spec("ixi")
    with pytest.raises(TypeError, match="unknown option"):
        DATASETS["m4raw"](echo=1)
    assert set(DATASETS) == {"m4raw", "fastmri", "skmtea", "cmrxrecon", "brats", "paired"}


@pytest.mark.parametrize(
    "label, ours",
    [("AXT2", "T2w"), ("AXT1POST", "T1c"), ("AXT1PRE", "T1w"), ("AXFLAIR", "FLAIR"), ("T1", "T1w"),
     ("t1ce", "T1c"), ("t1n", "T1w"), ("t2f", "FLAIR"), ("t2w", "T2w"), ("CORPD_FBK", "PD"),
     ("CORPDFS_FBK", "PDFS"), ("T1map", "T1map"), ("cine_sax", "cine_sax")],
)
def test_normalise_contrast(label, ours):
    assert normalise_contrast(label) == ours


def _ref(pid, split=None, contrast="T1w"):
    return VolumeRef("x", (f"/d/{pid}_{contrast}.h5",), pid, contrast, 4, 2, (8, 8), split)


def test_assign_splits_by_subject_seeded_and_native_first():
    refs = [_ref(f"s{i}", "train", c) for i in range(10) for c in ("T1w", "T2w")] + [_ref("v0", "val")]
    a = assign_splits(refs, seed=0, holdout={"test": 3})
    ids = {s: {r.patient_id for r in v} for s, v in a.items()}
    assert ids["val"] == {"v0"}  # native split kept, nothing carved for it
    assert len(ids["test"]) == 3 and len(ids["train"]) == 7
    assert not (ids["train"] & ids["test"])  # a subject's volumes never straddle splits
    assert all(len([r for r in a["test"] if r.patient_id == p]) == 2 for p in ids["test"])
    assert assign_splits(refs, seed=0, holdout={"test": 3})["test"] == a["test"]  # deterministic
    others = [{r.patient_id for r in assign_splits(refs, seed=s, holdout={"test": 3})["test"]} for s in range(1, 6)]
    assert any(o != ids["test"] for o in others)
    # a small pool is shared in proportion instead of emptied into the carved split
    small = assign_splits(refs, seed=0, holdout={"test": 8}, train_subjects=40)
    assert len({r.patient_id for r in small["test"]}) == 1 and len({r.patient_id for r in small["train"]}) == 9
    # no native splits: val and test carved (fractions), at least one subject left for train
    flat = [_ref(f"p{i}") for i in range(3)]
    b = assign_splits(flat, seed=1)
    assert [len(b[s]) for s in ("train", "val", "test")] == [1, 1, 1]


def test_final_subjects_interleave_the_sorted_test_ids():
    ids = [f"s{i}" for i in (7, 1, 5, 3, 2, 8, 4, 6)]
    assert final_subjects(ids, 4, 4) == ["s2", "s4", "s6", "s8"]  # every second one by sorted id
    assert final_subjects(ids, 6, 2) == ["s4", "s8"]  # in proportion, spread evenly
    assert final_subjects(["a", "b", "c"], 2, 2) == ["c"] and final_subjects(["a", "b"], 30, 1) == ["b"]
    with pytest.raises(ValueError, match="at least 2"):
        final_subjects(["a"], 1, 1)


def test_assign_splits_carves_final_from_the_test_subjects():
    refs = [_ref(f"s{i:02d}", "train", c) for i in range(20) for c in ("T1w", "T2w")] + [_ref("v0", "val")]
    plain = assign_splits(refs, seed=0, holdout={"test": 3})
    assert plain["final"] == []  # not asked: no final split, the others as before
    a = assign_splits(refs, seed=0, holdout={"test": 3, "final": 3})
    ids = {s: {r.patient_id for r in v} for s, v in a.items()}
    assert len(ids["test"]) == len(ids["final"]) == 3 and len(ids["train"]) == 14 and ids["val"] == {"v0"}
    assert sum(len(v) for v in ids.values()) == 21 and len(set().union(*ids.values())) == 21  # disjoint by subject
    assert all(len([r for r in a["final"] if r.patient_id == p]) == 2 for p in ids["final"])
    pool = sorted(ids["test"] | ids["final"])  # the carved test pool, interleaved
    assert sorted(ids["final"]) == pool[1::2] and sorted(ids["test"]) == pool[0::2]
    # a native test split is shared between test and final
    native = [_ref(f"s{i}", "train") for i in range(4)] + [_ref(f"t{i}", "test") for i in range(5)]
    b = assign_splits(native, seed=0, holdout={"val": 1, "test": 2, "final": 2})
    assert [r.patient_id for r in b["final"]] == ["t2", "t4"] and [r.patient_id for r in b["test"]] == ["t0", "t1", "t3"]
    # one test subject cannot make both: a clear error naming the dataset
    with pytest.raises(DataFormatError, match="x: its own test split has 1 test subject.*at least 2"):
        assign_splits(native[:4] + native[4:5], holdout={"test": 1, "final": 1})
    with pytest.raises(DataFormatError, match="x: 2 training subject\\(s\\) leave 1 test subject"):
        assign_splits(native[:2], holdout={"val": 0, "test": 1, "final": 1})


def test_select_volumes_cycles_contrasts():
    refs = [_ref(f"s{i}", "train", c) for i in range(6) for c in ("T1w", "T2w", "FLAIR")]
    chosen = select_volumes(refs, 4, seed=0, contrasts=("T1w", "T2w"))
    assert [v.contrast for v in chosen] == ["T1w", "T2w", "T1w", "T2w"]
    assert len({v.patient_id for v in chosen}) == 4


def test_choose_slices_central_and_bounded():
    assert choose_slices(18, 4) == [4, 7, 10, 13]
    assert choose_slices(3, 5) == [0, 1, 2]
    assert len(choose_slices(6, 3)) == 3


def test_parse_ismrmrd_header_limits():
    hdr = parse_ismrmrd_header(ismrmrd_header((64, 40), (32, 32), pe_limits=(0, 33, 17)), "x")
    assert hdr["enc_size"] == (64, 40, 1) and hdr["recon_size"] == (32, 32, 1)
    assert hdr["pe_limits"] == (0, 33, 17)
    with pytest.raises(DataFormatError, match="x: 'ismrmrd_header' is not valid XML"):
        parse_ismrmrd_header(b"<oops", "x")


# ----------------------------------------------------------------------------- M4RAW


def test_m4raw_round_trip_recovers_the_image(tmp_path):
    info = write_m4raw_fixture(tmp_path, studies={"train": 2, "val": 1}, contrasts=(("T1", 2), ("FLAIR", 1)),
                               num_slices=3, matrix=32, pad_columns=0, noise=0.0)
    ds = open_dataset("m4raw", tmp_path, "val")
    assert ds.subjects() == ["2022061002"] and {v.contrast for v in ds.volumes} == {"T1w", "FLAIR"}
    vol = next(v for v in ds.volumes if v.contrast == "T1w")
    assert [p.split("/")[-1] for p in vol.files] == ["2022061002_T101.h5", "2022061002_T102.h5"]
    truth = info["files"][vol.files[0]]
    for s in ds.read(vol):
        assert s.kspace.shape == (4, 32, 32) and s.acquired == (0, 32)
        assert rel_err(s.reference(), np.abs(truth["image"][s.metadata["slice"]])) < 1e-4
        assert s.metadata["acquisition"] == "AXT1"


def test_m4raw_padding_and_phase_encode_axis(tmp_path):
    info = write_m4raw_fixture(tmp_path, studies={"train": 1}, contrasts=(("T2", 2),), num_slices=2,
                               matrix=32, pad_columns=4, noise=0.0, pe_axis=-2)
    ds = open_dataset("m4raw", tmp_path, None)
    s = ds.read(0, [1])[0]
    truth = info["files"][ds.volumes[0].files[0]]
    assert s.metadata["pe_axis_in_file"] == -2  # stored with phase encode on the rows …
    assert s.acquired == (4, 28)  # … read back with it last, zero columns excluded
    assert not np.any(s.kspace[..., :4]) and not np.any(s.kspace[..., 28:])
    good = rel_err(s.reference(), np.abs(truth["image"][1]))
    assert good < 0.05 < rel_err(s.reference().T, np.abs(truth["image"][1]))


def test_m4raw_header_limits_exclude_unacquired_lines(tmp_path):
    write_m4raw_fixture(tmp_path, studies={"train": 1}, contrasts=(("T1", 1),), num_slices=2, matrix=32,
                        pad_columns=0, noise=0.01)
    path = tmp_path / "multicoil_train" / "2022061000_T101.h5"
    with h5py.File(path, "r+") as f:  # the header says only columns 4..27 were acquired
        del f["ismrmrd_header"]
        f.create_dataset("ismrmrd_header", data=ismrmrd_header((32, 32), (32, 32), pe_limits=(0, 23, 12)))
    s = open_dataset("m4raw", tmp_path, None).read(0, [0])[0]
    assert s.acquired == (4, 28) and s.metadata["header_acquired"] == (4, 28)


def test_m4raw_repetition_average_reference(tmp_path):
    info = write_m4raw_fixture(tmp_path, studies={"train": 1}, contrasts=(("T1", 3),), num_slices=2,
                               matrix=32, pad_columns=0, noise=0.05)
    single = open_dataset("m4raw", tmp_path, None).read(0, [0])[0]
    avg = open_dataset("m4raw:average_repetitions=true", tmp_path, None).read(0, [0])[0]
    assert single.reference_kspace is None and avg.reference_kspace.shape == (3, 4, 32, 32)
    truth = np.abs(info["files"][open_dataset("m4raw", tmp_path, None).volumes[0].files[0]]["image"][0])
    inside = truth > 0.3 * truth.max()
    err = lambda r: np.abs(r - truth)[inside].mean()  # noqa: E731
    assert err(avg.reference()) < err(single.reference())
    rep2 = open_dataset("m4raw:repetition=2", tmp_path, None).volumes[0]
    assert rep2.files[0].endswith("_T102.h5")


def test_m4raw_malformed_file_raises_naming_it(tmp_path):
    write_m4raw_fixture(tmp_path, studies={"train": 1}, contrasts=(("T1", 1),), num_slices=2, matrix=16, pad_columns=2)
    path = tmp_path / "multicoil_train" / "2022061000_T101.h5"
    with h5py.File(path, "r+") as f:
        real = np.abs(f["kspace"][()]).astype(np.float32)
        del f["kspace"]
        f.create_dataset("kspace", data=real)
    ds = open_dataset("m4raw", tmp_path, None)
    with pytest.raises(DataFormatError, match=re.escape(str(path)) + ".*'kspace' must be complex, got dtype float32"):
        ds.read(0)
    with h5py.File(path, "r+") as f:
        del f["kspace"]
        f.create_dataset("kspace", data=np.zeros((2, 4, 16), np.complex64))
    with pytest.raises(DataFormatError, match="'kspace' must have rank 4"):
        open_dataset("m4raw", tmp_path, None)


# ----------------------------------------------------------------------------- fastMRI


def test_fastmri_round_trip_removes_readout_oversampling(tmp_path):
    info = write_fastmri_fixture(tmp_path, splits={"train": 2, "val": 1}, num_slices=2, recon=16, width=20,
                                 pad_columns=0)
    with pytest.warns(UserWarning, match="skipped 1 undersampled"):
        ds = open_dataset("fastmri", tmp_path, "train")
    assert len(ds.volumes) == 1  # 2 native train subjects, one carved into test
    s = ds.read(0, [1])[0]
    assert s.kspace.shape == (4, 32, 20) and s.readout_keep == 16
    assert s.metadata["contrast"] == ds.volumes[0].contrast
    fitted = s.fit((16, 20))
    obj = info["files"][ds.volumes[0].files[0]]["image"][1]
    assert rel_err(fitted.reference(), np.abs(obj)) < 1e-4
    with h5py.File(ds.volumes[0].files[0]) as f:  # the file's own cropped target agrees
        assert rel_err(crop_or_pad(fitted.reference(), (16, 16)), f["reconstruction_rss"][1]) < 1e-4


def test_fastmri_knee_names_and_header_limits(tmp_path):
    write_fastmri_fixture(tmp_path, anatomy="knee", splits={"train": 2}, num_slices=2, recon=16, width=24,
                          pad_columns=3, with_test_file=False)
    ds = open_dataset("fastmri", tmp_path, None)
    assert {v.contrast for v in ds.volumes} == {"PD", "PDFS"}
    assert all(v.path.name.startswith("file100000") for v in ds.volumes)
    s = ds.read(0, [0])[0]
    assert s.acquired == (3, 21)
    with pytest.raises(DataFormatError, match="no fastmri volumes found"):
        open_dataset("fastmri-brain", tmp_path, None)


def test_fastmri_malformed_file_raises_naming_it(tmp_path):
    write_fastmri_fixture(tmp_path, splits={"train": 1}, num_slices=2, recon=8, width=10, with_test_file=False)
    path = next((tmp_path / "multicoil_train").glob("*.h5"))
    with h5py.File(path, "r+") as f:
        del f["ismrmrd_header"]
    ds = open_dataset("fastmri", tmp_path, None)
    with pytest.raises(DataFormatError, match=re.escape(str(path)) + ": missing dataset 'ismrmrd_header'"):
        ds.read(0)


# ----------------------------------------------------------------------------- SKM-TEA


def test_skmtea_round_trip_target_maps_and_splits(tmp_path):
    info = write_skmtea_fixture(tmp_path, splits={"train": 2, "val": 1}, shape=(4, 16, 12), num_coils=3)
    ds = open_dataset("skmtea:echo=1", tmp_path, "train")
    assert ds.subjects() == ["100"]  # two scans of one subject (two time points): one subject
    assert len(ds.volumes) == 2 and {v.contrast for v in ds.volumes} == {"qDESS-E2"}
    vol = ds.volumes[0]
    truth = info["files"][vol.files[0]]
    s = ds.read(vol, [2])[0]
    assert s.kspace.shape == (3, 16, 12)  # (coil, ky, kz): kz last, the axis fastMRI masks
    assert np.allclose(s.image, truth["target"][2, :, :, 1], atol=1e-6)
    assert np.allclose(s.sens_maps, truth["maps"][2], atol=1e-6)
    assert rel_err(ifft2c(s.kspace), s.sens_maps * s.image) < 1e-5  # SENSE model holds
    assert open_dataset("skmtea", tmp_path, "val").subjects() == ["102"]
    assert open_dataset("skmtea", tmp_path, "test").volumes == []  # release split has no test here


def test_skmtea_malformed_maps_raise(tmp_path):
    write_skmtea_fixture(tmp_path, splits={"train": 1}, shape=(2, 8, 6), num_coils=3)
    path = tmp_path / "files_recon_calib-24" / "MTR_001.h5"
    with pytest.raises(DataFormatError, match="echo 5 requested, the file has 2"):
        open_dataset("skmtea:echo=5", tmp_path, None).read(0)
    with h5py.File(path, "r+") as f:
        maps = f["maps"][()]
        del f["maps"]
        f.create_dataset("maps", data=maps[:, :, :, :2])
    with pytest.raises(DataFormatError, match=re.escape(str(path)) + ": 'maps' has 2 coils, 'kspace' has 3"):
        open_dataset("skmtea", tmp_path, None).read(0)


# ----------------------------------------------------------------------------- CMRxRecon


def test_cmrxrecon_round_trip_mat73_layout(tmp_path):
    info = write_cmrxrecon_fixture(tmp_path, patients=2, frames=3, slices=2, num_coils=3, kx=24, ky=10)
    path = tmp_path / "MultiCoil/Cine/TrainingSet/FullSample/P001/cine_sax.mat"
    assert path.read_bytes()[:10] == b"MATLAB 7.3"
    with h5py.File(path) as f:
        assert f["kspace_full"].shape == (3, 2, 3, 10, 24) and f["kspace_full"].dtype.names == ("real", "imag")
    ds = open_dataset("cmrxrecon:readout_oversampling=1", tmp_path, None)
    assert all("FullSample" in v.files[0] for v in ds.volumes) and len(ds.volumes) == 4
    assert ds.subjects() == ["P001", "P002"]  # cine and mapping of a patient: one subject
    vol = next(v for v in ds.volumes if v.files[0] == str(path))
    truth = info["files"][str(path)]
    s = ds.read(vol, [4])[0]  # slice-major: 4 -> slice 1, frame 1
    assert (s.metadata["slice_position"], s.metadata["frame"]) == (1, 1)
    assert s.kspace.shape == (3, 24, 10)  # (coil, kx, ky): phase encode last
    assert rel_err(ifft2c(s.kspace), truth["maps"] * truth["image"][1, 1]) < 1e-5
    # default: the 2x oversampled readout is removed
    s2 = open_dataset("cmrxrecon", tmp_path, None).read(vol, [4])[0]
    assert s2.readout_keep == 12
    assert rel_err(s2.fit((12, 10)).reference(), np.abs(crop_or_pad(truth["image"][1, 1], (12, 10)))) < 0.02
    assert [v.contrast for v in open_dataset("cmrxrecon:kinds=mapping", tmp_path, None).volumes] == ["T1map"] * 2


def test_cmrxrecon_malformed_complex_layout_raises(tmp_path):
    write_cmrxrecon_fixture(tmp_path, patients=1, kinds=("cine_sax",), frames=1, slices=1, num_coils=2, kx=8, ky=6,
                            with_undersampled=False)
    path = tmp_path / "MultiCoil/Cine/TrainingSet/FullSample/P001/cine_sax.mat"
    with h5py.File(path, "r+") as f:
        del f["kspace_full"]
        f.create_dataset("kspace_full", data=np.zeros((1, 1, 2, 6, 8), dtype=[("re", "<f4"), ("im", "<f4")]))
    with pytest.raises(DataFormatError, match=re.escape(str(path)) + ".*must be complex \\(compound 'real'/'imag'\\)"):
        open_dataset("cmrxrecon", tmp_path, None)


# ----------------------------------------------------------------------------- BraTS


def test_brats_round_trip_images_and_tumour_masks(tmp_path):
    info = write_brats_fixture(tmp_path, subjects=3, shape=(24, 24, 6), lps=True)
    ds = open_dataset("brats:snr=none,phase=false,contrasts=FLAIR", tmp_path, None)
    assert len(ds.volumes) == 3 and {v.contrast for v in ds.volumes} == {"FLAIR"}
    vol = ds.volumes[0]
    truth = info["subjects"][vol.patient_id]
    flair = truth["volumes"]["flair"].astype(np.float32)[::-1, ::-1]  # LPS -> RAS
    seg = truth["seg"][::-1, ::-1]
    s = ds.read(vol, [3])[0]
    expected = np.rot90(flair[:, :, 3]) / np.percentile(flair[flair > 0], 99.5)
    assert s.kspace.shape == (4, 24, 24)
    assert rel_err(s.reference(), expected) < 1e-4  # RSS of simulated coils = the image
    assert np.array_equal(s.masks["tumour_mask"], np.rot90(seg[:, :, 3]) > 0)
    assert set(np.unique(s.masks["tumour_labels"])) <= {0, 1, 2, 3} and 4 not in s.masks["tumour_labels"]
    assert s.masks["tumour_mask"].any()
    small = open_dataset("brats", tmp_path, None, image_size=16).read(0, [3])[0]
    assert small.kspace.shape == (4, 16, 16) and small.masks["tumour_mask"].shape == (16, 16)


def test_brats_2023_naming_and_missing_seg(tmp_path):
    write_brats_fixture(tmp_path, subjects=2, naming="2023", shape=(16, 16, 4), missing_seg=1)
    with pytest.warns(UserWarning, match="1 subject\\(s\\) without a segmentation"):
        ds = open_dataset("brats", tmp_path, None)
    assert len(ds.subjects()) == 2
    assert {v.contrast for v in ds.volumes} == {"T1w", "T1c", "T2w", "FLAIR"}
    assert {v.info["label_scheme"] for v in ds.volumes} == {"2023"}


def test_brats_malformed_labels_raise(tmp_path):
    import nibabel as nib

    write_brats_fixture(tmp_path, subjects=1, naming="2020", shape=(12, 12, 3))
    seg_path = next(tmp_path.rglob("*_seg.nii.gz"))
    seg = np.asarray(nib.load(seg_path).dataobj)
    seg[seg == 4] = 3  # a 2023 label in a 2018-2021-named subject
    nib.save(nib.Nifti1Image(seg, np.eye(4)), seg_path)
    with pytest.raises(DataFormatError, match=re.escape(str(seg_path)) + r": segmentation labels \[3\] not in \[0, 1, 2, 4\]"):
        open_dataset("brats", tmp_path, None).read(0)


# ----------------------------------------------------------------------------- into a run


def _tiny_smoke(**data_changes):
    smoke = get_profile("smoke")
    return dataclasses.replace(smoke, data=dataclasses.replace(smoke.data, **data_changes))


def test_prepare_dataset_m4raw_fixture_reads_with_varnet_dataset(tmp_path):
    write_m4raw_fixture(tmp_path / "m4raw")  # 8 train + 2 val studies, no test folder (as released)
    run = tmp_path / "run"
    manifest = prepare_dataset("smoke", run, seed=0, data_root=tmp_path / "m4raw", dataset="m4raw", progress=False)
    p = get_profile("smoke")
    assert set(manifest) == {"config", "profile", "files", "splits"} and manifest["profile"] == "smoke"
    by_split = {s: [r for r in manifest["files"] if r["split"] == s] for s in ("train", "val", "test", "final")}
    assert {s: len(v) for s, v in by_split.items()} == p.data.subjects
    ids = {s: {r["patient_id"] for r in v} for s, v in by_split.items()}
    assert sum(map(len, ids.values())) == len(set().union(*ids.values()))  # no subject in two splits
    assert {s: sorted(v) for s, v in ids.items()} == {s: v["subjects"] for s, v in manifest["splits"].items()}
    assert "own val" in manifest["splits"]["val"]["origin"] and "carved" in manifest["splits"]["test"]["origin"]
    assert {r["contrast"] for r in manifest["files"]} == {"T1w", "T2w"}
    for r in manifest["files"]:
        assert {"file", "split", "patient_id", "contrast", "num_slices"} <= set(r)
        assert r["num_slices"] == p.data.slices_per_subject
    on_disk = json.loads((run / "data" / "dataset.json").read_text())
    assert on_disk == manifest
    for split in ("train", "val", "test", "final"):
        ds = varnet_dataset(run / "data" / split, acceleration=4, center_fraction=p.data.center_fraction)
        assert len(ds) == p.data.subjects[split] * p.data.slices_per_subject
        sample = ds[0]
        assert sample.masked_kspace.shape == (p.data.num_coils, p.data.image_size, p.data.image_size, 2)
        assert sample.target.shape == (p.data.image_size, p.data.image_size)
    with h5py.File(run / "data" / by_split["train"][0]["file"]) as f:
        assert f["brain_mask"].shape == (3, 32, 32) and 0.5 < f["reconstruction_rss"][()].max() < 2.0
        assert f.attrs["dataset"] == "m4raw" and f.attrs["noise_sigma"] > 0
    # same configuration: reused, nothing rewritten
    first = run / "data" / by_split["test"][0]["file"]
    stamp = first.stat().st_mtime_ns
    again = prepare_dataset("smoke", run, seed=0, data_root=tmp_path / "m4raw", dataset="m4raw", progress=False)
    assert again == manifest and first.stat().st_mtime_ns == stamp
    # changed data (a file removed): converted again
    next((tmp_path / "m4raw" / "multicoil_train").glob("*FLAIR01.h5")).unlink()
    third = prepare_dataset("smoke", run, seed=0, data_root=tmp_path / "m4raw", dataset="m4raw", progress=False)
    assert third["config"]["fingerprint"] != manifest["config"]["fingerprint"]


def test_prepare_real_dataset_keeps_unacquired_lines_out_of_the_mask(tmp_path):
    write_m4raw_fixture(tmp_path / "m4", studies={"train": 3, "val": 1, "test": 2}, contrasts=(("T1", 1),),
                        num_slices=3, matrix=32, pad_columns=4)
    prof = _tiny_smoke(image_size=40, subjects={"train": 2, "val": 1, "test": 1, "final": 1}, slices_per_subject=2)
    m = prepare_real_dataset(prof, tmp_path / "out", 1, tmp_path / "m4", "m4raw", progress=False)
    assert all(r["acquired"] == [8, 32] for r in m["files"])  # 4..28 of 32, padded to 40
    ds = varnet_dataset(tmp_path / "out" / "val", acceleration=4)
    mask = ds[0].mask[0, 0, :, 0].numpy()
    assert not mask[:8].any() and not mask[32:].any() and mask[8:32].any()
    # a previous run's volumes (e.g. the embedded data) are removed
    stale = tmp_path / "out" / "train" / "old.h5"
    stale.write_bytes(b"")
    prepare_real_dataset(prof, tmp_path / "out", 2, tmp_path / "m4", "m4raw", progress=False)
    assert not stale.exists()


def test_prepare_dataset_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="needs the dataset's name"):
        prepare_dataset("smoke", tmp_path, data_root=tmp_path, dataset="embedded")
    with pytest.raises(FileNotFoundError, match="no such dataset folder"):
        prepare_dataset("smoke", tmp_path, data_root=tmp_path / "nope", dataset="m4raw")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="no m4raw volumes found"):
        prepare_dataset("smoke", tmp_path / "run", data_root=tmp_path / "empty", dataset="m4raw")


def test_prepare_brats_stores_tumour_masks_and_maps(tmp_path):
    write_brats_fixture(tmp_path / "b", subjects=5, shape=(24, 24, 8))
    prof = _tiny_smoke(subjects={"train": 2, "val": 1, "test": 1, "final": 1}, slices_per_subject=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough subjects: no warning
        m = prepare_real_dataset(prof, tmp_path / "out", 0, tmp_path / "b", "brats", progress=False)
    rec = m["files"][0]
    assert {"tumour_mask", "tumour_labels", "sens_maps", "image", "brain_mask"} <= set(rec["extras"])
    with h5py.File(tmp_path / "out" / rec["file"]) as f:
        assert f["tumour_mask"].shape == (2, 32, 32) and f["sens_maps"].shape == (4, 32, 32)
        assert f["image"].dtype == np.complex64
    assert len(varnet_dataset(tmp_path / "out" / "train")) == 4


@pytest.mark.parametrize("fmt", sorted(FIXTURE_WRITERS))
def test_each_format_gets_a_final_split_disjoint_from_test(fmt, tmp_path):
    """The default fixture of every format, converted at ``smoke``: a non-empty ``final`` split of its own subjects."""
    FIXTURE_WRITERS[fmt](tmp_path / fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixtures are smaller than the profile asks
        m = prepare_dataset("smoke", tmp_path / "run", seed=0, data_root=tmp_path / fmt, dataset=fmt, progress=False)
    ids = {s: {r["patient_id"] for r in m["files"] if r["split"] == s} for s in ("train", "val", "test", "final")}
    assert all(ids.values()), ids
    assert sum(map(len, ids.values())) == len(set().union(*ids.values())), ids  # disjoint by subject
    assert 1 <= len(ids["final"]) <= get_profile("smoke").data.subjects["final"]
    assert sorted(ids["final"]) == m["splits"]["final"]["subjects"] and m["splits"]["final"]["origin"].startswith("from the test")
    assert len(list((tmp_path / "run" / "data" / "final").glob("*.h5"))) == len(ids["final"])
