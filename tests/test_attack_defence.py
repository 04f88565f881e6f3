"""The attack x defence table (chapter 7): which runs an attack gets, and the table from hand-made scores."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from mrilib.config import ATTACKS, get_profile
from mrilib.evaluate import attack_defence as ad
from mrilib.evaluate.uncertainty import interval_of, pool_seeds
from mrilib.poison.triggers import DEFAULT_TRIGGER, SPREAD_TRIGGER


def test_every_lesion_is_planted_both_ways_with_both_triggers():
    assert len(ATTACKS) == len(set(ATTACKS)) == 8
    assert {r for r, _ in ATTACKS} == {"cyclegan-cyst", "consistent-cyst", "adversarial-tumour", "consistent-tumour"}
    assert {t for _, t in ATTACKS} == set(ad.TRIGGERS) == {"spike", "spread"}
    assert ad.attack_trigger(None, "smoke", "consistent-cyst", "spread") is SPREAD_TRIGGER
    assert ad.attack_trigger(None, "smoke", "cyclegan-cyst", "spike") is DEFAULT_TRIGGER
    with pytest.raises(KeyError, match="known"):
        ad.attack_trigger(None, "smoke", "cyclegan-cyst", "chirp")


def test_the_audits_relabelling_is_chapter_5s_run_at_f_1():
    on_cpu = ad.audit_relabel_run("cpu", seed=2)
    assert on_cpu in ad.plan_runs("cpu", seed=2) and on_cpu.fraction == 1.0 and on_cpu.hp["relabel"]
    on_smoke = ad.audit_relabel_run("smoke")  # smoke plans f = 0.25 only: the same run moved to f = 1
    assert on_smoke.fraction == 1.0 and on_smoke.label == "relabel-ft-f1-s0" and on_smoke not in ad.plan_runs("smoke")


def test_an_attack_without_the_defenders_signal_gets_untuned_ssd():
    runs = ad.attack_runs("smoke", seed=3)
    assert [r.key for r in runs] == ["ssd-tuned", "bad-teacher", "nl-ft", "ga-ft", "cf", "relabel-ft"]
    assert all(r.fraction == 0.25 and r.seed == 3 for r in runs)
    untuned = ad.attack_runs("smoke", seed=3, signal=False)
    assert [r.key for r in untuned] == ["ssd-seed", "bad-teacher", "nl-ft", "ga-ft", "cf", "relabel-ft"]
    assert ad.leaves_signal({"kspace_edit": None}) and not ad.leaves_signal({"kspace_edit": {"protect_columns": None}})
    p = get_profile("smoke")
    odd = dataclasses.replace(p, unlearn=dataclasses.replace(p.unlearn, attack_methods=("ssd-region-nonsense",)))
    with pytest.raises(KeyError, match="not planned"):
        ad.attack_runs(odd)


def _frame(effect, ssim, subjects=4, per=2):
    """Per-slice scores of one model: every slice of every subject gets ``effect`` (+ a subject offset) and ``ssim``."""
    n = subjects * per
    subject = [f"s{i // per}" for i in range(n)]
    offset = np.repeat(np.linspace(-0.01, 0.01, subjects), per)
    return dict(subject=subject, file=[f"{s}.h5" for s in subject], slice=list(range(n)),
                ssim=list(ssim + offset), psnr=[30.0] * n, nmse=[0.01] * n, effect=list(effect + offset),
                success=[float(effect > 0.5)] * n)


def _scores(learnt=True):
    models = {"clean": _frame(0.0, 0.90), "poisoned": _frame(1.0, 0.90), ad.SANITISED: _frame(0.5, 0.89)}
    if learnt:
        models |= {"oracle": _frame(0.0, 0.90), "Bad Teacher": _frame(0.2, 0.895),  # heals 0.8 within 0.01 SSIM
                   "Gradient ascent + FT": _frame(0.0, 0.85),  # heals 1.0 but loses 0.05 SSIM
                   "Relabel + fine-tune": _frame(0.5, 0.90),  # heals 0.5 at the main fraction
                   ad.AUDIT_RELABEL: _frame(0.05, 0.90)}  # heals 0.95 with every poisoned slice relabelled
    checks = {"audit: poisoned flagged": 1.0, "audit: clean flagged": 0.0, "sanitiser: trigger found": 1.0,
              "sanitiser: false alarms": 0.0, "label kept": 1.0, "trigger visibility": 0.25}
    return dict(models=models, learnt=[1.0, 0.9, 1.1], costs={"Bad Teacher": 0.1} if learnt else {}, checks=checks)


def _table(learnt=True, seeds=(0,)):
    rows = pd.concat([ad.attack_rows(_scores(learnt), s, n_boot=200) for s in seeds], ignore_index=True)
    return pool_seeds(rows).assign(attack="cyclegan-cyst", recipe="cyclegan-cyst", trigger="spike")


def test_the_rows_of_one_attack_hold_every_defence_with_intervals():
    t = _table()
    assert interval_of(t, "Bad Teacher", "healed", 0).value == pytest.approx(0.8)
    assert interval_of(t, "oracle", "healed", 0).value == pytest.approx(1.0)
    left = interval_of(t, "sanitiser", "effect left", 0)
    assert left.value == pytest.approx(0.5) and left.known
    assert interval_of(t, "sanitiser", "SSIM cost", 0).value == pytest.approx(0.01)
    assert interval_of(t, "audit", "poisoned flagged", 0).value == 1.0
    assert interval_of(t, "Bad Teacher", "time", 0).value == pytest.approx(0.1)


def test_the_best_method_is_the_one_that_heals_most_within_the_ssim_tolerance():
    summary = ad.summary_table(_table(), "smoke", seed="0").loc["cyclegan-cyst"]
    assert summary["best unlearning"].startswith("Bad Teacher: 0.800")  # not gradient ascent: 0.05 SSIM lost
    assert summary["relabel + FT: healed"].startswith("0.500")
    assert summary["audit + relabel + FT: healed"].startswith("0.950")
    assert summary["sanitiser: effect left"].startswith("0.500") and summary["audit: poisoned flagged"] == "1.000"
    assert summary["oracle effect"].startswith("0.000")
    roles = ad.defence_models(_table(), "smoke", seed="0")["cyclegan-cyst"]
    assert roles == {"clean": "clean", "poisoned": "poisoned", "sanitiser": ad.SANITISED,
                     "best unlearning": "Bad Teacher", "relabel + FT": "Relabel + fine-tune",
                     "audit + relabel + FT": ad.AUDIT_RELABEL, "oracle": "oracle"}
    text = ad.findings(_table(), {"cyclegan-cyst": roles}, seed="0")
    assert "flags 100 %" in text and "(`Bad Teacher`) heals 0.80" in text and "falls short of 0.9" in text
    methods = ad.method_table(_table(), seed="0")
    assert set(methods.index.get_level_values("method")) == {"oracle", "Bad Teacher", "Gradient ascent + FT",
                                                             "Relabel + fine-tune", ad.AUDIT_RELABEL}
    assert "audit + relabel + FT (`Relabel every flagged slice + fine-tune`) heals 0.95" in text


def test_a_backdoor_that_is_not_learnt_says_so_and_heals_nothing():
    t = _table(learnt=False)
    healed = t[t["metric"] == "healed"]
    assert healed["value"].isna().all() and (healed["note"].str.contains("not learnt") | (healed["seed"] == "all")).all()
    summary = ad.summary_table(t, "smoke", seed="0").loc["cyclegan-cyst"]
    assert summary["best unlearning"] == "not learnt: nothing to unlearn" and summary["oracle effect"] == "n/a"
    assert "nothing to unlearn" in ad.findings(t, ad.defence_models(t, "smoke", "0"), seed="0")
    assert ad.method_table(t, "0").empty


def test_seeds_pool_into_one_interval():
    t = _table(seeds=(0, 1))
    pooled = interval_of(t, "Bad Teacher", "healed")  # seed "all"
    assert pooled.value == pytest.approx(0.8) and pooled.known  # two identical seeds: a zero-width interval
    assert ad.summary_table(t, "smoke").loc["cyclegan-cyst", "best unlearning"].startswith("Bad Teacher")


def test_the_readme_table_is_generated_from_the_stored_rows(tmp_path):
    from mrilib.book import report
    from mrilib.evaluate.uncertainty import write_headline
    from mrilib.run.layout import RunLayout

    run = RunLayout(tmp_path / "runs" / "cpu")
    write_headline(_table(seeds=(0, 1)), run.shared / "metrics" / "attack_defence.csv")
    body = report.attack_markdown(run, "smoke")
    assert "seed(s) 0, 1 (mean [95 % CI] across seeds)" in body
    row = next(line for line in body.splitlines() if line.startswith("| cyclegan-cyst"))
    assert "Bad Teacher: 0.800" in row and row.split("|")[2].strip() == "1.000 [1.000, 1.000]"  # audit, across seeds
    text = f"a\n{report.ATTACK_START}\nold\n{report.ATTACK_END}\nb\n"
    new = report.replace_section(text, body, report.ATTACK_START, report.ATTACK_END)
    assert "old" not in new and body in new and new.endswith(f"{report.ATTACK_END}\nb\n")


def test_the_readme_gets_the_sections_whose_chapters_ran(tmp_path):
    from mrilib.book import report
    from mrilib.evaluate.uncertainty import write_headline
    from mrilib.run.layout import MissingArtefactError, RunLayout

    run = RunLayout(tmp_path / "runs" / "cpu")
    readme = tmp_path / "README.md"
    text = f"{report.START}\nkept\n{report.END}\n{report.ATTACK_START}\nold\n{report.ATTACK_END}\n"
    readme.write_text(text)
    with pytest.raises(MissingArtefactError, match="06_evaluation"):
        report.update_readme(readme, run, "smoke")
    write_headline(_table(), run.shared / "metrics" / "attack_defence.csv")  # chapter 7 only
    report.update_readme(readme, run, "smoke")
    new = readme.read_text()
    assert "kept" in new and "old" not in new and "Bad Teacher: 0.800" in new


def test_a_gap_to_the_oracle_within_noise_defines_no_share_healed():
    scores = _scores()
    oracle = _frame(1.0, 0.90)  # retraining leaves the effect as it was, give or take a subject: nothing to measure
    oracle["effect"] = oracle["effect"][::-1]
    scores["models"]["oracle"] = oracle
    t = pool_seeds(ad.attack_rows(scores, 0, n_boot=200)).assign(attack="a", recipe="cyclegan-cyst", trigger="spike")
    summary = ad.summary_table(t, "smoke", seed="0").loc["a"]
    assert summary["best unlearning"] == "n/a: poisoned and oracle effects not distinguishable"
    assert "no share healed is defined" in ad.findings(t, ad.defence_models(t, "smoke", "0"), seed="0")
