"""The unlearning study's heavy work in parallel worker processes.

Chapter 5 trains the retrain references (``oracle``, ``rewod``) and executes every
planned unlearning run. Each is independent of the others and stores its own
artefact, so they can run side by side. On a CPU, a VarNet of the ``cpu`` profile is
too small for two threads to pay: one training on two threads took 0.098 s per step,
two trainings on one thread each 0.13 s per step *each* (measured with
``bench/train_throughput.py --threads 1``, two processes at once), so two one-thread
workers do about 1.5 times the work of one two-thread process.

:func:`precompute` hands every missing artefact to ``workers`` processes (longest
first: the retrainings, then the runs). Afterwards :func:`~mrilib.study.references.reference_models`
and :func:`~mrilib.study.execute.unlearning_study` load what the workers stored. Costs
stay comparable: the oracle's time and every run's time are measured the same way, on
one thread beside one other worker.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from mrilib.config import Profile, get_profile
from mrilib.poison.manifest import load_manifest
from mrilib.recon.checkpoints import LAST, read_history
from mrilib.recon.train import training_config
from mrilib.run.cache import canonical, weights_digest
from mrilib.run.device import default_device
from mrilib.run.layout import as_layout
from mrilib.run.progress import progress as progress_bar
from mrilib.study.execute import run_or_load, stored_result, study_inputs
from mrilib.study.plan import plan_runs
from mrilib.study.references import PoisonedRun, load_poisoned_run, oracle_dir, retrain_reference, rewod_is_oracle

__all__ = ["precompute", "pending_tasks", "default_workers"]

_WORKER: dict = {}


def default_workers(profile: Profile | str) -> int:
    """Worker processes for the profile: ``Profile.unlearn.workers`` on a CPU-only machine
    (at most one per core), 1 when CUDA is available (the GPU trains one model at a time)."""
    if torch.cuda.is_available():
        return 1
    want = int(get_profile(profile).unlearn.workers)
    return max(1, min(want, os.cpu_count() or 1))


def _reference_done(profile: Profile, model_dir: Path, seed: int) -> bool:
    """Whether the model folder ``model_dir`` holds a finished training of the profile's configuration and ``seed``."""
    try:
        hist = read_history(model_dir)
    except FileNotFoundError:
        return False
    if not (model_dir / LAST).exists():
        return False
    cfg = canonical(training_config(profile, seed=int(seed)))
    return bool(hist.get("finished")) and all(hist.get("config", {}).get(k) == cfg[k] for k in ("model", "train"))


def pending_tasks(profile: Profile | str, run_dir: str | os.PathLike, variant: str, poisoned_digest: str,
                  seed: int = 0, runs=None, rewod: bool = True) -> list:
    """The study's artefacts of seed ``seed`` not stored yet, longest first: ``("oracle", None)``,
    ``("rewod", f)`` (unless ``rewod`` is false) and ``("run", label)`` tasks for every planned run or only
    ``runs`` (``poisoned_digest``: :func:`~mrilib.run.cache.weights_digest` of the poisoned model)."""
    p = get_profile(profile)
    lay = as_layout(run_dir)
    manifest = load_manifest(lay, variant)
    refs = [("oracle", None, oracle_dir(lay, manifest))]
    refs += [("rewod", float(f), lay.rewod_model(variant, float(f))) for f in p.unlearn.rewod_fractions
             if rewod and not rewod_is_oracle(manifest, f)]  # else it is the oracle's training
    tasks = [(kind, f) for kind, f, folder in refs if not _reference_done(p, folder, seed)]
    tasks += [("run", r.label) for r in (plan_runs(p, seed=seed) if runs is None else runs)
              if stored_result(r, lay, variant, poisoned_digest) is None]
    return tasks


def _init_worker(profile: Profile, run_dir: str, variant: str, seed: int, threads: int, device: str, runs) -> None:
    """Load the poisoned run and the study's inputs once per worker process (computing on ``device``); ``runs``: the
    runs it may be given (default: the plan's)."""
    torch.set_num_threads(threads)
    lay = as_layout(run_dir)
    ctx = load_poisoned_run(profile, lay, variant, seed=seed, device=device)
    inputs = study_inputs(ctx, profile, lay)
    _WORKER.update(profile=profile, layout=lay, ctx=ctx, inputs=inputs,
                   runs={r.label: r for r in (inputs.runs if runs is None else runs)})


def _do(task: tuple) -> tuple[tuple, float]:
    """Execute one task in a worker; return it with its wall seconds."""
    t0 = time.perf_counter()
    kind, arg = task
    ctx, inp = _WORKER["ctx"], _WORKER["inputs"]
    if kind == "run":
        run = _WORKER["runs"][arg]
        run_or_load(run, ctx.poisoned, inp.sets, ctx.evaluate, inp.layout, inp.variant, inp.signals, inp.digest,
                    device=inp.device)
    else:
        retrain_reference(kind, _WORKER["profile"], _WORKER["layout"], ctx.train_dir, ctx.manifest, fraction=arg,
                          progress=False, variant=ctx.variant, device=ctx.device, seed=ctx.seed)
    return task, time.perf_counter() - t0


def precompute(ctx: PoisonedRun, profile: Profile | str, run_dir: str | os.PathLike, seed: int | None = None,
               workers: int | None = None, progress: bool = True, device=None, runs=None,
               rewod: bool = True) -> dict:
    """Train the missing retrain references and execute the missing unlearning runs of ``ctx``'s
    poison in parallel processes.

    Args:
        ctx: the poisoned run (:func:`~mrilib.study.references.load_poisoned_run`); each worker
            loads its own copy with ``seed`` (default: ``ctx.seed``, the run's).
        profile, run_dir: the run's profile and folder.
        workers: processes (default :func:`default_workers`); with 1, or nothing missing,
            nothing happens here and the chapter's sequential calls do the work.
        progress: a progress bar over finished tasks.
        device: where the workers compute (default: the run's, ``ctx.device``, else
            :func:`~mrilib.run.device.default_device`).
        runs, rewod: only these planned runs (default: all of them); ``rewod=False`` trains no ``rewod``.

    Returns:
        ``{"workers": n, "tasks": [...], "seconds": {task: s}, "wall_s": s}``. A failing
        task raises here, naming the task; the tasks not started are cancelled.
    """
    p = get_profile(profile)
    workers = default_workers(p) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    device = default_device(ctx.device if device is None else device)
    seed = ctx.seed if seed is None else int(seed)
    tasks = pending_tasks(p, run_dir, ctx.variant, weights_digest(ctx.poisoned), seed, runs=runs, rewod=rewod)
    out = dict(workers=workers, tasks=[list(t) for t in tasks], seconds={}, wall_s=0.0)
    if workers == 1 or not tasks:
        return out
    t0 = time.perf_counter()
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=mp.get_context("spawn"),
                               initializer=_init_worker,
                               initargs=(p, str(run_dir), ctx.variant, seed, threads, str(device), runs))
    bar = progress_bar(total=len(tasks), desc=f"study artefacts ({ctx.variant}, {workers} processes)",
                       disable=not progress)
    try:
        futures = {pool.submit(_do, t): t for t in tasks}
        for fut in as_completed(futures):
            try:
                task, seconds = fut.result()
            except Exception as err:
                raise RuntimeError(f"unlearning study task {futures[fut]} failed: {err}") from err
            out["seconds"][f"{task[0]} {task[1]}"] = seconds
            bar.update(1)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)
    out["wall_s"] = time.perf_counter() - t0
    return out
