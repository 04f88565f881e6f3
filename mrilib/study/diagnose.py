"""Why SSD stops short: dose-response curves of dampening.

SSD removes the parameters whose importance to the forget set most exceeds their
importance to the rest. How much poison that removes, and what it costs, depends on
how many parameters it dampens. These functions trace that dose-response:

- :func:`search_traces`: the curves the defender saw while tuning (the stored grid of
  tuned SSD and the steps of automatic α: identified slices' lesion score, validation SSIM);
- :func:`dose_response`: the same dampening rule on a grid of dampened shares, scored
  also on the *test* poison effect, success rate and clean-test SSIM (analysis only:
  nothing here selects a hyper-parameter), for several forget importances — the
  whole-image Fisher importance of SSD, and the importance of the error inside the
  region where the poison put its lesion (:func:`~mrilib.unlearn.ssd.region_importance`),
  which asks whether the forget signal is diluted by the anatomy around the lesion, and
  that of the region the defender finds (:func:`~mrilib.unlearn.regions.disagreement_regions`);
- :func:`signal_versus_judge`: how well the defender's signal (which selects) agrees with the judge
  (which scores), model by model.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd

from mrilib.poison.judge import signal_agreement
from mrilib.run.device import default_device
from mrilib.run.progress import progress
from mrilib.study.execute import load_unlearnt, study_inputs
from mrilib.study.references import PoisonedRun
from mrilib.study.results import healed
from mrilib.unlearn.base import UnlearnError
from mrilib.unlearn.regions import defender_effect
from mrilib.unlearn.ssd import alpha_for_fraction, ssd_dampen

__all__ = ["search_traces", "dose_response", "DOSES", "signal_versus_judge"]

#: Shares of all parameters dampened in :func:`dose_response`.
DOSES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


def search_traces(records: list[dict], methods=("ssd-tuned", "ssd-auto")):
    """The stored hyper-parameter searches of SSD runs as one table.

    One row per grid point of every run of ``methods`` without repair: ``label``
    (method and f), ``dampened fraction``, ``identified effect / poisoned`` (the
    defender's lesion score relative to the poisoned model's) and ``Δ validation SSIM``
    (tuned SSD only; NaN for automatic α).
    """
    rows = []
    for r in records:
        info = r.get("info") or {}
        scored_unrepaired = info.get("repair_steps") and not info.get("repair_before_scoring")  # not what it returned
        if r["method"] not in methods or scored_unrepaired or str(info.get("method", "")).startswith("lf-"):
            continue
        label = f"{r['name']} f={r['fraction']:g}"
        u0, e0 = info.get("original_utility"), info.get("original_effect")
        for t in info.get("trace") or []:
            rows.append({"label": label, "dampened fraction": t["dampened_fraction"],
                         "identified effect / poisoned": t["effect"] / e0 if e0 else np.nan,
                         "Δ validation SSIM": t["utility"] - u0 if "utility" in t and u0 is not None else np.nan})
    return pd.DataFrame(rows, columns=["label", "dampened fraction", "identified effect / poisoned", "Δ validation SSIM"])


def dose_response(ctx: PoisonedRun, forget_importances: dict, imp_retain: dict, references: dict, signals: dict,
                  doses=DOSES, show_progress: bool = True, device=None):
    """Dampen the poisoned model at each share in ``doses`` and measure what it buys and costs.

    Args:
        ctx: the poisoned run (its model is copied, never changed).
        forget_importances: name → forget importance to compare (e.g. ``whole image``:
            :func:`~mrilib.unlearn.ssd.fisher_importance`, ``lesion region``:
            :func:`~mrilib.unlearn.ssd.region_importance` on
            :func:`~mrilib.unlearn.regions.lesion_regions`), each
            against ``imp_retain`` with λ = 1 and α from :func:`~mrilib.unlearn.ssd.alpha_for_fraction`;
            a ``(forget, retain)`` pair brings its own retain importance (e.g. both of single slices).
            An importance that is zero everywhere (nothing to dampen) is skipped with a warning.
        references: metrics of ``poisoned`` and ``oracle`` (for ``healed``).
        signals: the defender's ``effect_fn`` and ``utility_fn`` (:func:`~mrilib.study.execute.study_inputs`).

    Each point is scored with the defender's signals and on the test set with
    ``ctx.evaluate`` (not saved). The dampened copies live on ``device`` (default: the run's,
    ``ctx.device``).

    Returns:
        a DataFrame: ``importance``, ``dampened fraction``, ``alpha``, ``identified effect /
        poisoned``, ``Δ validation SSIM``, ``healed``, ``success rate``, ``Δ clean-test SSIM``.
    """
    model = ctx.poisoned
    device = default_device(ctx.device if device is None else device)
    e0, u0 = float(signals["effect_fn"](model)), float(signals["utility_fn"](model))
    e_p, e_o = references["poisoned"]["effect"]["mean"], references["oracle"]["effect"]["mean"]
    s_p = references["poisoned"]["clean_test"]["ssim"]["mean"]
    rows = []
    grid = [(name, d) for name in forget_importances for d in doses]
    skipped = set()
    for name, dose in progress(grid, desc="dose-response", disable=not show_progress):
        if name in skipped:
            continue
        imp_f, imp_r = (forget_importances[name] if isinstance(forget_importances[name], tuple)
                        else (forget_importances[name], imp_retain))
        try:
            alpha = alpha_for_fraction(imp_f, imp_r, dose)
        except UnlearnError as err:
            warnings.warn(f"dose-response: {name} skipped ({err})", stacklevel=2)
            skipped.add(name)
            continue
        work = copy.deepcopy(model).to(device)
        stats = ssd_dampen(work, imp_f, imp_r, alpha, 1.0)
        m = ctx.evaluate(work.eval(), f"dose-{name}-{dose:g}", save=False)
        rows.append({"importance": name, "dampened fraction": stats["fraction"], "alpha": alpha,
                     "identified effect / poisoned": float(signals["effect_fn"](work)) / e0,
                     "Δ validation SSIM": float(signals["utility_fn"](work)) - u0,
                     "healed": healed(m["effect"]["mean"], e_p, e_o), "success rate": m["success_rate"],
                     "Δ clean-test SSIM": m["clean_test"]["ssim"]["mean"] - s_p})
    return pd.DataFrame(rows, columns=["importance", "dampened fraction", "alpha", "identified effect / poisoned",
                                       "Δ validation SSIM", "healed", "success rate", "Δ clean-test SSIM"])


def signal_versus_judge(ctx: PoisonedRun, profile, run_dir, records: list[dict], references: dict,
                        fraction: float) -> tuple[pd.DataFrame, dict]:
    """The defender's signal against the judge, for the references and every stored run at ``fraction``.

    For each model: the defender's signal on the identified slices at ``fraction``
    (:func:`~mrilib.unlearn.regions.defender_effect`, what tuned SSD and automatic α select with) and the
    judge's poison effect and success rate on the test split (its evaluation, as stored). Returns the
    table (``model``, ``defender signal``, ``judge effect``, ``judge success``) and
    :func:`~mrilib.poison.judge.signal_agreement`'s rank correlations over its rows.
    """
    inp = study_inputs(ctx, profile, run_dir)
    forget, _ = inp.sets(fraction)
    signal = defender_effect(ctx.train_dir, ctx.manifest, forget, device=inp.device)
    rows = [(name, signal(model), references[name]["effect"]["mean"], references[name]["success_rate"])
            for name, model in (("clean", ctx.clean), ("poisoned", ctx.poisoned)) if name in references]
    for r in progress(records, desc="defender's signal", leave=False):
        if np.isclose(r["fraction"], fraction):
            model = load_unlearnt(run_dir, ctx.variant, r["label"], ctx.poisoned)
            rows.append((r["name"], signal(model), r["metrics"]["effect"]["mean"], r["metrics"]["success_rate"]))
    table = pd.DataFrame(rows, columns=["model", "defender signal", "judge effect", "judge success"])
    return table, signal_agreement(table[["defender signal", "judge effect", "judge success"]].to_numpy())
