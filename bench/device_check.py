"""One-command device check: is this GPU ready for the `gpu` book, and how long would it take?

``make device-check`` (or ``python bench/device_check.py``) on a machine with one CUDA GPU:

1. VarNet training and inference throughput at the ``gpu`` profile's size
   (:mod:`bench.train_throughput`, run twice: the fastMRI reference loop in fp32 against our
   loop with bf16 autocast, then our loop with ``torch.compile``), with peak memory;
2. one epoch of chapter 2's training (:func:`mrilib.recon.train.train_or_load`) at the
   ``gpu`` size on a few embedded slices - the real loop with data loading and validation;
3. the projected wall time of the ``gpu`` book's VarNet work::

       steps   = trainings x epochs x ceil(train slices / batch)
               + unlearning runs x unlearning steps x 2        (a forget and a retain batch per step)
       seconds = steps x (seconds per step of the chapter-2 epoch)

   where ``trainings`` counts clean, poisoned, poisoned-adv (and its trigger-free twin when
   ``adversarial.train_notrigger``) and, per unlearnt recipe, the oracle and one ``rewod`` per
   fraction; unlearning runs are :func:`mrilib.study.plan.plan_runs` per recipe. It leaves out
   data generation, the classifier, the CycleGAN, the searches' evaluations and the stress
   tests, so it is a lower bound.

Without CUDA it stops at once (exit status 2) saying how to get a CUDA build of torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NO_CUDA = ("no CUDA device: install a CUDA build of torch with make setup "
           "TORCH_SPEC=\"torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128\" "
           "and run on a GPU machine")


def throughput(steps: int, compile_: bool, out: Path) -> list[dict]:
    """bench/train_throughput.py at the gpu profile (its own processes, its own table)."""
    cmd = [sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--profiles", "gpu", "--steps", str(steps),
           "--device", "cuda", "--json", str(out)] + (["--compile"] if compile_ else [])
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def chapter2_epoch(work: Path, subjects: int, slices: int) -> dict:
    """One epoch of chapter 2's training at the gpu size on ``subjects`` x ``slices`` training slices."""
    from mrilib.config import get_profile
    from mrilib.data import generate_embedded_dataset
    from mrilib.recon.train import train_or_load, training_config

    gpu = get_profile("gpu")
    small = dataclasses.replace(gpu, data=dataclasses.replace(
        gpu.data, subjects={"train": subjects, "val": 1, "test": 1, "final": 1}, slices_per_subject=slices))
    generate_embedded_dataset(small, work / "data", seed=0, progress=False)
    cfg = training_config(small, epochs=1)
    t0 = time.perf_counter()
    _, hist = train_or_load(cfg, {"train": work / "data" / "train", "val": work / "data" / "val"}, work / "model",
                            device="cuda", progress=False)
    steps = math.ceil(int(hist["train_slice_passes"]) / int(cfg["train"]["batch_size"]))
    return dict(slices=subjects * slices, steps=steps, seconds=time.perf_counter() - t0,
                step_s=float(hist["wall_s"]) / max(steps, 1))


def projected_steps() -> dict:
    """Training and unlearning steps of the gpu book (see the module docstring)."""
    from mrilib.config import get_profile
    from mrilib.study.plan import plan_runs

    p = get_profile("gpu")
    recipes = len(p.unlearn.recipes)
    trainings = 3 + int(bool(p.adversarial.train_notrigger)) + recipes * (1 + len(p.unlearn.rewod_fractions))
    per_training = p.train.epochs * math.ceil(p.data.num_slices["train"] / p.train.batch_size)
    unlearning = recipes * len(plan_runs(p)) * p.unlearn.steps * 2
    return dict(trainings=trainings, training_steps=trainings * per_training, unlearning_steps=unlearning)


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30, help="timed steps per throughput measurement")
    ap.add_argument("--subjects", type=int, default=2, help="training subjects of the chapter-2 epoch")
    ap.add_argument("--slices", type=int, default=4, help="slices per subject of the chapter-2 epoch")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plain = throughput(args.steps, False, tmp / "plain.json")
        compiled = throughput(args.steps, True, tmp / "compiled.json")
        epoch = chapter2_epoch(tmp, args.subjects, args.slices)
    ours = {r["loop"]: r for r in plain}
    print("\nloop                     train sl/s  infer sl/s  s/step  peak MiB")
    for label, r in (("reference (fp32, b=1)", ours["reference"]), ("ours (bf16 autocast)", ours["ours"]),
                     ("ours + torch.compile", next(r for r in compiled if r["loop"] == "ours"))):
        print(f"{label:<24} {r['train_slices_per_s']:>10.2f} {r['infer_slices_per_s']:>11.2f} {r['step_s']:>7.3f} "
              f"{r['peak_mib']:>9.0f}")
    print(f"\nchapter 2, one epoch at gpu size: {epoch['slices']} slices, {epoch['steps']} steps in "
          f"{epoch['seconds']:.1f} s ({epoch['step_s']:.3f} s per step)")
    proj = projected_steps()
    total = (proj["training_steps"] + proj["unlearning_steps"]) * epoch["step_s"]
    print(f"projected gpu book (VarNet work only, a lower bound): {proj['trainings']} trainings, "
          f"{proj['training_steps']} training + {proj['unlearning_steps']} unlearning steps x "
          f"{epoch['step_s']:.3f} s = {total / 3600:.1f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
