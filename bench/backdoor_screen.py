"""Screen one backdoor design at a profile's size: build its poisoned set, train one VarNet, measure it.

Chapter 3 trains the book's poisoned model with the book's trigger. This script answers "would another
design be learnt?" before a design enters the book: it builds the poisoned set of a run for the recipe
(label-only ``cyclegan-cyst`` or k-space-consistent ``consistent-cyst``) and trigger chosen here (its own
variant folder, so the book's sets are untouched), trains the poisoned VarNet with the profile's
configuration plus any override, and prints, on the run's test split at 4x, the effect and success rate
scored by the run's evaluation judge, the clean-test SSIM, what the label-vs-k-space audit
(:mod:`mrilib.audit`) flags of the set, and what the spike sanitiser (:mod:`mrilib.defences.spikes`) leaves of the effect. Results go to a JSON file;
nothing is asserted. It reuses the run's data, judge and CycleGAN (run chapters 1-3 of the book first).

Usage::

    python bench/backdoor_screen.py --trigger spread --amp bf16 --json runs/screens/spread-s0.json
    python bench/backdoor_screen.py --trigger spike --epochs 30 --batch 8 --lr 4e-3 --seed 1
    python bench/backdoor_screen.py --recipe consistent-cyst --trigger spike --seed 2
    python bench/backdoor_screen.py --summary runs/screens/results.jsonl   # mean [95 % CI] across seeds
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: --trigger choices: name -> the trigger's module attribute
TRIGGERS = {"spike": "DEFAULT_TRIGGER", "spread": "SPREAD_TRIGGER"}


def screen(profile: str, seed: int, trigger_name: str, overrides: dict, out_root: Path, fraction=None,
           device=None, recipe: str = "cyclegan-cyst") -> dict:
    """Build, train and measure one design (see the module docstring); returns the summary."""
    from mrilib.audit import audit_folder
    from mrilib.config import ATTACKER_SEED, get_profile
    from mrilib.defences.spikes import Sanitised
    from mrilib.poison import triggers
    from mrilib.poison.build import build_poisoned_dataset
    from mrilib.poison.classifier import judge_or_load
    from mrilib.poison.cyclegan import cyclegan_or_load
    from mrilib.poison.recipes import cyclegan_cyst
    from mrilib.recon.train import train_or_load, training_config
    from mrilib.run.device import default_device
    from mrilib.run.layout import as_layout, seed_run_dir

    p = get_profile(profile)
    device = default_device(device)
    run = as_layout(seed_run_dir(p, seed))
    if not run.split("train").is_dir():
        raise SystemExit(f"{run.split('train')} is missing: run the book's chapters 1-3 for profile {p.name} first")
    trigger = getattr(triggers, TRIGGERS[trigger_name])
    prefix = [] if recipe == "cyclegan-cyst" else [recipe]
    tag = "-".join(prefix + [trigger_name] + [f"{k}{v}" for k, v in sorted(overrides.items())]
                   + ([f"p{fraction}"] if fraction else []))
    variant = "-".join(["screen"] + prefix + [trigger_name]) + (f"-p{fraction}" if fraction else "")
    gan, _ = cyclegan_or_load(p, run, seed=ATTACKER_SEED, progress=False, device=device)
    judge, _ = judge_or_load(p, run, progress=False, device=device)
    manifest = build_poisoned_dataset(run, recipe, profile=p, seed=seed, trigger=trigger, variant=variant,
                                      fraction=fraction, progress=False, device=device)
    cfg = training_config(p, seed=seed, **overrides)
    t0 = time.perf_counter()
    model, history = train_or_load(cfg, {"train": run.poisoned_split(variant), "val": run.split("val")},
                                   out_root / f"{p.name}-seed{seed}-{tag}", progress=True, device=device)
    train_s = time.perf_counter() - t0
    res = cyclegan_cyst.effects({"poisoned": model, "sanitised": Sanitised(model)}, run, manifest, judge, gan,
                                accelerations=(4,), save=False, device=device)
    m, s = res["poisoned"][4].metrics, res["sanitised"][4].metrics
    audit = audit_folder(run.poisoned_split(variant), leave=False)
    poisoned = {(r["file"], r["slice"]) for r in manifest["poisoned"]}
    flagged = {(r.file, r.slice) for r in audit.flagged.itertuples()}
    summary = dict(profile=p.name, seed=seed, recipe=recipe, trigger=trigger.as_dict(), overrides=overrides,
                   fraction=fraction, audit_poisoned_flagged=len(flagged & poisoned) / max(1, len(poisoned)),
                   audit_clean_flagged=len(flagged - poisoned),
                   train_wall_s=train_s, epochs=cfg["train"]["epochs"],
                   effect=m["effect"]["mean"], success=m["success_rate"],
                   found_clean=m["found_rate_clean"], clean_ssim=m["clean_test"]["ssim"]["mean"],
                   sanitised_effect=s["effect"]["mean"], sanitised_success=s["success_rate"],
                   sanitised_clean_ssim=s["clean_test"]["ssim"]["mean"])
    return summary


#: the summary's columns: a screen's field -> its name in the table
SUMMARY_FIELDS = {"effect": "effect", "success": "success", "clean_ssim": "clean-test SSIM",
                  "sanitised_effect": "effect, sanitised", "audit_poisoned_flagged": "audit: poisoned flagged",
                  "audit_clean_flagged": "audit: clean flagged"}


def summary_table(path):
    """A pandas DataFrame of the screens of a JSON-lines file pooled by design (recipe, trigger, overrides,
    fraction): per field of :data:`SUMMARY_FIELDS`, ``mean [low, high]`` across seeds (Student t, 95 %),
    and the seeds."""
    import pandas as pd

    from mrilib.evaluate.uncertainty import across_seeds

    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r.get("recipe", "cyclegan-cyst"), r["trigger"].get("kind", "rf-spike"),
               json.dumps(r.get("overrides", {}), sort_keys=True), r.get("fraction"))
        groups.setdefault(key, []).append(r)
    out = []
    for (recipe, trigger, overrides, fraction), rs in groups.items():
        row = dict(recipe=recipe, trigger=trigger, overrides=overrides, fraction=fraction,
                   seeds=" ".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"])))
        for field, name in SUMMARY_FIELDS.items():
            iv = across_seeds([r.get(field, float("nan")) for r in rs])
            row[name] = (f"{iv.value:.3f} [{iv.low:.3f}, {iv.high:.3f}]" if iv.known
                         else f"{iv.value:.3f}" if iv.n else "–")
        out.append(row)
    return pd.DataFrame(out)


def main(argv=None) -> dict:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trigger", choices=sorted(TRIGGERS), default="spike")
    ap.add_argument("--recipe", choices=("cyclegan-cyst", "consistent-cyst"), default="cyclegan-cyst")
    ap.add_argument("--fraction", type=float, default=None, help="poison fraction (default: the profile's)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None, help="training batch size")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--amp", choices=("auto", "bf16", "off"), default=None)
    ap.add_argument("--out", default="runs/screens", help="where the screened models are trained")
    ap.add_argument("--json", default=None, help="append the summary to this JSON-lines file")
    ap.add_argument("--summary", default=None, metavar="JSONL", help="only print the pooled table of these screens")
    a = ap.parse_args(argv)
    if a.summary:
        table = summary_table(a.summary)
        print(table.to_markdown(index=False))
        return table
    overrides = {k: v for k, v in dict(epochs=a.epochs, batch_size=a.batch, lr=a.lr, amp=a.amp).items()
                 if v is not None}
    summary = screen(a.profile, a.seed, a.trigger, overrides, Path(a.out), a.fraction, recipe=a.recipe)
    print(json.dumps(summary, indent=1))
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(summary) + "\n")
    return summary


if __name__ == "__main__":
    main()
