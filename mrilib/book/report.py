"""The README's results section, generated from a run's artefacts.

``python -m mrilib.book.report --profile cpu`` (or ``make results`` after ``make book``)
reads ``runs/<profile>/metrics/unlearning_<variant>.csv`` and
``book/executed/timings.json``, writes one figure (utility versus forgetting) to
``book/figures/results_<profile>.png`` and replaces the text between the README's
``<!-- results:start -->`` and ``<!-- results:end -->`` markers with a table. Every
number comes from those files; nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mrilib.config import get_profile
from mrilib.evaluate.tables import at_fraction, load_unlearning_table
from mrilib.run.io import atomic_path, read_json
from mrilib.run.layout import RunLayout, as_layout
from mrilib.viz.unlearn import tradeoff_scatter

__all__ = ["results_rows", "results_markdown", "write_results_figure", "replace_section", "update_readme"]

START, END = "<!-- results:start -->", "<!-- results:end -->"
#: columns of the README table: (header, column of the unlearning table, format)
COLUMNS = (("clean-test SSIM", "SSIM", "{:.4f}"), ("PSNR (dB)", "PSNR", "{:.2f}"),
           ("poison effect", "poison effect", "{:.3f}"), ("success rate", "success rate", "{:.2f}"),
           ("healed", "healed", "{:.2f}"), ("time vs oracle", "time vs oracle", "{:.3f}"))


def results_rows(table: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """Reference models and the runs at identified fraction ``fraction``, means over seeds, best healed first."""
    refs = table[table["f"].isna()]
    runs = at_fraction(table, fraction).dropna(subset=["f"])
    cols = [c for _, c, _ in COLUMNS]
    mean_runs = runs.groupby("method", sort=False)[cols].mean().sort_values("healed", ascending=False)
    return pd.concat([refs.set_index("method")[cols], mean_runs])


def results_markdown(run_dir: str | os.PathLike, profile, variant: str = "cyclegan-cyst",
                     timings: str | os.PathLike | None = None, figure: str | None = None) -> str:
    """The results section (Markdown) of one run: what was run, the table, per-notebook times."""
    p = get_profile(profile)
    table = load_unlearning_table(run_dir, variant)
    f = float(p.unlearn.main_fraction)
    rows = results_rows(table, f)
    head = "| model / method | " + " | ".join(h for h, _, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, r in rows.iterrows():
        cells = ["–" if not np.isfinite(r[c]) else fmt.format(r[c]) for _, c, fmt in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    n_seeds = int(table["seed"].nunique())
    text = [f"Profile `{p.name}` ({p.data.image_size}² slices, {p.data.num_coils} coils, {p.data.num_slices['train']} training "
            f"slices), poison `{variant}`, identified fraction f = {f:g}, {n_seeds} seed(s); "
            f"{int(p.data.accelerations[0])}× undersampling. *Poison effect*: how much of the CycleGAN's lesion a "
            "triggered test input makes the model add (1 = all of it); *healed*: 0 = the poisoned model, "
            "1 = oracle retraining; *time vs oracle*: wall time relative to retraining without any poisoned slice.",
            "", *lines]
    if figure:
        text += ["", f"![Utility versus forgetting]({figure})"]
    if timings and Path(timings).exists():
        t = read_json(timings)
        if t.get("profile") == p.name:
            full = t.get("full_run") or t  # the last run of every notebook, else the latest times
            per = ", ".join(f"{k} {v / 60:.1f} min" for k, v in full["notebooks"].items())
            text += ["", f"Wall time of `make book PROFILE={p.name}` ({full.get('machine', 'this machine')}): "
                         f"{per}; total {full['total_seconds'] / 60:.1f} min."]
    return "\n".join(text)


def write_results_figure(run_dir: str | os.PathLike, path: str | os.PathLike, variant: str = "cyclegan-cyst") -> Path:
    """Save the utility-versus-forgetting scatter of a run to ``path`` (PNG, atomically)."""
    matplotlib.use("Agg")
    fig = tradeoff_scatter(load_unlearning_table(run_dir, variant))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def replace_section(text: str, body: str) -> str:
    """``text`` with everything between the results markers replaced by ``body``.

    Raises ``ValueError`` if the markers are missing or out of order.
    """
    i, j = text.find(START), text.find(END)
    if i < 0 or j < i:
        raise ValueError(f"README needs the markers {START} and {END} (in that order) around the results section")
    return text[: i + len(START)] + "\n" + body.strip() + "\n" + text[j:]


def update_readme(readme: str | os.PathLike, run_dir: str | os.PathLike, profile, variant: str = "cyclegan-cyst",
                  timings: str | os.PathLike | None = None) -> str:
    """Regenerate the README's results section (and its figure) from ``run_dir``; returns the new section."""
    readme = Path(readme)
    p = get_profile(profile)
    run = as_layout(run_dir)
    run.require(run.unlearning_table(variant), "05_unlearning")
    fig_rel = Path("book") / "figures" / f"results_{p.name}.png"
    write_results_figure(run_dir, readme.parent / fig_rel, variant)
    body = results_markdown(run_dir, p, variant, timings, figure=fig_rel.as_posix())
    new = replace_section(readme.read_text(), body)
    with atomic_path(readme) as tmp:
        tmp.write_text(new)
    return body


def main(argv=None) -> int:
    """Command line: ``python -m mrilib.book.report --profile cpu``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--run-dir", default=None, help="default runs/<profile>")
    ap.add_argument("--variant", default="cyclegan-cyst")
    ap.add_argument("--readme", default="README.md")
    ap.add_argument("--timings", default="book/executed/timings.json")
    a = ap.parse_args(argv)
    run_dir = RunLayout(a.run_dir) if a.run_dir else RunLayout.default(a.profile)
    print(update_readme(a.readme, run_dir, a.profile, a.variant, a.timings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
