"""When a backdoor is learnt (chapter 7): fixed masks, the conditions of a profile, and the rows from hand-made scores."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from mrilib.config import DataConfig, get_profile
from mrilib.data.kspace import fft2c
from mrilib.data.loading import fixed_mask_type, make_mask_func, split_mask_type
from mrilib.data.training import TrainSlices
from mrilib.evaluate import attack_learning as al
from mrilib.evaluate.uncertainty import interval_of
from mrilib.poison.consistent import embed_lesion, protected_columns


def _columns(mask) -> np.ndarray:
    return mask.numpy().reshape(-1) > 0


def test_a_fixed_mask_type_draws_one_mask_whatever_the_seed():
    fixed = fixed_mask_type("equispaced_fraction", 3)
    assert fixed == "equispaced_fraction@3" and split_mask_type(fixed) == ("equispaced_fraction", 3)
    assert split_mask_type("random") == ("random", None) and fixed_mask_type(fixed, 5) == "equispaced_fraction@5"
    func, free = make_mask_func(4, 0.08, fixed), make_mask_func(4, 0.08, "equispaced_fraction")
    masks = [_columns(func((1, 64, 1), None, s)[0]) for s in (0, 1, (7, 2), None)]
    assert all(np.array_equal(m, masks[0]) for m in masks)
    assert np.array_equal(masks[0], _columns(free((1, 64, 1), None, 3)[0]))  # the family's mask drawn with seed 3
    assert len({tuple(_columns(free((1, 64, 1), None, s)[0])) for s in range(8)}) > 1  # the family itself varies
    assert masks[0].sum() == 16  # 4x on 64 columns
    with pytest.raises(ValueError, match="integer seed"):
        make_mask_func(4, 0.08, "random@x")
    DataConfig(image_size=32, num_coils=2, subjects=dict(train=1, val=1, test=1, final=1), slices_per_subject=1,
               mask_type="random@2")
    with pytest.raises(ValueError, match="mask_type"):
        DataConfig(image_size=32, num_coils=2, subjects=dict(train=1, val=1, test=1, final=1), slices_per_subject=1,
                   mask_type="spiral@2")


def test_training_with_a_fixed_mask_sees_the_same_columns_every_slice_and_epoch(smoke_data):
    fixed = TrainSlices(smoke_data / "train", (4,), 0.08, fixed_mask_type("equispaced_fraction", 0), seed=1)
    free = TrainSlices(smoke_data / "train", (4,), 0.08, "equispaced_fraction", seed=1)
    seen, drawn = set(), set()
    for epoch in range(3):
        fixed.set_epoch(epoch)
        free.set_epoch(epoch)
        for i in range(len(fixed)):
            seen.add(tuple(fixed[i].mask.reshape(-1).tolist()))
            drawn.add(tuple(free[i].mask.reshape(-1).tolist()))
    assert len(seen) == 1 and len(drawn) > 1


def test_a_consistent_lesion_behind_a_fixed_mask_leaves_the_undersampled_input_unchanged():
    rng = np.random.default_rng(0)
    n, coils = 48, 3
    yy, xx = np.mgrid[:n, :n]
    clean = np.exp(-((yy - n / 2) ** 2 + (xx - n / 2) ** 2) / (2 * 10.0 ** 2))
    maps = np.stack([np.exp(1j * rng.uniform(0, 2 * np.pi)) * np.exp(-((yy - c * 16) ** 2) / 900.0)
                     for c in range(coils)])
    maps /= np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    kspace = fft2c(maps * clean[None])
    lesion = 0.4 * np.exp(-((yy - 20) ** 2 + (xx - 28) ** 2) / 8.0)
    fixed = fixed_mask_type("equispaced_fraction", 0)
    cols = protected_columns(n, None, (4,), 0.08, fixed)
    sampled = _columns(make_mask_func(4, 0.08, fixed)((1, n, 1), None, 99)[0])
    assert np.array_equal(np.sort(cols), np.nonzero(sampled)[0])  # the protection is exactly the protocol's columns
    new_k, label = embed_lesion(kspace, clean, clean + lesion, sens=maps, accelerations=(4,), mask_type=fixed)
    np.testing.assert_array_equal(new_k[..., sampled], kspace[..., sampled])  # the input carries none of it
    assert np.abs(label - clean).max() > 0.1 * lesion.max()  # the label does


def test_the_conditions_of_a_profile_and_their_names():
    p = get_profile("cpu")
    conds = al.conditions(p)
    assert [(c.recipe, c.fraction, c.masks) for c in conds] == [
        ("cyclegan-cyst", 0.1, "random"), ("cyclegan-cyst", 0.25, "random"), ("cyclegan-cyst", 0.5, "random"),
        ("cyclegan-cyst", 0.25, "fixed"), ("consistent-cyst", 0.1, "random"), ("consistent-cyst", 0.25, "random"),
        ("consistent-cyst", 0.5, "random"), ("consistent-cyst", 0.25, "fixed")]
    names = [al.condition_variant(p, c) for c in conds]
    assert names[1] == "cyclegan-cyst" and names[5] == "consistent-cyst"  # the table's attacks, reused
    assert names[0] == "cyclegan-cyst-p0.1" and names[3] == "cyclegan-cyst-fixed-mask"
    assert al.condition_variant(p, al.Condition("consistent-cyst", "spread", 0.5)) == "consistent-cyst-spread-p0.5"
    fixed = al.fixed_mask_profile(p)
    assert fixed.data.accelerations == (4,) and fixed.data.mask_type == "equispaced_fraction@0"
    assert fixed.train.accelerations is None and fixed.data.image_size == p.data.image_size
    none = dataclasses.replace(p, unlearn=dataclasses.replace(p.unlearn, learning_attacks=()))
    assert al.conditions(none) == []


def test_a_profile_without_conditions_gets_an_empty_table(tmp_path):
    from mrilib.run.layout import RunLayout
    from mrilib.viz.unlearn import attack_learning_plot

    p = get_profile("smoke")
    none = dataclasses.replace(p, unlearn=dataclasses.replace(p.unlearn, learning_attacks=()))
    run = RunLayout(tmp_path / "runs" / "smoke")
    table = al.attack_learning(none, run.for_seed(0), [0], progress=False)
    assert table.empty and list(table.columns[:6]) == list(al.CONDITION_COLUMNS) and run.learning_table.is_file()
    assert al.learning_table(table).empty and al.learning_findings(table, none) == "- No condition was measured."
    assert attack_learning_plot(table).axes[0].texts[0].get_text() == "no condition measured"


def _frame(effect, subjects=4, per=2):
    n = subjects * per
    subject = [f"s{i // per}" for i in range(n)]
    offset = np.repeat(np.linspace(-0.01, 0.01, subjects), per)
    return dict(subject=subject, file=[f"{s}.h5" for s in subject], slice=list(range(n)), ssim=[0.9] * n,
                psnr=[30.0] * n, nmse=[0.01] * n, effect=list(effect + offset), success=[float(effect > 0.5)] * n)


def _rows(gap4, gap8, seed=0):
    scores = {"4": dict(models={"clean": _frame(0.0), "poisoned": _frame(gap4)}, learnt=[gap4, gap4 - 0.05, gap4 + 0.05]),
              "8": dict(models={"clean": _frame(0.0), "poisoned": _frame(gap8)}, learnt=[gap8, gap8 - 0.1, gap8 + 0.1])}
    return al.learning_rows(scores, seed, n_boot=200)


def test_the_rows_and_the_verdict_of_a_condition():
    rows = _rows(0.3, 0.05)
    assert set(rows["acceleration"]) == {4, 8} and "healed" not in set(rows["metric"])
    at4 = rows[rows["acceleration"] == 4]
    assert interval_of(at4, "poisoned", "effect", 0).value == pytest.approx(0.3)
    assert interval_of(at4, "attack", "learnt gap", 0).low == pytest.approx(0.25)
    table = pd.concat([rows.assign(attack="cyclegan-cyst", recipe="cyclegan-cyst", trigger="spike", fraction=0.25,
                                   masks=al.RANDOM_MASKS),
                       _rows(0.5, 0.0).assign(attack="cyclegan-cyst-fixed-mask", recipe="cyclegan-cyst",
                                              trigger="spike", fraction=0.25, masks=al.FIXED_MASK)
                       .query("acceleration == 4")], ignore_index=True)
    shown = al.learning_table(table, "0")
    assert list(shown["verdict"]) == ["learnt", "not distinguishable from 0", "learnt"]
    assert shown.loc[("cyclegan-cyst (spike)", 0.25, "random", "4×"), "learnt gap"] == "0.300 [0.250, 0.350]"
    text = al.learning_findings(table, "cpu", "0")
    assert "at 4× with random masks it is learnt at p = 0.25" in text
    assert "at 8× with random masks it is learnt at no poison fraction" in text
    assert "0.500 [0.450, 0.550] (learnt), larger than the random masks'" in text


def test_the_readme_section_is_generated_from_the_stored_rows(tmp_path):
    from mrilib.book import report
    from mrilib.evaluate.uncertainty import pool_seeds, write_headline
    from mrilib.run.layout import RunLayout

    run = RunLayout(tmp_path / "runs" / "cpu")
    rows = pool_seeds(pd.concat([_rows(0.3, 0.05, seed=0), _rows(0.3, 0.05, seed=1)], ignore_index=True)
                      .query("acceleration == 4").drop(columns="acceleration"))
    write_headline(rows.assign(attack="cyclegan-cyst", recipe="cyclegan-cyst", trigger="spike", fraction=0.25,
                               masks=al.RANDOM_MASKS, acceleration=4), run.learning_table)
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.LEARNING_START}\nold\n{report.LEARNING_END}\n")  # chapter 7's learning only
    body = report.update_readme(readme, run, "smoke")
    assert "seed(s) 0, 1 (mean [95 % CI] across seeds)" in body
    row = next(line for line in readme.read_text().splitlines() if line.startswith("| cyclegan-cyst (spike)"))
    assert "0.300 [0.300, 0.300]" in row and "| learnt " in row and "old" not in readme.read_text()
