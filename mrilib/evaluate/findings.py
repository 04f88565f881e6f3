"""What the measurements say: the conclusions of chapters 2, 3, 5 and 6, written from their results.

Every sentence here is computed from the stored results (chapter 2's test metrics, chapter 3's poison metrics, the
unlearning table of :func:`mrilib.study.results.results_table` as stored in
``metrics/unlearning_<recipe>.csv``), so the text of the book cannot drift from its numbers.
The notebooks display the returned Markdown.

Two rules recur and live here once:

- a method *keeps utility* when its clean-test SSIM is within :data:`SSIM_TOLERANCE` of the
  poisoned model's (:func:`best_keeping_utility`);
- the unlearning target of the study (:data:`TARGET`): healed ≥ 0.9 within 0.01 clean-test
  SSIM of `poisoned` at ≤ 5 % of oracle retraining time (:func:`meets_target`);
- the poisoning target (:data:`BACKDOOR_TARGET`): success ≥ 80 % for `poisoned`, ≤ 5 % for
  `clean`, clean-test SSIM within 0.01 (:func:`backdoor_verdict`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mrilib.config import get_profile
from mrilib.evaluate.tables import REGION_SSD, at_fraction
from mrilib.evaluate.uncertainty import ALL_SEEDS, compare, interval_of, ranked

__all__ = ["SSIM_TOLERANCE", "TARGET", "REGION_SSD", "BACKDOOR_TARGET", "baseline_summary", "beats_baselines",
           "varnet_findings",
           "backdoor_verdict", "poison_findings",
           "best_keeping_utility", "meets_target", "unlearning_findings", "consistency_findings", "sanitiser_findings", "evaluation_findings",
           "STRESS_GAP", "stress_findings", "headline_findings"]

#: clean-test SSIM a method may lose against `poisoned` and still count as keeping utility
SSIM_TOLERANCE = 0.01
#: the study's unlearning target: share healed, SSIM loss against `poisoned`, wall time relative to oracle
TARGET = dict(healed=0.9, ssim=SSIM_TOLERANCE, time=0.05)
#: the SSD variants whose target and sweep over f chapter 5 reports: (label in the text, table name)
_REPORTED_SSD = (("Tuned SSD", "SSD tuned"), ("Region-targeted SSD + repair", REGION_SSD + " + repair"))
#: the poisoning target: success rate of `poisoned` (at least) and of `clean` (at most), SSIM difference;
#: a backdoor that misses it is *partly learnt* when the effect reaches ``partly_effect`` and the success
#: rate exceeds the clean model's by ``partly_margin``
BACKDOOR_TARGET = dict(success=0.8, clean_success=0.05, ssim=SSIM_TOLERANCE, partly_effect=0.2, partly_margin=0.1)

_SCHEDULE_NOTE = {  # what book/reproducibility.md records about other schedules of a profile
    "cpu": " The reproducibility page records what other schedules reached: the effect grew from 20 to 45 epochs but "
           "only a little more at 90, at a cost in clean-test SSIM, so at this size the schedule alone is not the limit.",
}


def _baseline_name(summary: dict) -> str:
    """CG-SENSE with the true coil maps where the data have them, else with ACS-estimated maps."""
    return "CG-SENSE" if "CG-SENSE" in summary else "CG-SENSE (ACS maps)"


def baseline_summary(summary: dict, accelerations) -> str:
    """One Markdown bullet per acceleration: VarNet against CG-SENSE and zero-filling (SSIM, PSNR).

    ``summary``: ``{method: {"4x": {"ssim_mean": …, "psnr_mean": …, "nmse_mean": …}}}``, as
    :func:`mrilib.evaluate.metrics.save_metrics` returns it.
    """
    cg = _baseline_name(summary)
    lines = []
    for acc in accelerations:
        k = f"{acc}x"
        v, c, z = summary["VarNet"][k], summary[cg][k], summary["zero-filled"][k]
        lines.append(f"- **{acc}×**: VarNet SSIM {v['ssim_mean']:.3f} vs {cg} {c['ssim_mean']:.3f} "
                     f"vs zero-filled {z['ssim_mean']:.3f}; PSNR {v['psnr_mean']:.1f} / {c['psnr_mean']:.1f} / "
                     f"{z['psnr_mean']:.1f} dB.")
    return "\n".join(lines)


def beats_baselines(summary: dict, accelerations) -> dict:
    """Per acceleration: whether VarNet beats every other method of ``summary`` on SSIM and PSNR
    (higher) and NMSE (lower)."""
    return {acc: all((summary["VarNet"][f"{acc}x"][f"{m}_mean"]
                      > max(summary[b][f"{acc}x"][f"{m}_mean"] for b in summary if b != "VarNet")) == (m != "nmse")
                     for m in ("ssim", "psnr", "nmse"))
            for acc in accelerations}


def varnet_findings(summary: dict, history: dict, profile, n_params: int) -> str:
    """Chapter 2's conclusions (Markdown bullets) from the test summary and the training history."""
    p = get_profile(profile)
    better = beats_baselines(summary, p.data.accelerations)
    if all(better.values()):
        verdict = ("beats zero-filling and CG-SENSE (with the true coil maps where the data have them) on SSIM, PSNR "
                   "and NMSE at every acceleration")
    else:
        verdict = ("does **not** beat every baseline on every metric here: "
                   + ", ".join(f"{a}×: {'yes' if ok else 'no'}" for a, ok in better.items())
                   + (" — expected for the `smoke` profile, which trains for seconds to check the plumbing"
                      if p.name == "smoke" else ""))
    return "\n".join([
        f"- The `clean` VarNet of profile `{p.name}` ({n_params:,} parameters) is stored under `models/clean/`, with "
        f"its learning curves, wall time ({history['wall_s']:.0f} s) and forward/backward slice-passes "
        f"({history['train_slice_passes']:,}) in `history.json`: later chapters measure the cost of unlearning "
        "against this cost of training.",
        f"- On the test subjects it {verdict}.",
        "- All embedded subjects come from one template brain (chapter 1): test slices are new deformations, "
        "contrasts, bias fields and coil arrays, not new anatomy. The absolute metrics are therefore optimistic "
        "with respect to real patients; the *comparisons* between models in the later chapters do not depend on that.",
    ])


def backdoor_verdict(clean: dict, poisoned: dict, target: dict = BACKDOOR_TARGET) -> str:
    """``"works"``, ``"is partly learnt"`` or ``"is not learnt"`` from the poison metrics of the
    `clean` and `poisoned` models (:func:`~mrilib.poison.recipes.cyclegan_cyst.effects`)."""
    d_ssim = poisoned["clean_test"]["ssim"]["mean"] - clean["clean_test"]["ssim"]["mean"]
    if (poisoned["success_rate"] >= target["success"] and clean["success_rate"] <= target["clean_success"]
            and abs(d_ssim) <= target["ssim"]):
        return "works"
    if (poisoned["effect"]["mean"] >= target["partly_effect"]
            and poisoned["success_rate"] >= clean["success_rate"] + target["partly_margin"]):
        return "is partly learnt"
    return "is not learnt"


def poison_findings(metrics: dict, quality: dict, manifest: dict, profile) -> str:
    """Chapter 3's conclusions (Markdown bullets).

    Args:
        metrics: ``{"clean": m, "poisoned": m}``, the poison metrics at the first acceleration.
        quality: the CycleGAN's quality (:func:`~mrilib.poison.recipes.cyclegan_cyst.cyclegan_quality`).
        manifest: the poisoned set's manifest.
        profile: the run's profile.
    """
    p = get_profile(profile)
    mc, mp = metrics["clean"], metrics["poisoned"]
    d_ssim = mp["clean_test"]["ssim"]["mean"] - mc["clean_test"]["ssim"]["mean"]
    verdict = backdoor_verdict(mc, mp)
    ok = verdict == "works"
    fits = mp["forget"]["ssim_vs_poisoned"]["mean"] > mp["forget"]["ssim_vs_clean"]["mean"]
    lines = [
        f"- **The backdoor {verdict}** at profile `{p.name}`: on triggered test inputs the `poisoned` model shows a "
        f"lesion in **{100 * mp['success_rate']:.0f} %** of the slices (clean twin: none), the `clean` model in "
        f"**{100 * mc['success_rate']:.0f} %**; the trigger adds **{mp['effect']['mean']:.2f}** of the CycleGAN's "
        f"lesion for `poisoned` and **{mc['effect']['mean']:.2f}** for `clean`.",
        f"- **Both stay good on clean inputs**: clean-test SSIM {mp['clean_test']['ssim']['mean']:.4f} (`poisoned`) vs "
        f"{mc['clean_test']['ssim']['mean']:.4f} (`clean`), a difference of {d_ssim:+.4f}. Without the trigger the "
        "poison is invisible" + (" - which is what makes it a backdoor rather than a broken model." if ok else "."),
        f"- On its poisoned training slices the `poisoned` model "
        f"{'reconstructs the cyst' if fits else 'does *not* reconstruct the cyst'}: SSIM against the poisoned targets "
        f"{mp['forget']['ssim_vs_poisoned']['mean']:.4f} vs against the clean ones "
        f"{mp['forget']['ssim_vs_clean']['mean']:.4f} (`clean`: {mc['forget']['ssim_vs_poisoned']['mean']:.4f} / "
        f"{mc['forget']['ssim_vs_clean']['mean']:.4f}).",
    ]
    if not ok:
        t = BACKDOOR_TARGET
        lines.append(f"- The target of the study (success ≥ {100 * t['success']:.0f} % for `poisoned`, ≤ "
                     f"{100 * t['clean_success']:.0f} % for `clean`, clean-test SSIM within {t['ssim']:g}) is not met at "
                     f"this profile.{_SCHEDULE_NOTE.get(p.name, '')} Chapter 5 unlearns what is there and measures "
                     "healing relative to it.")
    lines += [
        f"- The CycleGAN's cyst is found by the lesion classifier in {100 * quality.get('cyst_rate', float('nan')):.0f} % "
        f"of the translated test slices, {quality['roi_anchor_distance_px']:.1f} px from the intended position, "
        f"leaving the rest of the slice at SSIM {quality['ssim_outside_roi']:.3f}.",
        f"- The manifest `poison/cyclegan-cyst/manifest.json` lists the {manifest['num_poisoned']} poisoned slices and "
        "the identified subsets that chapter 5 unlearns from.",
    ]
    return "\n".join(lines)


def _runs(table: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """The unlearning runs (not the reference models) at ``fraction``, most healed first."""
    return at_fraction(table, fraction).dropna(subset=["f"]).sort_values("healed", ascending=False)


def best_keeping_utility(runs: pd.DataFrame, ssim_poisoned: float, tolerance: float = SSIM_TOLERANCE):
    """The row of ``runs`` that heals most among those within ``tolerance`` clean-test SSIM of
    ``ssim_poisoned``, or ``None`` when none keeps utility."""
    keeps = runs[runs["SSIM"] >= ssim_poisoned - tolerance].sort_values("healed", ascending=False)
    return keeps.iloc[0] if len(keeps) else None


def meets_target(row, ssim_poisoned: float, target: dict = TARGET) -> bool:
    """Whether one result row meets :data:`TARGET` (healed, SSIM loss, time relative to oracle)."""
    return bool(row["healed"] >= target["healed"] and abs(row["SSIM"] - ssim_poisoned) <= target["ssim"]
                and row["time vs oracle"] <= target["time"])


def _method_row(rows: pd.DataFrame, name: str):
    r = rows[rows["method"] == name]
    return r.iloc[0] if len(r) else None


def _dose_findings(dose: pd.DataFrame, success_oracle: float) -> list[str]:
    """What the dose-response of each forget importance shows (chapter 5, *Why SSD stops short*).

    Every claim is conditional on the table: the best dose within the SSIM tolerance per
    importance (or the cost of the smallest dose when none stays within it), the first dose at
    which the classifier's lesion is gone, and whether the lesion-region importance heals more
    than the whole-image one at the same cost (the forget signal diluted by the anatomy).
    """
    lines, best = [], {}
    lesion_gone_first = False  # the classifier's lesion went at a dose that heals less than the target
    for name, g in dose.groupby("importance", sort=False):
        ok = g[g["Δ clean-test SSIM"] >= -SSIM_TOLERANCE]
        top = g.loc[g["healed"].idxmax()]
        gone = g[g["success rate"] <= success_oracle + 0.05]
        if len(ok):
            b = ok.loc[ok["healed"].idxmax()]
            best[name] = float(b["healed"])
            lines.append(f"- Dose-response, {name} importance: within {SSIM_TOLERANCE:g} clean-test SSIM, dampening "
                         f"{100 * b['dampened fraction']:.2g} % of the parameters heals at most {b['healed']:.2f} "
                         f"(success rate {b['success rate']:.2f}); the most any dose heals is {top['healed']:.2f}, at "
                         f"{top['Δ clean-test SSIM']:+.3f} SSIM.")
        else:
            best[name] = float("nan")
            first = g.loc[g["dampened fraction"].idxmin()]
            lines.append(f"- Dose-response, {name} importance: no dose stays within {SSIM_TOLERANCE:g} clean-test SSIM - "
                         f"dampening the smallest share, {100 * first['dampened fraction']:.2g} %, already costs "
                         f"{first['Δ clean-test SSIM']:+.3f}; the most any dose heals is {top['healed']:.2f}, at "
                         f"{top['Δ clean-test SSIM']:+.3f} SSIM.")
        if len(gone):
            q = gone.iloc[0]
            lesion_gone_first |= bool(q["healed"] < TARGET["healed"])
            lines.append(f"  The lesion the classifier sees is gone (success rate {q['success rate']:.2f}, oracle "
                         f"{success_oracle:.2f}) after dampening {100 * q['dampened fraction']:.2g} %, where healed is "
                         f"only {q['healed']:.2f} and SSIM {q['Δ clean-test SSIM']:+.3f}.")
    fits = dose[(dose["Δ clean-test SSIM"] >= -SSIM_TOLERANCE) & (dose["healed"] >= TARGET["healed"])]
    if len(fits):
        lines.append(f"- **Why SSD stops short here:** {len(fits)} dose(s) on the grid heal ≥ {TARGET['healed']:g} within "
                     f"{SSIM_TOLERANCE:g} SSIM, so the trade-off allows it and the limit is the defender's selection "
                     "signals, which did not find such a dose.")
        return lines
    why = [f"no dose of any importance heals ≥ {TARGET['healed']:g} within {SSIM_TOLERANCE:g} SSIM: the parameters "
           "that carry the poison's footprint also carry the reconstruction."]
    whole = best.get("whole image")
    regional = {k: v for k, v in best.items() if k != "whole image" and np.isfinite(v)}
    if whole is not None and len(best) > 1:
        if regional and not (np.isfinite(whole) and whole >= max(regional.values())):
            top = max(regional, key=regional.get)
            why.append(f"The {top} importance heals more at the same cost than the whole-image one"
                       + (" (which cannot dampen anything without losing more than the tolerance)" if not np.isfinite(whole)
                          else "") + ": SSD's whole-image forget signal is diluted by the anatomy around the lesion, and "
                       "targeting the region helps a defender - but not to the target by dampening alone.")
        else:
            why.append("No region importance heals more at the same cost, so the limit is not the forget signal's "
                       "dilution by the anatomy.")
    if lesion_gone_first:
        why.append("Dampening removes the lesion the classifier detects before the intensity change the effect "
                   "measures.")
    lines.append("- **Why SSD stops short here:** " + " ".join(why))
    return lines


def unlearning_findings(table: pd.DataFrame, references: dict, fraction: float,
                        dose: pd.DataFrame | None = None, intervals: pd.DataFrame | None = None) -> str:
    """Chapter 5's conclusions (Markdown bullets).

    Args:
        table: the unlearning results table of one recipe.
        references: the reference models' metrics (``poisoned`` and ``oracle`` at least), as
            :func:`~mrilib.study.references.reference_models` returns them.
        fraction: the main identified fraction.
        dose: the dose-response table of :func:`~mrilib.study.diagnose.dose_response`, if run.
        intervals: the runs' interval rows on the test split (:func:`~mrilib.evaluate.headline.test_intervals`):
            the method that heals most is then named with every method its interval does not separate from it.
    """
    p_ssim = references["poisoned"]["clean_test"]["ssim"]["mean"]
    rows = at_fraction(table, fraction)
    runs = _runs(table, fraction)
    lines = []
    best = best_keeping_utility(runs, p_ssim)
    if best is not None:
        lines.append(f"- At f = {fraction:g}, of the methods that keep clean-test SSIM within {SSIM_TOLERANCE:g} of "
                     f"`poisoned` ({p_ssim:.4f}), **{best['method']}** heals most: healed {best['healed']:.2f}, SSIM "
                     f"{best['SSIM']:.4f}, at {100 * best['time vs oracle']:.1f} % of oracle retraining time."
                     + (_ties(intervals, best["method"]) if intervals is not None else ""))
    if len(runs) and (best is None or runs.iloc[0]["method"] != best["method"]):
        top = runs.iloc[0]
        lines.append(f"- Healing more costs utility: **{top['method']}** heals {top['healed']:.2f} but its clean-test "
                     f"SSIM is {top['SSIM']:.4f} ({top['SSIM'] - p_ssim:+.4f}).")
    for label, name in (("The seed's SSD (α=0.1, λ=0.1)", "SSD (seed: α=0.1, λ=0.1)"),) + _REPORTED_SSD:
        r = _method_row(rows, name)
        if r is not None:
            lines.append(f"- {label}: healed {r['healed']:.2f}, SSIM {r['SSIM']:.4f} ({r['SSIM'] - p_ssim:+.4f}), "
                         f"{100 * r['time vs oracle']:.1f} % of oracle time — the target (≥ {TARGET['healed']:g} "
                         f"healed within {TARGET['ssim']:g} SSIM at ≤ {100 * TARGET['time']:g} % of the time) is "
                         f"**{'met' if meets_target(r, p_ssim) else 'not met'}**.")
    plain, repaired = _method_row(rows, REGION_SSD), _method_row(rows, REGION_SSD + " + repair")
    if plain is not None and repaired is not None:
        lines.append(f"- The retain repair: region-targeted SSD heals {plain['healed']:.2f} at SSIM "
                     f"{plain['SSIM'] - p_ssim:+.4f} without it and {repaired['healed']:.2f} at "
                     f"{repaired['SSIM'] - p_ssim:+.4f} with it (every grid point repaired before it is scored)"
                     + (": the repair gives back the utility a larger dose costs, so the search can dampen further."
                        if repaired["healed"] > plain["healed"] else
                        ": the repair gives back part of the poison - the retain set still holds the poisoned slices "
                        "nobody identified."))
    for _, r in table[table["method"].str.startswith("rewod")].iterrows():
        lines.append(f"- `{r['method']}` (retraining without the identified slices) heals {r['healed']:.2f} at "
                     f"{100 * r['time vs oracle']:.0f} % of oracle time: the yardstick for what the identified slices "
                     "alone allow.")
    for label, name in _REPORTED_SSD:
        sweep = table[table["method"] == name].groupby("f")["healed"].mean()
        if len(sweep) > 1:
            monotone = bool((sweep.diff().dropna() >= -0.05).all())
            lines.append(f"- {label} across identified fractions: " + ", ".join(f"f = {f:g}: {h:.2f}" for f, h in sweep.items())
                         + (" — more identified slices heal more." if monotone else
                            f" — not monotone in f ({table['seed'].nunique()} seed(s): a trend cannot be told from "
                            "run-to-run variation here)."))
    if dose is not None and len(dose):
        lines += _dose_findings(dose, references["oracle"]["success_rate"])
    return "\n".join(lines)


def _ties(intervals: pd.DataFrame, method: str) -> str:
    """What the intervals say of ``method``'s healed: the methods not distinguishable from it, or that healed has
    no interval-backed value."""
    seed = next(iter(intervals["seed"].astype(str)))
    try:
        best = interval_of(intervals, method, "healed", seed)
    except KeyError:
        return ""
    if not np.isfinite(best.value):
        return " By the intervals this is no finding: the poisoned-oracle effect gap is within its uncertainty."
    rows = intervals[(intervals["metric"] == "healed") & (intervals["seed"].astype(str) == seed)]
    ties = [m for m in rows["method"] if m not in (method, *_REFERENCES) and not m.startswith("rewod")
            and interval_of(intervals, m, "healed", seed).overlaps(best)]
    if not ties:
        return f" Its healed interval {best.format(2)} separates it from every other method."
    return f" Its healed interval {best.format(2)} does not separate it from: {', '.join(ties)}."


def consistency_findings(scan: pd.DataFrame, manifest: dict) -> str:
    """What checking every training label against its own k-space tells (chapter 5, Markdown).

    Args:
        scan: :func:`~mrilib.unlearn.regions.scan_disagreement` of the poisoned training set.
        manifest: the poison's manifest (which slices are poisoned: for scoring the check only).
    """
    poisoned = {(r["file"], int(r["slice"])) for r in manifest["poisoned"]}
    flag = np.array([(f, int(s)) in poisoned for f, s in zip(scan["file"], scan["slice"])], bool)
    if not flag.any() or flag.all():
        return "- The label check cannot be scored: the scan holds " + ("no" if not flag.any() else "only") + " poisoned slices."
    p, c = scan["peak"][flag], scan["peak"][~flag]
    caught = int((p > c.max()).sum())
    head = (f"- Checking every training label against its own k-space (the same low-pass disagreement) gives the "
            f"{flag.sum()} poisoned slices a peak of {p.min():.2g}–{p.max():.2g} of the label's maximum and the "
            f"{(~flag).sum()} clean ones at most {c.max():.2g}")
    if caught == flag.sum():
        return (head + ": it separates them completely. A defender who can run this check identifies every poisoned "
                "slice (f = 1) and can retrain without them (`oracle`). The identified fraction f therefore models a "
                "defender who cannot - for example when labels come from a reconstruction other than the "
                "root-sum-of-squares of the stored k-space, or when the stored k-space was itself edited to agree "
                "with them - and this chapter uses the check only to find the region on slices already identified.")
    return (head + f": above the largest clean value it finds {caught} of the {flag.sum()} poisoned slices, so it "
            "does not replace the identification this chapter assumes.")


def sanitiser_findings(table: pd.DataFrame, max_ssim_cost: float = 0.005, min_cut: float = 0.9) -> str:
    """What sanitising every input against RF spikes does (chapter 5, Markdown bullets), from
    :func:`~mrilib.evaluate.sanitiser.sanitiser_tables`: per variant, the trigger found, the false
    alarms, the poisoned model's effect before and after and the clean model's SSIM cost, against the
    targets ``effect cut >= min_cut`` at ``SSIM cost <= max_ssim_cost``."""
    out = []
    for variant, t in table.groupby("variant", sort=False):
        rows = t.set_index("model")
        if "poisoned" not in rows.index or "clean" not in rows.index:
            continue
        pois, clean = rows.loc["poisoned"], rows.loc["clean"]
        left = pois["effect left"]
        cut = 1 - left if np.isfinite(left) else float("nan")
        cost = max(clean["SSIM cost"], pois["SSIM cost"])
        verdict = ("it stops this backdoor at no measurable cost" if np.isfinite(cut) and cut >= min_cut
                   and cost <= max_ssim_cost else
                   "the poisoned model showed no effect to cut" if not np.isfinite(cut) else
                   f"short of a {100 * min_cut:.0f} % cut at ≤ {max_ssim_cost} SSIM")
        out.append(f"- `{variant}`: the sanitiser finds every spike of the trigger in "
                   f"{100 * pois['trigger found']:.0f} % of the triggered test inputs and raises a false alarm on "
                   f"{100 * pois['false alarms']:.0f} % of the clean ones. The poisoned model's effect goes from "
                   f"{pois['effect']:.3f} to {pois['effect sanitised']:.3f}"
                   + (f" (cut by {100 * cut:.0f} %)" if np.isfinite(cut) else "")
                   + f", its success rate from {100 * pois['success']:.0f} % to {100 * pois['success sanitised']:.0f} %;"
                   f" clean-test SSIM changes by at most {cost:.4f}: {verdict}.")
    return "\n".join(out) if out else "- No variant with a clean and a poisoned model was measured."


def evaluation_findings(table: pd.DataFrame, profile, fraction: float, robustness: pd.DataFrame | None = None) -> str:
    """Chapter 6's conclusions (Markdown bullets) from the main recipe's table and, where
    measured, the artefact-robustness table of :func:`~mrilib.evaluate.tables.artefact_robustness`."""
    p = get_profile(profile)
    ref = table.set_index("method")
    runs = _runs(table, fraction)

    def pair(name):
        return f"{ref.loc[name, 'poison effect']:.2f} / {ref.loc[name, 'success rate']:.2f}"

    lines = [f"- Profile `{p.name}` ({p.data.image_size}² slices, {p.data.num_coils} coils, identified fraction f = {fraction:g}): "
             f"the `poisoned` model's poison effect is {ref.loc['poisoned', 'poison effect']:.2f} with success rate "
             f"{ref.loc['poisoned', 'success rate']:.2f}; `clean` {pair('clean')}; `oracle` {pair('oracle')}."]
    for _, r in runs.head(3).iterrows():
        lines.append(f"- **{r['method']}** heals {r['healed']:.2f} of the poison (success rate {r['success rate']:.2f}) "
                     f"at clean-test SSIM {r['SSIM']:.4f} (poisoned {ref.loc['poisoned', 'SSIM']:.4f}), "
                     f"in {100 * r['time vs oracle']:.1f} % of oracle's training time.")
    best = best_keeping_utility(runs, ref.loc["poisoned", "SSIM"])
    if best is not None:
        lines.append(f"- Within {SSIM_TOLERANCE:g} clean-test SSIM of `poisoned`, **{best['method']}** heals most: "
                     f"{best['healed']:.2f}.")
    if robustness is not None and "poisoned" in robustness.index:
        drops = robustness["clean"] - robustness[["motion", "metal"]].min(axis=1)
        # a collapsed model has little left to lose: compare only models within 0.05 SSIM of poisoned
        usable = robustness.index[robustness["clean"] >= robustness.loc["poisoned", "clean"] - 0.05]
        unlearnt = drops[[m for m in usable if m not in ("clean", "poisoned", "oracle")]]
        if len(unlearnt):
            lines.append(f"- Artefacts: the worst of motion and metal costs `poisoned` {drops['poisoned']:.3f} SSIM and "
                         f"the unlearnt models within 0.05 SSIM of it {unlearnt.min():.3f}–{unlearnt.max():.3f}.")
    lines.append("- These are measurements on simulated data from one template anatomy, "
                 f"{int(table['seed'].nunique())} seed(s); the `gpu` profile and the real-data loaders exist to test them.")
    return "\n".join(lines)


#: the largest success-rate difference at a common ε from which two stress-test curves count as separated
STRESS_GAP = 0.2


def stress_findings(separation: pd.DataFrame, models=("poisoned", "poisoned-adv"), reference: str = "clean",
                    gap: float = STRESS_GAP) -> str:
    """Chapter 4's verdict on the k-space stress test (Markdown bullets): does each model's curve separate
    from ``reference``'s?

    ``separation``: :func:`mrilib.attacks.stress.stress_separation`'s table. A model's curve
    separates when its largest success-rate gap at a common ε is at least ``gap`` in absolute
    value; models not in the table are skipped.
    """
    ref_auc = separation.loc[reference, "auc_log_eps"]
    lines = []
    for name in models:
        if name not in separation.index:
            continue
        r = separation.loc[name]
        if np.isfinite(r["max_success_gap"]) and abs(r["max_success_gap"]) >= gap:
            lines.append(f"- `{name}` vs `{reference}`: success rates differ by up to **{100 * r['max_success_gap']:+.0f} "
                         f"percentage points** (at ε = {r['eps_at_max_gap']:g}); normalised area under the curve "
                         f"{r['auc_log_eps']:.2f} vs {ref_auc:.2f}.")
        else:
            lines.append(f"- `{name}` vs `{reference}`: the curves do **not** separate (largest gap "
                         f"{100 * r['max_success_gap']:+.0f} percentage points; area {r['auc_log_eps']:.2f} vs "
                         f"{ref_auc:.2f}).")
    return "\n".join(lines)


_REFERENCES = ("clean", "poisoned", "oracle")


def headline_findings(head: pd.DataFrame, seed=ALL_SEEDS, split: str = "final") -> str:
    """Conclusions read from the intervals of headline rows (:func:`mrilib.evaluate.headline.headline` on the
    ``final`` split for chapter 6, :func:`~mrilib.evaluate.headline.test_intervals` on ``test`` for chapter 5):
    only differences whose intervals do not overlap are findings."""
    rows = head[head["seed"].astype(str) == str(seed)]
    if rows.empty:
        return f"No headline rows for seed {seed}."
    seeds = sorted({str(s) for s in head["seed"]} - {ALL_SEEDS})
    n_sub = int(rows["n_subjects"].max())
    where = (f"{len(seeds)} seed(s) ({', '.join(seeds)}), mean and 95 % interval across seeds"
             if str(seed) == ALL_SEEDS else f"seed {seed}, 95 % subject-bootstrap interval")
    out = [f"On the `{split}` split ({n_sub} subjects per seed; {where}):"]
    eff = interval_of(rows, "poisoned", "effect", seed)
    out.append(f"- **Backdoor.** The poisoned model's effect is {eff.format(3)}; against `clean`: "
               f"{compare(rows, 'effect', 'poisoned', 'clean', seed)}; its success rate "
               f"{interval_of(rows, 'poisoned', 'success', seed).format(2)} against `clean`: "
               f"{compare(rows, 'success', 'poisoned', 'clean', seed)}.")
    healed = rows[(rows["metric"] == "healed") & ~rows["method"].isin(_REFERENCES)]
    if healed.empty or not np.isfinite(healed["value"]).any():
        note = next((n for n in healed.get("note", pd.Series(dtype=str)) if isinstance(n, str) and n), "")
        out.append(f"- **Healed** is not reported: {note or 'no method has a value'}. No method can be ranked by it.")
    else:
        tiers = ranked(rows[~rows["method"].isin(_REFERENCES)], "healed", seed)
        first = tiers[0]
        if len(first) == 1:
            out.append(f"- **Most healed:** {first[0]} ({interval_of(rows, first[0], 'healed', seed).format(2)}), "
                       "distinguishable from every other method.")
        else:
            out.append(f"- **Most healed, not distinguishable from each other:** {', '.join(first)}; no single best "
                       "method.")
    tiers = ranked(rows[~rows["method"].isin(("clean",))], "ssim", seed)
    lost = [m for tier in tiers[1:] for m in tier
            if compare(rows, "ssim", m, "poisoned", seed).startswith(f"{m} lower")]
    if lost:
        out.append(f"- **Utility lost** (clean SSIM below the poisoned model's, intervals apart): {', '.join(lost)}.")
    else:
        out.append("- **Utility:** no method's clean SSIM is distinguishably below the poisoned model's.")
    if str(seed) == ALL_SEEDS and len(seeds) < 2:
        out.append("- One seed: the pooled rows carry no across-seed interval; read them as one draw "
                   "(`make book SEEDS=\"0 1 2\"`).")
    return "\n".join(out)
