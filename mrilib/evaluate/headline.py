"""The headline: every model of every seed scored once on the untouched ``final`` split, with intervals.

Chapters 2-5 analyse the ``test`` split, and every choice of the study (the trigger, the methods'
grids, which recipes a profile unlearns) was made on validation or test numbers. The headline is
computed on ``final``: subjects no chapter looks at while developing (see ``book/methods.md``,
"Protocol"). For each seed's run folder :func:`final_scores` reconstructs the ``final`` slices with
the ``clean``, ``poisoned`` and ``oracle`` models, the ``rewod`` retrainings and every unlearning run
at the main identified fraction, and scores them with the recipe's own measurement (the judge's
success, the poison effect, SSIM / PSNR / NMSE) slice by slice; :func:`headline` turns the slices
into ``mean [95 % CI]`` by a subject-level bootstrap within each seed and a Student-t interval
across seeds (:mod:`mrilib.evaluate.uncertainty`) and writes ``metrics/headline.csv`` in the shared
run folder.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mrilib.config import MAIN_RECIPE, Profile, get_profile
from mrilib.evaluate.tables import load_unlearning_table
from mrilib.evaluate.uncertainty import ALL_SEEDS, headline_rows, pool_seeds, write_headline
from mrilib.poison.recipes import evaluation
from mrilib.recon.checkpoints import load_model
from mrilib.run.cache import JSON, cached_step, data_identity, weights_digest
from mrilib.run.layout import as_layout
from mrilib.run.progress import progress
from mrilib.study.execute import load_unlearnt
from mrilib.study.plan import plan_runs
from mrilib.study.references import load_poisoned_run, oracle_dir, rewod_is_oracle

__all__ = ["FINAL_SPLIT", "final_models", "final_scores", "headline", "headline_table", "reported_seed", "slice_scores",
           "test_intervals"]

#: The split of new subjects the headline is computed on, once.
FINAL_SPLIT = "final"

#: The per-slice columns a headline needs from a recipe's measurement (``EffectResult.per_slice``).
_SLICE_COLUMNS = ("subject", "file", "slice", "ssim", "psnr", "nmse", "effect", "success")


def slice_scores(metrics: dict) -> dict:
    """The per-slice columns a headline needs (subject, slice, metrics) from a recipe's measurement of one model
    (the metrics dict its ``evaluate`` returns)."""
    return {k: metrics["per_slice"][k] for k in _SLICE_COLUMNS}


def final_models(profile: Profile | str, run_dir, ctx) -> dict[str, object]:
    """``{table name: model}`` of one seed: the references, every ``rewod`` and every unlearning
    run at the profile's main identified fraction (names as in ``metrics/unlearning_<variant>.csv``;
    a ``rewod`` that is the oracle's training is the oracle's model object)."""
    p = get_profile(profile)
    lay = as_layout(run_dir)
    main = float(p.unlearn.main_fraction)
    models = {"clean": ctx.clean, "poisoned": ctx.poisoned}
    models["oracle"] = load_model(lay.require(oracle_dir(lay, ctx.manifest), "05_unlearning"))[0]
    for f in p.unlearn.rewod_fractions:
        models[f"rewod f={f:g}"] = (models["oracle"] if rewod_is_oracle(ctx.manifest, f) else
                                    load_model(lay.require(lay.rewod_model(ctx.variant, f), "05_unlearning"))[0])
    for run in plan_runs(p, seed=ctx.seed):
        if np.isclose(run.fraction, main):
            models[run.name] = load_unlearnt(lay, ctx.variant, run.label, ctx.poisoned)
    return models


def final_scores(profile: Profile | str, run_dir, seed: int, variant: str = MAIN_RECIPE,
                 device=None) -> dict[str, pd.DataFrame]:
    """Per-slice scores of every model of seed ``seed`` (:func:`final_models`) on the ``final`` split.

    Cached in the seed's ``metrics/final_<variant>.json``, keyed by every model's weights and the final
    split's content: a re-run of chapter 6 reads them back.
    """
    p = get_profile(profile)
    lay = as_layout(run_dir)
    ctx = load_poisoned_run(p, lay, variant, seed=seed, device=device)
    split = lay.require(lay.split(FINAL_SPLIT), "01_data")
    models = final_models(p, lay, ctx)
    identity = dict(format=2, split=data_identity(split), seed=int(seed), variant=variant,
                    models={name: weights_digest(model) for name, model in models.items()})

    def compute() -> dict:
        evaluate = evaluation(lay, p, ctx.manifest, FINAL_SPLIT, seed, device=ctx.device).evaluate
        out, scored = {}, {}  # scored: one evaluation per model object (a rewod may be the oracle's)
        for name, model in progress(models.items(), desc=f"final split, seed {seed}", leave=False):
            if id(model) not in scored:
                scored[id(model)] = slice_scores(evaluate(model, name, save=False))
            out[name] = scored[id(model)]
        return {"models": out}

    scores = cached_step(lay.metric(f"final_{variant}.json"), identity, compute, JSON)
    return {name: pd.DataFrame(cols) for name, cols in scores["models"].items()}


def _costs(table: pd.DataFrame, fraction: float) -> dict[str, float]:
    """Wall time relative to the oracle's training of every run and retraining at ``fraction``, from chapter 5's
    results table (:func:`mrilib.study.results.results_table`)."""
    keep = table["f"].isna() | np.isclose(table["f"].fillna(-1.0), fraction)
    rows = table[keep & table["time vs oracle"].notna()]
    return {str(r["method"]): float(r["time vs oracle"]) for _, r in rows.iterrows()}


def headline(profile: Profile | str, run_dir, seeds, variant: str = MAIN_RECIPE, n_boot: int = 2000,
             device=None) -> pd.DataFrame:
    """The headline table of every seed and pooled, written to the shared ``metrics/headline.csv``.

    ``run_dir`` is any seed's folder (or the shared run folder); ``seeds`` the seeds to pool (each must
    have run chapters 1-5). Columns ``method, metric, seed, value, ci_low, ci_high, n_subjects, note``:
    one row per model, metric and seed (a subject-level bootstrap interval on ``final``) and one with
    ``seed = "all"`` (mean over seeds, Student-t interval across them).
    """
    p = get_profile(profile)
    lay = as_layout(run_dir)
    rows = []
    for s in seeds:
        seed_dir = lay.for_seed(int(s))
        frames = final_scores(p, seed_dir, int(s), variant, device=device)
        costs = _costs(load_unlearning_table(seed_dir, variant), float(p.unlearn.main_fraction))
        rows.append(headline_rows(frames, int(s), costs=costs, n_boot=n_boot))
    table = pool_seeds(pd.concat(rows, ignore_index=True))
    write_headline(table, lay.headline)
    return table


def reported_seed(table: pd.DataFrame) -> str:
    """The rows to report: the pooled ones (``"all"``) for several seeds; the one seed's own (subject-bootstrap
    intervals) when there is one, whose pooled row has no interval."""
    seeds = sorted(set(table["seed"].astype(str)) - {ALL_SEEDS})
    return ALL_SEEDS if len(seeds) != 1 else seeds[0]


def headline_table(table: pd.DataFrame, seed: str = "all", digits: int = 3) -> pd.DataFrame:
    """``headline``'s rows of one seed (default: pooled) as a wide table, method × metric, each cell
    ``value [ci_low, ci_high]`` (``n/a`` where a value is not reported)."""
    sub = table[table["seed"].astype(str) == str(seed)]

    def cell(r) -> str:
        if not np.isfinite(r["value"]):
            return "n/a"
        if np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"]):
            return f"{r['value']:.{digits}f} [{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}]"
        return f"{r['value']:.{digits}f}"

    wide = sub.assign(cell=sub.apply(cell, axis=1)).pivot(index="method", columns="metric", values="cell")
    methods = list(dict.fromkeys(sub["method"]))
    first = [m for m in ("clean", "poisoned", "oracle") if m in methods] + sorted(m for m in methods if m.startswith("rewod"))
    order = first + [m for m in methods if m not in first]
    cols = [c for c in ("ssim", "psnr", "nmse", "effect", "success", "healed", "time") if c in wide.columns]
    return wide.loc[order, cols].fillna("–")


def test_intervals(records: list[dict], references: dict, table: pd.DataFrame, fraction: float, seed: int,
                   n_boot: int = 2000) -> pd.DataFrame:
    """Chapter 5's runs at ``fraction`` and the references on the ``test`` split with subject-level bootstrap
    intervals (one seed), from the per-slice scores their evaluations stored (``table``: chapter 5's results
    table, for the time relative to the oracle): the rows of :func:`headline` (``seed`` = the run's), so that
    chapter 5's comparisons read intervals too."""
    frames = {name: pd.DataFrame(slice_scores(m))
              for name, m in references.items() if "per_slice" in m}
    for r in records:
        if np.isclose(r["fraction"], fraction):
            frames[r["name"]] = pd.DataFrame(slice_scores(r["metrics"]))
    return headline_rows(frames, int(seed), costs=_costs(table, fraction), n_boot=n_boot)
