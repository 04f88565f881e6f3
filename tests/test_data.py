"""The embedded dataset: physics, the fastMRI layout, determinism and bad input."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest
import torch

from mrilib.config import get_profile
from mrilib.data import (
    DataFormatError,
    birdcage_maps,
    embedded,
    generate_embedded_dataset,
    generate_subject,
    ifft2c,
    read_volume,
    rss,
    simulate_kspace,
    validate_volume,
    varnet_dataset,
    write_volume,
)

SMALL = dict(image_size=32, num_slices=2, num_coils=4, contrasts=("T1w",))


@pytest.fixture(scope="module")
def smoke_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedded")
    manifest = generate_embedded_dataset("smoke", root, seed=0, progress=False)
    return root, manifest


def test_coil_maps_are_normalised():
    maps = birdcage_maps(8, (24, 20))
    assert maps.shape == (8, 24, 20) and maps.dtype == np.complex64
    np.testing.assert_allclose(np.sum(np.abs(maps) ** 2, axis=0), 1.0, atol=1e-5)
    # Each coil is most sensitive on its own side: coils differ.
    assert np.abs(maps[0] - maps[4]).max() > 0.1


def test_noise_free_rss_equals_magnitude_and_written_target(tmp_path):
    sim = generate_subject(7, snr=None, **SMALL)
    assert sim["kspace"].shape == (2, 4, 32, 32) and sim["kspace"].dtype == np.complex64
    # RSS of the coil images equals |x| because sum |S|^2 = 1.
    np.testing.assert_allclose(rss(ifft2c(sim["kspace"])), np.abs(sim["image"]), rtol=1e-4, atol=1e-5)
    path = write_volume(tmp_path / "v.h5", sim["kspace"], patient_id="p", acquisition="AXT1")
    vol = read_volume(path)
    np.testing.assert_allclose(vol["reconstruction_rss"], rss(ifft2c(vol["kspace"])), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vol["reconstruction_rss"], np.abs(sim["image"]), rtol=1e-4, atol=1e-5)
    assert vol["attrs"]["max"] == pytest.approx(float(vol["reconstruction_rss"].max()))
    assert vol["attrs"]["norm"] == pytest.approx(float(np.linalg.norm(vol["reconstruction_rss"])), rel=1e-5)


def test_noise_has_the_requested_sigma():
    maps = birdcage_maps(4, 64)
    image = np.ones((64, 64), np.complex64)
    clean = simulate_kspace(image, maps)
    noisy = simulate_kspace(image, maps, sigma=0.05, rng=np.random.default_rng(0))
    diff = noisy - clean
    assert np.std(diff.real) == pytest.approx(0.05 / np.sqrt(2), rel=0.05)
    assert np.std(diff.imag) == pytest.approx(0.05 / np.sqrt(2), rel=0.05)
    with pytest.raises(ValueError, match="rng"):
        simulate_kspace(image, maps, sigma=0.1)


def test_dataset_layout_and_splits(smoke_dataset):
    root, manifest = smoke_dataset
    p = get_profile("smoke")
    assert set(p.data.subjects) == {"train", "val", "test", "final"} and p.data.subjects["final"] == 2
    for split in ("train", "val", "test", "final"):
        files = sorted((root / split).glob("*.h5"))
        assert len(files) == p.data.subjects[split]
    # Split by subject: no patient in two splits; the manifest lists each split's subjects.
    ids = {}
    for r in manifest["files"]:
        ids.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in ids.values())
    subjects = {s: v["subjects"] for s, v in manifest["splits"].items()}
    assert {s: len(v) for s, v in subjects.items()} == p.data.subjects
    assert set(subjects["final"]).isdisjoint(subjects["train"] + subjects["val"] + subjects["test"])
    with h5py.File(root / next(r["file"] for r in manifest["files"] if r["split"] == "final")) as f:
        assert f.attrs["patient_id"] in subjects["final"] and f["kspace"].shape[0] == p.data.slices_per_subject
    path = root / manifest["files"][0]["file"]
    with h5py.File(path) as f:
        assert f["kspace"].shape == (p.data.slices_per_subject, p.data.num_coils, p.data.image_size, p.data.image_size)
        assert f["kspace"].dtype == np.complex64
        assert f["reconstruction_rss"].dtype == np.float32
        assert {"max", "norm", "acquisition", "patient_id"} <= set(f.attrs)


def test_slicedataset_roundtrip_with_varnet_transform(smoke_dataset):
    root, _ = smoke_dataset
    p = get_profile("smoke")
    ds = varnet_dataset(root / "train", acceleration=4, center_fraction=0.08)
    assert len(ds) == p.data.num_slices["train"]
    s = ds[1]
    n = p.data.image_size
    assert s.masked_kspace.shape == (p.data.num_coils, n, n, 2)
    assert s.crop_size == (n, n)
    assert s.target.shape == (n, n)
    # The header's encoding limits give no padding: the mask spans all columns.
    fname, slice_num, meta = ds.raw_samples[1]
    assert (meta["padding_left"], meta["padding_right"]) == (0, n)
    assert meta["encoding_size"] == (n, n, 1) and meta["recon_size"] == (n, n, 1)
    mask = s.mask.reshape(-1)
    assert 0.2 <= mask.float().mean() <= 0.35  # 4x with an 8 % centre
    # Unsampled columns are exactly zero; the target is the file's RSS.
    assert torch.all(s.masked_kspace[..., ~mask, :] == 0)
    with h5py.File(fname) as f:
        np.testing.assert_array_equal(s.target.numpy(), f["reconstruction_rss"][slice_num])
        assert s.max_value == pytest.approx(f.attrs["max"])


def test_same_seed_identical_other_seed_different(tmp_path, smoke_dataset):
    root, manifest = smoke_dataset
    again = generate_embedded_dataset("smoke", tmp_path / "again", seed=0, progress=False)
    other = generate_embedded_dataset("smoke", tmp_path / "other", seed=1, progress=False)
    a = root / manifest["files"][0]["file"]
    b = tmp_path / "again" / again["files"][0]["file"]
    c = tmp_path / "other" / other["files"][0]["file"]
    with h5py.File(a) as fa, h5py.File(b) as fb, h5py.File(c) as fc:
        np.testing.assert_array_equal(fa["kspace"][()], fb["kspace"][()])
        assert fa["kspace"].shape == fc["kspace"].shape
        assert not np.allclose(fa["image"][()], fc["image"][()])
    assert {r["patient_id"] for r in manifest["files"]}.isdisjoint({r["patient_id"] for r in other["files"]})


def test_existing_dataset_is_reused(smoke_dataset, monkeypatch):
    root, manifest = smoke_dataset

    def boom(*a, **k):
        raise AssertionError("should not regenerate")

    monkeypatch.setattr(embedded, "generate_subject", boom)
    assert generate_embedded_dataset("smoke", root, seed=0, progress=False) == manifest


def _arrays(path) -> dict:
    with h5py.File(path) as f:
        return {k: f[k][()] for k in f}


def test_adding_final_subjects_leaves_the_other_splits_unchanged(tmp_path):
    """The final split came after train/val/test: a dataset cached before it (no ``final`` in its
    configuration) is built again, and train/val/test come back with the same subjects and volumes."""
    smoke = get_profile("smoke")
    tiny = dataclasses.replace(smoke, data=dataclasses.replace(
        smoke.data, subjects={"train": 2, "val": 1, "test": 1, "final": 1}, slices_per_subject=1))
    old = generate_embedded_dataset(tiny, tmp_path, seed=3, progress=False)
    before = {r["file"]: _arrays(tmp_path / r["file"]) for r in old["files"] if r["split"] != "final"}
    # each subject's seed is the one it had before 'final' existed: (dataset seed, index in train/val/test, i)
    for r in old["files"]:
        with h5py.File(tmp_path / r["file"]) as f:
            seed = int(f.attrs["subject_seed"])
        if r["split"] != "final":
            i = int(r["patient_id"][len(r["split"]):][:3])
            legacy = np.random.SeedSequence([3, ("train", "val", "test").index(r["split"]), i])
            assert seed == int(legacy.generate_state(1)[0])
    # a manifest from before the final split: its configuration has no 'final', its folder none
    manifest = tmp_path / "dataset.json"
    stale = json.loads(manifest.read_text())
    del stale["config"]["subjects"]["final"]
    stale["files"] = [r for r in stale["files"] if r["split"] != "final"]
    manifest.write_text(json.dumps(stale))
    for f in (tmp_path / "final").glob("*.h5"):
        f.unlink()
    more = dataclasses.replace(tiny, data=dataclasses.replace(tiny.data, subjects={**tiny.data.subjects, "final": 2}))
    new = generate_embedded_dataset(more, tmp_path, seed=3, progress=False)
    assert new["config"]["subjects"]["final"] == 2 and len(list((tmp_path / "final").glob("*.h5"))) == 2
    assert sorted(r["file"] for r in new["files"] if r["split"] != "final") == sorted(before)
    for rel, arrays in before.items():
        again = _arrays(tmp_path / rel)
        assert set(again) == set(arrays)
        for k, v in arrays.items():
            np.testing.assert_array_equal(again[k], v, err_msg=f"{rel}:{k}")
    assert set(new["splits"]["final"]["subjects"]).isdisjoint(
        {r["patient_id"] for r in new["files"] if r["split"] != "final"})


def test_profiles_need_a_final_split():
    smoke = get_profile("smoke")
    assert {n: get_profile(n).data.subjects["final"] for n in ("smoke", "cpu", "gpu")} == {"smoke": 2, "cpu": 8, "gpu": 30}
    assert get_profile("cpu").data.num_slices["final"] == 8 * get_profile("cpu").data.slices_per_subject
    for bad in ({"train": 4, "val": 2, "test": 2}, {"train": 4, "val": 2, "test": 2, "final": 0}):
        with pytest.raises(ValueError, match="train, val, test and final"):
            dataclasses.replace(smoke.data, subjects=bad)


def test_interrupted_generation_leaves_no_trusted_files(tmp_path, monkeypatch):
    real = embedded.write_volume
    calls = {"n": 0}

    def flaky(path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")
        return real(path, *a, **k)

    monkeypatch.setattr(embedded, "write_volume", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_embedded_dataset("smoke", tmp_path, seed=0, progress=False)
    assert not (tmp_path / "dataset.json").exists()
    assert not list(tmp_path.rglob("*.tmp"))
    monkeypatch.setattr(embedded, "write_volume", real)
    manifest = generate_embedded_dataset("smoke", tmp_path, seed=0, progress=False)
    for r in manifest["files"]:
        validate_volume(tmp_path / r["file"])


# --- bad input -------------------------------------------------------------------


def _good_volume(tmp_path):
    sim = generate_subject(3, snr=None, **SMALL)
    return write_volume(tmp_path / "good.h5", sim["kspace"], patient_id="p", acquisition="AXT1")


def test_truncated_file_is_rejected(tmp_path):
    good = _good_volume(tmp_path)
    bad = tmp_path / "truncated.h5"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(DataFormatError, match="truncated.h5"):
        validate_volume(bad)


def test_non_hdf5_file_is_rejected(tmp_path):
    bad = tmp_path / "notes.h5"
    bad.write_text("this is not HDF5")
    with pytest.raises(DataFormatError, match=r"notes\.h5.*not a readable HDF5"):
        validate_volume(bad)


def test_missing_kspace_is_rejected(tmp_path):
    bad = tmp_path / "nokspace.h5"
    with h5py.File(bad, "w") as f:
        f["reconstruction_rss"] = np.zeros((1, 4, 4), np.float32)
    with pytest.raises(DataFormatError, match=r"nokspace\.h5.*missing dataset 'kspace'"):
        validate_volume(bad)


def test_wrong_rank_is_rejected(tmp_path):
    bad = tmp_path / "rank3.h5"
    with h5py.File(bad, "w") as f:
        f["kspace"] = np.zeros((4, 8, 8), np.complex64)
        f["ismrmrd_header"] = "x"
    with pytest.raises(DataFormatError, match=r"rank3\.h5.*rank 4"):
        validate_volume(bad)
    with pytest.raises(DataFormatError, match="rank 4"):
        write_volume(tmp_path / "w.h5", np.zeros((4, 8, 8), np.complex64), patient_id="p", acquisition="a")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_values_are_rejected(tmp_path, value):
    good = _good_volume(tmp_path)
    with h5py.File(good, "r+") as f:
        ks = f["kspace"][()]
        ks[1, 2, 3, 4] = value
        f["kspace"][...] = ks
    with pytest.raises(DataFormatError, match=r"good\.h5.*slice 1.*NaN or Inf"):
        validate_volume(good)
    with pytest.raises(DataFormatError, match="NaN or Inf"):
        write_volume(tmp_path / "w.h5", ks, patient_id="p", acquisition="a")


def test_unknown_profile_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"unknown profile 'tiny'.*cpu, gpu, gpu-dry, smoke"):
        generate_embedded_dataset("tiny", tmp_path)


def test_runs_on_real_data_get_their_own_run_dir():
    from mrilib.config import default_run_dir

    assert default_run_dir("cpu") == "runs/cpu"
    assert default_run_dir("smoke", "/data/m4raw", "m4raw") == "runs/smoke-m4raw"
    assert default_run_dir("smoke", None, "m4raw") == "runs/smoke"  # no data_root: the embedded data
    with pytest.raises(ValueError, match="unknown profile"):
        default_run_dir("tiny")


def test_unknown_contrast_is_rejected():
    with pytest.raises(ValueError, match="unknown contrast"):
        generate_subject(0, image_size=16, num_slices=1, num_coils=2, snr=None, contrasts=("PD",))
