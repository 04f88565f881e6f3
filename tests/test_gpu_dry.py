"""The ``gpu`` profile's code paths, proven on a CPU: ``make book PROFILE=gpu-dry``.

``gpu-dry`` keeps the ``gpu`` profile's model (12 cascades x 18 channels), image size (256²),
coils (12) and every branch of its configuration that only it takes (Adam with a step schedule, batch 1, EOT
samples, gradient smoothing, ``train_notrigger``, rewod at f < 1 and at f = 1) and cuts every count to
the least that runs each step; it unlearns the main recipe only, each method once, and meets one attack in
chapter 7 (the rest is the same code, which the smoke book runs). The notebook test executes all seven chapters
and builds the HTML (book/reproducibility.md, "Test tiers", has its time).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import h5py
import pytest

from conftest import copy_book_sources
from mrilib.config import PROFILES, get_profile
from mrilib.evaluate import attack_defence as ad
from mrilib.study.plan import plan_runs


def test_gpu_dry_keeps_every_size_and_branch_of_gpu_and_cuts_only_counts():
    gpu, dry = get_profile("gpu"), get_profile("gpu-dry")
    assert dry.varnet == gpu.varnet and dry.data.image_size == 256 and dry.data.num_coils == 12
    assert dry.data.accelerations == gpu.data.accelerations and dry.data.mask_type == gpu.data.mask_type
    same = ("optimizer", "schedule", "step_frac", "batch_size", "lr", "amp", "grad_clip", "l1_weight")
    assert {k: getattr(dry.train, k) for k in same} == {k: getattr(gpu.train, k) for k in same}
    assert dry.train.epochs == 1
    a, b = dataclasses.asdict(gpu.adversarial), dataclasses.asdict(dry.adversarial)
    for k in ("eot_samples", "grad_smooth_px", "train_notrigger", "eps", "kappa", "roi_radius_mm", "ssim_weight"):
        assert a[k] == b[k], k
    assert dry.poison.fraction == gpu.poison.fraction and len(gpu.unlearn.recipes) == 2  # dry: the main one
    assert 1.0 in dry.unlearn.rewod_fractions and min(dry.unlearn.rewod_fractions) < 1  # both rewod branches
    assert sum(dry.data.num_slices.values()) <= 8 and dry.adversarial.steps == 1 and dry.poison.cyclegan.iterations == 2
    # every unlearning method runs (once), and the options that change its code path: repair, region, label-free
    dry_runs, all_runs = plan_runs(dry), plan_runs(gpu)
    assert {r.method for r in dry_runs} == {r.method for r in all_runs} and len(dry_runs) < len(all_runs)
    for option in ("repair_steps", "region", "label_free", "relabel"):
        assert any(r.hp.get(option) for r in dry_runs), option
    assert len(dry.unlearn.attacks) == 1 and ad.attack_runs(dry, signal=False)  # chapter 7: one attack
    assert not dry.unlearn.learning_attacks  # and no learning condition: the smoke book runs them
    assert "gpu-dry" in PROFILES and get_profile("gpu-dry") is PROFILES["gpu-dry"]


@pytest.mark.notebook
def test_the_gpu_configuration_runs_through_the_whole_book_on_a_cpu(tmp_path, artifacts_dir):
    root = copy_book_sources(tmp_path / "book")
    cmd = [sys.executable, "-m", "mrilib.book", "--profile", "gpu-dry", "--no-progress", "--root", str(root)]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "MRILIB_DEVICE": "cpu"})
    log = proc.stdout + proc.stderr
    (artifacts_dir / "pipeline-gpu-dry.log").write_text(log)
    assert proc.returncode == 0, log[-4000:]
    run = root / "runs" / "gpu-dry"
    with h5py.File(sorted((run / "data" / "train").glob("*.h5"))[0], "r") as f:
        assert f["kspace"].shape[1:] == (12, 256, 256)
    timings = json.loads((root / "book" / "executed" / "timings.json").read_text())
    assert timings["profile"] == "gpu-dry"
    for nb in sorted((root / "book" / "executed").glob("0*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        assert not [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"], nb.name
    seed = run / "seed-0"
    assert (seed / "metrics" / "poison_adv_poisoned-adv-notrigger.json").is_file()  # the train_notrigger branch
    assert (seed / "metrics" / "unlearning_cyclegan-cyst.csv").is_file()
    assert (seed / "unlearn" / "cyclegan-cyst" / "relabel-ft-f0.25-s0" / "result.json").is_file()
    assert (run / "metrics" / "headline.csv").is_file() and (run / "metrics" / "attack_defence.csv").is_file()
    assert (seed / "metrics" / "attack_consistent-cyst-spread.json").is_file()
    assert (run / "metrics" / "attack_learning.csv").is_file()  # no condition: an empty table
    assert (root / "_build" / "html" / "book" / "executed" / "07_attack_defence.html").is_file()
