"""Command line: train a profile's VarNet, with DDP under torchrun.

``python -m mrilib.recon --profile cpu`` trains the ``clean`` model of ``runs/cpu``;
``torchrun --nproc_per_node 4 -m mrilib.recon --profile gpu`` trains it on four GPUs.
The dataset is prepared (by rank 0) when missing.
"""

from __future__ import annotations

import argparse

from mrilib.config import get_profile
from mrilib.data.prepare import prepare_dataset
from mrilib.recon.distributed import DistContext
from mrilib.recon.train import RUNTIME_DEFAULTS, train, training_config
from mrilib.run.layout import RunLayout, as_layout


def main(argv=None) -> None:
    """Train a profile's model (``--name``, default ``clean``) on the run's training and validation splits.

    Example: ``torchrun --nproc_per_node 4 -m mrilib.recon --profile gpu --run-dir runs/gpu``.
    """
    ap = argparse.ArgumentParser(prog="python -m mrilib.recon",
                                 description="Train an E2E VarNet of the book (DDP under torchrun).")
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
    layout = as_layout(args.run_dir) if args.run_dir else RunLayout.default(p)
    ctx = DistContext.from_env()
    if ctx.main:
        prepare_dataset(p, layout, seed=args.seed, progress=True)
    ctx.barrier()
    over = {} if args.epochs is None else {"epochs": args.epochs}
    hist = train(training_config(p, **over), layout.split("train"), layout.split("val"), layout.model(args.name),
                 device=ctx.device, compile=args.compile, ckpt_every=args.ckpt_every, num_workers=args.num_workers)
    if ctx.main:
        last = hist["epochs"][-1] if hist["epochs"] else {}
        print(f"done: {hist['steps']} steps, {hist['wall_s']:.0f} s, val loss {last.get('val_loss')}")
    ctx.close()


if __name__ == "__main__":
    main()
