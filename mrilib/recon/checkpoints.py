"""VarNet checkpoints: what ``last.pt``, ``best.pt`` and ``history.json`` hold, and how they are read.

Files in a model folder (``RunLayout.model(name)``)
    ``last.pt`` (resumable; ``finished=True`` once training is complete),
    ``best.pt`` (weights of the epoch with the lowest validation loss),
    ``history.json`` (per-epoch and per-step losses, learning rates, wall seconds,
    forward/backward slice-passes), all written atomically. Only rank 0 writes.

``last.pt`` holds the configuration (with the data's identity), the model, optimiser
and scheduler states, the RNG states (:func:`rng_state`) and the loop's
:class:`TrainState`. :func:`save_checkpoint` stores the checkpoint's
:func:`~mrilib.run.cache.content_digest` in it (``digest``); :func:`load_checkpoint` reads
a checkpoint with ``torch.load(weights_only=True)``, checks the digest (a damaged file is
refused, naming it; checkpoints written before digests were kept have none and load as
before) and that it was made with the configuration asked for
(:class:`ConfigMismatchError` lists the differences).
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mrilib.models.varnet import build_varnet
from mrilib.run.cache import canonical, content_digest, identity_diff
from mrilib.run.io import atomic_path, read_json

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigMismatchError",
    "TrainState",
    "rng_state",
    "set_rng_state",
    "last_checkpoint",
    "best_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "read_history",
]

CHECKPOINT_FORMAT = 1

#: The files of a model folder.
LAST, BEST, HISTORY = "last.pt", "best.pt", "history.json"

#: The checkpoint entry holding the :func:`~mrilib.run.cache.content_digest` of every other entry.
DIGEST = "digest"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: corrupted, incomplete or of another configuration."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint that should be loaded does not exist."""


class ConfigMismatchError(CheckpointError):
    """A checkpoint was made with another configuration than the one asked for."""


# --------------------------------------------------------------------------------------
# the loop's running state
# --------------------------------------------------------------------------------------

#: :class:`TrainState` fields stored as top-level entries of ``last.pt``.
_COUNTERS = ("epoch", "batch", "step", "finished", "wall_s", "train_passes", "val_passes",
             "epoch_loss_sum", "epoch_loss_n", "best_val", "best_epoch")

_COST_NOTE = ("wall_s: seconds of training incl. validation and checkpointing (rank 0, summed over "
              "sessions; work lost after the last checkpoint of a killed session is not counted). "
              "train_slice_passes: forward+backward passes of one slice, summed over processes; "
              "val_slice_passes: forward-only passes.")


@dataclass
class TrainState:
    """Where a training run is: counters, running sums and the curves so far.

    ``batch`` counts the batches already done in epoch ``epoch`` (a resume skips them);
    ``epochs`` holds one record per finished epoch; ``step_loss`` / ``step_lr`` one
    value per optimiser step.
    """

    epoch: int = 0
    batch: int = 0
    step: int = 0
    finished: bool = False
    wall_s: float = 0.0
    train_passes: int = 0
    val_passes: int = 0
    epoch_loss_sum: float = 0.0
    epoch_loss_n: int = 0
    best_val: float = float("inf")
    best_epoch: int | None = None
    epochs: list = field(default_factory=list)
    step_loss: list = field(default_factory=list)
    step_lr: list = field(default_factory=list)

    def checkpoint_entries(self) -> dict:
        """The entries of ``last.pt`` that hold this state (curves as tensors)."""
        return dict(**{k: getattr(self, k) for k in _COUNTERS},
                    history=dict(epochs=self.epochs, step_loss=torch.tensor(self.step_loss, dtype=torch.float32),
                                 step_lr=torch.tensor(self.step_lr, dtype=torch.float64)))

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> TrainState:
        """The state stored in a ``last.pt`` (see :meth:`checkpoint_entries`)."""
        h = ckpt["history"]
        return cls(**{k: ckpt[k] for k in _COUNTERS}, epochs=list(h["epochs"]), step_loss=h["step_loss"].tolist(),
                   step_lr=h["step_lr"].tolist())

    def history(self, cfg: dict, world: int, device, steps_per_epoch: int) -> dict:
        """The content of ``history.json``."""
        return dict(
            config=cfg,
            finished=self.finished,
            epochs=self.epochs,
            step_loss=[float(x) for x in self.step_loss],
            step_lr=[float(x) for x in self.step_lr],
            steps=self.step,
            steps_per_epoch=steps_per_epoch,
            wall_s=self.wall_s,
            train_slice_passes=self.train_passes,
            val_slice_passes=self.val_passes,
            best_epoch=self.best_epoch,
            best_val_loss=self.best_val if math.isfinite(self.best_val) else None,
            world_size=world,
            device=str(device),
            torch=torch.__version__,
            cost_note=_COST_NOTE,
        )


# --------------------------------------------------------------------------------------
# RNG states
# --------------------------------------------------------------------------------------


def rng_state() -> dict:
    """torch / numpy / python (and CUDA) RNG states as tensors and primitives (``weights_only``-loadable)."""
    np_state = np.random.get_state()
    py = random.getstate()
    state = dict(
        torch=torch.get_rng_state(),
        numpy=dict(keys=torch.from_numpy(np_state[1].astype(np.int64)), pos=int(np_state[2]),
                   has_gauss=int(np_state[3]), gauss=float(np_state[4])),
        python=dict(version=int(py[0]), state=list(py[1]), gauss=py[2]),
    )
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------


def _weights(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def last_checkpoint(cfg: dict, model, optimizer, scheduler, state: TrainState, world: int) -> dict:
    """The content of ``last.pt``: everything a resume needs (the RNG states are taken now)."""
    return dict(format=CHECKPOINT_FORMAT, config=cfg, model=_weights(model), optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(), rng=rng_state(), world_size=world, **state.checkpoint_entries())


def best_checkpoint(cfg: dict, model, epoch: int, val_loss: float | None) -> dict:
    """The content of ``best.pt``: the weights after ``epoch`` (1-based) and their validation loss."""
    return dict(format=CHECKPOINT_FORMAT, config=cfg, epoch=epoch, val_loss=val_loss, model=_weights(model))


def save_checkpoint(path: str | os.PathLike, obj: dict) -> None:
    """``torch.save`` atomically (temporary file + rename), with the :func:`~mrilib.run.cache.content_digest`
    of ``obj`` as its ``digest`` entry; a failed write (a full disk) raises
    :class:`mrilib.run.io.ArtefactWriteError` naming ``path`` and leaves the previous checkpoint."""
    entry = {k: v for k, v in obj.items() if k != DIGEST}
    with atomic_path(path) as tmp:
        torch.save({**entry, DIGEST: content_digest(entry)}, tmp)


def _fix(path: Path) -> str:
    """What to do with an unusable checkpoint."""
    if path.name == LAST:
        return (f"delete {path} to train this model from scratch (the epochs it holds are lost; "
                f"best.pt and history.json in {path.parent} are replaced as training goes)")
    return f"delete {path.parent} to train this model again"


def load_checkpoint(path: str | os.PathLike, expected: dict | None = None, map_location="cpu") -> dict:  # host
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check it.

    Args:
        path: a ``.pt`` file or a model folder (then ``last.pt`` in it).
        expected: a configuration (``{"model": ..., ...}``); its ``model`` part must
            equal the checkpoint's, else :class:`ConfigMismatchError` listing the
            differences. Its ``train`` and ``data`` parts are compared when present.

    Raises:
        CheckpointNotFoundError: no such file.
        CheckpointError: unreadable, truncated, damaged (its ``digest`` entry does not
            match its content) or not one of our checkpoints (names the file and the fix).
    """
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"no checkpoint at {path}: train the model first (mrilib.recon.train.train_or_load, "
            "notebooks/02_varnet.ipynb for the clean model)"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read means a bad file
        raise CheckpointError(f"{path}: corrupted or unreadable checkpoint ({type(err).__name__}: {err}); "
                              f"{_fix(path)}") from None
    if not (isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT and {"model", "config"} <= set(ckpt)):
        raise CheckpointError(f"{path}: not a mrilib VarNet checkpoint (format {CHECKPOINT_FORMAT})")
    stored = ckpt.pop(DIGEST, None)  # checkpoints written before digests were kept have none
    if stored is not None and content_digest(ckpt) != stored:
        raise CheckpointError(f"{path}: corrupted checkpoint (its content does not match the digest stored when it "
                              f"was written); {_fix(path)}")
    if expected is not None:
        expected = canonical(expected)
        have = ckpt["config"]
        diffs = []
        for part in ("model", "train", "data"):
            if part in expected:
                diffs += identity_diff(have.get(part), expected[part], f"{part}.")
        if diffs:
            raise ConfigMismatchError(f"{path}: checkpoint configuration differs from the one asked for:\n  "
                                      + "\n  ".join(diffs))
    return ckpt


def load_model(path: str | os.PathLike, which: str = "last", expected: dict | None = None, device="cpu"):  # host
    """Build a VarNet from the configuration stored in a checkpoint and load its weights.

    Args:
        path: a model folder (``last.pt`` / ``best.pt`` inside) or a ``.pt`` file.
        which: ``"last"`` (the end of training) or ``"best"`` (lowest validation loss).
        expected: configuration that the checkpoint must match (see :func:`load_checkpoint`).
        device: where to put the model.

    Returns:
        ``(model, checkpoint)``; the model is in eval mode. Errors as in
        :func:`load_checkpoint`; weights that do not fit the stored architecture raise
        :class:`CheckpointError`.
    """
    path = Path(path)
    if path.is_dir():
        if which not in ("last", "best"):
            raise ValueError(f"which must be 'last' or 'best', got {which!r}")
        path = path / (LAST if which == "last" else BEST)
    ckpt = load_checkpoint(path, expected)
    model = build_varnet(ckpt["config"]["model"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the stored model configuration: {err}") from None
    return model.to(device).eval(), ckpt


def read_history(model_dir: str | os.PathLike) -> dict:
    """The ``history.json`` of a model folder (learning curves, cost)."""
    path = Path(model_dir) / HISTORY
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training history (train the model first)")
    return read_json(path)
