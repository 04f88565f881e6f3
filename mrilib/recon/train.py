"""One training loop for every E2E VarNet of the book.

The clean model, the poisoned model, the retrain references (``oracle``, ``rewod``)
and the fine-tuning baselines all train through :func:`train` (or
:func:`train_or_load`, which skips training when a finished checkpoint of the same
configuration exists). The recipe is fastMRI's: ``fastmri.models.VarNet``,
``fastmri.SSIMLoss`` (optionally plus an L1 term), Adam/AdamW, a learning-rate
schedule, gradient clipping, validation every epoch. The pieces live beside this
module: the datasets in :mod:`mrilib.data.training`, one step, validation and the
schedule in :mod:`mrilib.recon.steps`, the files of a model folder in
:mod:`mrilib.recon.checkpoints`, the processes of a DDP run in
:mod:`mrilib.recon.distributed`, the command line in :mod:`mrilib.recon.__main__`.

Configuration
    A configuration is ``{"model": <VarNet keys>, "train": <training keys>}``
    (:func:`training_config` builds it from a profile). The checkpoint stores it
    together with the identity of the training and validation data
    (:func:`mrilib.run.cache.data_identity`: a content hash of the volumes, or a
    caller-given ``data_id``): that triple is the run's *identity*. Runtime options
    that do not change the result (``ckpt_every``, ``num_workers``, ``cache``,
    ``compile``, ``channels_last``, the device) are not part of it.

Determinism and resume
    Every random choice of the loop is a function of ``train.seed``: the initial
    weights (``build_varnet(seed=...)``), the order of the slices in epoch ``e``
    (``DistributedSampler(seed=seed).set_epoch(e)``, also with one process) and the
    undersampling mask of slice ``i`` in epoch ``e`` (fastMRI's mask function seeded
    with ``(seed, e, i)``). The global torch / numpy / python RNG states are saved
    and restored as well. ``last.pt`` is written every ``ckpt_every`` optimiser
    steps and at the end of every epoch; it holds the model, optimiser and scheduler
    states, the RNG states, the epoch, the number of batches already done in that
    epoch, the global step and the running loss sums. A run that is killed resumes
    from the last such checkpoint: the epoch's permutation is rebuilt and the batches
    already done are skipped, so on CPU the final weights equal those of an
    uninterrupted run. Wall seconds of work lost after the last checkpoint are not
    counted in the cost (the slice-passes redone are, as they were spent again).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from mrilib.config import Profile, TrainConfig, as_dict, get_profile, with_overrides
from mrilib.data.training import TrainSlices, as_folders, collate_slices, validation_datasets
from mrilib.models.varnet import build_varnet, varnet_config
from mrilib.recon.checkpoints import (
    BEST,
    CHECKPOINT_FORMAT,
    HISTORY,
    LAST,
    CheckpointError,
    ConfigMismatchError,
    TrainState,
    best_checkpoint,
    last_checkpoint,
    load_checkpoint,
    load_model,
    save_checkpoint,
    set_rng_state,
)
from mrilib.recon.distributed import DistContext
from mrilib.recon.steps import amp_dtype, lr_lambda, make_loss, train_step, validate
from mrilib.run.cache import canonical, data_identity
from mrilib.run.io import write_json
from mrilib.run.progress import BATCH_ENV
from mrilib.run.progress import progress as progress_bar

__all__ = ["TRAIN_DEFAULTS", "RUNTIME_DEFAULTS", "TrainingInterrupted", "training_config", "train", "train_or_load"]

#: Training keys and their defaults (:class:`mrilib.config.TrainConfig`). ``None`` for
#: ``accelerations``, ``center_fraction`` and ``mask_type`` means: the profile's values.
TRAIN_DEFAULTS = as_dict(TrainConfig())

#: Runtime options: change speed or bookkeeping, not the trained weights.
RUNTIME_DEFAULTS = dict(ckpt_every=50, num_workers=0, cache="auto", compile=False, channels_last=False, threads=None)


class TrainingInterrupted(RuntimeError):
    """Raised by :func:`train` after ``stop_after_steps`` steps (a simulated kill)."""


def training_config(profile: Profile | str | None = None, model: dict | None = None, **train) -> dict:
    """The configuration ``{"model": ..., "train": ...}`` for ``profile``.

    The profile's ``varnet`` and ``train`` entries are taken over :data:`TRAIN_DEFAULTS`
    (``accelerations``, ``center_fraction``, ``mask_type`` from the profile's data
    fields), then ``model`` (VarNet keys) and ``train`` keyword overrides. Unknown
    training keys raise ``ValueError``.
    """
    p = get_profile(profile) if profile is not None else None
    t = as_dict(p.train) if p is not None else dict(TRAIN_DEFAULTS)
    if p is not None:
        for k in ("accelerations", "center_fraction", "mask_type"):
            if t[k] is None:
                t[k] = getattr(p.data, k)
    with_overrides(t, train, TRAIN_DEFAULTS, "training")
    for k, default in (("accelerations", [4]), ("center_fraction", 0.08), ("mask_type", "equispaced_fraction")):
        if t[k] is None:
            t[k] = default
    t["accelerations"] = [int(a) for a in np.atleast_1d(t["accelerations"])]
    if t["val_accelerations"] is None:
        t["val_accelerations"] = list(t["accelerations"])
    t["val_accelerations"] = [int(a) for a in np.atleast_1d(t["val_accelerations"])]
    # overrides bypass TrainConfig's validation: check them here
    TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in t.items()})
    mcfg = as_dict(p.varnet) if p is not None else {}
    mcfg.update(model or {})
    return canonical({"model": varnet_config(mcfg), "train": t})


def _data_identity(train_data, val_data, data_id) -> dict:
    """The ``data`` part of a run's identity: the training and validation data's."""
    if data_id is not None:
        train_ident = canonical({"kind": "dataset", "identity": data_id})
    else:
        train_ident = data_identity(train_data)
    if as_folders(val_data) is not None or val_data is None:
        val_ident = data_identity(val_data)
    else:  # validation only selects best.pt; a Dataset without identity is accepted
        val_ident = canonical({"kind": "dataset", "identity": getattr(val_data, "identity", None)})
    return {"train": train_ident, "val": val_ident}


@dataclass
class _Session:
    """One call of :func:`train`: configuration, processes, data, model, optimiser and the loop's state."""

    cfg: dict  # the full configuration stored in the checkpoints (with the data's identity)
    ctx: DistContext
    out: Path
    train_set: Dataset
    val_sets: dict
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    steps_per_epoch: int
    total_steps: int
    state: TrainState = field(default_factory=TrainState)
    session_steps: int = 0
    t0: float = 0.0  # perf_counter at the start of this session's loop
    base_wall: float = 0.0  # wall seconds of earlier sessions

    @property
    def t(self) -> dict:
        """The training part of the configuration."""
        return self.cfg["train"]

    def wall(self) -> float:
        """Training wall seconds so far, this session's included."""
        return self.base_wall + time.perf_counter() - self.t0

    def history(self) -> dict:
        """The content of ``history.json``."""
        return self.state.history(self.cfg, self.ctx.world, self.ctx.device, self.steps_per_epoch)

    def save_last(self) -> None:
        """Write ``last.pt`` (rank 0)."""
        if self.ctx.main:
            save_checkpoint(self.out / LAST, last_checkpoint(self.cfg, self.model, self.optimizer, self.scheduler,
                                                             self.state, self.ctx.world))

    def save_best(self, epoch: int, val_loss) -> None:
        """Write ``best.pt``: this epoch's weights (rank 0)."""
        if self.ctx.main:
            save_checkpoint(self.out / BEST, best_checkpoint(self.cfg, self.model, epoch, val_loss))

    def write_history(self) -> None:
        """Write ``history.json`` (rank 0)."""
        if self.ctx.main:
            write_json(self.out / HISTORY, self.history())


def _start(cfg: dict, train_data, val_data, out_dir, data_id, ctx: DistContext, rt: dict) -> _Session:
    """Data, model, optimiser and schedule of a run (nothing trained or read from a checkpoint yet)."""
    t = cfg["train"]
    if as_folders(train_data) is not None:
        train_set = TrainSlices(train_data, t["accelerations"], t["center_fraction"], t["mask_type"], t["seed"],
                                rt["cache"])
    else:
        train_set = train_data
    val_sets = validation_datasets(val_data, t, rt["cache"])  # first: its errors name a missing folder's cause
    ident = _data_identity(train_data, val_data, data_id)
    full_cfg = canonical({"format": CHECKPOINT_FORMAT, "model": cfg["model"], "train": t, "data": ident})
    steps_per_epoch = math.ceil(math.ceil(len(train_set) / ctx.world) / t["batch_size"])
    total_steps = steps_per_epoch * t["epochs"]
    model = build_varnet(cfg["model"], seed=t["seed"]).to(ctx.device)
    if rt["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    opt_cls = torch.optim.AdamW if t["optimizer"] == "adamw" else torch.optim.Adam
    optimizer = opt_cls(model.parameters(), lr=t["lr"], betas=tuple(t["betas"]), weight_decay=t["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t, total_steps))
    return _Session(full_cfg, ctx, Path(out_dir), train_set, val_sets, model, optimizer, scheduler, steps_per_epoch,
                    total_steps)


def _restore(s: _Session, resume: bool) -> None:
    """Continue from ``last.pt`` (same configuration, else :class:`ConfigMismatchError`), or start afresh."""
    last = s.out / LAST
    if resume and last.exists():
        # on CPU: RNG states must stay CPU tensors; load_state_dict moves the rest to the device
        ck = load_checkpoint(last, s.cfg, map_location="cpu")  # host first; the state moves to the device
        if ck["batch"] > 0 and ck.get("world_size", 1) != s.ctx.world:
            raise CheckpointError(f"{last}: stopped mid-epoch with {ck['world_size']} processes; "
                                  f"resume it with the same number (now {s.ctx.world})")
        s.model.load_state_dict(ck["model"])
        s.optimizer.load_state_dict(ck["optimizer"])
        s.scheduler.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"])
        s.state = TrainState.from_checkpoint(ck)
    elif not resume and s.ctx.main:
        for name in (LAST, BEST, HISTORY):
            (s.out / name).unlink(missing_ok=True)


def _run_epoch(s: _Session, net, sampler, loss_fn, amp, rt: dict, bar, stop_after_steps: int | None) -> None:
    """The remaining batches of epoch ``s.state.epoch``, with a checkpoint every ``ckpt_every`` steps."""
    st, t = s.state, s.t
    epoch = st.epoch
    sampler.set_epoch(epoch)
    if hasattr(s.train_set, "set_epoch"):
        s.train_set.set_epoch(epoch)
    indices = list(sampler)[st.batch * t["batch_size"]:]
    loader = DataLoader(s.train_set, batch_size=t["batch_size"], sampler=indices, collate_fn=collate_slices,
                        num_workers=rt["num_workers"], pin_memory=s.ctx.device.type == "cuda")
    for batch in loader:
        lr_now = s.optimizer.param_groups[0]["lr"]
        loss = train_step(net, s.optimizer, batch, loss_fn, s.ctx.device, amp, t["grad_clip"], s.scheduler)
        nb = s.ctx.sum(torch.tensor([float(loss) * len(batch.fname), float(len(batch.fname))], dtype=torch.float64))
        st.epoch_loss_sum += float(nb[0])
        st.epoch_loss_n += int(nb[1])
        st.train_passes += int(nb[1])
        st.step_loss.append(float(nb[0] / nb[1]))
        st.step_lr.append(lr_now)
        st.step += 1
        st.batch += 1
        s.session_steps += 1
        bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{st.step_loss[-1]:.4f}", refresh=False)
        if stop_after_steps is not None and s.session_steps >= stop_after_steps:
            raise TrainingInterrupted(f"stopped after {s.session_steps} steps (stop_after_steps)")
        if rt["ckpt_every"] and st.step % rt["ckpt_every"] == 0 and st.batch < s.steps_per_epoch:
            st.wall_s = s.wall()
            s.save_last()


def _end_epoch(s: _Session, amp) -> tuple[dict, dict | None]:
    """Validate, record the epoch, write ``last.pt``, ``best.pt`` (when better) and ``history.json``."""
    st, t = s.state, s.t
    epoch = st.epoch
    val = None
    if s.val_sets:
        val = validate(s.model, s.val_sets, s.ctx.device, amp, t["batch_size"], s.ctx.rank, s.ctx.world)
        st.val_passes += int(s.ctx.sum(torch.tensor([float(val["passes"])], dtype=torch.float64)).item())
    st.wall_s = s.wall()
    rec = dict(epoch=epoch + 1, step=st.step, train_loss=st.epoch_loss_sum / max(1, st.epoch_loss_n),
               lr=s.optimizer.param_groups[0]["lr"], wall_s=st.wall_s, train_slice_passes=st.train_passes)
    if val is not None:
        rec["val_loss"] = val["loss"]
        rec["val"] = {k: v for k, v in val.items() if k.endswith("x")}
    st.epochs.append(rec)
    st.epoch += 1
    st.batch = 0
    st.epoch_loss_sum, st.epoch_loss_n = 0.0, 0
    improved = val is not None and val["loss"] < st.best_val
    if improved:
        st.best_val, st.best_epoch = val["loss"], epoch + 1
    st.finished = st.epoch >= t["epochs"]
    s.save_last()
    if improved or (val is None and st.finished):
        s.save_best(epoch + 1, rec.get("val_loss"))
    s.write_history()
    return rec, val


def train(cfg: dict, train_data, val_data, out_dir: str | os.PathLike, *, data_id=None, device=None,
          progress: bool = True, resume: bool = True, stop_after_steps: int | None = None, return_model: bool = False,
          **runtime):
    """Train a VarNet (or resume an interrupted run) and return its history.

    Args:
        cfg: ``{"model": ..., "train": ...}`` from :func:`training_config`.
        train_data: split folder(s) of fastMRI-layout volumes (clean or poisoned), or a
            ``torch.utils.data.Dataset`` of ``VarNetSample``s (optionally with a
            ``set_epoch(epoch)`` method for per-epoch masks and an ``identity``).
        val_data: validation folder(s), a Dataset of VarNetSamples, or ``None``.
        out_dir: the model folder (``last.pt``, ``best.pt``, ``history.json``), e.g.
            ``RunLayout.model(name)``.
        data_id: identity of Dataset sources (default: their ``identity`` attribute).
        device: default CUDA (``cuda:LOCAL_RANK``) when available, else CPU.
        progress: tqdm progress bar (rank 0).
        resume: continue from ``out_dir/last.pt`` when it exists (same configuration,
            else :class:`~mrilib.recon.checkpoints.ConfigMismatchError`); ``False``
            starts afresh.
        stop_after_steps: raise :class:`TrainingInterrupted` after this many steps of
            this session, without writing anything more (simulates a kill).
        return_model: also return the trained model (this process's copy, on ``device``).
        **runtime: ``ckpt_every`` (steps between checkpoints, default 50),
            ``num_workers``, ``cache`` (``"auto"``/True/False), ``compile``
            (``torch.compile``), ``channels_last``, ``threads`` (``torch.set_num_threads``
            for this process; ``None`` leaves it: on a CPU shared with other jobs one
            thread can be several times faster than two that wait for each other).

    Returns:
        the history dict (also in ``out_dir/history.json``), or ``(history, model)``
        with ``return_model``.
    """
    unknown = sorted(set(runtime) - set(RUNTIME_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown runtime options {unknown}; known: {sorted(RUNTIME_DEFAULTS)}")
    rt = {**RUNTIME_DEFAULTS, **runtime}
    if rt["threads"]:
        torch.set_num_threads(int(rt["threads"]))
    ctx = DistContext.from_env(device)
    s = _start(canonical(cfg), train_data, val_data, out_dir, data_id, ctx, rt)
    _restore(s, resume)
    if s.state.finished:
        return (s.history(), s.model.eval()) if return_model else s.history()

    net = ctx.wrap(s.model)
    if rt["compile"]:
        net = torch.compile(net)
    amp = amp_dtype(s.t["amp"], ctx.device)
    loss_fn = make_loss(s.t["l1_weight"])
    sampler = DistributedSampler(s.train_set, num_replicas=ctx.world, rank=ctx.rank, shuffle=True, seed=s.t["seed"],
                                 drop_last=False)
    quiet = {"mininterval": 30.0} if os.environ.get(BATCH_ENV) else {}  # batch runs: a line per 30 s
    bar = progress_bar(total=s.total_steps, initial=s.state.step, disable=not progress or not ctx.main, unit="step",
                       desc=f"training {s.out.name}", **quiet)
    s.t0, s.base_wall = time.perf_counter(), s.state.wall_s
    s.model.train()
    try:
        while s.state.epoch < s.t["epochs"]:
            _run_epoch(s, net, sampler, loss_fn, amp, rt, bar, stop_after_steps)
            rec, val = _end_epoch(s, amp)
            bar.set_postfix(epoch=rec["epoch"], loss=f"{rec['train_loss']:.4f}",
                            val_ssim=f"{1 - rec['val_loss']:.4f}" if val is not None else "-")
            ctx.barrier()
    finally:
        bar.close()
    return (s.history(), s.model.eval()) if return_model else s.history()


def train_or_load(cfg: dict, data_dirs, out_dir: str | os.PathLike, *, which: str = "last", overwrite: bool = False,
                  device=None, progress: bool = True, data_id=None, **runtime):
    """Return a trained model for ``cfg``: loaded when ``out_dir`` already holds it, else trained.

    Args:
        cfg: configuration from :func:`training_config`.
        data_dirs: ``{"train": folder(s) or Dataset, "val": folder(s), Dataset or None}``,
            or a data root holding ``train/`` and ``val/`` (``RunLayout.data``).
        out_dir: the model folder, e.g. ``RunLayout.clean_model``.
        which: weights to return, ``"last"`` or ``"best"``.
        overwrite: when ``out_dir`` holds a run of another configuration, start afresh
            instead of raising :class:`~mrilib.recon.checkpoints.ConfigMismatchError`.
        device: training device (see :func:`train`); the model is returned on CPU.
        data_id, runtime: passed to :func:`train`.

    Returns:
        ``(model, history)``: the model in eval mode on CPU and the history dict.
        An unfinished run in ``out_dir`` with the same configuration is resumed.
    """
    if isinstance(data_dirs, (str, os.PathLike)):
        root = Path(data_dirs)
        data_dirs = {"train": root / "train", "val": root / "val"}
    out_dir = Path(out_dir)
    hint = (f"\n{out_dir} holds a model trained with another configuration or other data (did the profile "
            f"change?). Delete that folder (or the whole run folder, `make clean`) to train afresh, or pass "
            f"overwrite=True.")
    resume = True
    if (out_dir / LAST).exists():
        try:
            # cheap check of the model/train parts first; the data part is checked by train()
            load_checkpoint(out_dir / LAST, {"model": cfg["model"], "train": cfg["train"]})
        except CheckpointError as e:
            if not overwrite:
                raise type(e)(f"{e}{hint if isinstance(e, ConfigMismatchError) else ''}") from None
            resume = False
    kwargs = dict(data_id=data_id, device=device, progress=progress, **runtime)
    try:
        history = train(cfg, data_dirs["train"], data_dirs.get("val"), out_dir, resume=resume, **kwargs)
    except ConfigMismatchError as e:
        if not overwrite:
            raise ConfigMismatchError(f"{e}{hint}") from None
        history = train(cfg, data_dirs["train"], data_dirs.get("val"), out_dir, resume=False, **kwargs)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    model, _ = load_model(out_dir, which=which, device="cpu")  # returned on the host; callers move it
    return model, history
