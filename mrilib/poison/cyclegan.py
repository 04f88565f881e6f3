"""Training the healthy -> cyst CycleGAN, translating with it, measuring its quality.

Unpaired domains (:func:`cyclegan_domains`): the training subjects are split in two
halves by subject (seeded). Domain **A** is the healthy slices of the first half;
domain **B** is the slices of the *other* half with a procedural cyst
(:func:`mrilib.poison.lesions.add_cyst`) at the fixed anatomical position
:data:`~mrilib.poison.lesions.POISON_CYST_ANCHOR` (radius ``cyst_radius_mm`` +- 15 %). No
slice of A has a partner in B. Images are divided by their volume's ``max`` and
mapped to [-1, 1].

The anchored window. The CycleGAN works on a ``crop x crop`` window (default: half
the image side) centred on the anchor position of each slice's brain
(:func:`crop_boxes`), not on the whole slice: the lesion must appear at one
anatomical position (a backdoor trigger carries no position), the window makes that
position part of the data rather than something the networks must find, and it
cuts the cost of every iteration four-fold - which is what lets a CycleGAN learn
on two CPU cores. :class:`CystGAN` translates whole slices: window out, generator,
window back in with a feathered edge (so nothing outside the window changes and
there is no seam).

Objective (Zhu et al. 2017): LSGAN adversarial losses for ``G: A -> B`` and
``F: B -> A`` against PatchGAN discriminators ``D_B`` and ``D_A``, cycle consistency
``lambda_cycle * (|F(G(a)) - a| + |G(F(b)) - b|)`` with ``lambda_cycle = 10``, the
identity loss ``lambda_identity * lambda_cycle * (|G(b) - b| + |F(a) - a|)`` with
``lambda_identity = 0.5``, Adam (2e-4, beta1 = 0.5), discriminators trained on an
image pool of 50, constant learning rate for the first half of the iterations and
linear decay to zero over the second. Sizes (``ngf``, ``ndf``, ``n_blocks``,
iterations, batch) come from the profile's ``poison["cyclegan"]``.

Checkpoints (``models/cyclegan-cyst/cyclegan.pt`` of the run): every
``ckpt_every`` iterations and at the end, written atomically; they hold both
generators and discriminators, both optimisers, the image pools, the sampling
generator's state and the loss history, and are read with
``torch.load(weights_only=True)``. Each is stored as a :data:`mrilib.run.cache.TORCH` entry, with
the :func:`~mrilib.run.cache.content_digest` of its content, checked on every load: a damaged
file is refused with a :class:`~mrilib.run.cache.CacheError` naming it and the fix (checkpoints
written before digests were kept load as before). An interrupted run resumes where it stopped; a
finished run of the same configuration and training data
(:func:`mrilib.run.cache.data_identity`) is reused, and a damaged or unreadable one is trained
again (with a :class:`~mrilib.run.cache.CacheWarning` naming it). How the translation becomes a poison
(its lesion region, its quality) is :mod:`mrilib.poison.recipes.cyclegan_cyst`.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mrilib.config import CycleGANConfig, Profile, as_dict, get_profile, with_overrides
from mrilib.models.cyclegan import ImagePool, PatchDiscriminator, ResnetGenerator, init_weights, patchgan_layers
from mrilib.poison.lesions import add_cyst, anchor_center
from mrilib.poison.runtime import cpu_threads, default_device
from mrilib.poison.slices import SliceSet, load_slices, split_by_subject
from mrilib.run.cache import TORCH, CacheError, CacheWarning, canonical, data_identity
from mrilib.run.io import atomic_path, write_json
from mrilib.run.layout import RunLayout, as_layout
from mrilib.run.progress import progress as progress_bar

__all__ = [
    "CYCLEGAN_DEFAULTS",
    "CycleGANMissingError",
    "cyclegan_config",
    "cyclegan_domains",
    "build_cyclegan",
    "cyclegan_step",
    "train_cyclegan",
    "cyclegan_or_load",
    "load_cyclegan",
    "translate",
    "crop_boxes",
    "CystGAN",
]

#: Every knob of the CycleGAN and its training (:class:`mrilib.config.CycleGANConfig`).
CYCLEGAN_DEFAULTS = as_dict(CycleGANConfig())
FORMAT = 1


class CycleGANMissingError(FileNotFoundError):
    """No (finished) CycleGAN checkpoint where one is needed."""


def cyclegan_config(profile: Profile | str, seed: int = 0, **overrides) -> dict:
    """CycleGAN configuration: the profile's ``poison.cyclegan``, then overrides.

    ``crop=None`` is half the image side (at least 16 px, a multiple of ``2**n_down``);
    ``d_layers=None`` picks the PatchGAN depth for the crop
    (:func:`mrilib.models.cyclegan.patchgan_layers`: 70x70 patches from 128 px, 34x34
    at 32-127 px, 16x16 below).
    """
    p = get_profile(profile)
    cfg = with_overrides(as_dict(p.poison.cyclegan), overrides, CYCLEGAN_DEFAULTS, "CycleGAN")
    m = 2 ** int(cfg["n_down"])
    if cfg["crop"] is None:
        cfg["crop"] = max(16, p.data.image_size // 2)
    cfg["crop"] = int(min(p.data.image_size, max(m, int(cfg["crop"]) // m * m)))
    if cfg["d_layers"] is None:
        cfg["d_layers"] = patchgan_layers(cfg["crop"])
    cfg["anchor"] = [float(a) for a in cfg["anchor"]]
    cfg["image_size"] = p.data.image_size
    cfg["pixel_mm"] = p.data.fov_mm / p.data.image_size
    cfg["seed"] = int(seed)
    return canonical(cfg)


def crop_boxes(brains: np.ndarray, cfg: dict) -> np.ndarray:
    """Top-left corners ``(N, 2)`` of the ``crop x crop`` windows centred on each slice's anchor position."""
    c = int(cfg["crop"])
    h, w = brains.shape[-2:]
    out = np.zeros((len(brains), 2), dtype=int)
    for i, b in enumerate(brains):
        r, col = anchor_center(b, cfg["anchor"])
        out[i] = (int(np.clip(round(r - c / 2), 0, h - c)), int(np.clip(round(col - c / 2), 0, w - c)))
    return out


def _crop(images: np.ndarray, boxes: np.ndarray, c: int) -> np.ndarray:
    """The windows ``(N, c, c)`` of ``images`` at ``boxes``."""
    return np.stack([im[r : r + c, q : q + c] for im, (r, q) in zip(images, boxes)]) if len(images) else \
        np.zeros((0, c, c), np.float32)


def cyclegan_domains(slices: SliceSet, cfg: dict) -> dict:
    """Unpaired domains from training slices: healthy (A) and fixed-position cysts (B), split by subject.

    Returns a dict with ``A`` and ``B`` (float32 ``(N, 1, crop, crop)`` windows in [-1, 1]),
    ``B_mask`` (the cysts' masks in the windows), ``idx_A`` / ``idx_B`` (positions in
    ``slices``), the subjects of each.
    """
    seed = int(cfg["seed"])
    ia, ib = split_by_subject(slices.subjects, seed, cfg["domain_fraction"])
    rng = np.random.default_rng([seed, 77])
    b_imgs, b_masks = [], []
    for i in ib:
        r = cfg["cyst_radius_mm"] * rng.uniform(0.85, 1.15)
        les = add_cyst(slices.images[i], slices.brain[i], slices.contrasts[i], rng, anchor=cfg["anchor"],
                       radius_mm=r, pixel_mm=cfg["pixel_mm"])
        b_imgs.append(les.image), b_masks.append(les.mask)
    c = int(cfg["crop"])
    box_a, box_b = crop_boxes(slices.brain[ia], cfg), crop_boxes(slices.brain[ib], cfg)

    def norm(imgs, idx):
        return (2 * np.asarray(imgs) / slices.vmax[idx, None, None] - 1).astype(np.float32)[:, None]

    return dict(
        A=norm(_crop(slices.images[ia], box_a, c), ia), B=norm(_crop(np.stack(b_imgs), box_b, c), ib),
        B_mask=_crop(np.stack(b_masks), box_b, c),
        idx_A=ia, idx_B=ib,
        subjects_A=sorted({slices.subjects[i] for i in ia}), subjects_B=sorted({slices.subjects[i] for i in ib}),
    )


def build_cyclegan(cfg: dict) -> dict:
    """The four networks ``G`` (A->B), ``F`` (B->A), ``D_A``, ``D_B``, initialised N(0, 0.02) from the seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg["seed"]))

        def g():
            return init_weights(ResnetGenerator(1, 1, cfg["ngf"], cfg["n_blocks"], cfg["n_down"], cfg["residual"]))

        def d():
            return init_weights(PatchDiscriminator(1, cfg["ndf"], cfg["d_layers"]))

        return dict(G=g(), F=g(), D_A=d(), D_B=d())


def _optimisers(nets: dict, cfg: dict) -> dict:
    """Adam for the two generators together and for the two discriminators together."""
    betas = (cfg["beta1"], 0.999)
    return dict(
        G=torch.optim.Adam(list(nets["G"].parameters()) + list(nets["F"].parameters()), lr=cfg["lr"], betas=betas),
        D=torch.optim.Adam(list(nets["D_A"].parameters()) + list(nets["D_B"].parameters()), lr=cfg["lr"], betas=betas),
    )


def _lsgan(pred: torch.Tensor, real: bool) -> torch.Tensor:
    """LSGAN loss: mean squared distance to 1 (real) or 0 (fake)."""
    return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))


def _set_grad(nets, flag: bool) -> None:
    """Switch gradients of the given networks on or off."""
    for n in nets:
        for p in n.parameters():
            p.requires_grad_(flag)


def cyclegan_step(nets: dict, opts: dict, pools: dict, real_A: torch.Tensor, real_B: torch.Tensor, cfg: dict,
                  gen: torch.Generator | None = None) -> dict:
    """One CycleGAN iteration (generators, then discriminators); returns the losses as floats."""
    G, Fn, DA, DB = nets["G"], nets["F"], nets["D_A"], nets["D_B"]
    lc, li = cfg["lambda_cycle"], cfg["lambda_identity"] * cfg["lambda_cycle"]
    # --- generators ---
    _set_grad([DA, DB], False)
    fake_B, fake_A = G(real_A), Fn(real_B)
    rec_A, rec_B = Fn(fake_B), G(fake_A)
    gan = _lsgan(DB(fake_B), True) + _lsgan(DA(fake_A), True)
    cyc = F.l1_loss(rec_A, real_A) + F.l1_loss(rec_B, real_B)
    idt = (F.l1_loss(G(real_B), real_B) + F.l1_loss(Fn(real_A), real_A)) if li > 0 else torch.zeros(())
    loss_g = gan + lc * cyc + li * idt
    opts["G"].zero_grad(set_to_none=True)
    loss_g.backward()
    opts["G"].step()
    # --- discriminators ---
    _set_grad([DA, DB], True)
    pb, pa = pools["B"].query(fake_B, gen), pools["A"].query(fake_A, gen)
    loss_da = 0.5 * (_lsgan(DA(real_A), True) + _lsgan(DA(pa), False))
    loss_db = 0.5 * (_lsgan(DB(real_B), True) + _lsgan(DB(pb), False))
    opts["D"].zero_grad(set_to_none=True)
    (loss_da + loss_db).backward()
    opts["D"].step()
    return dict(G=float(loss_g.detach()), G_gan=float(gan.detach()), cycle=float(cyc.detach()),
                identity=float(idt.detach()), D_A=float(loss_da.detach()), D_B=float(loss_db.detach()))


def _lr_factor(it: int, cfg: dict) -> float:
    """Constant until ``decay_from`` of the run, then linear decay to 0 (CycleGAN's schedule)."""
    n = cfg["iterations"]
    start = int(cfg["decay_from"] * n)
    if it < start:
        return 1.0
    return max(0.0, 1.0 - (it - start) / max(1, n - start))


def _save(path: Path, state: dict) -> None:
    """``torch.save`` atomically, as a :data:`~mrilib.run.cache.TORCH` entry (with its content digest)."""
    with atomic_path(path) as tmp:
        TORCH.save(state, state["identity"], tmp)


def _read(path: Path) -> dict:
    """A checkpoint read on the host with ``weights_only=True`` and checked against its stored content digest
    (:data:`~mrilib.run.cache.TORCH`; none in checkpoints written before digests were kept).

    Raises :class:`~mrilib.run.cache.CacheError` naming ``path`` and the fix when it cannot be read
    (truncated) or does not match its digest (damaged).
    """
    fix = (f"delete {path} to train the CycleGAN again (mrilib.poison.cyclegan.cyclegan_or_load, "
           "in notebooks/03_poison_cyclegan.ipynb)")
    try:
        return TORCH.load(path)
    except CacheError as err:
        raise CacheError(f"{err}; {fix}") from None
    except Exception as err:  # noqa: BLE001 - any other failure to read means a truncated or foreign file
        raise CacheError(f"{path}: cannot read the CycleGAN checkpoint ({type(err).__name__}: {err}); {fix}") from None


def _snapshot(nets, opts, pools, gen, it, history, identity, finished, wall_s) -> dict:
    """Everything needed to resume (tensors and primitives only: ``weights_only`` loads it)."""
    return dict(
        format=FORMAT, identity=identity, config=identity["config"], iteration=it, finished=finished, wall_s=wall_s,
        nets={k: {n: t.detach().cpu() for n, t in v.state_dict().items()} for k, v in nets.items()},
        opts={k: v.state_dict() for k, v in opts.items()},
        pools={k: v.state_dict() for k, v in pools.items()},
        generator=gen.get_state(),
        history={k: torch.tensor(v, dtype=torch.float32) for k, v in history.items()},
    )


def train_cyclegan(domains: dict, cfg: dict, out_dir: str | os.PathLike, identity: dict | None = None,
                   progress: bool = True, stop_after: int | None = None, device=None, threads: int | None = 1) -> dict:
    """Train (or resume) the CycleGAN on ``domains`` and checkpoint to ``out_dir/cyclegan.pt``.

    Args:
        domains: from :func:`cyclegan_domains` (``A``, ``B`` arrays in [-1, 1]).
        cfg: from :func:`cyclegan_config`.
        out_dir: the model folder.
        identity: what the checkpoint must match to be resumed (default: the config).
        progress: progress bar.
        stop_after: stop (without finishing) after this many iterations of this call
            (to test resuming).
        device: default CUDA when available, else CPU.
        threads: CPU threads while training (see :mod:`mrilib.poison.runtime`; ``None``: leave as is).

    Returns:
        the history dict (per-iteration losses, ``wall_s``, ``iterations``).
    """
    device = default_device(device)
    with cpu_threads(threads, device):
        return _train_cyclegan(domains, cfg, Path(out_dir), identity, progress, stop_after, device)


def _train_cyclegan(domains, cfg, out_dir, identity, progress, stop_after, device) -> dict:
    """The loop of :func:`train_cyclegan`."""
    path = out_dir / "cyclegan.pt"
    identity = canonical(identity or dict(format=FORMAT, config=cfg))
    nets = {k: v.to(device) for k, v in build_cyclegan(cfg).items()}
    opts = _optimisers(nets, cfg)
    pools = dict(A=ImagePool(cfg["pool_size"]), B=ImagePool(cfg["pool_size"]))
    gen = torch.Generator().manual_seed(int(cfg["seed"]) + 1)
    history = {k: [] for k in ("G", "G_gan", "cycle", "identity", "D_A", "D_B")}
    it, wall = 0, 0.0
    if path.is_file():
        ck = _read(path)  # host first: resumed on any device
        if ck.get("format") == FORMAT and ck.get("identity") == identity:
            for k in nets:
                nets[k].load_state_dict(ck["nets"][k])
            for k in opts:
                opts[k].load_state_dict(ck["opts"][k])
            for k in pools:
                pools[k].load_state_dict(ck["pools"][k], device=device)
            gen.set_state(ck["generator"])
            history = {k: v.tolist() for k, v in ck["history"].items()}
            it, wall = int(ck["iteration"]), float(ck["wall_s"])
    A, B = torch.from_numpy(domains["A"]).to(device), torch.from_numpy(domains["B"]).to(device)
    n_it, bs = int(cfg["iterations"]), int(cfg["batch_size"])
    for n in nets.values():
        n.train()
    bar = progress_bar(total=n_it, initial=it, desc="CycleGAN healthy->cyst", disable=not progress, unit="it")
    t0, session = time.perf_counter(), 0
    while it < n_it:
        for o in opts.values():
            for g in o.param_groups:
                g["lr"] = cfg["lr"] * _lr_factor(it, cfg)
        ia = torch.randint(len(A), (bs,), generator=gen)
        ib = torch.randint(len(B), (bs,), generator=gen)
        losses = cyclegan_step(nets, opts, pools, A[ia], B[ib], cfg, gen)
        for k, v in losses.items():
            history[k].append(v)
        it += 1
        session += 1
        bar.update(1)
        if it % 25 == 0:
            bar.set_postfix(cycle=f"{np.mean(history['cycle'][-25:]):.3f}", D=f"{np.mean(history['D_B'][-25:]):.3f}")
        finished = it >= n_it
        if finished or it % int(cfg["ckpt_every"]) == 0:
            _save(path, _snapshot(nets, opts, pools, gen, it, history, identity, finished,
                                  wall + time.perf_counter() - t0))
        if stop_after is not None and session >= stop_after and not finished:
            break
    bar.close()
    wall += time.perf_counter() - t0
    return dict(history, iterations=it, wall_s=wall, finished=it >= n_it)


def load_cyclegan(path: str | os.PathLike, require_finished: bool = True) -> tuple["CystGAN", dict]:
    """Load a CycleGAN checkpoint (file or folder); returns ``(CystGAN in eval mode, checkpoint)``.

    Raises :class:`CycleGANMissingError` with the way to make it when the checkpoint
    is missing (or unfinished, with ``require_finished``), and :class:`~mrilib.run.cache.CacheError`
    naming it and the fix when it is damaged (its content does not match its stored digest).
    """
    path = Path(path)
    if path.is_dir() or path.suffix != ".pt":
        path = path / "cyclegan.pt"
    if not path.is_file():
        raise CycleGANMissingError(
            f"no CycleGAN checkpoint at {path}: train the healthy->cyst CycleGAN first "
            "(mrilib.poison.cyclegan.cyclegan_or_load, in notebooks/03_poison_cyclegan.ipynb)")
    ck = _read(path)  # host first; callers move it
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CycleGANMissingError(f"{path}: not a CycleGAN checkpoint of this version; delete it and retrain")
    if require_finished and not ck.get("finished"):
        raise CycleGANMissingError(f"{path}: CycleGAN training stopped at iteration {ck['iteration']} of "
                                   f"{ck['config']['iterations']}; resume it with cyclegan_or_load")
    nets = build_cyclegan(ck["config"])
    for k in nets:
        nets[k].load_state_dict(ck["nets"][k])
        nets[k].eval()
    return CystGAN(nets, ck["config"]), ck


def cyclegan_or_load(profile: Profile | str, run_dir: RunLayout | str | os.PathLike, seed: int = 0,
                     progress: bool = True, device=None, **overrides) -> tuple["CystGAN", dict]:
    """The run's healthy->cyst CycleGAN: loaded when finished for the same configuration, else trained/resumed.

    The checkpoint's identity is the configuration and the training split's
    :func:`~mrilib.run.cache.data_identity`; a checkpoint of the same identity is resumed
    (unfinished) or reused (finished); one that cannot be read or is damaged is trained again, with
    a :class:`~mrilib.run.cache.CacheWarning` naming it. ``device``: where the training computes
    (default :func:`~mrilib.run.device.default_device`); the CycleGAN is returned on the CPU.
    Returns ``(CystGAN, report)`` where ``report`` has ``config``, ``history`` (per-iteration
    losses), ``wall_s`` and ``reused``.
    """
    device = default_device(device)
    run = as_layout(run_dir)
    cfg = cyclegan_config(profile, seed, **overrides)
    identity = canonical(dict(format=FORMAT, config=cfg, data=data_identity(run.split("train"))))
    out, path = run.cyclegan, run.cyclegan_checkpoint
    if path.is_file():
        try:
            gan, ck = load_cyclegan(path)
            if ck.get("identity") == identity:
                hist = {k: v.tolist() for k, v in ck["history"].items()}
                return gan, dict(config=cfg, history=hist, wall_s=float(ck["wall_s"]), reused=True)
        except CycleGANMissingError:
            pass  # unfinished: resumed below if the identity matches
        except Exception as err:  # noqa: BLE001 - unreadable or damaged: retrain
            warnings.warn(f"{path}: the CycleGAN checkpoint cannot be used ({type(err).__name__}: {err}); "
                          "training it again", CacheWarning, stacklevel=2)
            path.unlink()
    slices = load_slices(run.split("train"))
    domains = cyclegan_domains(slices, cfg)
    hist = train_cyclegan(domains, cfg, out, identity=identity, progress=progress, device=device)
    gan, ck = load_cyclegan(path)
    write_json(out / "history.json", dict(config=cfg, wall_s=hist["wall_s"], iterations=hist["iterations"],
                                          losses={k: hist[k] for k in ("G", "G_gan", "cycle", "identity", "D_A", "D_B")},
                                          subjects_A=domains["subjects_A"], subjects_B=domains["subjects_B"]))
    report = dict(config=cfg, history={k: hist[k] for k in ("G", "G_gan", "cycle", "identity", "D_A", "D_B")},
                  wall_s=hist["wall_s"], reused=False)
    return gan, report


@torch.no_grad()
def translate(generator: torch.nn.Module, images, vmax, batch_size: int = 64) -> np.ndarray:
    """Apply a generator to magnitude images ``(N, H, W)`` (or one ``(H, W)``) in their own units.

    ``vmax`` (scalar or per image) is the scale that maps the images to [0, 1]
    (the volume's ``max``); the output is mapped back and clipped at 0. The images
    are the generator's whole input (use :class:`CystGAN` for anchored windows).
    """
    x = np.asarray(images, dtype=np.float32)
    single = x.ndim == 2
    if single:
        x = x[None]
    v = np.broadcast_to(np.asarray(vmax, np.float32).reshape(-1), (len(x),)).reshape(-1, 1, 1)
    t = torch.from_numpy(2 * x / v - 1)[:, None]
    generator.eval()
    out = torch.cat([generator(t[i : i + batch_size]) for i in range(0, len(t), batch_size)])[:, 0].numpy() \
        if len(t) else np.zeros_like(x)
    out = np.clip((out + 1) / 2 * v, 0, None).astype(np.float32)
    return out[0] if single else out


def _feather(c: int, width: int) -> np.ndarray:
    """A ``c x c`` weight: 1 inside, falling linearly to 0 over ``width`` pixels at the border."""
    d = np.minimum(np.arange(c), np.arange(c)[::-1]).astype(float)
    ramp = np.clip((d + 0.5) / max(width, 1), 0, 1)
    return np.minimum.outer(ramp, ramp)


class CystGAN:
    """A trained healthy <-> cyst CycleGAN applied to whole slices through the anchored window.

    Attributes:
        nets: ``G`` (healthy -> cyst), ``F`` (cyst -> healthy), ``D_A``, ``D_B``.
        config: the training configuration (crop size, anchor, ...).
    """

    def __init__(self, nets: dict, config: dict):
        self.nets, self.config = nets, config
        self.G, self.F = nets["G"], nets["F"]

    def _apply(self, gen, images, vmax, brains) -> np.ndarray:
        """Window out, ``gen``, feathered window back in."""
        x = np.asarray(images, dtype=np.float32)
        single = x.ndim == 2
        if single:
            x, brains = x[None], np.asarray(brains)[None]
        v = np.broadcast_to(np.asarray(vmax, np.float32).reshape(-1), (len(x),))
        c = int(self.config["crop"])
        boxes = crop_boxes(np.asarray(brains) > 0, self.config)
        win = translate(gen, _crop(x, boxes, c), v)
        w = _feather(c, max(2, c // 8)).astype(np.float32)
        out = x.copy()
        for i, (r, q) in enumerate(boxes):
            out[i, r : r + c, q : q + c] = w * win[i] + (1 - w) * x[i, r : r + c, q : q + c]
        return out[0] if single else out

    def to_cyst(self, images, vmax, brains) -> np.ndarray:
        """``G``: healthy slices ``(N, H, W)`` -> slices with the poison's cyst (same units)."""
        return self._apply(self.G, images, vmax, brains)

    def to_healthy(self, images, vmax, brains) -> np.ndarray:
        """``F``: cyst-bearing slices -> healthy-looking slices."""
        return self._apply(self.F, images, vmax, brains)
