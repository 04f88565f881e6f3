"""When is a backdoor learnt: an attack's effect against poison fraction, acceleration and the undersampling mask.

The attack x defence table (:mod:`mrilib.evaluate.attack_defence`) trains each attack once per seed with the run's
configuration. Whether VarNet learns a backdoor at all may depend on how much of the training set is poisoned, on
how much of k-space the input keeps, and on whether the attacker knows which columns are sampled. This module
measures that, for the attacks of ``Profile.unlearn.learning_attacks``, under the *conditions*:

- every poison fraction ``p`` of ``Profile.poison.fraction`` and ``Profile.unlearn.learning_fractions``, with the
  run's random training masks (a fresh mask per slice and epoch, as every model of the book);
- with ``Profile.unlearn.learning_fixed_mask``, the **attacker's best case**: one fixed mask
  (:func:`mrilib.data.loading.fixed_mask_type`, a scanner protocol) at the profile's first acceleration, for
  training and test alike (:func:`fixed_mask_profile`). A k-space-consistent poison then protects exactly the
  columns that mask samples, so no undersampled input carries any of the lesion and the trigger is the only cue.
  Its clean model is trained with the same mask (``models/clean-fixed-mask``).

Each condition's poisoned set and model are cached like every other (``poison/<variant>``,
``models/poisoned-<variant>``; the profile's own fraction with random masks *is* the table's attack, reused), and
the clean and poisoned models are scored on ``test`` at every acceleration of the profile (:func:`learning_scores`,
cached in ``metrics/learning_<variant>.json``). The backdoor is **learnt** under a condition when the poisoned -
clean effect gap's interval lies above 0 (subject bootstrap within a seed, Student t across seeds).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pandas as pd

from mrilib.config import DATA_SEED, Profile, get_profile
from mrilib.data.loading import fixed_mask_type
from mrilib.evaluate.attack_defence import TRIGGERS, attack_trigger, learnt_gap
from mrilib.evaluate.headline import slice_scores
from mrilib.evaluate.uncertainty import (
    ALL_SEEDS,
    HEADLINE_COLUMNS,
    Interval,
    headline_rows,
    interval_or_nan,
    pool_seeds,
    write_headline,
)
from mrilib.poison.build import build_poisoned_dataset, train_poisoned_model
from mrilib.poison.manifest import variant_name
from mrilib.poison.recipes import evaluation
from mrilib.recon.checkpoints import load_model
from mrilib.recon.train import train_or_load, training_config
from mrilib.run.cache import JSON, cached_step, data_identity, weights_digest
from mrilib.run.device import default_device
from mrilib.run.layout import RunLayout, as_layout

__all__ = ["RANDOM_MASKS", "FIXED_MASK", "FIXED_CLEAN", "CONDITION_COLUMNS", "Condition", "conditions", "fixed_mask_profile", "condition_profile",
           "condition_variant", "prepare_condition", "learning_scores", "learning_rows", "attack_learning",
           "learning_table", "learning_findings"]

#: The masks of a condition: a fresh random mask per slice and epoch (the book's), or one fixed mask.
RANDOM_MASKS, FIXED_MASK = "random", "fixed"
#: Where the clean model trained with the fixed mask lives (``models/<name>``).
FIXED_CLEAN = "clean-fixed-mask"
#: Condition columns of :func:`attack_learning`'s rows, before :data:`~mrilib.evaluate.uncertainty.HEADLINE_COLUMNS`.
CONDITION_COLUMNS = ("attack", "recipe", "trigger", "fraction", "masks", "acceleration")


@dataclass(frozen=True)
class Condition:
    """One attack trained under one condition: ``recipe`` with ``trigger`` at poison fraction ``fraction``, with
    :data:`RANDOM_MASKS` or the :data:`FIXED_MASK`."""

    recipe: str
    trigger: str
    fraction: float
    masks: str = RANDOM_MASKS


def conditions(profile: Profile | str) -> list[Condition]:
    """The conditions of ``profile`` (see the module docstring), attack by attack: its fractions in increasing order
    with random masks, then the fixed mask at the profile's fraction."""
    p = get_profile(profile)
    fractions = sorted({float(p.poison.fraction), *(float(f) for f in p.unlearn.learning_fractions)})
    out = []
    for recipe, trigger in p.unlearn.learning_attacks:
        out += [Condition(recipe, trigger, f) for f in fractions]
        if p.unlearn.learning_fixed_mask:
            out.append(Condition(recipe, trigger, float(p.poison.fraction), FIXED_MASK))
    return out


def fixed_mask_profile(profile: Profile | str) -> Profile:
    """``profile`` with one fixed mask (:func:`~mrilib.data.loading.fixed_mask_type` of its mask family, drawn with
    :data:`~mrilib.config.DATA_SEED`) at its first acceleration, for training, validation and test: the data's
    sampling changes and the trainings take it (their own sampling fields set to the data's)."""
    p = get_profile(profile)
    data = dataclasses.replace(p.data, accelerations=(int(p.data.accelerations[0]),),
                               mask_type=fixed_mask_type(p.data.mask_type, DATA_SEED))
    train = dataclasses.replace(p.train, accelerations=None, val_accelerations=None, center_fraction=None,
                                mask_type=None)
    return dataclasses.replace(p, data=data, train=train)


def condition_profile(profile: Profile | str, cond: Condition) -> Profile:
    """The profile a condition trains and is scored with (:func:`fixed_mask_profile` for the fixed mask)."""
    return fixed_mask_profile(profile) if cond.masks == FIXED_MASK else get_profile(profile)


def condition_variant(profile: Profile | str, cond: Condition) -> str:
    """The poisoned set's name of a condition: the attack's (``consistent-cyst``, ``cyclegan-cyst-spread``…), with
    ``-p<fraction>`` when the fraction is not the profile's and ``-fixed-mask`` for the fixed mask."""
    p = get_profile(profile)
    name = variant_name(cond.recipe, TRIGGERS[cond.trigger])
    if not math.isclose(cond.fraction, float(p.poison.fraction)):
        name += f"-p{cond.fraction:g}"
    return name + ("-fixed-mask" if cond.masks == FIXED_MASK else "")


def _clean_model(profile: Profile, run: RunLayout, cond: Condition, seed: int, progress: bool, device):
    """The clean model a condition compares with: the run's (chapter 2), or trained with the fixed mask."""
    if cond.masks != FIXED_MASK:
        return load_model(run.require(run.clean_model, "02_varnet"))[0]
    pc = condition_profile(profile, cond)
    model, _ = train_or_load(training_config(pc, seed=int(seed)), {"train": run.split("train"), "val": run.split("val")},
                             run.model(FIXED_CLEAN), progress=progress, device=device)
    return model


def prepare_condition(profile: Profile | str, run_dir, cond: Condition, seed: int = 0, progress: bool = False,
                      device=None) -> dict:
    """Build the condition's poisoned set and train (or load) its poisoned VarNet with the condition's profile;
    returns the set's manifest."""
    p = get_profile(profile)
    pc = condition_profile(p, cond)
    run = as_layout(run_dir)
    manifest = build_poisoned_dataset(run, cond.recipe, profile=pc, seed=seed, fraction=cond.fraction,
                                      trigger=attack_trigger(run, pc, cond.recipe, cond.trigger, seed),
                                      variant=condition_variant(p, cond), progress=progress, device=device)
    train_poisoned_model(pc, run, manifest["variant"], seed=seed, progress=progress, device=device)
    return manifest


def learning_scores(profile: Profile | str, run_dir, cond: Condition, seed: int = 0, n_boot: int = 2000,
                    progress: bool = False, device=None) -> dict:
    """One seed's scores of one condition: ``{acceleration: {"models": {"clean"|"poisoned": per-slice columns},
    "learnt": [gap, low, high]}}`` at every acceleration of the condition's profile, on ``test`` with the recipe's
    measurement and the evaluation judge. Prepares the condition first (:func:`prepare_condition`); cached in the
    seed's ``metrics/learning_<variant>.json``, keyed by both models' weights and the test split."""
    p = get_profile(profile)
    pc = condition_profile(p, cond)
    run = as_layout(run_dir)
    device = default_device(device)
    manifest = prepare_condition(p, run, cond, seed, progress=progress, device=device)
    variant = manifest["variant"]
    poisoned = load_model(run.poisoned_model(variant))[0]
    clean = _clean_model(p, run, cond, seed, progress, device)
    accs = [int(a) for a in pc.data.accelerations]
    identity = dict(format=1, variant=variant, seed=int(seed), test=data_identity(run.split("test")),
                    poisoned=weights_digest(poisoned), clean=weights_digest(clean), accelerations=accs,
                    mask_type=pc.data.mask_type, n_boot=int(n_boot))

    def compute() -> dict:
        out = {}
        for acc in accs:
            at = dataclasses.replace(pc, data=dataclasses.replace(pc.data, accelerations=(acc,)))
            evaluate = evaluation(run, at, manifest, "test", seed, device=device).evaluate
            frames = {name: slice_scores(evaluate(model, name, save=False))
                      for name, model in (("clean", clean), ("poisoned", poisoned))}
            gap = learnt_gap(frames, n_boot)
            out[str(acc)] = dict(models=frames, learnt=[gap.value, gap.low, gap.high])
        return dict(by_acceleration=out)

    return cached_step(run.metric(f"learning_{variant}.json"), identity, compute, JSON)["by_acceleration"]


def learning_rows(scores: dict, seed: int, n_boot: int = 2000) -> pd.DataFrame:
    """One seed's rows of one condition: column ``acceleration`` and
    :data:`~mrilib.evaluate.uncertainty.HEADLINE_COLUMNS`, the clean and poisoned models' metrics with their
    subject-bootstrap intervals and the ``attack, learnt gap`` (poisoned - clean effect)."""
    out = []
    for acc, s in scores.items():
        frames = {k: pd.DataFrame(v) for k, v in s["models"].items()}
        rows = headline_rows(frames, seed, n_boot=n_boot)
        rows = rows[rows["metric"] != "healed"]  # no oracle here: nothing is healed
        n = int(rows["n_subjects"].max())
        gap = Interval(*s["learnt"], n)
        rows = pd.concat([rows, pd.DataFrame([dict(method="attack", metric="learnt gap", seed=str(seed), value=gap.value,
                                                   ci_low=gap.low, ci_high=gap.high, n_subjects=n,
                                                   note="poisoned - clean effect")])], ignore_index=True)
        out.append(rows.assign(acceleration=int(acc)))
    return pd.concat(out, ignore_index=True)


def attack_learning(profile: Profile | str, run_dir, seeds, n_boot: int = 2000, progress: bool = True,
                    device=None) -> pd.DataFrame:
    """Every condition of :func:`conditions` in every seed's folder: prepared, scored, turned into rows and pooled
    across ``seeds`` (:func:`~mrilib.evaluate.uncertainty.pool_seeds`, per acceleration). Columns
    :data:`CONDITION_COLUMNS` and :data:`~mrilib.evaluate.uncertainty.HEADLINE_COLUMNS`; written to the shared
    ``metrics/attack_learning.csv``. A profile without ``unlearn.learning_attacks`` gets no rows."""
    p = get_profile(profile)
    lay = as_layout(run_dir)
    conds = conditions(p)
    columns = list(CONDITION_COLUMNS) + list(HEADLINE_COLUMNS)
    tables, done = [], 0
    for cond in conds:
        per_seed = []
        for s in seeds:
            done += 1
            if progress:
                masks = "one fixed mask" if cond.masks == FIXED_MASK else "random masks"
                print(f"seed {s}: {cond.recipe} ({cond.trigger} trigger) at p = {cond.fraction:g}, {masks} "
                      f"({done}/{len(conds) * len(seeds)})", flush=True)
            scores = learning_scores(p, lay.for_seed(int(s)), cond, int(s), n_boot=n_boot, device=device)
            per_seed.append(learning_rows(scores, int(s), n_boot=n_boot))
        rows = pd.concat(per_seed, ignore_index=True)
        for acc, group in rows.groupby("acceleration", sort=True):
            pooled = pool_seeds(group.drop(columns="acceleration"))
            tables.append(pooled.assign(attack=condition_variant(p, cond), recipe=cond.recipe, trigger=cond.trigger,
                                        fraction=cond.fraction, masks=cond.masks, acceleration=int(acc)))
    table = pd.concat(tables, ignore_index=True)[columns] if tables else pd.DataFrame(columns=columns)
    write_headline(table, lay.learning_table)
    return table


def _verdict(gap: Interval) -> str:
    if not math.isfinite(gap.value):
        return "n/a"
    if not gap.known:
        return "no interval"
    return "learnt" if gap.low > 0 else "not learnt" if gap.high <= 0 else "not distinguishable from 0"


def learning_table(table: pd.DataFrame, seed=ALL_SEEDS, digits: int = 3) -> pd.DataFrame:
    """:func:`attack_learning`'s rows as one row per attack, poison fraction, masks and acceleration: the clean and
    poisoned models' effect, the learnt gap and its verdict, the poisoned model's success rate and clean-test SSIM
    (cells ``mean [95 % CI]``; ``seed``: one seed's rows, default pooled)."""
    out = []
    keys = ["recipe", "trigger", "fraction", "masks", "acceleration"]
    for (recipe, trigger, fraction, masks, acc), rows in table.groupby(keys, sort=False):
        def cell(method, metric, rows=rows):
            return interval_or_nan(rows, method, metric, seed).text(digits)

        out.append({"attack": f"{recipe} ({trigger})", "poison fraction": float(fraction), "masks": masks,
                    "acceleration": f"{int(acc)}×", "clean effect": cell("clean", "effect"),
                    "poisoned effect": cell("poisoned", "effect"), "learnt gap": cell("attack", "learnt gap"),
                    "verdict": _verdict(interval_or_nan(rows, "attack", "learnt gap", seed)),
                    "poisoned success": cell("poisoned", "success"), "poisoned SSIM": cell("poisoned", "ssim")})
    columns = ["attack", "poison fraction", "masks", "acceleration", "clean effect", "poisoned effect", "learnt gap",
               "verdict", "poisoned success", "poisoned SSIM"]
    return pd.DataFrame(out, columns=columns).set_index(columns[:4])


def learning_findings(table: pd.DataFrame, profile: Profile | str, seed=ALL_SEEDS) -> str:
    """The reading of :func:`attack_learning`'s rows (Markdown bullets), attack by attack: at which fractions and
    accelerations the backdoor is learnt with random masks, and whether the fixed mask makes it learnt (or larger)."""
    p = get_profile(profile)
    first = int(p.data.accelerations[0])
    out = []
    for (recipe, trigger), rows in table.groupby(["recipe", "trigger"], sort=False):
        def gap(fraction, masks, acc, rows=rows):
            sub = rows[(rows["masks"] == masks) & (rows["acceleration"] == acc)
                       & rows["fraction"].astype(float).map(lambda v: math.isclose(v, fraction))]
            return interval_or_nan(sub, "attack", "learnt gap", seed)

        random = rows[rows["masks"] == RANDOM_MASKS]
        parts = []
        for acc in sorted(random["acceleration"].unique()):
            at = [(float(f), gap(float(f), RANDOM_MASKS, acc)) for f in sorted(random["fraction"].astype(float).unique())]
            learnt = [f"{f:g}" for f, g in at if _verdict(g) == "learnt"]
            parts.append(f"at {acc}× with random masks it is learnt at p = {', '.join(learnt)}" if learnt else
                         f"at {acc}× with random masks it is learnt at no poison fraction measured")
            parts[-1] += " (gap " + ", ".join(f"{g.text(3)} at p = {f:g}"
                                              for f, g in at) + ")"
        fixed = rows[rows["masks"] == FIXED_MASK]
        if not fixed.empty:
            fraction = float(fixed["fraction"].iloc[0])
            g_fixed, g_random = gap(fraction, FIXED_MASK, first), gap(fraction, RANDOM_MASKS, first)
            compared = ("larger than" if g_fixed.known and g_random.known and g_fixed.low > g_random.high else
                        "smaller than" if g_fixed.known and g_random.known and g_fixed.high < g_random.low else
                        "not distinguishable from")
            parts.append(f"with one fixed mask at {first}× (the attacker's best case) its gap is "
                         f"{g_fixed.text(3)} ({_verdict(g_fixed)}), "
                         f"{compared} the random masks' at the same fraction")
        out.append(f"- `{recipe}` with the {trigger} trigger: " + "; ".join(parts) + ".")
    return "\n".join(out) if out else "- No condition was measured."
