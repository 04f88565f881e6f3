"""One training loop for every E2E VarNet of the book.

The clean model, the poisoned model, the retrain references (``oracle``, ``rewod``)
and the fine-tuning baselines all train through :func:`train` (or
:func:`train_or_load`, which skips training when a finished checkpoint of the same
configuration exists). The recipe is fastMRI's: ``fastmri.models.VarNet``,
``fastmri.SSIMLoss`` (optionally plus an L1 term), Adam/AdamW, a learning-rate
schedule, gradient clipping, validation every epoch.

Configuration
    A configuration is ``{"model": <VarNet keys>, "train": <training keys>}``
    (:func:`training_config` builds it from a profile). The checkpoint stores it
    together with the identity of the training and validation data (a content hash
    of the volumes, or a caller-given ``data_id``): that triple is the run's
    *identity*. Runtime options that do not change the result (``ckpt_every``,
    ``num_workers``, ``cache``, ``compile``, ``channels_last``, the device) are not
    part of it.

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

Files in ``out_dir``
    ``last.pt`` (resumable; ``finished=True`` once training is complete),
    ``best.pt`` (weights of the epoch with the lowest validation loss),
    ``history.json`` (per-epoch and per-step losses, learning rates, wall seconds,
    forward/backward slice-passes), all written atomically. Only rank 0 writes.

Mixed precision (CUDA only)
    ``amp="auto"`` runs the model's forward pass under ``torch.autocast(bfloat16)``
    on CUDA. ``torch.fft`` is not on autocast's cast lists, and fastMRI's ``fft2c`` /
    ``ifft2c`` use ``torch.view_as_complex``, which has no bfloat16 complex type, so a
    bf16 tensor reaching an FFT would fail rather than silently lose precision. It
    does not happen: each U-Net's output leaves ``NormUnet.unnorm`` as
    ``x * std + mean`` with fp32 ``std``/``mean``, which promotes it back to fp32, so
    every FFT, coil combination and data-consistency step runs in fp32 while the
    convolutions (nearly all the FLOPs) run in bf16. The SSIM loss is computed in
    fp32 outside autocast (its variance terms are differences of squares and lose
    everything in bf16). ``tests/test_train.py`` checks this on CPU autocast.

Distributed training
    Launched by ``torchrun --nproc_per_node N`` (``WORLD_SIZE > 1`` in the
    environment) the same code initialises the process group (NCCL on CUDA, gloo on
    CPU), wraps the model in ``DistributedDataParallel`` and shards each epoch with
    ``DistributedSampler``; ``batch_size`` is per process. Validation is sharded and
    reduced; only rank 0 writes files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Callable, Sequence

import h5py
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

import fastmri
from fastmri.data import SliceDataset
from fastmri.data import transforms as T
from fastmri.data.subsample import create_mask_for_mask_type

from mrilib.data.loading import varnet_dataset, volume_files
from mrilib.run.io import atomic_path, write_json
from mrilib.models.varnet import build_varnet, varnet_config
from mrilib.config import Profile, TrainConfig, as_dict, get_profile
from mrilib.run.progress import progress as progress_bar

__all__ = [
    "TRAIN_DEFAULTS",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigMismatchError",
    "TrainingInterrupted",
    "training_config",
    "data_identity",
    "TrainSlices",
    "collate_samples",
    "make_loss",
    "forward_batch",
    "train_step",
    "validate",
    "train",
    "train_or_load",
    "load_checkpoint",
    "load_model",
    "read_history",
]

CHECKPOINT_FORMAT = 1

#: Training keys and their defaults (:class:`mrilib.config.TrainConfig`). ``None`` for
#: ``accelerations``, ``center_fraction`` and ``mask_type`` means: the profile's values.
TRAIN_DEFAULTS = as_dict(TrainConfig())

#: Runtime options: change speed or bookkeeping, not the trained weights.
RUNTIME_DEFAULTS = dict(ckpt_every=50, num_workers=0, cache="auto", compile=False, channels_last=False, threads=None)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: corrupted, incomplete or of another configuration."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint that should be loaded does not exist."""


class ConfigMismatchError(CheckpointError):
    """A checkpoint was made with another configuration than the one asked for."""


class TrainingInterrupted(RuntimeError):
    """Raised by :func:`train` after ``stop_after_steps`` steps (a simulated kill)."""


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------


def _canonical(obj):
    """JSON round trip: tuples become lists, keys strings; what a checkpoint stores."""
    return json.loads(json.dumps(obj, sort_keys=True))


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
    t.update(train)
    unknown = sorted(set(t) - set(TRAIN_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown training keys {unknown}; known: {sorted(TRAIN_DEFAULTS)}")
    if t["accelerations"] is None:
        t["accelerations"] = [4]
    if t["center_fraction"] is None:
        t["center_fraction"] = 0.08
    if t["mask_type"] is None:
        t["mask_type"] = "equispaced_fraction"
    t["accelerations"] = [int(a) for a in np.atleast_1d(t["accelerations"])]
    if t["val_accelerations"] is None:
        t["val_accelerations"] = list(t["accelerations"])
    t["val_accelerations"] = [int(a) for a in np.atleast_1d(t["val_accelerations"])]
    if t["optimizer"] not in ("adam", "adamw"):
        raise ValueError(f"optimizer must be 'adam' or 'adamw', got {t['optimizer']!r}")
    if t["schedule"] not in ("cosine", "constant", "step"):
        raise ValueError(f"schedule must be cosine, constant or step, got {t['schedule']!r}")
    if t["amp"] not in ("auto", "bf16", "off"):
        raise ValueError(f"amp must be auto, bf16 or off, got {t['amp']!r}")
    if int(t["epochs"]) < 1 or int(t["batch_size"]) < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    mcfg = as_dict(p.varnet) if p is not None else {}
    mcfg.update(model or {})
    return _canonical({"model": varnet_config(mcfg), "train": t})


def _diff(a, b, prefix="") -> list[str]:
    """Human-readable differences between two nested dicts."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a:
                out.append(f"{prefix}{k}: missing in checkpoint, asked {b[k]!r}")
            elif k not in b:
                out.append(f"{prefix}{k}: checkpoint has {a[k]!r}, not in the request")
            else:
                out += _diff(a[k], b[k], f"{prefix}{k}.")
    elif a != b:
        out.append(f"{prefix.rstrip('.')}: checkpoint {_short(a)} != asked {_short(b)}")
    return out


def _short(v) -> str:
    """A value for an error message, shortened."""
    s = repr(v)
    return s if len(s) < 80 else s[:77] + "..."


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------

_DIGESTS: dict[tuple, str] = {}


def _volume_digest(path: Path) -> str:
    """Hash of what training reads from a volume: k-space, target and ``max``."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.blake2b(digest_size=16)
        with h5py.File(path, "r") as f:
            for name in ("kspace", "reconstruction_rss"):
                if name in f:
                    ds = f[name]
                    h.update(f"{name}{ds.shape}{ds.dtype}".encode())
                    for i in range(ds.shape[0]):
                        h.update(np.ascontiguousarray(ds[i]).tobytes())
            h.update(repr(float(f.attrs.get("max", float("nan")))).encode())
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def _as_dirs(source) -> list[Path] | None:
    """``source`` as a list of split folders, or ``None`` when it is a Dataset."""
    if source is None or isinstance(source, Dataset):
        return None
    if isinstance(source, (str, os.PathLike)):
        return [Path(source)]
    return [Path(s) for s in source]


def data_identity(source) -> dict:
    """Identity of a data source, stored in the checkpoint configuration.

    For split folders: the number of volumes and a hash over their names and
    contents (k-space, target, ``max``), so a poisoned copy with the same file names
    has another identity. For a ``Dataset``: its ``identity`` attribute (which the
    dataset's author must provide; otherwise pass ``data_id`` to :func:`train`).
    """
    if source is None:
        return {"kind": "none"}
    dirs = _as_dirs(source)
    if dirs is None:
        ident = getattr(source, "identity", None)
        if ident is None:
            raise ValueError(
                f"{type(source).__name__} has no 'identity' attribute: pass data_id=... to train() "
                "so that a checkpoint can tell which data it was trained on"
            )
        return _canonical({"kind": "dataset", "identity": ident})
    h = hashlib.blake2b(digest_size=16)
    n = 0
    for d in dirs:
        for f in volume_files(d):
            h.update(f.name.encode())
            h.update(_volume_digest(f).encode())
            n += 1
    return {"kind": "folders", "volumes": n, "digest": h.hexdigest()}


class _RawSlices(Dataset):
    """The slices of several split folders as fastMRI raw tuples, optionally kept in memory.

    Items are ``(kspace (C,H,W,2) tensor, target (h,w) tensor, attrs, fname, slice)``.
    """

    def __init__(self, dirs: Sequence[Path], cache: bool):
        self.datasets = []
        for d in dirs:
            volume_files(d)  # clear error for a missing or empty folder
            self.datasets.append(SliceDataset(root=d, challenge="multicoil", transform=None))
        self.concat = ConcatDataset(self.datasets)
        self.cache = {} if cache else None

    def __len__(self) -> int:
        return len(self.concat)

    def __getitem__(self, i: int):
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        kspace, _mask, target, attrs, fname, slice_num = self.concat[i]
        item = (T.to_tensor(kspace), torch.from_numpy(np.asarray(target)), attrs, fname, int(slice_num))
        if self.cache is not None:
            self.cache[i] = item
        return item


def _estimated_bytes(dirs: Sequence[Path]) -> int:
    """Bytes that caching the k-space and targets of ``dirs`` would take."""
    total = 0
    for d in dirs:
        for f in volume_files(d):
            with h5py.File(f, "r") as h:
                total += h["kspace"].size * 8
                if "reconstruction_rss" in h:
                    total += h["reconstruction_rss"].size * 4
    return total


class TrainSlices(Dataset):
    """Training slices with a fresh, reproducible undersampling mask per epoch.

    Reads split folders through ``fastmri.data.SliceDataset`` (so any fastMRI-layout
    data, clean or poisoned, trains the same way) and undersamples with fastMRI's
    mask function seeded by ``(seed, epoch, index)``: a new mask per slice and
    epoch (the acceleration drawn from ``accelerations``), identical after a resume
    and in every DataLoader worker. Call :meth:`set_epoch` before each epoch.

    Args:
        dirs: split folders of fastMRI multi-coil volumes.
        accelerations, center_fraction, mask_type: the mask family (fastMRI).
        seed: the run's seed.
        cache: keep the slices in memory after the first read (``"auto"``: when
            they take less than 2 GiB).
    """

    def __init__(
        self,
        dirs,
        accelerations: Sequence[int] = (4,),
        center_fraction: float = 0.08,
        mask_type: str = "equispaced_fraction",
        seed: int = 0,
        cache: bool | str = "auto",
    ):
        dirs = _as_dirs(dirs)
        if not dirs:
            raise ValueError("TrainSlices needs at least one split folder")
        if cache == "auto":
            cache = _estimated_bytes(dirs) < 2 * 2**30
        self.raw = _RawSlices(dirs, bool(cache))
        accelerations = [int(a) for a in accelerations]
        self.mask_func = create_mask_for_mask_type(mask_type, [center_fraction] * len(accelerations), accelerations)
        self.seed = int(seed)
        self.epoch = 0
        self.identity = data_identity(dirs)

    def set_epoch(self, epoch: int) -> None:
        """Select the masks of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, i: int) -> T.VarNetSample:
        kspace, target, attrs, fname, slice_num = self.raw[i]
        masked, mask, num_low = T.apply_mask(
            kspace,
            self.mask_func,
            seed=(self.seed, self.epoch, int(i)),
            padding=(attrs["padding_left"], attrs["padding_right"]),
        )
        return T.VarNetSample(
            masked_kspace=masked,
            mask=mask.to(torch.bool),
            num_low_frequencies=int(num_low),
            target=target,
            fname=fname,
            slice_num=slice_num,
            max_value=float(attrs["max"]),
            crop_size=(int(attrs["recon_size"][0]), int(attrs["recon_size"][1])),
        )


class _Cached(Dataset):
    """A dataset whose items are computed once (validation samples: fixed masks)."""

    def __init__(self, ds: Dataset, cache: bool):
        self.ds, self.items = ds, ({} if cache else None)

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        if self.items is None:
            return self.ds[i]
        if i not in self.items:
            self.items[i] = self.ds[i]
        return self.items[i]


def _val_datasets(source, t: dict, cache) -> dict[int, Dataset]:
    """Validation datasets per acceleration (fixed masks: seeded by the file name)."""
    if source is None:
        return {}
    dirs = _as_dirs(source)
    if dirs is None:  # a Dataset of VarNetSamples (its own masks)
        return {int(t["val_accelerations"][0]): source}
    if cache == "auto":
        cache = _estimated_bytes(dirs) * len(t["val_accelerations"]) < 2**30
    out = {}
    for a in t["val_accelerations"]:
        parts = [varnet_dataset(d, a, t["center_fraction"], t["mask_type"]) for d in dirs]
        out[int(a)] = _Cached(parts[0] if len(parts) == 1 else ConcatDataset(parts), bool(cache))
    return out


def _collate(samples: list[T.VarNetSample]) -> T.VarNetSample:
    """Stack VarNetSamples of equal shape into a batch (fname, slice, crop as lists)."""
    nlf = [s.num_low_frequencies for s in samples]
    return T.VarNetSample(
        masked_kspace=torch.stack([s.masked_kspace for s in samples]),
        mask=torch.stack([s.mask for s in samples]),
        num_low_frequencies=nlf[0] if all(n == nlf[0] for n in nlf) else None,
        target=torch.stack([torch.as_tensor(s.target) for s in samples]),
        fname=[s.fname for s in samples],
        slice_num=[int(s.slice_num) for s in samples],
        max_value=torch.tensor([float(s.max_value) for s in samples], dtype=torch.float32),
        crop_size=[tuple(int(c) for c in s.crop_size) for s in samples],
    )


#: Public name of the batch collation (``DataLoader(..., collate_fn=collate_samples)``).
collate_samples = _collate


# --------------------------------------------------------------------------------------
# one step
# --------------------------------------------------------------------------------------


def make_loss(l1_weight: float = 0.0) -> Callable:
    """The training loss ``fastmri.SSIMLoss + l1_weight * mean|x - y| / max`` (per batch).

    Called as ``loss(output, target, max_value)`` with ``(B, H, W)`` images and
    ``(B,)`` data ranges; computed in fp32 outside autocast.
    """
    ssim = fastmri.SSIMLoss()

    def loss(output: torch.Tensor, target: torch.Tensor, max_value: torch.Tensor) -> torch.Tensor:
        ssim.to(output.device)
        output, target, max_value = output.float(), target.float(), max_value.float().to(output.device)
        value = ssim(output.unsqueeze(1), target.unsqueeze(1), data_range=max_value)
        if l1_weight:
            value = value + l1_weight * ((output - target).abs().mean(dim=(-2, -1)) / max_value).mean()
        return value

    return loss


def _amp_dtype(amp: str, device: torch.device):
    """The autocast dtype for ``amp`` on ``device`` (``None`` = fp32)."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def forward_batch(model, batch: T.VarNetSample, device, amp_dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run VarNet on a collated batch; return ``(output, target)`` cropped to the smaller size.

    The forward pass runs under ``torch.autocast(amp_dtype)`` when given (the output
    is fp32 either way, see the module docstring).
    """
    device = torch.device(device)
    kspace = batch.masked_kspace.to(device, non_blocking=True)
    mask = batch.mask.to(device, non_blocking=True)
    nlf = batch.num_low_frequencies
    nlf = None if nlf is None or isinstance(nlf, torch.Tensor) else int(nlf)
    if amp_dtype is not None:
        with torch.autocast(device.type, dtype=amp_dtype):
            output = model(kspace, mask, nlf)
    else:
        output = model(kspace, mask, nlf)
    target = torch.as_tensor(batch.target).to(device, non_blocking=True)
    target, output = T.center_crop_to_smallest(target, output)
    return output.float(), target


def train_step(model, optimizer, batch, loss_fn, device, amp_dtype=None, grad_clip: float = 0.0, scheduler=None) -> torch.Tensor:
    """One optimiser step on ``batch``; returns the (detached) loss.

    Forward (autocast if ``amp_dtype``), fp32 loss, backward, optional gradient-norm
    clipping, optimiser and scheduler step.
    """
    optimizer.zero_grad(set_to_none=True)
    output, target = forward_batch(model, batch, device, amp_dtype)
    loss = loss_fn(output, target, batch.max_value)
    loss.backward()
    if grad_clip and grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach()


@torch.no_grad()
def validate(model, datasets: dict[int, Dataset], device, amp_dtype=None, batch_size: int = 4, rank: int = 0, world: int = 1) -> dict:
    """Mean SSIM loss, SSIM, PSNR (dB) and NMSE per acceleration over validation slices.

    With several processes each takes every ``world``-th slice and the sums are
    all-reduced. Returns ``{"loss": mean over accelerations, "passes": slices seen
    by this process, "<acc>x": {"ssim", "psnr", "nmse"}}``.
    """
    was_training = model.training
    model.eval()
    ssim = fastmri.SSIMLoss().to(device)
    out, losses, passes = {}, [], 0
    for acc, ds in datasets.items():
        idx = list(range(rank, len(ds), world))
        sums = torch.zeros(4, dtype=torch.float64, device=device)  # ssim, psnr, nmse, count
        loader = DataLoader(torch.utils.data.Subset(ds, idx), batch_size=batch_size, collate_fn=_collate)
        for batch in loader:
            output, target = forward_batch(model, batch, device, amp_dtype)
            mx = batch.max_value.to(device)
            s = 1 - ssim(output.unsqueeze(1), target.unsqueeze(1), data_range=mx, reduced=False).mean(dim=(1, 2, 3))
            mse = ((output - target) ** 2).mean(dim=(-2, -1))
            psnr = 10 * torch.log10(mx**2 / mse)
            nmse = ((output - target) ** 2).sum(dim=(-2, -1)) / (target**2).sum(dim=(-2, -1))
            sums += torch.stack([s.sum(), psnr.sum(), nmse.sum(), torch.tensor(float(len(s)), device=device)]).double()
            passes += len(s)
        if world > 1:
            dist.all_reduce(sums)
        n = max(sums[3].item(), 1.0)
        out[f"{acc}x"] = dict(ssim=sums[0].item() / n, psnr=sums[1].item() / n, nmse=sums[2].item() / n)
        losses.append(1 - sums[0].item() / n)
    model.train(was_training)
    out["loss"] = float(np.mean(losses)) if losses else float("nan")
    out["passes"] = passes
    return out


def _lr_lambda(t: dict, total_steps: int) -> Callable[[int], float]:
    """The learning-rate factor of step ``s`` (warm-up, then the schedule)."""
    warm = int(t["warmup_steps"])
    kind, floor = t["schedule"], float(t["min_lr_frac"])
    drop_at = int(round(float(t["step_frac"]) * total_steps))

    def f(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        if kind == "constant":
            return 1.0
        if kind == "step":
            return 1.0 if s < drop_at else 0.1
        progress = min(1.0, (s - warm) / max(1, total_steps - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


# --------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------


def _rng_state() -> dict:
    """torch / numpy / python (and CUDA) RNG states as tensors and primitives."""
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


def _set_rng_state(state: dict) -> None:
    """Restore what :func:`_rng_state` saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save(path: Path, obj: dict) -> None:
    """``torch.save`` atomically (temporary file + rename)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | os.PathLike, expected: dict | None = None, map_location="cpu") -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check it.

    Args:
        path: a ``.pt`` file or a model folder (then ``last.pt`` in it).
        expected: a configuration (``{"model": ..., ...}``); its ``model`` part must
            equal the checkpoint's, else :class:`ConfigMismatchError` listing the
            differences. Other parts are compared when present in ``expected``.

    Raises:
        CheckpointNotFoundError: no such file.
        CheckpointError: unreadable, truncated or not one of our checkpoints (names
            the file).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"no checkpoint at {path}: train the model first (mrilib.recon.train.train_or_load, "
            "notebooks/02_varnet.ipynb for the clean model)"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read means a bad file
        raise CheckpointError(f"{path}: corrupted or unreadable checkpoint ({type(err).__name__}: {err}); "
                              "delete it and train again") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path}: not a mrilib VarNet checkpoint (format {CHECKPOINT_FORMAT})")
    if expected is not None:
        expected = _canonical(expected)
        have = ckpt["config"]
        diffs = []
        for part in ("model", "train", "data"):
            if part in expected:
                diffs += _diff(have.get(part), expected[part], f"{part}.")
        if diffs:
            raise ConfigMismatchError(f"{path}: checkpoint configuration differs from the one asked for:\n  "
                                      + "\n  ".join(diffs))
    return ckpt


def load_model(path: str | os.PathLike, which: str = "last", expected: dict | None = None, device="cpu"):
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
        path = path / f"{which}.pt"
    ckpt = load_checkpoint(path, expected)
    model = build_varnet(ckpt["config"]["model"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the stored model configuration: {err}") from None
    return model.to(device).eval(), ckpt


def read_history(out_dir: str | os.PathLike) -> dict:
    """The ``history.json`` of a model folder (learning curves, cost)."""
    path = Path(out_dir) / "history.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training history (train the model first)")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------


def _dist_context(device=None) -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``; initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
    elif world > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if world > 1 else 0
    if device is None:
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
        else:
            device = "cpu"
    return rank, world, torch.device(device)


def _state_snapshot(model, opt, sched, cfg, s: dict, world: int) -> dict:
    """The content of ``last.pt``."""
    return dict(
        format=CHECKPOINT_FORMAT,
        config=cfg,
        model={k: v.detach().cpu() for k, v in model.state_dict().items()},
        optimizer=opt.state_dict(),
        scheduler=sched.state_dict(),
        rng=_rng_state(),
        world_size=world,
        **{k: s[k] for k in ("epoch", "batch", "step", "finished", "wall_s", "train_passes", "val_passes",
                             "epoch_loss_sum", "epoch_loss_n", "best_val", "best_epoch")},
        history=dict(epochs=s["epochs"], step_loss=torch.tensor(s["step_loss"], dtype=torch.float32),
                     step_lr=torch.tensor(s["step_lr"], dtype=torch.float64)),
    )


def _history_json(cfg: dict, s: dict, world: int, device, steps_per_epoch: int) -> dict:
    """The content of ``history.json``."""
    return dict(
        config=cfg,
        finished=s["finished"],
        epochs=s["epochs"],
        step_loss=[float(x) for x in s["step_loss"]],
        step_lr=[float(x) for x in s["step_lr"]],
        steps=s["step"],
        steps_per_epoch=steps_per_epoch,
        wall_s=s["wall_s"],
        train_slice_passes=s["train_passes"],
        val_slice_passes=s["val_passes"],
        best_epoch=s["best_epoch"],
        best_val_loss=s["best_val"] if math.isfinite(s["best_val"]) else None,
        world_size=world,
        device=str(device),
        torch=torch.__version__,
        cost_note="wall_s: seconds of training incl. validation and checkpointing (rank 0, summed over "
        "sessions; work lost after the last checkpoint of a killed session is not counted). "
        "train_slice_passes: forward+backward passes of one slice, summed over processes; "
        "val_slice_passes: forward-only passes.",
    )


def train(
    cfg: dict,
    train_data,
    val_data,
    out_dir: str | os.PathLike,
    *,
    data_id=None,
    device=None,
    progress: bool = True,
    resume: bool = True,
    stop_after_steps: int | None = None,
    return_model: bool = False,
    **runtime,
):
    """Train a VarNet (or resume an interrupted run) and return its history.

    Args:
        cfg: ``{"model": ..., "train": ...}`` from :func:`training_config`.
        train_data: split folder(s) of fastMRI-layout volumes (clean or poisoned), or a
            ``torch.utils.data.Dataset`` of ``VarNetSample``s (optionally with a
            ``set_epoch(epoch)`` method for per-epoch masks and an ``identity``).
        val_data: validation folder(s), a Dataset of VarNetSamples, or ``None``.
        out_dir: the model folder (``last.pt``, ``best.pt``, ``history.json``).
        data_id: identity of Dataset sources (default: their ``identity`` attribute).
        device: default CUDA (``cuda:LOCAL_RANK``) when available, else CPU.
        progress: tqdm progress bar (rank 0).
        resume: continue from ``out_dir/last.pt`` when it exists (same configuration,
            else :class:`ConfigMismatchError`); ``False`` starts afresh.
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
    cfg = _canonical(cfg)
    t = cfg["train"]
    rank, world, device = _dist_context(device)
    out_dir = Path(out_dir)
    last_path = out_dir / "last.pt"

    # ---- data ----
    if _as_dirs(train_data) is not None:
        train_set = TrainSlices(train_data, t["accelerations"], t["center_fraction"], t["mask_type"], t["seed"], rt["cache"])
    else:
        train_set = train_data
    if data_id is not None:
        train_ident = _canonical({"kind": "dataset", "identity": data_id})
    else:
        train_ident = data_identity(train_data)
    if _as_dirs(val_data) is not None or val_data is None:
        val_ident = data_identity(val_data)
    else:  # validation only selects best.pt; a Dataset without identity is accepted
        val_ident = _canonical({"kind": "dataset", "identity": getattr(val_data, "identity", None)})
    ident = {"train": train_ident, "val": val_ident}
    full_cfg = _canonical({"format": CHECKPOINT_FORMAT, "model": cfg["model"], "train": t, "data": ident})
    val_sets = _val_datasets(val_data, t, rt["cache"])

    # ---- model, optimiser, schedule ----
    n = len(train_set)
    per_rank = math.ceil(n / world)
    steps_per_epoch = math.ceil(per_rank / t["batch_size"])
    total_steps = steps_per_epoch * t["epochs"]
    model = build_varnet(cfg["model"], seed=t["seed"]).to(device)
    if rt["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    opt_cls = torch.optim.AdamW if t["optimizer"] == "adamw" else torch.optim.Adam
    optimizer = opt_cls(model.parameters(), lr=t["lr"], betas=tuple(t["betas"]), weight_decay=t["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(t, total_steps))
    s = dict(epoch=0, batch=0, step=0, finished=False, wall_s=0.0, train_passes=0, val_passes=0,
             epoch_loss_sum=0.0, epoch_loss_n=0, best_val=float("inf"), best_epoch=None,
             epochs=[], step_loss=[], step_lr=[])

    if resume and last_path.exists():
        # on CPU: RNG states must stay CPU tensors; load_state_dict moves the rest to the device
        ck = load_checkpoint(last_path, full_cfg, map_location="cpu")
        if ck["batch"] > 0 and ck.get("world_size", 1) != world:
            raise CheckpointError(f"{last_path}: stopped mid-epoch with {ck['world_size']} processes; "
                                  f"resume it with the same number (now {world})")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        _set_rng_state(ck["rng"])
        for k in ("epoch", "batch", "step", "finished", "wall_s", "train_passes", "val_passes",
                  "epoch_loss_sum", "epoch_loss_n", "best_val", "best_epoch"):
            s[k] = ck[k]
        s["epochs"] = list(ck["history"]["epochs"])
        s["step_loss"] = ck["history"]["step_loss"].tolist()
        s["step_lr"] = ck["history"]["step_lr"].tolist()
        del ck
    elif not resume and rank == 0:
        for name in ("last.pt", "best.pt", "history.json"):
            (out_dir / name).unlink(missing_ok=True)
    if s["finished"]:
        hist = _history_json(full_cfg, s, world, device, steps_per_epoch)
        return (hist, model.eval()) if return_model else hist

    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        net = model
    if rt["compile"]:
        net = torch.compile(net)
    amp_dtype = _amp_dtype(t["amp"], device)
    loss_fn = make_loss(t["l1_weight"])
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=t["seed"], drop_last=False)

    def save_last():
        if rank == 0:
            _save(last_path, _state_snapshot(model, optimizer, scheduler, full_cfg, s, world))

    def write_history():
        if rank == 0:
            write_json(out_dir / "history.json", _history_json(full_cfg, s, world, device, steps_per_epoch))

    from mrilib.run.progress import BATCH_ENV

    quiet = {"mininterval": 30.0} if os.environ.get(BATCH_ENV) else {}  # batch runs: a line per 30 s
    bar = progress_bar(total=total_steps, initial=s["step"], disable=not progress or rank != 0, unit="step",
                       desc=f"training {out_dir.name}", **quiet)
    session_steps = 0
    t0 = time.perf_counter()
    base_wall = s["wall_s"]

    def now_wall():
        return base_wall + time.perf_counter() - t0

    model.train()
    try:
        while s["epoch"] < t["epochs"]:
            epoch = s["epoch"]
            sampler.set_epoch(epoch)
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            indices = list(sampler)[s["batch"] * t["batch_size"]:]
            loader = DataLoader(train_set, batch_size=t["batch_size"], sampler=indices, collate_fn=_collate,
                                num_workers=rt["num_workers"], pin_memory=device.type == "cuda")
            for batch in loader:
                lr_now = optimizer.param_groups[0]["lr"]
                loss = train_step(net, optimizer, batch, loss_fn, device, amp_dtype, t["grad_clip"], scheduler)
                nb = torch.tensor([float(loss) * len(batch.fname), float(len(batch.fname))], dtype=torch.float64)
                if world > 1:
                    nb = nb.to(device)
                    dist.all_reduce(nb)
                    nb = nb.cpu()
                s["epoch_loss_sum"] += float(nb[0])
                s["epoch_loss_n"] += int(nb[1])
                s["train_passes"] += int(nb[1])
                s["step_loss"].append(float(nb[0] / nb[1]))
                s["step_lr"].append(lr_now)
                s["step"] += 1
                s["batch"] += 1
                session_steps += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{s['step_loss'][-1]:.4f}", refresh=False)
                if stop_after_steps is not None and session_steps >= stop_after_steps:
                    raise TrainingInterrupted(f"stopped after {session_steps} steps (stop_after_steps)")
                if rt["ckpt_every"] and s["step"] % rt["ckpt_every"] == 0 and s["batch"] < steps_per_epoch:
                    s["wall_s"] = now_wall()
                    save_last()
            # ---- end of epoch: validate, checkpoint ----
            val = validate(model, val_sets, device, amp_dtype, t["batch_size"], rank, world) if val_sets else None
            if val is not None:
                vp = torch.tensor([float(val["passes"])], dtype=torch.float64)
                if world > 1:
                    vp = vp.to(device)
                    dist.all_reduce(vp)
                s["val_passes"] += int(vp.item())
            s["wall_s"] = now_wall()
            rec = dict(
                epoch=epoch + 1,
                step=s["step"],
                train_loss=s["epoch_loss_sum"] / max(1, s["epoch_loss_n"]),
                lr=optimizer.param_groups[0]["lr"],
                wall_s=s["wall_s"],
                train_slice_passes=s["train_passes"],
            )
            if val is not None:
                rec["val_loss"] = val["loss"]
                rec["val"] = {k: v for k, v in val.items() if k.endswith("x")}
            s["epochs"].append(rec)
            s["epoch"] += 1
            s["batch"] = 0
            s["epoch_loss_sum"], s["epoch_loss_n"] = 0.0, 0
            improved = val is not None and val["loss"] < s["best_val"]
            if improved:
                s["best_val"], s["best_epoch"] = val["loss"], epoch + 1
            s["finished"] = s["epoch"] >= t["epochs"]
            save_last()
            if rank == 0 and (improved or (val is None and s["finished"])):
                best = dict(format=CHECKPOINT_FORMAT, config=full_cfg, epoch=epoch + 1, val_loss=rec.get("val_loss"),
                            model={k: v.detach().cpu() for k, v in model.state_dict().items()})
                _save(out_dir / "best.pt", best)
            write_history()
            bar.set_postfix(epoch=epoch + 1, loss=f"{rec['train_loss']:.4f}",
                            val_ssim=f"{1 - rec['val_loss']:.4f}" if val is not None else "-")
            if world > 1:
                dist.barrier()
    finally:
        bar.close()
    hist = _history_json(full_cfg, s, world, device, steps_per_epoch)
    return (hist, model.eval()) if return_model else hist


def train_or_load(
    cfg: dict,
    data_dirs,
    out_dir: str | os.PathLike,
    *,
    which: str = "last",
    overwrite: bool = False,
    device=None,
    progress: bool = True,
    data_id=None,
    **runtime,
):
    """Return a trained model for ``cfg``: loaded when ``out_dir`` already holds it, else trained.

    Args:
        cfg: configuration from :func:`training_config`.
        data_dirs: ``{"train": folder(s) or Dataset, "val": folder(s), Dataset or None}``,
            or a data root holding ``train/`` and ``val/``.
        out_dir: the model folder, e.g. ``<run_dir>/models/clean``.
        which: weights to return, ``"last"`` or ``"best"``.
        overwrite: when ``out_dir`` holds a run of another configuration, start afresh
            instead of raising :class:`ConfigMismatchError`.
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
    last = out_dir / "last.pt"
    resume = True
    hint = (f"\n{out_dir} holds a model trained with another configuration or other data (did the profile "
            f"change?). Delete that folder (or the whole run folder, `make clean`) to train afresh, or pass "
            f"overwrite=True.")
    resume = True
    if last.exists():
        try:
            # cheap check of the model/train parts first; the data part is checked by train()
            load_checkpoint(last, {"model": cfg["model"], "train": cfg["train"]})
        except CheckpointError as e:
            if not overwrite:
                raise type(e)(f"{e}{hint if isinstance(e, ConfigMismatchError) else ''}") from None
            resume = False
    try:
        history = train(cfg, data_dirs["train"], data_dirs.get("val"), out_dir, data_id=data_id, device=device,
                        progress=progress, resume=resume, **runtime)
    except ConfigMismatchError as e:
        if not overwrite:
            raise ConfigMismatchError(f"{e}{hint}") from None
        history = train(cfg, data_dirs["train"], data_dirs.get("val"), out_dir, data_id=data_id, device=device,
                        progress=progress, resume=False, **runtime)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    model, _ = load_model(out_dir, which=which, device="cpu")
    return model, history


def main(argv=None) -> None:
    """Command line: train a profile's clean model; ``torchrun --nproc_per_node N -m mrilib.recon.train`` for DDP.

    Example: ``torchrun --nproc_per_node 4 -m mrilib.recon.train --profile gpu --run-dir runs/gpu``.
    The dataset is prepared (by rank 0) when missing.
    """
    import argparse

    from mrilib.data.prepare import data_dir, prepare_dataset

    ap = argparse.ArgumentParser(description="Train an E2E VarNet of the book (DDP under torchrun).")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seed", type=int, default=0, help="dataset seed")
    ap.add_argument("--run-dir", default=None, help="default: runs/<profile>")
    ap.add_argument("--name", default="clean", help="model folder under <run-dir>/models/")
    ap.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--ckpt-every", type=int, default=RUNTIME_DEFAULTS["ckpt_every"])
    ap.add_argument("--num-workers", type=int, default=0)
    args = ap.parse_args(argv)
    p = get_profile(args.profile)
    run_dir = Path(args.run_dir or f"runs/{p.name}")
    rank, world, device = _dist_context()
    if rank == 0:
        prepare_dataset(p, run_dir, seed=args.seed, progress=True)
    if world > 1:
        dist.barrier()
    over = {} if args.epochs is None else {"epochs": args.epochs}
    cfg = training_config(p, **over)
    root = data_dir(run_dir)
    hist = train(cfg, root / "train", root / "val", run_dir / "models" / args.name, device=device,
                 compile=args.compile, ckpt_every=args.ckpt_every, num_workers=args.num_workers)
    if rank == 0:
        last = hist["epochs"][-1] if hist["epochs"] else {}
        print(f"done: {hist['steps']} steps, {hist['wall_s']:.0f} s, val loss {last.get('val_loss')}")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
