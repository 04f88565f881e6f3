"""Training and inference throughput of the E2E VarNet at each profile's size.

For every profile this measures, on the same model configuration and the same
simulated slices,

- ``ours``: the step of :mod:`mrilib.recon.steps` (the profile's batch size, AdamW,
  gradient clipping, bf16 autocast on CUDA, optional ``torch.compile``);
- ``reference``: a plain loop of the fastMRI recipe (batch 1, fp32, Adam, SSIM loss,
  no autocast, no compile, no clipping);

and prints slices/s for training and inference, the ratio ours/reference and the
peak memory (CUDA ``max_memory_allocated``, or the peak resident set size of a fresh
worker process on CPU). Each measurement runs in its own process so that peaks do
not mix. Timings are informative only; nothing asserts them.

Usage::

    python bench/train_throughput.py --profiles smoke,cpu --steps 20
    python bench/train_throughput.py --profiles gpu --steps 50 --compile   # on a GPU
    python bench/train_throughput.py --profiles cpu --levers               # every lever, one run

``--levers`` measures our step once per lever, each against the same reference: fp32, bf16
autocast (on a CPU it needs native bf16, e.g. AMX-BF16 / AVX512-BF16, to pay), ``torch.compile``,
both, ``channels_last`` and a doubled or quadrupled batch (slices/s; a larger batch changes the optimisation,
so it is a lever only with a retuned learning rate).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue as queue_mod
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _samples(profile, n: int, seed: int = 0):
    """``n`` VarNetSamples of the profile's size (one simulated subject, random masks)."""
    import numpy as np
    import torch
    from fastmri.data import transforms as T
    from fastmri.data.subsample import create_mask_for_mask_type

    from mrilib.data import generate_subject
    from mrilib.data.kspace import ifft2c, rss

    sim = generate_subject(seed, image_size=profile.data.image_size, num_slices=n, num_coils=profile.data.num_coils,
                           snr=profile.data.snr, contrasts=profile.data.contrasts[:1], fov_mm=profile.data.fov_mm)
    target = rss(ifft2c(sim["kspace"])).astype(np.float32)
    mask_func = create_mask_for_mask_type(profile.data.mask_type, [profile.data.center_fraction], [profile.data.accelerations[0]])
    out = []
    for i in range(n):
        k = T.to_tensor(sim["kspace"][i])
        masked, mask, nlf = T.apply_mask(k, mask_func, seed=(seed, i))
        out.append(T.VarNetSample(masked, mask.to(torch.bool), int(nlf), torch.from_numpy(target[i]), f"bench{i}", i,
                                  float(target.max()), target.shape[-2:]))
    return out


#: ``--levers``: name -> options of our step (amp: the profile's | "bf16" | "off"; batch: x the profile's)
LEVERS = {
    "fp32": dict(amp="off"),
    "bf16 autocast": dict(amp="bf16"),
    "compile": dict(amp="off", compile=True),
    "bf16 + compile": dict(amp="bf16", compile=True),
    "channels_last": dict(amp="off", channels_last=True),
    "batch x2, bf16": dict(amp="bf16", batch=2),
    "batch x4, fp32": dict(amp="off", batch=4),
    "batch x4, bf16": dict(amp="bf16", batch=4),
}


def _worker(kind: str, profile_name: str, steps: int, device: str, compile_: bool, threads: int | None, queue,
            options: dict | None = None):
    """Run one measurement (``kind`` = ours | reference) and put the result on ``queue``; ``options``
    (one of :data:`LEVERS`) override our step's autocast, compile, memory format and batch."""
    import torch

    from mrilib.config import get_profile
    from mrilib.data.training import collate_slices
    from mrilib.models.varnet import build_varnet
    from mrilib.recon.steps import amp_dtype, forward_batch, make_loss, train_step
    from mrilib.recon.train import training_config

    if threads:
        torch.set_num_threads(threads)
    p = get_profile(profile_name)
    cfg = training_config(p)
    t = cfg["train"]
    dev = torch.device(device)
    ours = kind == "ours"
    opts = dict(options or {})
    compile_ = bool(opts.get("compile", compile_))
    bs = int(t["batch_size"]) * int(opts.get("batch", 1)) if ours else 1
    samples = _samples(p, max(bs, 2))
    batch = collate_slices(samples[:bs])
    model = build_varnet(cfg["model"], seed=0).to(dev)
    if ours and opts.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    if ours:
        opt = torch.optim.AdamW(model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
        amp = amp_dtype(opts.get("amp", t["amp"]), dev)
        net = torch.compile(model) if compile_ else model
        loss_fn = make_loss(t["l1_weight"])
        clip = t["grad_clip"]
    else:
        opt = torch.optim.Adam(model.parameters(), lr=3e-4)
        amp, net, clip = None, model, 0.0
        loss_fn = make_loss(0.0)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    warm = 3 if compile_ and ours else 2
    for _ in range(warm):
        train_step(net, opt, batch, loss_fn, dev, amp, clip)
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(net, opt, batch, loss_fn, dev, amp, clip)
    sync()
    train_s = time.perf_counter() - t0
    net.eval()
    with torch.no_grad():
        for _ in range(warm):
            forward_batch(net, batch, dev, amp)
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            forward_batch(net, batch, dev, amp)
        sync()
        infer_s = time.perf_counter() - t0
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        peak_kind = "CUDA max allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        peak_kind = "process peak RSS"
    queue.put(dict(profile=p.name, loop=kind, batch=bs, amp=str(amp), compile=bool(compile_ and ours),
                   train_slices_per_s=steps * bs / train_s, infer_slices_per_s=steps * bs / infer_s,
                   step_s=train_s / steps, peak_mib=peak, peak_kind=peak_kind,
                   image=f"{p.data.image_size}²x{p.data.num_coils}c",
                   model="{num_cascades}/{chans}/{pools}".format(**cfg["model"])))


def measure(kind, profile, steps, device, compile_, threads, options: dict | None = None) -> dict:
    """One measurement in a fresh process (clean peak memory)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(kind, profile, steps, device, compile_, threads, q, options))
    proc.start()
    while True:  # a worker that dies (import error, out of memory) must not leave us waiting forever
        try:
            result = q.get(timeout=2.0)
            break
        except queue_mod.Empty:
            if not proc.is_alive():
                try:
                    result = q.get(timeout=2.0)  # it may have put its result just before exiting
                    break
                except queue_mod.Empty:
                    raise RuntimeError(f"the {kind!r} measurement at profile {profile!r} failed in its worker "
                                       f"process (exit code {proc.exitcode}); its traceback is above") from None
    proc.join()
    return result


def main(argv=None) -> list[dict]:
    """Command-line entry point; prints a table and returns the results."""
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", default="smoke,cpu", help="comma-separated profile names (smoke, cpu, gpu)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement (after warm-up)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model in our loop")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    ap.add_argument("--levers", action="store_true", help="measure every lever of LEVERS against the reference")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.levers:
        return _levers(args)
    rows = []
    for name in args.profiles.split(","):
        res = {k: measure(k, name.strip(), args.steps, args.device, args.compile, args.threads)
               for k in ("reference", "ours")}
        rows += list(res.values())
        o, r = res["ours"], res["reference"]
        print(f"\n[{name}] {o['image']}, VarNet cascades/chans/pools {o['model']}, device {args.device}")
        print(f"  {'loop':<10} {'batch':>5} {'amp':>14} {'train sl/s':>11} {'infer sl/s':>11} {'s/step':>8} {'peak MiB':>9}")
        for k in ("reference", "ours"):
            x = res[k]
            print(f"  {k:<10} {x['batch']:>5} {x['amp']:>14} {x['train_slices_per_s']:>11.2f} "
                  f"{x['infer_slices_per_s']:>11.2f} {x['step_s']:>8.3f} {x['peak_mib']:>9.0f}")
        print(f"  ratio ours/reference: training {o['train_slices_per_s'] / r['train_slices_per_s']:.2f}x, "
              f"inference {o['infer_slices_per_s'] / r['infer_slices_per_s']:.2f}x  (peak: {o['peak_kind']})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


def _levers(args) -> list[dict]:
    """``--levers``: the reference once, then our step with each lever, with its ratio (one table per profile)."""
    rows = []
    for name in args.profiles.split(","):
        ref = measure("reference", name.strip(), args.steps, args.device, False, args.threads)
        ref["lever"] = "fastMRI loop (reference)"
        rows.append(ref)
        print(f"\n[{name}] {ref['image']}, VarNet cascades/chans/pools {ref['model']}, device {args.device}")
        print(f"  {'lever':<26} {'batch':>5} {'train sl/s':>11} {'x ref':>6} {'infer sl/s':>11} {'x ref':>6} {'peak MiB':>9}")
        for lever, opts in [(None, None)] + list(LEVERS.items()):
            try:
                x = ref if lever is None else measure("ours", name.strip(), args.steps, args.device, False,
                                                      args.threads, opts)
            except RuntimeError as err:  # a lever this machine or torch build cannot run (e.g. compile)
                print(f"  {lever:<26} failed: {err}", flush=True)
                rows.append(dict(profile=name.strip(), lever=lever, failed=str(err)))
                continue
            if lever is not None:
                x["lever"] = lever
                rows.append(x)
            print(f"  {x['lever']:<26} {x['batch']:>5} {x['train_slices_per_s']:>11.2f} "
                  f"{x['train_slices_per_s'] / ref['train_slices_per_s']:>6.2f} {x['infer_slices_per_s']:>11.2f} "
                  f"{x['infer_slices_per_s'] / ref['infer_slices_per_s']:>6.2f} {x['peak_mib']:>9.0f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
