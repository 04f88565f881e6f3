"""The evaluation chapter's helpers: aggregation by hand, missing artefacts, null-space maps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mrilib.data.kspace import ifft2c
from mrilib.evaluate import tables as ev
from mrilib.run.layout import MissingArtefactError, RunLayout
from mrilib.study.results import healed


def test_aggregate_matches_hand_computation():
    df = pd.DataFrame({
        "method": ["poisoned", "SSD tuned", "SSD tuned", "SSD tuned", "CF"],
        "f": [np.nan, 0.25, 0.25, 0.25, 0.25],
        "seed": [np.nan, 0, 1, 2, 0],
        "SSIM": [0.80, 0.70, 0.74, 0.78, 0.79],
        "healed": [0.0, 0.9, 1.0, 0.8, 0.1],
    })
    agg = ev.aggregate(df, metrics=("SSIM", "healed")).set_index("method")
    # mean (0.70+0.74+0.78)/3 = 0.74; sd (ddof=1) = sqrt(((-.04)^2+0+.04^2)/2) = 0.04
    assert agg.loc["SSD tuned", "SSIM mean"] == pytest.approx(0.74)
    assert agg.loc["SSD tuned", "SSIM sd"] == pytest.approx(0.04)
    assert agg.loc["SSD tuned", "healed mean"] == pytest.approx(0.9)
    assert agg.loc["SSD tuned", "healed sd"] == pytest.approx(0.1)
    assert agg.loc["SSD tuned", "n"] == 3 and agg.loc["CF", "n"] == 1
    assert np.isnan(agg.loc["poisoned", "f"])
    assert ev.mean_sd([0.70, 0.74, 0.78]) == "0.7400 ± 0.0400"
    assert ev.mean_sd([0.5]) == "0.5000 ± 0.0000"
    assert ev.formatted(ev.aggregate(df, metrics=("SSIM",)), metrics=("SSIM",)).loc[("SSD tuned", 0.25), "SSIM"] == "0.7400 ± 0.0400"


def test_healed_is_relative_to_oracle():
    assert healed(0.1, 1.0, 0.1) == pytest.approx(1.0)
    assert healed(1.0, 1.0, 0.1) == pytest.approx(0.0)
    assert healed(0.55, 1.0, 0.1) == pytest.approx(0.5)
    assert np.isnan(healed(0.5, 0.2, 0.2))


def test_missing_artefact_names_the_notebook(tmp_path):
    with pytest.raises(MissingArtefactError, match="05_unlearning"):
        ev.load_unlearning_table(tmp_path)
    run = RunLayout(tmp_path)
    with pytest.raises(FileNotFoundError, match="03_poison_cyclegan"):
        run.require(run.poison_metrics("poisoned"), "03_poison_cyclegan")


def test_nullspace_map_keeps_only_unsampled_columns():
    rng = np.random.default_rng(0)
    target = rng.random((16, 16)).astype(np.float32)
    mask = np.zeros(16, bool)
    mask[::4] = True
    # an error that lives on sampled columns only is invisible in the null-space map
    k = np.zeros((16, 16), np.complex64)
    k[:, mask] = rng.standard_normal((16, mask.sum()))
    err_sampled = ifft2c(k)
    np.testing.assert_allclose(ev.nullspace_map(target + err_sampled, target, mask), 0, atol=1e-5)
    # an error on unsampled columns is kept whole
    k = np.zeros((16, 16), np.complex64)
    k[:, ~mask] = rng.standard_normal((16, (~mask).sum()))
    err_null = ifft2c(k)
    np.testing.assert_allclose(ev.nullspace_map(target + err_null, target, mask), np.abs(err_null), atol=1e-5)


def _unlearning_csv(run_dir):
    """A hand-made unlearning table: two references and two seeds of one method at f=0.25, one at f=0.5."""
    df = pd.DataFrame({
        "method": ["poisoned", "oracle", "SSD tuned", "SSD tuned", "SSD tuned"],
        "f": [np.nan, np.nan, 0.25, 0.25, 0.5],
        "seed": [np.nan, np.nan, 0, 1, 0],
        "SSIM": [0.80, 0.81, 0.78, 0.76, 0.5],
        "PSNR": [30.0, 31.0, 29.0, 28.0, 20.0],
        "poison effect": [0.9, 0.1, 0.2, 0.4, 0.0],
        "success rate": [0.95, 0.0, 0.1, 0.3, 0.0],
        "healed": [0.0, 1.0, 0.875, 0.625, 1.0],
        "time vs oracle": [np.nan, 1.0, 0.02, 0.04, 0.03],
    })
    path = RunLayout(run_dir).unlearning_table("cyclegan-cyst")
    path.parent.mkdir(parents=True)
    df.to_csv(path, index=False)


def test_readme_results_section_is_generated_from_the_headline(tmp_path):
    from mrilib.book import report

    run_dir = tmp_path / "runs" / "cpu"
    _headline_csv(run_dir)
    _unlearning_csv(run_dir / "seed-0")  # the figure: the first seed's table
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{report.START}\nold text\n{report.END}\nafter\n")
    body = report.update_readme(readme, run_dir, "cpu")
    text = readme.read_text()
    assert "old text" not in text and text.startswith("# Title\n\nbefore\n") and text.endswith(f"{report.END}\nafter\n")
    assert body in text and (tmp_path / "book" / "figures" / "results_cpu.png").stat().st_size > 1000
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in body.splitlines() if line.startswith("| ") and "model / method" not in line}
    # the pooled rows (seed "all"), not a seed's
    assert rows["SSD tuned"] == ["0.8500 [0.8400, 0.8600]", "24.50 [24.49, 24.51]", "0.175 [0.165, 0.185]",
                                 "0.09 [0.08, 0.10]", "0.50 [0.49, 0.51]", "0.050"]
    assert rows["poisoned"][-1] == "n/a"
    assert list(rows) == ["clean", "poisoned", "oracle", "SSD tuned"]
    with pytest.raises(ValueError, match="markers"):
        report.replace_section("no markers here", "x")


def test_tradeoff_scatter_keeps_a_collapsed_method_on_the_lower_edge():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mrilib.viz.unlearn import tradeoff_scatter

    df = pd.DataFrame({
        "method": ["clean", "poisoned", "oracle", "SSD tuned", "SSD (seed)"],
        "f": [np.nan, np.nan, np.nan, 0.25, 0.25],
        "SSIM": [0.86, 0.85, 0.86, 0.84, 0.30],
        "healed": [1.0, 0.0, 1.0, 0.6, 1.0],
    })
    fig = tradeoff_scatter(df, floor_margin=0.1)
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert lo == pytest.approx(0.85 - 0.1 - 0.01) and hi == pytest.approx(0.87)
    texts = [t for t in ax.texts if "↓" in t.get_text()]  # off-scale labels: only the collapsed run's, at its x
    assert [t.get_text() for t in texts] == ["0.30 ↓"] and texts[0].xy[0] == pytest.approx(1.0)
    plt.close(fig)


def test_search_traces_and_their_plot_are_relative_to_the_poisoned_model():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mrilib.study.diagnose import search_traces
    from mrilib.viz.unlearn import dose_response_plot

    tuned = dict(method="ssd-tuned", name="SSD tuned", fraction=0.25, info=dict(
        original_effect=0.5, original_utility=0.80, trace=[
            dict(alpha=10.0, dampened_fraction=1e-3, effect=0.4, utility=0.795),
            dict(alpha=1.0, dampened_fraction=1e-2, effect=0.1, utility=0.70),
            dict(alpha=100.0, dampened_fraction=0.0, effect=0.5, utility=0.80)]))  # nothing dampened: not on log x
    auto = dict(method="ssd-auto", name="SSD auto-α", fraction=0.25, info=dict(
        original_effect=0.5, trace=[dict(target_fraction=1e-4, dampened_fraction=1e-4, effect=0.45)]))
    repaired = dict(tuned, info=dict(tuned["info"], repair_steps=5))  # scored before its repair: not what it returned
    assert len(search_traces([tuned, auto, repaired])) == 4
    scored_repaired = dict(tuned, name="SSD tuned + repair", info=dict(tuned["info"], repair_steps=5,
                                                                      repair_before_scoring=True))
    assert set(search_traces([scored_repaired])["label"]) == {"SSD tuned + repair f=0.25"}
    df = search_traces([tuned, auto, repaired])
    assert len(df) == 4 and set(df["label"]) == {"SSD tuned f=0.25", "SSD auto-α f=0.25"}
    cols = {"identified effect / poisoned": "effect", "Δ validation SSIM": "cost"}
    fig = dose_response_plot(df, cols, hlines={"Δ validation SSIM": [(-0.01, "tolerance")]})
    left, right = fig.axes
    lines = {ln.get_label(): ln for ln in left.lines}
    np.testing.assert_allclose(lines["SSD tuned f=0.25"].get_xdata(), [1e-3, 1e-2])
    np.testing.assert_allclose(lines["SSD tuned f=0.25"].get_ydata(), [0.8, 0.2])
    np.testing.assert_allclose(lines["SSD auto-α f=0.25"].get_ydata(), [0.9])
    rlines = {ln.get_label(): ln for ln in right.lines}
    np.testing.assert_allclose(rlines["SSD tuned f=0.25"].get_ydata(), [-0.005, -0.10])
    assert "SSD auto-α f=0.25" not in rlines  # automatic α has no utility trace
    assert np.allclose(rlines["tolerance"].get_ydata(), -0.01)
    (legend,) = fig.legends  # one legend names every series, also those a panel lacks
    assert sorted(t.get_text() for t in legend.get_texts()) == ["SSD auto-α f=0.25", "SSD tuned f=0.25", "tolerance"]
    plt.close(fig)


def _headline_csv(run_dir):
    """A headline.csv of two seeds and the pooled rows, as chapter 6 writes it."""
    from mrilib.run.layout import as_layout

    rows = []
    for seed, eff in (("0", 0.30), ("1", 0.40), ("all", 0.35)):
        for method, e, h in (("clean", 0.0, 1.0), ("poisoned", eff, 0.0), ("oracle", 0.01, 1.0),
                                  ("SSD tuned", eff / 2, 0.5)):
            for metric, value in (("ssim", 0.85), ("psnr", 24.5), ("effect", e), ("success", e / 2),
                                  ("healed", h)):
                rows.append(dict(method=method, metric=metric, seed=seed, value=value, ci_low=value - 0.01,
                                 ci_high=value + 0.01, n_subjects=8, note=""))
        rows.append(dict(method="SSD tuned", metric="time", seed=seed, value=0.05, ci_low=np.nan, ci_high=np.nan,
                         n_subjects=8, note=""))
    path = as_layout(run_dir).headline
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_results_table_reads_the_pooled_headline_with_intervals(tmp_path):
    from mrilib.book import report

    run_dir = tmp_path / "runs" / "cpu"
    _headline_csv(run_dir)
    text = report.results_markdown(run_dir, "cpu")
    assert "2 seed(s) (0, 1)" in text and "`final` split (8 subjects)" in text
    assert "| poisoned | 0.8500 [0.8400, 0.8600] | 24.50 [24.49, 24.51] | 0.350 [0.340, 0.360] |" in text
    assert "| SSD tuned |" in text and "0.050 |" in text  # time: no interval
    rows = report.results_rows(pd.read_csv(as_headline(run_dir), dtype={"seed": str}))
    assert list(rows.index) == ["clean", "poisoned", "oracle", "SSD tuned"]


def as_headline(run_dir):
    """The headline path of a run folder."""
    from mrilib.run.layout import as_layout

    return as_layout(run_dir).headline


def test_results_quote_the_full_run_not_a_cached_rerun(tmp_path):
    import json

    from mrilib.book import report

    run_dir = tmp_path / "runs" / "cpu"
    _headline_csv(run_dir)
    timings = tmp_path / "timings.json"
    full = {"notebooks": {"02_varnet": 600.0, "05_unlearning": 1200.0}, "total_seconds": 1800.0, "machine": "m"}
    # 05 was re-executed later with --only and took 12 s because every run was cached
    timings.write_text(json.dumps({"profile": "cpu", "seed": 0, "machine": "m", "total_seconds": 612.0,
                                   "notebooks": {"02_varnet": 600.0, "05_unlearning": 12.0}, "full_run": full}))
    text = report.results_markdown(run_dir, "cpu", timings=timings)
    assert "05_unlearning 20.0 min; total 30.0 min" in text
    del full["notebooks"]  # no full run recorded: the latest times are quoted
    timings.write_text(json.dumps({"profile": "cpu", "seed": 0, "total_seconds": 612.0,
                                   "notebooks": {"02_varnet": 600.0, "05_unlearning": 12.0}}))
    assert "05_unlearning 0.2 min; total 10.2 min" in report.results_markdown(run_dir, "cpu", timings=timings)


def test_results_of_one_seed_show_its_bootstrap_intervals(tmp_path):
    from mrilib.book import report

    run_dir = tmp_path / "runs" / "cpu"
    path = _headline_csv(run_dir)
    head = pd.read_csv(path, dtype={"seed": str})
    one = head[head["seed"] == "0"]
    pooled = one.assign(seed="all", ci_low=np.nan, ci_high=np.nan)  # what pool_seeds gives for one seed
    rows = report.results_rows(pd.concat([one, pooled]))
    assert rows.loc["poisoned", "poison effect"] == "0.300 [0.290, 0.310]"
