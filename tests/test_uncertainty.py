"""Uncertainty of the headline numbers: the subject bootstrap, seed intervals, and the rows read from them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mrilib.evaluate.uncertainty import (
    HEADLINE_COLUMNS,
    Interval,
    across_seeds,
    compare,
    gap_of,
    headline_rows,
    healed_of,
    interval_of,
    mean_of,
    pool_seeds,
    ranked,
    read_headline,
    subject_bootstrap,
    write_headline,
)

NAN = math.nan


def _frame(values, subjects) -> pd.DataFrame:
    """A per-slice frame with one metric column ``x`` (and ``effect`` = ``x``)."""
    values = np.asarray(values, dtype=float)
    return pd.DataFrame({"subject": list(subjects), "file": [f"{s}.h5" for s in subjects],
                         "slice": range(len(values)), "x": values, "effect": values})


def _study(effects: dict[str, float], n_subjects=8, per_subject=8, seed=0, spread=0.05) -> dict[str, pd.DataFrame]:
    """Per-slice frames of several models on the same slices; model ``m``'s effect is around ``effects[m]``."""
    rng = np.random.default_rng(seed)
    subjects = np.repeat([f"sub{i}" for i in range(n_subjects)], per_subject)
    n = len(subjects)
    subject_shift = np.repeat(rng.normal(0, spread, n_subjects), per_subject)
    lesion = rng.random(n) < 0.75
    frames = {}
    for model, level in effects.items():
        effect = np.where(lesion, level + subject_shift + rng.normal(0, spread / 2, n), NAN)
        frames[model] = pd.DataFrame({
            "subject": subjects, "file": [f"{s}.h5" for s in subjects], "slice": np.tile(range(per_subject), n_subjects),
            "ssim": 0.86 + rng.normal(0, 0.01, n), "psnr": 31 + rng.normal(0, 1, n),
            "nmse": 0.02 + rng.normal(0, 0.002, n), "effect": effect,
            "success": (rng.random(n) < level).astype(int)})
    return frames


# ---------------------------------------------------------------------------------------------- Interval


def test_interval_formats_and_overlaps_as_closed_intervals():
    a = Interval(0.86149, 0.85021, 0.87114, 8)
    assert str(a) == "0.8615 [0.8502, 0.8711]"
    assert a.format(2) == "0.86 [0.85, 0.87]"
    assert a.text(2) == "0.86 [0.85, 0.87]" and Interval(0.5, NAN, NAN, 1).text(2) == "0.50"
    assert Interval(NAN, NAN, NAN, 0).text() == "n/a"
    assert Interval(1, 0, 1, 3).overlaps(Interval(2, 1, 2, 3))  # touching counts
    assert not Interval(1, 0, 0.99, 3).overlaps(Interval(2, 1, 2, 3))
    assert Interval(1, NAN, NAN, 1).overlaps(Interval(9, 8, 10, 3))  # unknown overlaps everything
    assert Interval(9, 8, 10, 3).overlaps(Interval(1, 0, NAN, 1))
    assert not Interval(1, NAN, NAN, 1).known and a.known


# --------------------------------------------------------------------------------------------- bootstrap


def test_two_subjects_give_the_exact_bootstrap_distribution():
    """Subject means 0 and 1, two slices each: the bootstrap mean is 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4."""
    frames = {"m": _frame([0, 0, 1, 1], ["a", "a", "b", "b"])}
    seen = []

    def recording(f):
        seen.append(f["m"]["x"].mean())
        return seen[-1]

    interval = subject_bootstrap(frames, recording, n_boot=4000)
    replicates = np.array(seen[1:])  # the first call is the value on the original frames
    assert len(replicates) == 4000
    assert set(np.unique(replicates)) == {0.0, 0.5, 1.0}
    for v, p in [(0.0, 0.25), (0.5, 0.5), (1.0, 0.25)]:
        assert np.mean(replicates == v) == pytest.approx(p, abs=0.03)
    assert (interval.value, interval.low, interval.high, interval.n) == (0.5, 0.0, 1.0, 2)
    # the 30 % and 70 % quantiles both fall in the mass at 1/2
    narrow = subject_bootstrap(frames, mean_of("m", "x"), n_boot=4000, level=0.4)
    assert (narrow.low, narrow.high) == (0.5, 0.5)


def test_a_drawn_subject_brings_all_its_slices():
    """Subject a: one slice of 0; b: three slices of 1. Drawing (a, b) gives the slice mean 3/4, not 1/2."""
    frames = {"m": _frame([0, 1, 1, 1], ["a", "b", "b", "b"])}
    interval = subject_bootstrap(frames, mean_of("m", "x"), n_boot=4000, level=0.4)
    assert (interval.value, interval.low, interval.high) == (0.75, 0.75, 0.75)
    wide = subject_bootstrap(frames, mean_of("m", "x"), n_boot=4000)
    assert (wide.low, wide.high) == (0.0, 1.0)


def test_the_fast_path_matches_resampling_the_frames():
    frames = _study({"poisoned": 0.5, "oracle": 0.05, "m": 0.2})
    for fast, slow in [
        (mean_of("m", "ssim"), lambda f: f["m"]["ssim"].mean()),
        (mean_of("m", "effect"), lambda f: f["m"]["effect"].mean()),
        (healed_of("m"), lambda f: (f["poisoned"]["effect"].mean() - f["m"]["effect"].mean())
         / (f["poisoned"]["effect"].mean() - f["oracle"]["effect"].mean())),
    ]:
        a = subject_bootstrap(frames, fast, n_boot=300, seed=3)
        b = subject_bootstrap(frames, slow, n_boot=300, seed=3)
        assert (a.value, a.low, a.high, a.n) == pytest.approx((b.value, b.low, b.high, b.n), rel=1e-12)


def test_slices_of_a_subject_are_not_independent_measurements():
    frames = _study({"m": 0.3}, spread=0.1)
    clustered = subject_bootstrap(frames, mean_of("m", "effect"))
    # every slice twice: the same subjects, so the same interval (a slice bootstrap would narrow it by √2)
    doubled = {"m": pd.concat([frames["m"], frames["m"]], ignore_index=True)}
    again = subject_bootstrap(doubled, mean_of("m", "effect"))
    assert (again.value, again.low, again.high) == pytest.approx((clustered.value, clustered.low, clustered.high))
    # resampling slices (each slice its own "subject") pretends to have 64 independent measurements
    by_slice = {"m": frames["m"].assign(subject=[f"s{i}" for i in range(len(frames["m"]))])}
    naive = subject_bootstrap(by_slice, mean_of("m", "effect"))
    assert naive.n == 64 and clustered.n == 8
    assert clustered.high - clustered.low > 2 * (naive.high - naive.low)


def test_paired_draws_make_healed_exact_for_the_references():
    frames = _study({"poisoned": 0.5, "oracle": 0.05, "m": 0.2})
    poisoned = subject_bootstrap(frames, healed_of("poisoned"))
    oracle = subject_bootstrap(frames, healed_of("oracle"))
    assert (poisoned.value, poisoned.low, poisoned.high) == (0.0, 0.0, 0.0)
    assert (oracle.value, oracle.low, oracle.high) == (1.0, 1.0, 1.0)
    m = subject_bootstrap(frames, healed_of("m"))
    assert 0 < m.low < m.value < m.high < 1
    gap = subject_bootstrap(frames, gap_of())
    assert gap.low > 0 and gap.value == pytest.approx(
        frames["poisoned"]["effect"].mean() - frames["oracle"]["effect"].mean())


def test_unknown_intervals():
    one = subject_bootstrap({"m": _frame([0.2, 0.4], ["a", "a"])}, mean_of("m", "x"))
    assert one.value == pytest.approx(0.3) and one.n == 1 and math.isnan(one.low) and math.isnan(one.high)
    # no gap to heal: healed is NaN in every replicate
    frames = _study({"poisoned": 0.3})
    frames["oracle"] = frames["poisoned"]
    healed = subject_bootstrap(frames, healed_of("poisoned"))
    assert math.isnan(healed.value) and math.isnan(healed.low) and math.isnan(healed.high)
    # finite in 1/4 of the replicates (only when b is drawn twice): too few for an interval
    frames = {"m": _frame([0, 0, 1, 1], ["a", "a", "b", "b"])}
    rare = subject_bootstrap(frames, lambda f: f["m"]["x"].mean() if f["m"]["x"].mean() > 0.6 else NAN)
    assert math.isnan(rare.low) and math.isnan(rare.high)
    # finite in 3/4: the interval of the finite ones
    most = subject_bootstrap(frames, lambda f: f["m"]["x"].mean() if f["m"]["x"].mean() > 0.4 else NAN)
    assert (most.value, most.low, most.high) == (0.5, 0.5, 1.0)


def test_the_seed_fixes_the_interval():
    frames = _study({"m": 0.3})
    a, b = (subject_bootstrap(frames, mean_of("m", "ssim"), seed=7) for _ in range(2))
    assert a == b
    assert subject_bootstrap(frames, mean_of("m", "ssim"), seed=8) != a


# ------------------------------------------------------------------------------------------------- seeds


def test_across_seeds_is_a_student_t_interval():
    interval = across_seeds([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)  # t_{0.975, 2} · sd 1 / √3
    assert (interval.value, interval.n) == (2.0, 3)
    assert interval.low == pytest.approx(2 - half, abs=1e-6) and interval.high == pytest.approx(2 + half, abs=1e-6)
    assert across_seeds([1.0, NAN, 3.0]).n == 2 and across_seeds([1.0, NAN, 3.0]).value == 2.0
    one = across_seeds([5.0, NAN])
    assert (one.value, one.n) == (5.0, 1) and math.isnan(one.low) and math.isnan(one.high)
    assert math.isnan(across_seeds([]).value)
    assert across_seeds([0.7, 0.7]) == Interval(0.7, 0.7, 0.7, 2)


# ------------------------------------------------------------------------------------------ headline rows


def test_headline_rows_report_every_model_and_metric():
    frames = _study({"poisoned": 0.5, "oracle": 0.05, "m": 0.2})
    rows = headline_rows(frames, seed=0, costs={"oracle": 1.0, "m": 0.03}, n_boot=500)
    assert list(rows.columns) == list(HEADLINE_COLUMNS)
    assert len(rows) == 3 * 5 + 3 + 2
    assert set(rows["metric"]) == {"ssim", "psnr", "nmse", "effect", "success", "healed", "time"}
    assert (rows["seed"] == "0").all() and (rows["n_subjects"] == 8).all()
    effect = interval_of(rows, "m", "effect", seed=0)
    assert effect.value == pytest.approx(frames["m"]["effect"].mean())  # NaN slices ignored
    assert effect.low < effect.value < effect.high
    healed = rows[rows["metric"] == "healed"].set_index("method")
    assert healed.loc["poisoned", "value"] == 0.0 and healed.loc["oracle", "value"] == 1.0
    assert (healed["note"] == "").all()
    time = rows[rows["metric"] == "time"].set_index("method")
    assert time["value"].to_dict() == {"oracle": 1.0, "m": 0.03}
    assert time["ci_low"].isna().all() and (time["note"] == "one measurement per seed").all()


def test_healed_is_not_reported_without_a_clear_gap():
    frames = _study({"poisoned": 0.2, "oracle": 0.2, "m": 0.1}, spread=0.1)
    rows = headline_rows(frames, seed=1, n_boot=500)
    healed = rows[rows["metric"] == "healed"]
    assert len(healed) == 3 and healed[["value", "ci_low", "ci_high"]].isna().all().all()
    note = healed["note"].iloc[0]
    assert note.startswith("n/a: poisoned-oracle effect gap ") and note.endswith("is within its uncertainty")
    missing = headline_rows({"m": frames["m"]}, seed=1, n_boot=100)
    assert missing.loc[missing["metric"] == "healed", "note"].iloc[0].startswith("n/a: needs the 'poisoned'")


def _three_seeds() -> pd.DataFrame:
    """Seed 2 has no clear poisoned-oracle gap, so its healed rows are n/a."""
    per_seed = [headline_rows(_study({"poisoned": p, "oracle": 0.05, "m": 0.2}, seed=s), seed=s,
                              costs={"m": 0.02 * (s + 1)}, n_boot=300)
                for s, p in enumerate([0.5, 0.6, 0.05])]
    return pd.concat(per_seed, ignore_index=True)


def test_pool_seeds_adds_one_row_per_method_and_metric():
    rows = _three_seeds()
    pooled = pool_seeds(rows)
    assert list(pooled.columns) == list(HEADLINE_COLUMNS)
    assert set(pooled["seed"]) == {"0", "1", "2", "all"}
    every = pooled[pooled["seed"] == "all"]
    assert len(every) == len(rows) // 3 and len(pooled) == len(rows) + len(every)
    ssim = rows[(rows["method"] == "m") & (rows["metric"] == "ssim")]["value"]
    pooled_ssim = interval_of(pooled, "m", "ssim")
    expected = across_seeds(ssim.tolist())
    assert (pooled_ssim.value, pooled_ssim.low, pooled_ssim.high) == pytest.approx(
        (expected.value, expected.low, expected.high))
    assert pooled_ssim.n == 8  # subjects per seed, not seeds
    time = interval_of(pooled, "m", "time")
    assert time.value == pytest.approx(0.04) and time.known
    healed = every[(every["metric"] == "healed")].set_index("method")
    assert healed.loc["poisoned", "value"] == 0.0 and healed.loc["poisoned", "note"] == "mean over 2 of 3 seeds"
    assert pool_seeds(pooled).equals(pooled)  # pooling twice changes nothing


def test_a_metric_never_reported_stays_nan_with_its_notes():
    rows = pd.DataFrame([
        dict(method="m", metric="healed", seed=s, value=NAN, ci_low=NAN, ci_high=NAN, n_subjects=8, note=note)
        for s, note in [(0, "n/a: a"), (1, "n/a: b"), (2, "n/a: a")]])
    pooled = pool_seeds(rows)
    row = pooled[pooled["seed"] == "all"].iloc[0]
    assert math.isnan(row["value"]) and math.isnan(row["ci_low"]) and row["note"] == "n/a: a; n/a: b"
    assert list(pooled["seed"]) == ["0", "1", "2", "all"]


# ---------------------------------------------------------------------------------------------- reading


def _rows(intervals: dict[str, tuple[float, float, float]], metric="ssim") -> pd.DataFrame:
    return pd.DataFrame([dict(method=m, metric=metric, seed="all", value=v, ci_low=lo, ci_high=hi, n_subjects=8,
                              note="") for m, (v, lo, hi) in intervals.items()])


def test_compare_says_higher_lower_or_not_distinguishable():
    rows = _rows({"a": (1.5, 1, 2), "b": (3.5, 3, 4), "c": (2.5, 2, 3), "u": (9, NAN, NAN)})
    assert compare(rows, "ssim", "b", "a") == "b higher than a"
    assert compare(rows, "ssim", "a", "b") == "a lower than b"
    assert compare(rows, "ssim", "a", "c") == "not distinguishable"  # touching intervals
    assert compare(rows, "ssim", "u", "a") == "not distinguishable"
    with pytest.raises(KeyError, match="'zz'"):
        compare(rows, "ssim", "a", "zz")


def test_ranked_groups_methods_that_overlap_the_best():
    rows = _rows({"A": (0.90, 0.85, 0.95), "B": (0.86, 0.80, 0.87), "C": (0.82, 0.78, 0.84),
                  "D": (0.50, 0.40, 0.60), "B2": (0.86, 0.80, 0.87), "E": (NAN, NAN, NAN)})
    assert ranked(rows, "ssim") == [["A", "B", "B2"], ["C"], ["D"]]
    assert ranked(rows, "ssim", higher_is_better=False) == [["D"], ["C", "B", "B2"], ["A"]]
    assert ranked(rows, "psnr") == []


def test_write_headline_round_trips(tmp_path):
    rows = pool_seeds(_three_seeds())
    path = write_headline(rows, tmp_path / "metrics" / "headline.csv")
    assert [p.name for p in path.parent.iterdir()] == ["headline.csv"]  # no temporary left behind
    back = read_headline(path)
    pd.testing.assert_frame_equal(back, rows, check_dtype=False)
    assert back["seed"].tolist() == rows["seed"].tolist()
