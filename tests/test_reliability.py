"""Reliability: what a user meets after killing, truncating, corrupting or filling the disk under a run.

Each test reproduces one case of issue 19's "Reliability" list:

1. a kill while a volume is written leaves ``data/train/.<name>.h5.<random>.tmp``: readers skip
   hidden and temporary files, and the book removes them at its start;
2. truncated caches and failed writes name the file and the fix (a cached result is a miss and
   is computed again; a training checkpoint says which file to delete to start afresh);
3. a flipped byte in a checkpoint, a cached torch artefact, an unlearnt ``model.pt``, the CycleGAN's
   checkpoint or a lesion classifier's file is caught by the digest stored with it (files written
   before digests load as before);
5. ``--dataset`` without ``--data-root`` (and the like) is refused before anything runs, and the
   Makefile passes each of them whenever it is set;
6. ``make lab`` adds ``--allow-root`` when run as root.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import time
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mrilib.data.datasets import get_format
from mrilib.data.h5layout import DataFormatError
from mrilib.data.loading import slice_dataset, varnet_dataset, volume_files
from mrilib.data.training import TrainSlices
from mrilib.models.classifier import LesionClassifier
from mrilib.models.varnet import build_varnet
from mrilib.poison import cyclegan
from mrilib.poison.judge import FORMAT as CLASSIFIER_FORMAT
from mrilib.poison.judge import load_classifier
from mrilib.recon.checkpoints import CheckpointError, best_checkpoint, load_checkpoint, load_model, save_checkpoint
from mrilib.run.cache import (
    JSON,
    NPZ,
    TORCH,
    WEIGHTS_DIGEST,
    CacheError,
    CacheWarning,
    cached_step,
    content_digest,
    data_identity,
    read_weights,
    weights_digest,
    weights_match,
)
from mrilib.run.io import ArtefactWriteError, atomic_path, is_hidden_or_temporary, write_json
from mrilib.run.layout import RunLayout

REPO = Path(__file__).resolve().parents[1]
TINY = dict(num_cascades=2, chans=4, sens_chans=2, pools=2, sens_pools=2)


def _flip_a_byte_of(path: Path, tensor: torch.Tensor) -> None:
    """Flip one bit inside ``tensor``'s stored bytes in the ``torch.save``d file ``path`` (a silent corruption:
    torch.load reads the file without complaint)."""
    data = bytearray(path.read_bytes())
    raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    at = bytes(data).find(raw)
    assert at >= 0, "the tensor's bytes are not stored contiguously in the file"
    data[at + len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _interrupted_write(folder: Path, name: str) -> Path:
    """What ``atomic_path`` leaves when the process is killed mid-write: a hidden, half-written temporary."""
    tmp = folder / f".{name}.k2j4h1x0.tmp"
    tmp.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # the start of an HDF5 file, then nothing
    return tmp


# --------------------------------------------------------------------------------------
# 1. temporaries of a killed write
# --------------------------------------------------------------------------------------


def test_hidden_and_temporary_names():
    for name in (".vol.h5.ab12cd.tmp", ".DS_Store", "._vol.h5", "x.h5.tmp"):
        assert is_hidden_or_temporary(Path("/runs/smoke/data/train") / name), name
    for name in ("vol.h5", "tmp.h5", "dataset.json"):
        assert not is_hidden_or_temporary(Path("/runs/.hidden-parent") / name), name


def test_readers_skip_what_a_killed_write_left(smoke_data, tmp_path):
    train = tmp_path / "train"
    shutil.copytree(smoke_data / "train", train)
    before = (volume_files(train), len(varnet_dataset(train)), data_identity(train))
    first = before[0][0]
    _interrupted_write(train, first.name)
    (train / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    # readers see exactly what they saw before
    assert volume_files(train) == before[0]
    assert len(varnet_dataset(train)) == before[1] == len(slice_dataset(train))
    assert data_identity(train) == before[2]
    sample = varnet_dataset(train)[0]
    assert sample.masked_kspace.ndim == 4
    assert len(TrainSlices(train, [4], 0.08, "equispaced_fraction", seed=0)) == before[1]
    # a visible stray file is still an error: SliceDataset would read it
    (train / "notes.txt").write_text("x")
    with pytest.raises(DataFormatError, match=r"holds non-volume files \['notes.txt'\]"):
        volume_files(train)


def test_the_book_clears_temporaries_of_data_poison_and_models(tmp_path):
    run = RunLayout(tmp_path / "runs" / "smoke")
    for folder in (run.split("train"), run.poisoned_split("cyclegan-cyst"), run.clean_model):
        folder.mkdir(parents=True)
    left = [_interrupted_write(run.split("train"), "train_000.h5"),
            _interrupted_write(run.poisoned_split("cyclegan-cyst"), "train_001.h5"),
            _interrupted_write(run.clean_model, "last.pt")]
    keep = run.split("train") / "train_000.h5"
    keep.write_bytes(b"a volume")
    # the pipeline calls this under its lock, before the first notebook (older_than_s=0)
    assert run.remove_stale_temporaries(older_than_s=0) == sorted(left)
    assert not any(p.exists() for p in left) and keep.exists()
    src = (REPO / "mrilib" / "book" / "pipeline.py").read_text()
    assert "run.remove_stale_temporaries(older_than_s=0)" in src


def test_format_readers_skip_hidden_source_files(tmp_path):
    from dataset_fixtures import write_fastmri_fixture

    root = tmp_path / "fastmri"
    write_fastmri_fixture(root, splits={"train": 2, "val": 1}, with_test_file=False)
    fmt = get_format("fastmri")
    refs = fmt.discover(root)
    folder = Path(refs[0].files[0]).parent
    (folder / "._file_brain_AXT2_000.h5").write_bytes(b"\0\5\26\7AppleDouble")  # macOS metadata, not HDF5
    _interrupted_write(folder, "file_brain_AXT2_001.h5")
    assert [r.files for r in fmt.discover(root)] == [r.files for r in refs]


# --------------------------------------------------------------------------------------
# 2. truncated caches and failed writes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec, value", [(JSON, {"x": 1.5}), (NPZ, {"a": np.arange(600.0)}),
                                          (TORCH, {"w": torch.arange(600.0)})])
def test_a_truncated_cache_entry_is_computed_again_with_a_warning(tmp_path, codec, value):
    path = tmp_path / "artefact"
    calls = []

    def compute():
        calls.append(1)
        return value

    cached_step(path, {"a": 1}, compute, codec)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.warns(CacheWarning, match=f"{path}.*cannot be read.*computing it again"):
        out = cached_step(path, {"a": 1}, compute, codec)
    assert len(calls) == 2 and len(path.read_bytes()) >= len(good) // 2 + 1
    assert set(out) >= set(value)
    # even where another identity would be refused, an unreadable file is replaced (nothing in it can be kept)
    path.write_bytes(b"")
    with pytest.warns(CacheWarning, match="artefact"):
        cached_step(path, {"a": 1}, compute, codec, on_mismatch="raise")
    assert len(calls) == 3


def test_a_full_disk_names_the_file_and_keeps_the_old_artefact(tmp_path, monkeypatch):
    path = tmp_path / "entry.pt"
    cached_step(path, {"a": 1}, lambda: {"w": torch.zeros(3)}, TORCH)
    old = path.read_bytes()

    def full_disk(obj, f, *a, **k):  # what torch.save raises when the disk fills up mid-write
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(ArtefactWriteError, match=rf"(?s){path}: could not be written.*unexpected pos.*Free disk space"):
        cached_step(path, {"a": 2}, lambda: {"w": torch.ones(3)}, TORCH)
    monkeypatch.undo()
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["entry.pt"]

    def enospc(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", enospc)
    with pytest.raises(ArtefactWriteError, match=r"result.json: could not be written.*No space left") as err:
        write_json(tmp_path / "result.json", {"a": 1})
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    assert not (tmp_path / "result.json").exists()


def test_other_errors_inside_an_atomic_write_pass_through(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "x.json"):
            open(tmp_path / "missing-input")
    with pytest.raises(RuntimeError, match="not a write"):
        with atomic_path(tmp_path / "x.json"):
            raise RuntimeError("not a write")
    assert not any(tmp_path.iterdir())


def test_a_truncated_training_checkpoint_says_how_to_start_afresh(tmp_path):
    model = build_varnet(TINY, seed=0)
    save_checkpoint(tmp_path / "last.pt", best_checkpoint({"model": TINY}, model, 1, 0.5))
    good = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(good[: len(good) // 3])
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'last.pt'}: corrupted.*delete .*last.pt to train this "
                                              "model from scratch"):
        load_checkpoint(tmp_path / "last.pt")


# --------------------------------------------------------------------------------------
# 3. digests: a flipped byte is caught, old files load
# --------------------------------------------------------------------------------------


def test_a_checkpoint_with_a_flipped_byte_is_refused(tmp_path):
    model = build_varnet(TINY, seed=0)
    entry = best_checkpoint({"model": TINY}, model, 1, 0.5)
    path = tmp_path / "best.pt"
    save_checkpoint(path, entry)
    assert torch.load(path, weights_only=True)["digest"] == content_digest(entry)
    loaded, ckpt = load_model(path)
    assert "digest" not in ckpt and weights_digest(loaded) == weights_digest(model)  # same numbers
    name, tensor = next((k, v) for k, v in entry["model"].items() if v.numel() >= 16)
    _flip_a_byte_of(path, tensor)
    assert not torch.equal(torch.load(path, weights_only=True)["model"][name], tensor)  # torch.load does not notice
    with pytest.raises(CheckpointError, match=rf"{path}: corrupted checkpoint.*digest.*delete {tmp_path}"):
        load_model(path)


def test_a_checkpoint_without_a_digest_still_loads(tmp_path):
    model = build_varnet(TINY, seed=0)
    torch.save(best_checkpoint({"model": TINY}, model, 1, 0.5), tmp_path / "best.pt")  # as written before digests
    loaded, _ = load_model(tmp_path / "best.pt")
    assert weights_digest(loaded) == weights_digest(model)


def test_a_cached_torch_artefact_with_a_flipped_byte_is_computed_again(tmp_path):
    path = tmp_path / "classifier.pt"
    w = torch.arange(64.0)
    calls = []

    def compute():
        calls.append(1)
        return {"state": {"w": w}, "threshold": 0.5}

    cached_step(path, {"a": 1}, compute, TORCH)
    _flip_a_byte_of(path, w)
    with pytest.warns(CacheWarning, match=f"{path}.*does not match its stored digest"):
        out = cached_step(path, {"a": 1}, compute, TORCH)
    assert len(calls) == 2 and torch.equal(out["state"]["w"], w) and "content_digest" not in out
    # an entry written before digests were kept loads without recomputing
    torch.save({"state": {"w": w}, "threshold": 0.5, "identity": {"a": 1}}, path)
    assert torch.equal(cached_step(path, {"a": 1}, compute, TORCH)["state"]["w"], w) and len(calls) == 2


def test_read_weights_names_the_file_and_the_fix(tmp_path):
    state = {"w": torch.arange(64.0), "b": torch.ones(2)}
    path = tmp_path / "model.pt"
    torch.save(state, path)
    digest = weights_digest(state)
    assert weights_digest(read_weights(path, digest)) == digest and weights_match(path, digest)
    _flip_a_byte_of(path, state["w"])
    with pytest.raises(CacheError, match=rf"{path}: the weights do not match.*damaged; rerun X"):
        read_weights(path, digest, fix="rerun X")
    assert weights_digest(read_weights(path)) != digest  # no digest: nothing to check
    with pytest.warns(CacheWarning, match=f"{path}.*computing it again"):
        assert not weights_match(path, digest)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CacheError, match=rf"{path}: cannot read the weights.*rerun X"):
        read_weights(path, fix="rerun X")
    assert not weights_match(tmp_path / "absent.pt")


def _tiny_cyclegan(folder: Path, smoke_data: Path) -> tuple[dict, dict]:
    """Two iterations of a tiny CycleGAN on the smoke data, checkpointed to ``folder/cyclegan.pt``; ``(domains, cfg)``."""
    from mrilib.poison.slices import load_slices

    cfg = cyclegan.cyclegan_config("smoke", 0, iterations=2, ckpt_every=1, ngf=4, ndf=4, n_blocks=1, pool_size=4)
    domains = cyclegan.cyclegan_domains(load_slices(smoke_data / "train"), cfg)
    cyclegan.train_cyclegan(domains, cfg, folder, progress=False, device="cpu")
    return domains, cfg


def test_a_cyclegan_checkpoint_with_a_flipped_byte_is_refused(tmp_path, smoke_data):
    domains, cfg = _tiny_cyclegan(tmp_path, smoke_data)
    path = tmp_path / "cyclegan.pt"
    stored = torch.load(path, weights_only=True)
    assert stored["content_digest"] == content_digest({k: v for k, v in stored.items() if k != "content_digest"})
    gan, ck = cyclegan.load_cyclegan(path)  # untouched: round-trips
    assert "content_digest" not in ck and weights_digest(gan.G) == weights_digest(stored["nets"]["G"])
    name, tensor = next((k, v) for k, v in stored["nets"]["G"].items() if v.numel() >= 16)
    _flip_a_byte_of(path, tensor)
    assert not torch.equal(torch.load(path, weights_only=True)["nets"]["G"][name], tensor)  # torch.load does not notice
    fix = rf"{re.escape(str(path))}: content does not match its stored digest.*delete {re.escape(str(path))} to train"
    with pytest.raises(CacheError, match=fix):
        cyclegan.load_cyclegan(path)
    with pytest.raises(CacheError, match=fix):  # resuming reads it the same way
        cyclegan.train_cyclegan(domains, cfg, tmp_path, progress=False, device="cpu")
    # an altered value (the iteration count, not a tensor) re-saved with the old digest: refused too
    torch.save({**stored, "iteration": 1}, path)
    with pytest.raises(CacheError, match=fix):
        cyclegan.load_cyclegan(path, require_finished=False)
    # a truncated file names itself and the fix
    torch.save(stored, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CacheError, match=rf"{re.escape(str(path))}: cannot read the CycleGAN checkpoint.*delete"):
        cyclegan.load_cyclegan(path)


def test_a_cyclegan_checkpoint_without_a_digest_still_loads(tmp_path, smoke_data):
    _tiny_cyclegan(tmp_path, smoke_data)
    path = tmp_path / "cyclegan.pt"
    stored = torch.load(path, weights_only=True)
    torch.save({k: v for k, v in stored.items() if k != "content_digest"}, path)  # as written before digests
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gan, ck = cyclegan.load_cyclegan(path)
    assert ck["finished"] and weights_digest(gan.F) == weights_digest(stored["nets"]["F"])


def test_the_run_trains_a_damaged_cyclegan_again_with_a_warning(tmp_path, smoke_data):
    run = tmp_path / "run"
    run.mkdir()
    (run / "data").symlink_to(smoke_data, target_is_directory=True)
    small = dict(iterations=2, ckpt_every=1, ngf=4, ndf=4, n_blocks=1, pool_size=4)
    gan, first = cyclegan.cyclegan_or_load("smoke", run, progress=False, device="cpu", **small)
    path = RunLayout(run).cyclegan_checkpoint
    assert cyclegan.cyclegan_or_load("smoke", run, progress=False, device="cpu", **small)[1]["reused"]
    _flip_a_byte_of(path, next(v for v in gan.G.state_dict().values() if v.numel() >= 16))
    with pytest.warns(CacheWarning, match=f"{re.escape(str(path))}.*does not match its stored digest.*training it again"):
        again, report = cyclegan.cyclegan_or_load("smoke", run, progress=False, device="cpu", **small)
    assert not report["reused"] and weights_digest(again.G) == weights_digest(gan.G)  # the same training, redone


def _classifier_file(path: Path) -> LesionClassifier:
    """A lesion classifier written the way chapter 3 writes one (a cached :data:`TORCH` step)."""
    torch.manual_seed(0)
    model = LesionClassifier(chans=4, n_blocks=2, dropout=0.0).eval()
    cfg = dict(chans=4, n_blocks=2, dropout=0.0, seed=0, role="attacker")
    cached_step(path, {"config": cfg}, lambda: dict(format=CLASSIFIER_FORMAT, role="attacker", config=cfg,
                                                    state=model.state_dict(), threshold=0.625, subjects=["a"]), TORCH)
    return model


def test_a_classifier_file_with_a_flipped_byte_is_refused(tmp_path):
    path = tmp_path / "judge" / "classifier.pt"
    model = _classifier_file(path)
    loaded, ck = load_classifier(path)  # untouched: round-trips
    assert weights_digest(loaded) == weights_digest(model) and loaded.threshold == 0.625 and "content_digest" not in ck
    good = path.read_bytes()
    fix = (rf"{re.escape(str(path))}: content does not match its stored digest.*delete {re.escape(str(path))} and "
           "train it again")
    name, tensor = next((k, v) for k, v in model.state_dict().items() if v.numel() >= 16)
    _flip_a_byte_of(path, tensor)
    assert not torch.equal(torch.load(path, weights_only=True)["state"][name], tensor)  # torch.load does not notice
    with pytest.raises(CacheError, match=fix):
        load_classifier(path.parent)
    # an altered decision threshold re-saved with the old digest: the verdicts would change, so it is refused
    path.write_bytes(good)
    torch.save({**torch.load(path, weights_only=True), "threshold": 0.5}, path)
    with pytest.raises(CacheError, match=fix):
        load_classifier(path)


def test_a_classifier_file_without_a_digest_still_loads(tmp_path):
    path = tmp_path / "classifier.pt"
    model = _classifier_file(path)
    stored = torch.load(path, weights_only=True)
    torch.save({k: v for k, v in stored.items() if k != "content_digest"}, path)  # as written before digests
    loaded, ck = load_classifier(path)
    assert weights_digest(loaded) == weights_digest(model) and loaded.threshold == 0.625 and ck["subjects"] == ["a"]


class _Fixed(torch.nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((32,), value))


def _run_or_load_setup(tmp_path, monkeypatch):
    import mrilib.study.execute as execute
    from mrilib.study.plan import Run

    calls = []

    def fake_unlearn(method, poisoned, forget, retain, **hp):
        calls.append(method)
        model = _Fixed(float(len(calls)))
        return types.SimpleNamespace(model=model, seconds=0.1, forward_passes=2, backward_passes=1, passes=3, info={})

    monkeypatch.setattr(execute, "unlearn", fake_unlearn)
    run = Run("cf", "Fine-tune (CF)", "finetune", 0.5, 0, dict(steps=1))
    lay = RunLayout(tmp_path)

    def go():
        return execute.run_or_load(run, _Fixed(0.0), lambda f: ([1, 2], [3]), lambda m, label: {"w": float(m.w[0].detach())},
                                   lay, "toy", poisoned_digest="p")

    return execute, run, lay, calls, go


def test_an_unlearnt_model_is_recomputed_when_its_weights_are_damaged(tmp_path, monkeypatch):
    execute, run, lay, calls, go = _run_or_load_setup(tmp_path, monkeypatch)
    weights, result = lay.unlearn_weights("toy", run.label), lay.unlearn_result("toy", run.label)
    first = go()
    assert len(calls) == 1 and first[WEIGHTS_DIGEST] == weights_digest(torch.load(weights, weights_only=True))
    assert go() == first and len(calls) == 1  # intact: loaded
    unlearnt = execute.load_unlearnt(lay, "toy", run.label, _Fixed(0.0))
    assert weights_digest(unlearnt) == first[WEIGHTS_DIGEST]
    # a flipped byte: chapter 6 refuses it naming the file; chapter 5 computes the run again
    _flip_a_byte_of(weights, torch.full((32,), 1.0))
    with pytest.raises(CacheError, match=rf"{weights}: the weights do not match.*05_unlearning"):
        execute.load_unlearnt(lay, "toy", run.label, _Fixed(0.0))
    with pytest.warns(CacheWarning, match=str(weights)):
        second = go()
    assert len(calls) == 2 and second[WEIGHTS_DIGEST] != first[WEIGHTS_DIGEST]
    # a truncated model.pt: the same (chapter 5 used to accept it since the file existed)
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(CacheError, match=rf"{weights}: cannot read the weights"):
        execute.load_unlearnt(lay, "toy", run.label, _Fixed(0.0))
    with pytest.warns(CacheWarning, match=str(weights)):
        go()
    assert len(calls) == 3
    # a truncated result.json: recomputed with a warning, and the pool's check sees no stored result
    result.write_text(result.read_text()[:30])
    assert execute.stored_result(run, lay, "toy", "p") is None
    with pytest.warns(CacheWarning, match=str(result)):
        go()
    assert len(calls) == 4


def test_a_result_written_before_digests_loads_and_its_weights_still_load(tmp_path, monkeypatch):
    execute, run, lay, calls, go = _run_or_load_setup(tmp_path, monkeypatch)
    first = go()
    result = lay.unlearn_result("toy", run.label)
    old = {k: v for k, v in first.items() if k != WEIGHTS_DIGEST}
    write_json(result, old)  # as written before digests were kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert go() == old and len(calls) == 1
        execute.load_unlearnt(lay, "toy", run.label, _Fixed(0.0))


# --------------------------------------------------------------------------------------
# 5. data arguments; 6. make lab as root
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--dataset", "unknownformat"], "--dataset unknownformat needs --data-root"),
    (["--data-root", "{tmp}"], "needs --dataset FORMAT"),
    (["--data-root", "{tmp}", "--dataset", "unknownformat"], "unknown dataset 'unknownformat'"),
    (["--data-root", "{tmp}/absent", "--dataset", "m4raw"], "absent: no such folder"),
])
def test_the_pipeline_refuses_bad_data_arguments_before_running_anything(tmp_path, monkeypatch, capsys, args, message):
    from mrilib.book import pipeline

    def must_not_run(*a, **k):
        raise AssertionError("the notebooks were executed")

    monkeypatch.setattr(pipeline, "execute_notebooks", must_not_run)
    monkeypatch.setattr(pipeline, "build_book", must_not_run)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert pipeline.main(["--root", str(REPO), "--profile", "smoke", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (REPO / "runs" / "smoke-unknownformat").exists()


def _make_n(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("DATASET", "DATA_ROOT", "MAKEFLAGS", "MAKELEVEL")}
    out = subprocess.run(["make", "-n", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_passes_dataset_and_data_root_whenever_set():
    book = [line for line in _make_n("book", "DATASET=unknownformat").splitlines() if "mrilib.book" in line]
    assert book and "--dataset unknownformat" in book[-1] and "--data-root" not in book[-1]
    book = [line for line in _make_n("book", "DATA_ROOT=/data/m 4raw").splitlines() if "mrilib.book" in line]
    assert '--data-root "/data/m 4raw"' in book[-1] and "--dataset" not in book[-1]
    book = [line for line in _make_n("notebooks").splitlines() if "mrilib.book" in line]
    assert "--dataset" not in book[-1] and "--data-root" not in book[-1]


def test_make_lab_adds_allow_root_only_for_root():
    lab = [line for line in _make_n("lab").splitlines() if "jupyter lab" in line]
    assert lab and "id -u" in lab[-1]
    # run the printed command with `echo` in place of jupyter: the flag appears exactly when we are root
    echoed = subprocess.run(["sh", "-c", lab[-1].replace(".venv/bin/jupyter", "echo")], capture_output=True, text=True,
                            check=True).stdout.split()
    assert ("--allow-root" in echoed) == (os.getuid() == 0)
    assert echoed[0] == "lab" and echoed[-1] == "notebooks/"


def test_stale_temporary_age_is_respected(tmp_path):
    run = RunLayout(tmp_path)
    run.split("train").mkdir(parents=True)
    fresh = _interrupted_write(run.split("train"), "a.h5")
    old = _interrupted_write(run.split("train"), "b.h5")
    t = time.time() - 7200
    os.utime(old, (t, t))
    assert run.stale_temporaries() == [old] and fresh.exists()
