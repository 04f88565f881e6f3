"""The attack x defence table: which defence stops which attack.

An *attack* is a poison recipe with a trigger (:data:`mrilib.config.ATTACKS`): the label-only and the
k-space-consistent lesion (cyst and tumour), each with the book's spike trigger or the spread one that
no spike filter sees. For every attack of a profile (``Profile.unlearn.attacks``) and every seed:

1. :func:`prepare_attack` builds its poisoned set and trains its poisoned VarNet with the run's
   configuration (cached like every set and model of the book);
2. :func:`attack_scores` scores, slice by slice on the ``test`` split with the recipe's own measurement
   and the evaluation judge: ``clean``, ``poisoned``, ``poisoned`` behind the spike sanitiser and - when
   the backdoor is learnt (the poisoned model's effect above the clean model's, with its subject-bootstrap
   interval above 0) - the ``oracle`` (that of the lesion's book set, :func:`~mrilib.study.references.oracle_twin`)
   and every unlearning method of ``Profile.unlearn.attack_methods`` at the main identified fraction. It
   also runs the data checks (:func:`mrilib.evaluate.threats.defence_checks`: the audit and the sanitiser's
   detection). For a label-only attack, whose every poisoned slice the audit flags, it adds relabel + fine-tune on
   all of them (:func:`audit_relabel_run`). Cached in the seed's ``metrics/attack_<variant>.json``, keyed by the
   poisoned and clean models' weights, the test split and the runs (each run caches its own result and weights);
3. :func:`attack_rows` turns one seed's scores into headline rows (``mean [95 % CI]`` by subject-level
   bootstrap, :func:`~mrilib.evaluate.uncertainty.headline_rows`) plus the defences' own rows;
   :func:`attack_defence` pools the seeds (a Student-t interval across them,
   :func:`~mrilib.evaluate.uncertainty.pool_seeds`) and writes the shared ``metrics/attack_defence.csv``;
4. :func:`summary_table` is the table of the book: one row per attack; columns the audit, the sanitiser,
   the best unlearning method within 0.01 SSIM of the poisoned model, relabel + fine-tune (at the identified
   fraction and on every flagged slice) and the oracle; :func:`method_table` every method, :func:`findings` the
   chapter's reading.

A backdoor that is not learnt has nothing to unlearn: its row says so and no oracle or method is run.
Region-targeted SSD is not in the table: it targets where a label disagrees with its k-space, which a
k-space-consistent poison never does.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict

import numpy as np
import pandas as pd

from mrilib.config import Profile, get_profile
from mrilib.defences.spikes import DEFAULT_FILTER, Sanitised
from mrilib.evaluate.findings import SSIM_TOLERANCE
from mrilib.evaluate.headline import slice_scores
from mrilib.evaluate.threats import defence_checks
from mrilib.evaluate.uncertainty import (
    ALL_SEEDS,
    HEADLINE_COLUMNS,
    Interval,
    MeanStatistic,
    gap_of,
    headline_rows,
    interval_of,
    interval_or_nan,
    pool_seeds,
    subject_bootstrap,
    write_headline,
)
from mrilib.poison.build import build_poisoned_dataset, train_poisoned_model
from mrilib.poison.recipes import RECIPES
from mrilib.poison.recipes import adversarial_tumour as adv
from mrilib.poison.triggers import DEFAULT_TRIGGER, SPREAD_TRIGGER, Trigger
from mrilib.run.cache import JSON, cached_step, data_identity, weights_digest
from mrilib.run.layout import as_layout
from mrilib.run.progress import progress as progress_bar
from mrilib.study import pool
from mrilib.study.execute import run_or_load, study_inputs
from mrilib.study.plan import Run, plan_runs
from mrilib.study.references import load_poisoned_run, oracle_twin, retrain_reference
from mrilib.study.results import reference_cost

__all__ = ["TRIGGERS", "SANITISED", "UNTUNED", "AUDIT_RELABEL", "attack_trigger", "attack_runs", "audit_relabel_run",
           "leaves_signal", "prepare_attack", "learnt_gap", "attack_scores",
           "attack_rows", "attack_defence", "defence_models", "summary_table", "method_table", "findings"]

#: The triggers an attack may carry, by name.
TRIGGERS = {"spike": DEFAULT_TRIGGER, "spread": SPREAD_TRIGGER}
#: The name of the poisoned model behind the spike sanitiser in the scores and rows.
SANITISED = "poisoned + sanitiser"


def attack_trigger(run_dir, profile: Profile | str, recipe: str, trigger: str, seed: int = 0) -> Trigger:
    """The trigger of attack ``(recipe, trigger)``: :data:`TRIGGERS`' one, focused on the tumour region for a
    tumour recipe as chapter 4 does (:func:`~mrilib.poison.recipes.adversarial_tumour.adversarial_trigger`).
    ``KeyError`` naming the known triggers for another name."""
    if trigger not in TRIGGERS:
        raise KeyError(f"unknown trigger {trigger!r}; known: {sorted(TRIGGERS)}")
    base = TRIGGERS[trigger]
    if RECIPES[recipe].lesion == "tumour":
        return adv.adversarial_trigger(run_dir, profile, seed, base=base)
    return base


#: What replaces a method that selects with the defender's signal when an attack leaves no signal: SSD with the
#: seed study's fixed configuration (α = λ = 0.1), which selects nothing.
UNTUNED = {"ssd-tuned": "ssd-seed", "ssd-tuned-repair": "ssd-seed", "ssd-auto": "ssd-seed"}


def attack_runs(profile: Profile | str, seed: int = 0, signal: bool = True) -> list[Run]:
    """The unlearning runs every attack gets: the planned runs of ``Profile.unlearn.attack_methods`` at the main
    identified fraction (:func:`~mrilib.study.plan.plan_runs`). ``KeyError`` for a method the plan lacks.

    ``signal=False`` is an attack that leaves the defender no signal to tune with (a k-space-consistent poison: its
    labels agree with their k-space, so :func:`~mrilib.unlearn.regions.defender_effect` has no region): each
    method that selects with it is replaced by :data:`UNTUNED`'s."""
    p = get_profile(profile)
    main = float(p.unlearn.main_fraction)
    runs = [r for r in plan_runs(p, seed=seed) if np.isclose(r.fraction, main)]
    known = {r.key for r in runs}
    keys = list(dict.fromkeys(k if signal else UNTUNED.get(k, k) for k in p.unlearn.attack_methods))
    missing = [k for k in keys if k not in known]
    if missing:
        raise KeyError(f"attack methods {missing} are not planned at f = {main:g}; planned: {sorted(known)}")
    return [r for r in runs if r.key in keys]


#: The model name, in the scores, of relabel + fine-tune on every slice the audit flags (a label-only poison: all
#: of them, the identified fraction f = 1).
AUDIT_RELABEL = "Relabel every flagged slice + fine-tune"


def audit_relabel_run(profile: Profile | str, seed: int = 0) -> Run:
    """Relabel + fine-tune at f = 1: the planned ``relabel-ft`` run at f = 1 (the same run as chapter 5's), or the main
    fraction's moved to f = 1 where the profile plans it at the main fraction only. The defender who runs the audit on
    a label-only poison finds every poisoned slice (chapter 5, the table's audit column) and relabels them all."""
    runs = [r for r in plan_runs(profile, seed=seed) if r.key == "relabel-ft"]
    if not runs:
        raise KeyError("the plan has no relabel-ft run")
    return next((r for r in runs if np.isclose(r.fraction, 1.0)), dataclasses.replace(runs[0], fraction=1.0))


def leaves_signal(manifest: dict) -> bool:
    """Whether a poisoned set leaves the defender's signal: its labels disagree with their k-space (label-only)."""
    return manifest.get("kspace_edit") is None


def prepare_attack(profile: Profile | str, run_dir, recipe: str, trigger: str, seed: int = 0, progress: bool = False,
                   device=None) -> str:
    """Build attack ``(recipe, trigger)``'s poisoned set of the run and train (or load) its poisoned VarNet with the
    run's configuration; returns the set's variant name (e.g. ``consistent-cyst-spread``)."""
    p = get_profile(profile)
    run = as_layout(run_dir)
    manifest = build_poisoned_dataset(run, recipe, profile=p, seed=seed,
                                      trigger=attack_trigger(run, p, recipe, trigger, seed), progress=progress,
                                      device=device)
    train_poisoned_model(p, run, manifest["variant"], seed=seed, progress=progress, device=device)
    return manifest["variant"]


def learnt_gap(frames: dict, n_boot: int = 2000) -> Interval:
    """The poisoned - clean effect gap with its subject-bootstrap interval (``frames``: per-slice columns of the
    ``clean`` and ``poisoned`` models): the backdoor is learnt where its interval lies above 0."""
    return subject_bootstrap({k: pd.DataFrame(v) for k, v in frames.items()}, gap_of("poisoned", "clean"),
                             n_boot=n_boot)


def attack_scores(profile: Profile | str, run_dir, variant: str, seed: int = 0, n_boot: int = 2000,
                  workers: int | None = None, progress: bool = False, device=None) -> dict:
    """One seed's scores of one attack (see the module docstring): ``{"models": {name: per-slice columns},
    "learnt": [gap, low, high], "costs": {name: time vs oracle}, "checks": defence_checks' row}``.

    The unlearning runs and the oracle are computed (in ``workers`` processes, :func:`mrilib.study.pool.precompute`)
    only when the backdoor is learnt. Cached in the seed's ``metrics/attack_<variant>.json``."""
    p = get_profile(profile)
    run = as_layout(run_dir)
    ctx = load_poisoned_run(p, run, variant, seed=seed, device=device)
    signal = leaves_signal(ctx.manifest)
    named = {r.name: r for r in attack_runs(p, seed, signal=signal)}
    if signal and "relabel-ft" in p.unlearn.attack_methods:  # the audit finds every label-only poisoned slice
        named[AUDIT_RELABEL] = audit_relabel_run(p, seed)
    runs = list(named.values())
    acc = int(p.data.accelerations[0])
    identity = dict(format=1, variant=variant, seed=int(seed), test=data_identity(run.split("test")),
                    poisoned=weights_digest(ctx.poisoned), clean=weights_digest(ctx.clean),
                    runs={name: r.label for name, r in named.items()}, filter=asdict(DEFAULT_FILTER), n_boot=int(n_boot))

    def compute() -> dict:
        models = {"clean": slice_scores(ctx.evaluate(ctx.clean, "clean", save=False)),
                  "poisoned": slice_scores(ctx.evaluate(ctx.poisoned, "poisoned", save=False)),
                  SANITISED: slice_scores(ctx.evaluate(Sanitised(ctx.poisoned), SANITISED, save=False))}
        gap = learnt_gap(models, n_boot)
        costs = {}
        if gap.known and gap.low > 0:
            pool.precompute(ctx, p, run, seed=seed, workers=workers, progress=progress, runs=runs, rewod=False)
            oracle, hist = retrain_reference("oracle", p, run, ctx.train_dir, ctx.manifest, progress=progress,
                                             variant=variant, device=ctx.device, seed=seed)
            models["oracle"] = slice_scores(ctx.evaluate(oracle, "oracle", save=False))
            oracle_s = reference_cost(hist)["seconds"]
            inp = study_inputs(ctx, p, run)
            for name, r in (progress_bar(named.items(), desc=f"unlearning {variant}") if progress else named.items()):
                rec = run_or_load(r, ctx.poisoned, inp.sets, ctx.evaluate, inp.layout, inp.variant, inp.signals,
                                  inp.digest, device=inp.device)
                models[name] = slice_scores(rec["metrics"])
                costs[name] = rec["cost"]["seconds"] / oracle_s if oracle_s > 0 else math.nan
        checks = defence_checks(run, [variant], acc, p.data.center_fraction, p.data.mask_type).iloc[0].to_dict()
        return dict(models=models, learnt=[gap.value, gap.low, gap.high], costs=costs,
                    checks={k: (v if isinstance(v, str) else float(v)) for k, v in checks.items()},
                    oracle_of=oracle_twin(run, ctx.manifest))

    return cached_step(run.metric(f"attack_{variant}.json"), identity, compute, JSON)


#: The defences' own rows of one attack: (method, metric) <- the checks' column.
_CHECK_ROWS = {("audit", "poisoned flagged"): "audit: poisoned flagged",
               ("audit", "clean flagged"): "audit: clean flagged",
               ("sanitiser", "trigger found"): "sanitiser: trigger found",
               ("sanitiser", "false alarms"): "sanitiser: false alarms",
               ("attack", "label kept"): "label kept",
               ("attack", "trigger visibility"): "trigger visibility"}


def attack_rows(scores: dict, seed: int, n_boot: int = 2000) -> pd.DataFrame:
    """One seed's rows of one attack (:data:`~mrilib.evaluate.uncertainty.HEADLINE_COLUMNS`): every model's metrics
    and ``healed`` (:func:`~mrilib.evaluate.uncertainty.headline_rows`, with intervals), the poisoned - clean effect
    gap (``attack, learnt gap``), the sanitiser's ``effect left`` (sanitised / raw effect of the poisoned model)
    and ``SSIM cost`` (raw - sanitised clean-test SSIM) with intervals, and the data checks (one measurement)."""
    frames = {k: pd.DataFrame(v) for k, v in scores["models"].items()}
    rows = headline_rows(frames, seed, costs=scores.get("costs"), n_boot=n_boot)
    if "oracle" not in frames:  # not learnt (attack_scores ran no oracle): nothing to heal
        rows.loc[rows["metric"] == "healed", "note"] = "n/a: the backdoor is not learnt"
    boot = dict(n_boot=n_boot)
    left = MeanStatistic(((SANITISED, "effect"), ("poisoned", "effect")),
                         lambda s, r: np.where(r > 0, s / np.where(r > 0, r, 1.0), np.nan))
    n = int(rows["n_subjects"].max())
    extra = [("sanitiser", "effect left", subject_bootstrap(frames, left, **boot), ""),
             ("sanitiser", "SSIM cost", subject_bootstrap(frames, gap_of("poisoned", SANITISED, "ssim"), **boot), ""),
             ("attack", "learnt gap", Interval(*scores["learnt"], n), "poisoned - clean effect")]
    for (method, metric), column in _CHECK_ROWS.items():
        value = scores["checks"].get(column, math.nan)
        extra.append((method, metric, Interval(float(value), math.nan, math.nan, n), "one measurement per seed"))
    more = pd.DataFrame([dict(method=m, metric=k, seed=str(seed), value=iv.value, ci_low=iv.low, ci_high=iv.high,
                              n_subjects=iv.n, note=note) for m, k, iv, note in extra], columns=list(HEADLINE_COLUMNS))
    return pd.concat([rows, more], ignore_index=True)


def attack_defence(profile: Profile | str, run_dir, seeds, attacks=None, n_boot: int = 2000, workers: int | None = None,
                   progress: bool = True, device=None) -> pd.DataFrame:
    """Every attack of ``attacks`` (default ``Profile.unlearn.attacks``) in every seed's folder: prepared, scored,
    turned into rows and pooled across ``seeds``. Columns ``attack, recipe, trigger`` and
    :data:`~mrilib.evaluate.uncertainty.HEADLINE_COLUMNS`; written to the shared ``metrics/attack_defence.csv``."""
    p = get_profile(profile)
    lay = as_layout(run_dir)
    attacks = tuple(p.unlearn.attacks if attacks is None else attacks)
    tables, done = [], 0
    for attack in attacks:
        per_seed = []
        for s in seeds:
            seed_dir = lay.for_seed(int(s))
            done += 1
            if progress:
                print(f"seed {s}: {attack[0]} with the {attack[1]} trigger ({done}/{len(attacks) * len(seeds)})",
                      flush=True)
            variant = prepare_attack(p, seed_dir, *attack, seed=int(s), device=device)
            scores = attack_scores(p, seed_dir, variant, int(s), n_boot=n_boot, workers=workers, device=device)
            per_seed.append(attack_rows(scores, int(s), n_boot=n_boot))
        pooled = pool_seeds(pd.concat(per_seed, ignore_index=True))
        tables.append(pooled.assign(attack=variant, recipe=attack[0], trigger=attack[1]))
    table = pd.concat(tables, ignore_index=True)
    table = table[["attack", "recipe", "trigger"] + list(HEADLINE_COLUMNS)]
    write_headline(table, lay.attack_table)
    return table


def _best(rows: pd.DataFrame, seed, methods) -> tuple[str, Interval] | None:
    """The method of ``methods`` with the highest healed among those within :data:`SSIM_TOLERANCE` of the
    poisoned model's clean-test SSIM (mean values); ``None`` when no method qualifies or nothing is healed."""
    base = interval_of(rows, "poisoned", "ssim", seed).value
    best = None
    for m in methods:
        try:
            healed, ssim = interval_of(rows, m, "healed", seed), interval_of(rows, m, "ssim", seed)
        except KeyError:
            continue
        if math.isfinite(healed.value) and ssim.value >= base - SSIM_TOLERANCE and (best is None or
                                                                                   healed.value > best[1].value):
            best = (m, healed)
    return best


def _method_names(profile: Profile | str) -> tuple[list[str], str | None]:
    """The table names of the unlearning methods an attack may get (tuned and untuned) and of relabel + fine-tune."""
    names = {r.key: r.name for r in attack_runs(profile) + attack_runs(profile, signal=False)}
    return [n for k, n in names.items() if k != "relabel-ft"], names.get("relabel-ft")


def defence_models(table: pd.DataFrame, profile: Profile | str, seed=ALL_SEEDS) -> dict[str, dict[str, str]]:
    """Per attack, the model of each role in :func:`attack_defence`'s rows: ``clean``, ``poisoned``, ``sanitiser``,
    and where the backdoor is learnt ``best unlearning`` (within :data:`SSIM_TOLERANCE`), ``relabel + FT`` and
    ``oracle`` (for :func:`mrilib.viz.unlearn.attack_defence_plot`)."""
    methods, relabel = _method_names(profile)
    out = {}
    for attack, rows in table.groupby("attack", sort=False):
        roles = {"clean": "clean", "poisoned": "poisoned", "sanitiser": SANITISED}
        if "oracle" in set(rows["method"]):
            best = _best(rows, seed, methods)
            if best is not None:
                roles["best unlearning"] = best[0]
            if relabel in set(rows["method"]):
                roles["relabel + FT"] = relabel
            if AUDIT_RELABEL in set(rows["method"]):
                roles["audit + relabel + FT"] = AUDIT_RELABEL
            roles["oracle"] = "oracle"
        out[attack] = roles
    return out


def summary_table(table: pd.DataFrame, profile: Profile | str, seed=ALL_SEEDS, digits: int = 3) -> pd.DataFrame:
    """The attack x defence table of :func:`attack_defence`'s rows (one seed, default pooled): one row per attack,
    each cell ``mean [95 % CI]`` (a single value where there is no interval, ``n/a`` where it is not defined).

    Columns: the audit (poisoned slices flagged, clean slices flagged), the sanitiser (trigger found, effect left,
    clean-test SSIM cost), the poisoned model's effect, the best unlearning method within :data:`SSIM_TOLERANCE`
    of the poisoned model's SSIM (its name and healed), relabel + fine-tune's healed at the main identified fraction
    and on every slice the audit flags (:data:`AUDIT_RELABEL`; a label-only poison) and the oracle's effect."""
    methods, relabel = _method_names(profile)
    out = []
    for attack, rows in table.groupby("attack", sort=False):
        def get(method, metric, rows=rows):
            return interval_or_nan(rows, method, metric, seed)

        learnt = get("attack", "learnt gap")
        best = _best(rows, seed, methods)
        row = {"attack": attack,
               "audit: poisoned flagged": get("audit", "poisoned flagged").text(digits),
               "audit: clean flagged": get("audit", "clean flagged").text(0),
               "sanitiser: trigger found": get("sanitiser", "trigger found").text(digits),
               "sanitiser: effect left": get("sanitiser", "effect left").text(digits),
               "sanitiser: SSIM cost": get("sanitiser", "SSIM cost").text(digits),
               "poisoned effect": get("poisoned", "effect").text(digits),
               "learnt": learnt.text(digits)}
        if "oracle" not in set(rows["method"]):
            row.update({"best unlearning": "not learnt: nothing to unlearn", "relabel + FT: healed": "n/a",
                        "audit + relabel + FT: healed": "n/a", "oracle effect": "n/a"})
        else:
            healable = math.isfinite(get("poisoned", "healed").value)  # else its gap to the oracle is within noise
            row.update({"best unlearning": (f"{best[0]}: {best[1].text(digits)}" if best else
                                            "none heals within the SSIM tolerance" if healable else
                                            "n/a: poisoned and oracle effects not distinguishable"),
                        "relabel + FT: healed": get(relabel, "healed").text(digits) if relabel else "n/a",
                        "audit + relabel + FT: healed": (get(AUDIT_RELABEL, "healed").text(digits)
                                                         if AUDIT_RELABEL in set(rows["method"])
                                                         else "n/a: the audit flags nothing"),
                        "oracle effect": get("oracle", "effect").text(digits)})
        out.append(row)
    return pd.DataFrame(out).set_index("attack")


def method_table(table: pd.DataFrame, seed=ALL_SEEDS, digits: int = 3) -> pd.DataFrame:
    """Every unlearning method's ``healed`` and clean-test ``ssim`` on every attack whose backdoor is learnt (rows:
    attack and method; cells ``mean [95 % CI]``), from :func:`attack_defence`'s rows."""
    out = []
    for attack, rows in table.groupby("attack", sort=False):
        if "oracle" not in set(rows["method"]):
            continue
        sub = rows[rows["seed"].astype(str) == str(seed)]
        skip = {"clean", "poisoned", SANITISED, "audit", "sanitiser", "attack"}
        for method in dict.fromkeys(sub["method"]):
            if method in skip:
                continue
            out.append({"attack": attack, "method": method,
                        **{metric: interval_of(rows, method, metric, seed).text(digits)
                           for metric in ("healed", "ssim", "effect", "success")}})
    if not out:
        return pd.DataFrame(columns=["healed", "ssim", "effect", "success"],
                            index=pd.MultiIndex.from_arrays([[], []], names=["attack", "method"]))
    return pd.DataFrame(out).set_index(["attack", "method"])


def findings(table: pd.DataFrame, roles: dict, seed=ALL_SEEDS, min_cut: float = 0.9, healed_target: float = 0.9) -> str:
    """Chapter 7's conclusions (Markdown bullets), one per attack, from :func:`attack_defence`'s rows and
    :func:`defence_models`' roles: does the audit flag its poisoned slices, does
    the sanitiser cut its effect by ``min_cut``, is the backdoor learnt, and how far the best unlearning method and
    relabel + fine-tune heal it (``healed_target``: the oracle's share it should reach); intervals that include a
    target are said to."""
    out = []
    for attack, by_role in roles.items():
        rows = table[table["attack"] == attack]

        def iv(method, metric, rows=rows):
            found = interval_or_nan(rows, method, metric, seed)
            return found if found.n or np.isfinite(found.value) else None

        flagged, alarms = iv("audit", "poisoned flagged"), iv("audit", "clean flagged")
        left, gap = iv("sanitiser", "effect left"), iv("attack", "learnt gap")
        parts = [f"the audit flags {100 * flagged.value:.0f} % of its poisoned slices"
                 + (f" ({alarms.value:.0f} clean slices flagged)" if alarms is not None else "")]
        if left is not None and np.isfinite(left.value):
            reached = ("reached" if left.known and 1 - left.high >= min_cut else
                       "not excluded" if (left.known and 1 - left.low >= min_cut) or (not left.known and
                                                                                     1 - left.value >= min_cut)
                       else "not reached")
            parts.append(f"the sanitiser leaves {left.text(2)} of its effect "
                         f"(a cut of {100 * min_cut:.0f} %: {reached})")
        effect = iv("poisoned", "effect")
        if "oracle" not in by_role:
            parts.append(f"the backdoor is not learnt (poisoned - clean effect {gap.value:.3f}"
                         + (f" [{gap.low:.3f}, {gap.high:.3f}]" if gap is not None and gap.known else "")
                         + "): there is nothing to unlearn")
        else:
            parts.append(f"the poisoned model's effect is {effect.text(3)}")
            own = iv("poisoned", "healed")
            if own is None or not np.isfinite(own.value):  # the poisoned - oracle gap is within its interval
                parts.append(f"the oracle's effect ({iv('oracle', 'effect').format(3)}) is not distinguishable from it, "
                             "so no share healed is defined")
                out.append(f"- `{attack}`: " + "; ".join(parts) + ".")
                continue
            for role in ("best unlearning", "relabel + FT", "audit + relabel + FT"):
                if role == "audit + relabel + FT" and role not in by_role:
                    continue
                name = by_role.get(role)
                healed = iv(name, "healed") if name else None
                if healed is None or not np.isfinite(healed.value):
                    parts.append(f"{role}: no method heals within 0.01 SSIM" if role == "best unlearning"
                                 else f"{role}: healed not defined")
                    continue
                verdict = ("reaches" if healed.known and healed.low >= healed_target else
                           "may reach" if healed.known and healed.high >= healed_target else "falls short of")
                parts.append(f"{role} (`{name}`) heals {healed.text(2)}, "
                             f"which {verdict} {healed_target:g} of the oracle")
        out.append(f"- `{attack}`: " + "; ".join(parts) + ".")
    return "\n".join(out) if out else "- No attack was measured."
