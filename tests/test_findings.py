"""The conclusions of chapters 5 and 6 are computed from the tables: checked on hand-made ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mrilib.config import MAIN_RECIPE, UnlearnConfig, get_profile
from mrilib.evaluate import findings
from mrilib.evaluate.tables import at_fraction

NAN = np.nan


def _table():
    """References, two methods at f = 0.25 (one heals by collapsing, one keeps utility), SSD tuned at f = 0.5."""
    return pd.DataFrame({
        "method": ["clean", "poisoned", "oracle", "rewod f=0.25", "SSD (seed: α=0.1, λ=0.1)", "SSD tuned", "CF",
                   "SSD tuned"],
        "f": [NAN, NAN, NAN, NAN, 0.25, 0.25, 0.25, 0.5],
        "seed": [NAN, NAN, NAN, NAN, 0, 0, 0, 0],
        "SSIM": [0.86, 0.85, 0.86, 0.858, 0.30, 0.845, 0.851, 0.84],
        "poison effect": [0.0, 0.4, 0.0, 0.08, 0.0, 0.02, 0.39, 0.3],
        "success rate": [0.0, 0.38, 0.05, 0.0, 0.08, 0.06, 0.4, 0.2],
        "healed": [1.0, 0.0, 1.0, 0.8, 1.0, 0.95, 0.025, 0.25],
        "time vs oracle": [NAN, NAN, 1.0, 1.25, 0.027, 0.031, 0.016, 0.03],
    })


REFS = {"poisoned": {"clean_test": {"ssim": {"mean": 0.85}}}, "oracle": {"success_rate": 0.05}}


def test_at_fraction_keeps_references_and_the_runs_at_f():
    rows = at_fraction(_table(), 0.25)
    assert list(rows["method"]) == ["clean", "poisoned", "oracle", "rewod f=0.25", "SSD (seed: α=0.1, λ=0.1)",
                                    "SSD tuned", "CF"]
    assert list(at_fraction(_table(), 0.5)["method"])[-1] == "SSD tuned" and len(at_fraction(_table(), 0.5)) == 5


def test_best_method_keeping_utility_ignores_a_collapsed_one():
    runs = at_fraction(_table(), 0.25).dropna(subset=["f"])
    best = findings.best_keeping_utility(runs, 0.85)
    # the seed's SSD heals 1.0 but loses 0.55 SSIM; SSD tuned (−0.005) heals 0.95, CF (+0.001) 0.025
    assert best["method"] == "SSD tuned"
    assert findings.best_keeping_utility(runs, 0.87) is None  # nobody within 0.01 of 0.87 (best is 0.851)
    assert findings.best_keeping_utility(runs, 0.86)["method"] == "CF"


@pytest.mark.parametrize("healed, ssim, time, ok", [
    (0.95, 0.845, 0.031, True),   # all three met
    (0.89, 0.845, 0.031, False),  # heals too little
    (0.95, 0.835, 0.031, False),  # −0.015 SSIM
    (0.95, 0.845, 0.06, False),   # 6 % of the oracle's time
])
def test_target_needs_all_three(healed, ssim, time, ok):
    assert findings.meets_target({"healed": healed, "SSIM": ssim, "time vs oracle": time}, 0.85) is ok


def test_unlearning_findings_from_the_table():
    text = findings.unlearning_findings(_table(), REFS, 0.25)
    lines = text.splitlines()
    assert lines[0].startswith("- At f = 0.25") and "**SSD tuned** heals most: healed 0.95, SSIM 0.8450" in lines[0]
    assert "**SSD (seed: α=0.1, λ=0.1)** heals 1.00 but its clean-test SSIM is 0.3000 (-0.5500)" in lines[1]
    assert "The seed's SSD (α=0.1, λ=0.1): healed 1.00" in text and "is **not met**" in lines[2]
    assert "Tuned SSD: healed 0.95, SSIM 0.8450 (-0.0050), 3.1 % of oracle time" in lines[3] and "is **met**" in lines[3]
    assert "`rewod f=0.25` (retraining without the identified slices) heals 0.80 at 125 % of oracle time" in text
    # 0.95 at f = 0.25, 0.25 at f = 0.5: a drop of 0.7, so not monotone
    assert "f = 0.25: 0.95, f = 0.5: 0.25 — not monotone in f (1 seed(s)" in text
    assert "Why SSD stops short" not in text  # no dose-response given


def test_region_targeted_ssd_with_and_without_repair():
    from mrilib.study.plan import DEFAULT_PLAN

    names = {name for _, name, *_ in DEFAULT_PLAN}
    assert {findings.REGION_SSD, findings.REGION_SSD + " + repair"} <= names
    extra = pd.DataFrame({"method": [findings.REGION_SSD, findings.REGION_SSD + " + repair"], "f": [0.25, 0.25],
                          "seed": [0, 0], "SSIM": [0.846, 0.843], "healed": [0.22, 0.61], "time vs oracle": [0.05, 0.09]})
    text = findings.unlearning_findings(pd.concat([_table(), extra], ignore_index=True), REFS, 0.25)
    assert ("region-targeted SSD heals 0.22 at SSIM -0.0040 without it and 0.61 at -0.0070 with it "
            "(every grid point repaired before it is scored): the repair gives back the utility") in text
    assert "Region-targeted SSD + repair: healed 0.61, SSIM 0.8430 (-0.0070), 9.0 % of oracle time" in text
    assert "is **not met**" in text.split("Region-targeted SSD + repair: healed")[1].splitlines()[0]  # 9 % > 5 %
    worse = extra.assign(healed=[0.3, 0.1])
    assert "gives back part of the poison" in findings.unlearning_findings(pd.concat([_table(), worse]), REFS, 0.25)


def test_dose_response_findings_say_whether_a_dose_fits():
    dose = pd.DataFrame({
        "importance": ["whole image"] * 3 + ["lesion region"] * 3,
        "dampened fraction": [1e-3, 1e-2, 3e-2] * 2,
        "healed": [0.3, 0.6, 1.0, 0.5, 0.8, 1.0],
        "success rate": [0.3, 0.08, 0.0, 0.1, 0.0, 0.0],
        "Δ clean-test SSIM": [-0.001, -0.008, -0.2, -0.002, -0.009, -0.1],
    })
    text = findings.unlearning_findings(_table(), REFS, 0.25, dose)
    assert ("whole image importance: within 0.01 clean-test SSIM, dampening 1 % of the parameters heals at most 0.60 "
            "(success rate 0.08); the most any dose heals is 1.00, at -0.200 SSIM") in text
    # success ≤ oracle + 0.05 = 0.10: first reached at 1 % (whole image, 0.08) and at 0.1 % (lesion region, 0.10)
    assert "is gone (success rate 0.08, oracle 0.05) after dampening 1 %, where healed is only 0.60" in text
    assert "is gone (success rate 0.10, oracle 0.05) after dampening 0.1 %, where healed is only 0.50" in text
    assert "no dose of any importance heals ≥ 0.9 within 0.01 SSIM" in text
    # within 0.01 SSIM the region importance heals 0.80, the whole-image one 0.60: diluted by the anatomy
    assert "The lesion region importance heals more at the same cost than the whole-image one:" in text
    assert "removes the lesion the classifier detects before the intensity change" in text  # gone at healed 0.60
    worse = dose.assign(healed=np.where(dose["importance"] == "lesion region", 0.2, dose["healed"]))
    assert "No region importance heals more at the same cost" in findings.unlearning_findings(_table(), REFS, 0.25, worse)
    # with a second region importance, the one that heals most within the tolerance is named
    found = dose[dose["importance"] == "lesion region"].assign(importance="found region", healed=[0.5, 0.85, 1.0])
    text = findings.unlearning_findings(_table(), REFS, 0.25, pd.concat([dose, found]))
    assert "The found region importance heals more at the same cost" in text
    # no whole-image dose within the tolerance: say what the smallest costs; the region still heals more
    costly = dose.assign(**{"Δ clean-test SSIM": np.where(dose["importance"] == "whole image", -0.03,
                                                          dose["Δ clean-test SSIM"])})
    text = findings.unlearning_findings(_table(), REFS, 0.25, costly)
    assert ("whole image importance: no dose stays within 0.01 clean-test SSIM - dampening the smallest share, 0.1 %, "
            "already costs -0.030") in text
    assert "(which cannot dampen anything without losing more than the tolerance)" in text
    never = dose.assign(**{"success rate": 0.3})  # the classifier's lesion is never gone
    assert "before the intensity change" not in findings.unlearning_findings(_table(), REFS, 0.25, never)
    dose.loc[4, "healed"] = 0.92  # 1 % of the lesion-region importance now fits the target
    assert "1 dose(s) on the grid heal ≥ 0.9 within 0.01 SSIM" in findings.unlearning_findings(_table(), REFS, 0.25, dose)


def test_evaluation_findings_from_the_table():
    robust = pd.DataFrame({"clean": [0.86, 0.85, 0.86, 0.84, 0.30], "motion": [0.82, 0.82, 0.83, 0.80, 0.30],
                           "metal": [0.76, 0.77, 0.77, 0.75, 0.31]},
                          index=["clean", "poisoned", "oracle", "ssd-tuned", "ssd-seed"])
    text = findings.evaluation_findings(_table(), "cpu", 0.25, robust)
    lines = text.splitlines()
    assert "poison effect is 0.40 with success rate 0.38; `clean` 0.00 / 0.00; `oracle` 0.00 / 0.05" in lines[0]
    assert [ln.split("**")[1] for ln in lines[1:4]] == ["SSD (seed: α=0.1, λ=0.1)", "SSD tuned", "CF"]
    assert "Within 0.01 clean-test SSIM of `poisoned`, **SSD tuned** heals most: 0.95." in text
    # poisoned loses 0.85 − 0.77 = 0.08; ssd-tuned 0.84 − 0.75 = 0.09; the collapsed ssd-seed is left out
    assert "costs `poisoned` 0.080 SSIM and the unlearnt models within 0.05 SSIM of it 0.090–0.090" in text
    assert "1 seed(s)" in lines[-1]
    assert "Artefacts" not in findings.evaluation_findings(_table(), "cpu", 0.25)


def test_other_recipes_come_from_the_profile():
    import dataclasses

    assert get_profile("smoke").other_recipes == ("adversarial-tumour",)
    cpu = get_profile("cpu")
    assert MAIN_RECIPE in cpu.unlearn.recipes and cpu.other_recipes == ()
    both = dataclasses.replace(cpu, unlearn=dataclasses.replace(cpu.unlearn, recipes=(MAIN_RECIPE, "adversarial-tumour")))
    assert both.other_recipes == ("adversarial-tumour",)
    assert dataclasses.replace(cpu, unlearn=UnlearnConfig()).other_recipes == ()  # default: the main one only


def _poison_metrics(success, effect, ssim, forget_poisoned=0.90, forget_clean=0.89):
    return {"success_rate": success, "effect": {"mean": effect}, "clean_test": {"ssim": {"mean": ssim}},
            "forget": {"ssim_vs_poisoned": {"mean": forget_poisoned}, "ssim_vs_clean": {"mean": forget_clean}}}


@pytest.mark.parametrize("success, effect, ssim, verdict", [
    (0.85, 0.9, 0.855, "works"),
    (0.85, 0.9, 0.840, "is partly learnt"),  # −0.02 SSIM against clean: not a clean backdoor
    (0.38, 0.41, 0.855, "is partly learnt"),
    (0.38, 0.15, 0.855, "is not learnt"),    # effect below 0.2
    (0.08, 0.41, 0.855, "is not learnt"),    # success only 0.08 above clean's 0.0 (margin 0.1)
])
def test_backdoor_verdict_tiers(success, effect, ssim, verdict):
    clean = _poison_metrics(0.0, -0.02, 0.86)
    assert findings.backdoor_verdict(clean, _poison_metrics(success, effect, ssim)) == verdict


def test_poison_findings_name_the_target_only_when_missed():
    q = {"cyst_rate": 0.906, "roi_anchor_distance_px": 1.9, "ssim_outside_roi": 0.986}
    clean = _poison_metrics(0.0, -0.02, 0.8617, 0.85, 0.88)
    text = findings.poison_findings({"clean": clean, "poisoned": _poison_metrics(0.375, 0.41, 0.8547)}, q,
                                    {"num_poisoned": 80}, "cpu")
    assert "**The backdoor is partly learnt** at profile `cpu`" in text and "**38 %**" in text
    assert "a difference of -0.0070" in text and "reconstructs the cyst" in text
    assert "is not met at this profile. The reproducibility page records" in text
    assert "found by the lesion classifier in 91 %" in text and "1.9 px" in text and "the 80 poisoned slices" in text
    works = findings.poison_findings({"clean": clean, "poisoned": _poison_metrics(0.9, 0.9, 0.86, 0.85, 0.88)}, q,
                                     {"num_poisoned": 80}, "smoke")
    assert "**The backdoor works**" in works and "is not met" not in works and "rather than a broken model" in works
    assert "does *not* reconstruct the cyst" in works


def _summary(varnet_ssim):
    """A test summary of three methods at 4× and 8× (SSIM, PSNR, NMSE means)."""
    def m(ssim, psnr, nmse):
        return {"ssim_mean": ssim, "psnr_mean": psnr, "nmse_mean": nmse}
    return {"zero-filled": {"4x": m(0.55, 19.8, 0.077), "8x": m(0.48, 18.0, 0.1)},
            "CG-SENSE": {"4x": m(0.66, 22.0, 0.048), "8x": m(0.56, 20.0, 0.07)},
            "VarNet": {"4x": m(varnet_ssim, 24.9, 0.024), "8x": m(0.795, 23.0, 0.03)}}


def test_varnet_findings_say_whether_every_baseline_is_beaten():
    assert findings.beats_baselines(_summary(0.862), (4, 8)) == {4: True, 8: True}
    assert findings.beats_baselines(_summary(0.60), (4, 8)) == {4: False, 8: True}  # CG-SENSE has 0.66 at 4×
    hist = {"wall_s": 651.7, "train_slice_passes": 14400}
    text = findings.varnet_findings(_summary(0.862), hist, "cpu", 12345)
    assert "(12,345 parameters)" in text and "wall time (652 s)" in text and "(14,400)" in text
    assert "beats zero-filling and CG-SENSE" in text
    bad = findings.varnet_findings(_summary(0.60), hist, "smoke", 10)
    assert "does **not** beat every baseline on every metric here: 4×: no, 8×: yes — expected for the `smoke`" in bad
    lines = findings.baseline_summary(_summary(0.862), (4, 8)).splitlines()
    assert lines[0] == "- **4×**: VarNet SSIM 0.862 vs CG-SENSE 0.660 vs zero-filled 0.550; PSNR 24.9 / 22.0 / 19.8 dB."
    acs = {("CG-SENSE (ACS maps)" if k == "CG-SENSE" else k): v for k, v in _summary(0.862).items()}
    assert "vs CG-SENSE (ACS maps) 0.660" in findings.baseline_summary(acs, (4,))


def test_stress_findings_say_which_curves_separate_from_clean():
    sep = pd.DataFrame({"auc_log_eps": [0.10, 0.45, 0.12], "max_success_gap": [0.0, 0.5, -0.1],
                        "eps_at_max_gap": [0.01, 0.02, 0.01]}, index=pd.Index(["clean", "poisoned", "poisoned-adv"],
                                                                                name="model"))
    lines = findings.stress_findings(sep).splitlines()
    assert lines[0] == ("- `poisoned` vs `clean`: success rates differ by up to **+50 percentage points** (at ε = 0.02); "
                        "normalised area under the curve 0.45 vs 0.10.")
    assert lines[1] == ("- `poisoned-adv` vs `clean`: the curves do **not** separate (largest gap -10 percentage "
                        "points; area 0.12 vs 0.10).")
    assert "do **not** separate" in findings.stress_findings(sep, ("poisoned",), gap=0.6)
    assert findings.stress_findings(sep, ("poisoned", "oracle")).count("\n") == 0  # a model not tested is skipped


def _rows(values: dict, seed="all") -> pd.DataFrame:
    """Headline rows from ``{(method, metric): (value, low, high)}``."""
    return pd.DataFrame([dict(method=m, metric=k, seed=seed, value=v, ci_low=lo, ci_high=hi, n_subjects=8, note="")
                         for (m, k), (v, lo, hi) in values.items()])


def test_headline_findings_name_no_best_method_where_intervals_overlap():
    from mrilib.evaluate.findings import headline_findings

    base = {("clean", "effect"): (0.0, -0.05, 0.05), ("poisoned", "effect"): (0.4, 0.3, 0.5),
            ("clean", "success"): (0.0, 0.0, 0.0), ("poisoned", "success"): (0.3, 0.2, 0.4),
            ("poisoned", "ssim"): (0.85, 0.84, 0.86), ("A", "ssim"): (0.85, 0.84, 0.86), ("B", "ssim"): (0.70, 0.65, 0.75)}
    tied = _rows({**base, ("A", "healed"): (0.6, 0.4, 0.8), ("B", "healed"): (0.5, 0.3, 0.7)})
    text = headline_findings(tied)
    assert "not distinguishable from each other:** A, B" in text and "poisoned higher than clean" in text
    assert "Utility lost** (clean SSIM below the poisoned model's, intervals apart): B" in text
    apart = _rows({**base, ("A", "healed"): (0.9, 0.8, 1.0), ("B", "healed"): (0.2, 0.1, 0.3)})
    assert "**Most healed:** A" in headline_findings(apart)
    unknown = _rows({**base, ("A", "healed"): (np.nan, np.nan, np.nan), ("B", "healed"): (np.nan, np.nan, np.nan)})
    assert "**Healed** is not reported" in headline_findings(unknown)
