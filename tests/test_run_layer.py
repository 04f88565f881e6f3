"""The run layer: paths of a run, identities, and the cached step."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mrilib.run.cache import (
    JSON,
    NPZ,
    TORCH,
    CacheError,
    CacheWarning,
    Codec,
    IdentityMismatchError,
    cached_step,
    canonical,
    data_identity,
    digest,
    weights_digest,
)
from mrilib.run.layout import MissingArtefactError, RunLayout, RunLockedError, as_layout


def test_layout_names_every_artefact(tmp_path):
    run = RunLayout(tmp_path / "runs" / "smoke")
    assert os.fspath(run) == str(tmp_path / "runs" / "smoke")
    assert run.split("val") == run.root / "data" / "val"
    assert run.poisoned_model("cyclegan-cyst") == run.root / "models" / "poisoned-cyclegan-cyst"
    assert run.rewod_model("cyclegan-cyst", 0.25) == run.root / "models" / "rewod-cyclegan-cyst-f0.25"
    assert run.poison_manifest("x") == run.root / "poison" / "x" / "manifest.json"
    assert run.unlearning_table("x") == run.root / "metrics" / "unlearning_x.csv"
    assert run.adversarial_metrics("clean") == run.root / "metrics" / "poison_adv_clean.json"
    assert as_layout(str(run)) == run and as_layout(run) is run
    assert RunLayout.default("cpu", base=tmp_path).root == tmp_path / "runs" / "cpu"
    assert RunLayout.default("cpu", "/data", "m4raw", base=tmp_path).root == tmp_path / "runs" / "cpu-m4raw"


def test_require_names_the_notebook(tmp_path):
    run = RunLayout(tmp_path)
    with pytest.raises(MissingArtefactError, match="02_varnet"):
        run.require(run.clean_model / "last.pt", "02_varnet")
    (tmp_path / "x").write_text("")
    assert run.require(tmp_path / "x", "01_data") == tmp_path / "x"


def test_lock_refuses_a_second_holder(tmp_path):
    run = RunLayout(tmp_path / "r")
    with run.lock():
        with pytest.raises(RunLockedError, match="in use"):
            with RunLayout(tmp_path / "r").lock():
                pass
    with run.lock():  # released
        pass


def test_stale_temporaries_are_found_by_age(tmp_path):
    run = RunLayout(tmp_path)
    old = tmp_path / "metrics" / ".x.json.abc.tmp"
    old.parent.mkdir()
    old.write_text("partial")
    fresh = tmp_path / ".y.json.def.tmp"
    fresh.write_text("partial")
    past = time.time() - 7200
    os.utime(old, (past, past))
    assert run.stale_temporaries() == [old]
    assert run.remove_stale_temporaries() == [old] and not old.exists() and fresh.exists()


def test_canonical_and_digest():
    assert canonical({"a": (1, 2), "b": np.float32(0.5)}) == {"a": [1, 2], "b": 0.5}
    assert digest({"a": (1, 2)}) == digest({"a": [1, 2]}) != digest({"a": [2, 1]})


def test_weights_digest_tells_models_apart():
    torch.manual_seed(0)
    a = torch.nn.Linear(3, 2)
    b = torch.nn.Linear(3, 2)
    assert weights_digest(a) == weights_digest(a.state_dict()) != weights_digest(b)
    with torch.no_grad():
        a.weight[0, 0] += 1e-6
    assert weights_digest(a) != weights_digest(a.state_dict() | {"weight": b.weight})


def test_data_identity_follows_contents_not_names(tmp_path):
    import h5py

    def write(folder, value):
        folder.mkdir(parents=True, exist_ok=True)
        with h5py.File(folder / "v.h5", "w") as f:
            f["kspace"] = np.full((2, 1, 4, 4), value, np.complex64)
            f["reconstruction_rss"] = np.ones((2, 4, 4), np.float32)
            f.attrs["max"] = 1.0

    write(tmp_path / "a", 1.0)
    write(tmp_path / "b", 1.0)
    write(tmp_path / "c", 2.0)
    ia, ib, ic = (data_identity(tmp_path / k) for k in "abc")
    assert ia == ib and ia["volumes"] == 1 and ia != ic
    assert data_identity([tmp_path / "a", tmp_path / "c"])["volumes"] == 2
    with pytest.raises(FileNotFoundError, match="no data folder"):
        data_identity(tmp_path / "missing")


@pytest.mark.parametrize("codec, value", [(JSON, {"x": 1.5}), (NPZ, {"x": np.arange(3.0)}),
                                          (TORCH, {"x": torch.arange(3.0)})])
def test_cached_step_computes_once_and_recomputes_on_a_new_identity(tmp_path, codec, value):
    calls = []

    def compute():
        calls.append(1)
        return value

    path = tmp_path / "out" / "a.bin"
    first = cached_step(path, {"cfg": (1, 2)}, compute, codec)
    again = cached_step(path, {"cfg": [1, 2]}, compute, codec)  # same identity once canonical
    assert len(calls) == 1
    np.testing.assert_array_equal(np.asarray(first["x"]), np.asarray(value["x"]))
    np.testing.assert_array_equal(np.asarray(again["x"]), np.asarray(value["x"]))
    cached_step(path, {"cfg": [3]}, compute, codec)
    assert len(calls) == 2
    cached_step(path, {"cfg": [3]}, compute, codec, reuse=False)
    assert len(calls) == 3
    assert not list(path.parent.glob(".*.tmp"))


def test_cached_step_can_refuse_another_identity(tmp_path):
    path = tmp_path / "a.json"
    cached_step(path, {"epochs": 2}, lambda: {"v": 1})
    with pytest.raises(IdentityMismatchError, match=r"epochs: stored 2 != asked 3"):
        cached_step(path, {"epochs": 3}, lambda: {"v": 2}, on_mismatch="raise")
    assert cached_step(path, {"epochs": 2}, lambda: {"v": 3})["v"] == 1


def test_cached_step_recomputes_an_unreadable_file_and_names_it(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.warns(CacheWarning, match=r"broken.json: the cached artefact cannot be read.*computing it again"):
        assert cached_step(path, {}, lambda: {"v": 1})["v"] == 1
    assert cached_step(path, {}, lambda: {"v": 2})["v"] == 1  # repaired: loaded


def test_cached_step_names_a_file_it_cannot_read_back(tmp_path):
    broken = Codec(save=lambda v, i, p: p.write_text("x"), load=lambda p: 1 / 0, identity=lambda p: None)
    with pytest.raises(CacheError, match=r"a.bin: cannot read back the artefact just written"):
        cached_step(tmp_path / "a.bin", {}, lambda: {}, broken)


def test_cached_step_keeps_the_old_artefact_when_compute_fails(tmp_path):
    path = tmp_path / "a.json"
    cached_step(path, {"k": 1}, lambda: {"v": 1})

    def fail():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        cached_step(path, {"k": 2}, fail)
    assert cached_step(path, {"k": 1}, lambda: {"v": 9})["v"] == 1


def test_a_seed_folder_shares_the_data_and_the_fixed_networks_with_its_run():
    from mrilib.run.layout import RunLayout, seed_folder, seed_run_dir

    run = RunLayout("runs/cpu")
    s2 = run.for_seed(2)
    assert s2.root == Path("runs/cpu/seed-2") and s2.seed == 2 and run.seed is None
    assert s2.data == run.data == Path("runs/cpu/data") and s2.split("final") == Path("runs/cpu/data/final")
    assert s2.classifier == run.classifier and s2.judge == run.judge and s2.cyclegan == run.cyclegan
    assert s2.headline == run.headline == Path("runs/cpu/metrics/headline.csv")
    assert s2.clean_model == Path("runs/cpu/seed-2/models/clean")  # a seed's trainings are its own
    assert s2.for_seed(0).root == Path("runs/cpu/seed-0")
    assert seed_run_dir("smoke", 1) == Path("runs/smoke/seed-1")
    with pytest.raises(ValueError):
        seed_folder(-1)


def test_plan_and_execution_order_follow_the_seeds():
    from mrilib.book.pipeline import _as_seeds, execution_plan
    from mrilib.study.plan import plan_runs

    runs = plan_runs("smoke", seed=3)
    assert runs and {r.seed for r in runs} == {3} and {r.hp["seed"] for r in runs} == {3}
    assert all(r.label.endswith("-s3") for r in runs)
    assert {r.hp["l1_weight"] for r in runs if "l1_weight" in r.hp} >= {1e-5}  # the seed's own loss weight kept
    nbs = [Path(f"{n}.ipynb") for n in ("01_data", "02_varnet", "06_evaluation")]
    assert [(nb.stem, s) for nb, s in execution_plan(nbs, [0, 1])] == [
        ("01_data", 0), ("02_varnet", 0), ("01_data", 1), ("02_varnet", 1), ("06_evaluation", 0)]
    assert _as_seeds(2) == [2] and _as_seeds([0, 1]) == [0, 1]
    for bad in ([], [0, 0], [-1]):
        with pytest.raises(ValueError):
            _as_seeds(bad)


def test_rewod_of_every_poisoned_slice_is_the_oracle():
    from mrilib.study.references import rewod_is_oracle

    manifest = {"poisoned_ids": [1, 2, 3, 4], "identified": {"0.5": [1, 3], "1.0": [1, 2, 3, 4]}}
    assert rewod_is_oracle(manifest, 1.0) and not rewod_is_oracle(manifest, 0.5)
