"""The dataset integrity check: every label against the RSS image of its own k-space (mrilib.audit)."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest

from dataset_fixtures import phantom_volume, write_fastmri_fixture
from mrilib.audit import (
    DEFAULT_SIGMA,
    DEFAULT_THRESHOLD,
    AuditError,
    AuditResult,
    audit_folder,
    label_score,
    volume_paths,
)
from mrilib.audit.__main__ import main
from mrilib.data import generate_subject, write_volume
from mrilib.data.coils import birdcage_maps
from mrilib.data.kspace import fft2c, ifft2c, rss
from mrilib.run.io import read_json
from mrilib.unlearn.methods import UnlearnError, disagreement_peak, scan_disagreement

N = 48  # image size of the embedded subjects
ROUNDING = 1e-6  # what float32 rounding may reach (measured ≤ 2e-7)


@pytest.fixture(scope="module")
def subjects():
    """Two noisy subjects of the embedded generator, as the book simulates them (6 slices of N², 4 coils)."""
    return [generate_subject(seed, image_size=N, num_slices=6, num_coils=4, snr=20.0, contrasts=("T1w", "T2w"))
            for seed in (11, 12)]


def _write_embedded(folder, sims) -> list[str]:
    """The subjects as the book writes them (:func:`~mrilib.data.embedded.generate_embedded_dataset`)."""
    names = []
    for i, sim in enumerate(sims):
        name = f"train{i:03d}_{sim['subject'].contrast}.h5"
        write_volume(folder / name, sim["kspace"], patient_id=f"train{i:03d}", acquisition="AXT2",
                     extras={"image": sim["image"], "sens_maps": sim["sens_maps"], "brain_mask": sim["brain_mask"]})
        names.append(name)
    return names


def _blob(shape, centre, radius: float = 2.5) -> np.ndarray:
    yy, xx = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return (((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) <= radius ** 2).astype(np.float32)


def _edit(path, s: int, centre, amplitude: float) -> None:
    """Add a blob of ``amplitude`` × the slice's maximum to label ``s`` of ``path``, in place."""
    with h5py.File(path, "r+") as f:
        y = f["reconstruction_rss"]
        y[s] = y[s] + amplitude * y[s].max() * _blob(y.shape[1:], centre)


def _minimal(path, kspace, labels) -> None:
    """A volume with nothing but the two datasets the check reads."""
    with h5py.File(path, "w") as f:
        if kspace is not None:
            f.create_dataset("kspace", data=kspace)
        if labels is not None:
            f.create_dataset("reconstruction_rss", data=labels)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mrilib.audit", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_the_embedded_generator_has_no_flagged_slice(tmp_path, subjects):
    _write_embedded(tmp_path, subjects)
    result = audit_folder(tmp_path, leave=False)
    assert len(result.slices) == 12 and not result.errors and result.summary()["files_checked"] == 2
    assert result.summary()["slices_flagged"] == 0
    assert result.slices["score"].max() < ROUNDING


def test_labels_from_another_fft_score_float_rounding(tmp_path):
    """fastMRI-layout fixtures whose labels come from numpy's FFT (not fastmri's): ~1e-7, never flagged;
    their k-space is readout-oversampled (2·32 × 40 for 32 × 32 labels)."""
    out = write_fastmri_fixture(tmp_path, splits={"train": 3}, with_test_file=False, num_slices=4)
    folder = tmp_path / "multicoil_train"
    first = next(iter(out["files"]))
    with h5py.File(first, "r") as f:
        assert f["kspace"].shape == (4, 4, 64, 40) and f["reconstruction_rss"].shape == (4, 32, 32)
    for sigma in (DEFAULT_SIGMA, 2.0):
        result = audit_folder(folder, sigma=sigma, leave=False)
        assert len(result.slices) == 12 and not result.errors
        assert not result.slices["flagged"].any() and result.slices["score"].max() < ROUNDING


def test_an_edited_slice_is_flagged_and_its_neighbours_are_not(tmp_path, subjects):
    names = _write_embedded(tmp_path, subjects)
    _edit(tmp_path / names[1], 2, (20, 26), amplitude=0.05)
    result = audit_folder(tmp_path, leave=False)
    scores = result.slices.set_index(["file", "slice"])["score"]
    assert list(result.flagged.index) == [8]  # file 1 slice 2 (6 slices a file), and nothing else
    assert scores[names[1], 2] == pytest.approx(0.05, rel=0.05)  # the blob's share of the maximum
    assert scores[names[1], 1] < ROUNDING and scores[names[1], 3] < ROUNDING
    assert result.summary()["max_unflagged"] < ROUNDING


def test_the_score_is_chapter_5s_peak(tmp_path, subjects):
    """One measure: the audit at sigma = 2 is disagreement_peak, and scan_disagreement reads the audit."""
    k = subjects[0]["kspace"][3]
    label = rss(ifft2c(k)).astype(np.float32) + 0.1 * _blob((N, N), (24, 24)) * float(np.abs(ifft2c(k)).max())
    assert label_score(k, label, 2.0) == disagreement_peak(k, label, 2.0) > 0.01
    assert label_score(k, label) >= label_score(k, label, 2.0)  # the low-pass only lowers the score
    names = _write_embedded(tmp_path, subjects[:1])
    _edit(tmp_path / names[0], 4, (30, 20), amplitude=0.2)
    scan = scan_disagreement(tmp_path)
    audit = audit_folder(tmp_path, sigma=2.0, leave=False)
    assert list(scan.columns) == ["file", "slice", "peak"]
    np.testing.assert_array_equal(scan["peak"].to_numpy(), audit.slices["score"].to_numpy())
    assert scan["peak"].idxmax() == 4 and scan["peak"][4] > 0.05
    _minimal(tmp_path / "broken.h5", None, np.zeros((2, N, N), np.float32))
    with pytest.raises(UnlearnError, match="broken.h5"):  # a partial scan would miscount the detections
        scan_disagreement(tmp_path)


@pytest.mark.parametrize("oversampled", ["readout", "phase"])
def test_oversampled_kspace_is_cropped_to_the_label(tmp_path, oversampled):
    h, w = (64, 32) if oversampled == "readout" else (32, 64)
    obj = np.zeros((3, h, w), np.complex64)
    obj[:, (h - 32) // 2:(h + 32) // 2, (w - 32) // 2:(w + 32) // 2] = phantom_volume(3, 32, 32, seed=4)
    kspace = fft2c(birdcage_maps(4, (h, w))[None] * obj[:, None])
    path = write_volume(tmp_path / "wide.h5", kspace, patient_id="p", acquisition="AXT2", recon_size=(32, 32))
    _edit(path, 1, (16, 16), amplitude=0.1)
    result = audit_folder(tmp_path, leave=False)
    assert not result.errors and list(result.slices["flagged"]) == [False, True, False]
    assert result.slices["score"][1] == pytest.approx(0.1, rel=0.1)
    assert max(result.slices["score"][0], result.slices["score"][2]) < ROUNDING


def test_a_label_stored_in_float16_is_not_flagged(subjects):
    """The threshold's margin: half-precision labels (rounding ~5e-4) are not edits."""
    k = subjects[1]["kspace"][2]
    score = label_score(k, rss(ifft2c(k)).astype(np.float16))
    assert 1e-5 < score < DEFAULT_THRESHOLD


def _mixed_folder(folder, subjects) -> list[str]:
    """One good volume, three that cannot be checked, and files every reader skips."""
    k = subjects[0]["kspace"][:3]
    y = rss(ifft2c(k)).astype(np.float32)
    _minimal(folder / "good.h5", k, y)
    _minimal(folder / "no_kspace.h5", None, y)
    _minimal(folder / "no_label.h5", k, None)
    _minimal(folder / "too_large.h5", k[:, :, :24, :24], y)  # 48² labels of 24² images: cannot match
    (folder / "garbage.h5").write_bytes(b"not an HDF5 file\n" * 10)
    (folder / ".good.h5.x1y2.tmp").write_bytes(b"half written")
    (folder / "._good.h5").write_bytes(b"resource fork")
    return ["garbage.h5", "no_kspace.h5", "no_label.h5", "too_large.h5"]


def test_bad_files_give_one_error_each_and_the_rest_is_checked(tmp_path, subjects):
    bad = _mixed_folder(tmp_path, subjects)
    assert [p.name for p in volume_paths(tmp_path)] == sorted(["good.h5", *bad])
    result = audit_folder(tmp_path, leave=False)
    assert result.files == 5 and result.checked
    assert list(result.slices["file"]) == ["good.h5"] * 3 and not result.slices["flagged"].any()
    assert [e["file"] for e in result.errors] == bad
    errors = {e["file"]: e["error"] for e in result.errors}
    assert "'kspace'" in errors["no_kspace.h5"] and "'reconstruction_rss'" in errors["no_label.h5"]
    assert "cannot match" in errors["too_large.h5"] and "HDF5" in errors["garbage.h5"]

    run = _cli(tmp_path)
    assert run.returncode == 0, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 4 and all(str(tmp_path / name) in ln for name, ln in zip(bad, lines))
    assert "3 slices of 1/5 files checked, 0 flagged" in run.stdout


def test_a_slice_with_nan_is_an_error_of_that_slice_only(tmp_path, subjects):
    k = subjects[0]["kspace"][:3].copy()
    y = rss(ifft2c(k)).astype(np.float32)
    y[1, 5, 5] = np.nan
    _minimal(tmp_path / "nan.h5", k, y)
    result = audit_folder(tmp_path, leave=False)
    assert list(result.slices["slice"]) == [0, 2]
    assert result.errors == [dict(file="nan.h5", error="slice 1: NaN or Inf in its k-space or label")]


def test_nothing_to_check_exits_non_zero(tmp_path, subjects, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".hidden.h5").write_bytes(b"x")
    run = _cli(empty)  # the command line in a subprocess
    assert run.returncode == 1 and f"no .h5 volumes in {empty}" in run.stderr
    with pytest.raises(FileNotFoundError, match="no .h5"):
        audit_folder(empty)
    nested = tmp_path / "root" / "multicoil_train"
    nested.mkdir(parents=True)
    _minimal(nested / "a.h5", subjects[0]["kspace"][:1], rss(ifft2c(subjects[0]["kspace"][:1])))
    assert main([str(tmp_path / "root")]) == 1 and "subfolders multicoil_train hold some" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 1 and "no such folder" in capsys.readouterr().err

    all_bad = tmp_path / "all_bad"
    all_bad.mkdir()
    _minimal(all_bad / "a.h5", None, np.zeros((2, N, N), np.float32))
    (all_bad / "b.h5").write_text("nope")
    assert main([str(all_bad)]) == 1
    out = capsys.readouterr()
    assert "no slice could be checked (2 errors in 2 files)" in out.out and out.err.count("error: ") == 2
    assert not audit_folder(all_bad, leave=False).checked


def test_the_json_report_round_trips(tmp_path, subjects):
    data = tmp_path / "data"
    names = _write_embedded(data, subjects)
    _edit(data / names[0], 5, (10, 30), amplitude=0.3)
    (data / "junk.h5").write_text("x")
    out = tmp_path / "reports" / "audit.json"
    run = _cli(data, "--json", out, "--threshold", 0.01)
    assert run.returncode == 0, run.stderr
    assert f"FLAGGED {names[0]} slice 5" in run.stdout
    report = read_json(out)
    assert [p.name for p in out.parent.iterdir()] == ["audit.json"]  # written atomically: no temporary left
    assert report["threshold"] == 0.01 and report["sigma"] == DEFAULT_SIGMA and report["files"] == 3
    assert report["slices_checked"] == 12 and report["slices_flagged"] == 1 and report["files_checked"] == 2
    assert report["errors"] == [dict(file="junk.h5", error=report["errors"][0]["error"])]
    assert set(report["slices"][0]) == {"file", "slice", "score", "flagged"}
    flagged = [(r["file"], r["slice"]) for r in report["slices"] if r["flagged"]]
    assert flagged == [(names[0], 5)] and report["max_score"] > 0.1 and report["max_unflagged"] < ROUNDING

    again = AuditResult.from_json(report)
    direct = audit_folder(data, threshold=0.01, leave=False)
    pd.testing.assert_frame_equal(again.slices, direct.slices)
    assert again.to_json() == report == {**direct.to_json(), "data_dir": report["data_dir"]}


def test_bad_arguments_are_rejected(tmp_path, subjects, capsys):
    _write_embedded(tmp_path, subjects[:1])
    with pytest.raises(AuditError, match="threshold"):
        audit_folder(tmp_path, threshold=0)
    with pytest.raises(AuditError, match="sigma"):
        audit_folder(tmp_path, sigma=-1)
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), "--threshold", "-1"])
    assert exit_.value.code == 2 and "threshold must be > 0" in capsys.readouterr().err


def test_labels_that_are_not_the_rss_of_their_kspace_are_said_to_be_unauditable(tmp_path):
    """M4RAW with averaged repetitions: its references are the mean RSS over repetitions, legitimately not the
    RSS of the stored (first) repetition; the converter says so and the audit reports it instead of flagging."""
    from dataset_fixtures import FIXTURE_WRITERS
    from mrilib.data import prepare_dataset
    from mrilib.data.h5layout import LABEL_SOURCE

    FIXTURE_WRITERS["m4raw"](tmp_path / "raw")
    for option, auditable in (("m4raw", True), ("m4raw:average_repetitions=true", False)):
        run = tmp_path / option.replace(":", "_")
        prepare_dataset("smoke", run, seed=0, data_root=tmp_path / "raw", dataset=option, progress=False)
        result = audit_folder(run / "data" / "train", leave=False)
        if auditable:
            assert result.checked and not result.slices["flagged"].any() and not result.errors
        else:
            assert not result.checked and result.errors
            assert all("cannot audit" in e["error"] and LABEL_SOURCE in e["error"] for e in result.errors)
            assert all("repetitions" in e["error"] for e in result.errors)
        if not auditable:  # asked to, it scores them anyway: averaged labels depart from one repetition
            scored = audit_folder(run / "data" / "train", leave=False, all_labels=True)
            assert scored.checked and not scored.errors and scored.slices["flagged"].all()
