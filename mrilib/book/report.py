"""The README's results section, generated from a run's artefacts.

``python -m mrilib.book.report --profile cpu`` (or ``make results`` after ``make book``)
reads the pooled headline ``runs/<profile>/metrics/headline.csv`` (chapter 6: every model on the
untouched ``final`` split, mean and 95 % interval across seeds, or within the one seed), the first
seed's ``metrics/unlearning_<variant>.csv`` for the figure, and ``book/executed/timings.json``; it writes
one figure (utility versus forgetting) to ``book/figures/results_<profile>.png`` and replaces the
text between the README's ``<!-- results:start -->`` and ``<!-- results:end -->`` markers with a
table, and, when chapter 7 has run, the text between ``<!-- attacks:start -->`` and ``<!-- attacks:end -->`` with
the attack x defence table (``metrics/attack_defence.csv``). Every number comes from those files; nothing is typed
by hand.
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
from mrilib.evaluate.attack_defence import summary_table
from mrilib.evaluate.attack_learning import learning_table
from mrilib.evaluate.headline import reported_seed
from mrilib.evaluate.tables import load_unlearning_table
from mrilib.evaluate.uncertainty import ALL_SEEDS, read_headline
from mrilib.run.io import atomic_path, read_json
from mrilib.run.layout import RunLayout, as_layout
from mrilib.viz.unlearn import tradeoff_scatter

__all__ = ["results_rows", "results_markdown", "write_results_figure", "replace_section", "attack_markdown", "learning_markdown",
           "update_readme"]

START, END = "<!-- results:start -->", "<!-- results:end -->"
ATTACK_START, ATTACK_END = "<!-- attacks:start -->", "<!-- attacks:end -->"
LEARNING_START, LEARNING_END = "<!-- learning:start -->", "<!-- learning:end -->"
#: columns of the README table: (header, headline metric, digits)
COLUMNS = (("clean SSIM", "ssim", 4), ("PSNR (dB)", "psnr", 2), ("poison effect", "effect", 3),
           ("success rate", "success", 2), ("healed", "healed", 2), ("time vs oracle", "time", 3))
_REFERENCES = ("clean", "poisoned", "oracle")


def _cell(r, digits: int) -> str:
    """``value [low, high]``, ``value`` without an interval, or ``n/a``."""
    if r is None or not np.isfinite(r["value"]):
        return "n/a"
    if np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"]):
        return f"{r['value']:.{digits}f} [{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}]"
    return f"{r['value']:.{digits}f}"


def results_rows(head: pd.DataFrame) -> pd.DataFrame:
    """The pooled headline rows as a table of cells, one row per model: the references first, then the rewod
    retrainings, then the methods by pooled healed (best first). With one seed, that seed's rows (their
    subject-bootstrap intervals; a pooled row of one seed has no interval)."""
    seeds = set(head["seed"].astype(str)) - {ALL_SEEDS}
    pooled = head[head["seed"].astype(str) == (ALL_SEEDS if len(seeds) > 1 else next(iter(seeds), ALL_SEEDS))]
    methods = list(dict.fromkeys(pooled["method"]))
    healed = pooled[pooled["metric"] == "healed"].set_index("method")["value"]
    refs = [m for m in methods if m in _REFERENCES or m.startswith("rewod")]
    runs = sorted((m for m in methods if m not in refs), key=lambda m: -np.nan_to_num(healed.get(m, np.nan), nan=-9))
    cells = {}
    for m in refs + runs:
        sub = pooled[pooled["method"] == m].set_index("metric")
        cells[m] = {h: _cell(sub.loc[k] if k in sub.index else None, d) for h, k, d in COLUMNS}
    return pd.DataFrame.from_dict(cells, orient="index")


def results_markdown(run_dir: str | os.PathLike, profile, variant: str = "cyclegan-cyst",
                     timings: str | os.PathLike | None = None, figure: str | None = None) -> str:
    """The results section (Markdown) of one run: what was run, the table, per-notebook times."""
    p = get_profile(profile)
    run = as_layout(run_dir)
    head = read_headline(run.require(run.headline, "06_evaluation"))
    seeds = sorted({s for s in head["seed"].astype(str)} - {ALL_SEEDS}, key=int)
    rows = results_rows(head)
    lines = ["| model / method | " + " | ".join(h for h, _, _ in COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    lines += [f"| {name} | " + " | ".join(r) + " |" for name, r in rows.iterrows()]
    across = ("mean over the seeds with a Student-t 95 % interval across them" if len(seeds) > 1 else
              "one seed: a 95 % subject-level bootstrap interval within it")
    n_sub = int(head["n_subjects"].max())
    text = [f"Profile `{p.name}` ({p.data.image_size}² slices, {p.data.num_coils} coils, {p.data.num_slices['train']} "
            f"training slices), poison `{variant}`, identified fraction f = {p.unlearn.main_fraction:g}, "
            f"{len(seeds)} seed(s) ({', '.join(seeds)}); {int(p.data.accelerations[0])}× undersampling; every number "
            f"on the untouched `final` split ({n_sub} subjects), {across}. *Poison effect*: how much of the "
            "CycleGAN's lesion a triggered input makes the model add (1 = all of it); *success*: the judge finds the "
            "lesion in the triggered reconstruction and not in the clean one; *healed*: 0 = the poisoned model, "
            "1 = oracle retraining (n/a where the poisoned-oracle gap is within its uncertainty); *time vs oracle*: "
            "wall time relative to retraining without any poisoned slice. Intervals that overlap are not "
            "distinguishable.", "", *lines]
    if figure:
        text += ["", f"![Utility versus forgetting]({figure})"]
    if timings and Path(timings).exists():
        t = read_json(timings)
        if t.get("profile") == p.name:
            full = t.get("full_run") or t  # the last run of every notebook, else the latest times
            by_seed = full.get("by_seed") or {str(t.get("seed", 0)): full["notebooks"]}
            per = "; ".join(f"seed {k}: " + ", ".join(f"{nb} {v / 60:.1f} min" for nb, v in nbs.items())
                            for k, nbs in by_seed.items())
            text += ["", f"Wall time of the run ({full.get('machine', 'this machine')}): {per}; total "
                         f"{full['total_seconds'] / 60:.1f} min."]
    return "\n".join(text)


def write_results_figure(run_dir: str | os.PathLike, path: str | os.PathLike, variant: str = "cyclegan-cyst") -> Path:
    """Save the utility-versus-forgetting scatter of a seed's run folder to ``path`` (PNG, atomically)."""
    matplotlib.use("Agg")
    fig = tradeoff_scatter(load_unlearning_table(run_dir, variant))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def replace_section(text: str, body: str, start: str = START, end: str = END) -> str:
    """``text`` with everything between the markers ``start`` and ``end`` (default: the results section's)
    replaced by ``body``.

    Raises ``ValueError`` if the markers are missing or out of order.
    """
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"README needs the markers {start} and {end} (in that order) around the section")
    return text[: i + len(start)] + "\n" + body.strip() + "\n" + text[j:]


def _chapter7_markdown(table: pd.DataFrame, profile, shown, what: str) -> str:
    """A chapter 7 table as Markdown after a line naming its profile, seeds and intervals; ``shown(table, seed)``
    makes the table of cells, ``what`` ends the line (the split, the undersampling)."""
    seed = reported_seed(table)
    seeds = sorted(set(table["seed"].astype(str)) - {ALL_SEEDS})
    intro = (f"Profile `{get_profile(profile).name}`, seed(s) {', '.join(seeds)} ("
             + ("mean [95 % CI] across seeds" if seed == ALL_SEEDS
                else "one seed: mean [95 % CI] by subject-level bootstrap") + f"), {what}.")
    return intro + "\n\n" + shown(table, seed).reset_index().to_markdown(index=False, disable_numparse=True)


def attack_markdown(run_dir: str | os.PathLike, profile) -> str:
    """The attack x defence table (chapter 7's ``metrics/attack_defence.csv`` in the shared run folder) as Markdown:
    pooled across seeds, or the one seed's subject-bootstrap intervals."""
    run = as_layout(run_dir)
    table = read_headline(run.require(run.attack_table, "07_attack_defence"))
    return _chapter7_markdown(table, profile, lambda t, seed: summary_table(t, profile, seed),
                              "`test` split, 4× undersampling")


def learning_markdown(run_dir: str | os.PathLike, profile) -> str:
    """When each backdoor is learnt (chapter 7's ``metrics/attack_learning.csv`` in the shared run folder) as
    Markdown: pooled across seeds, or the one seed's subject-bootstrap intervals."""
    run = as_layout(run_dir)
    table = read_headline(run.require(run.learning_table, "07_attack_defence"))
    return _chapter7_markdown(table, profile, learning_table, "`test` split")


def update_readme(readme: str | os.PathLike, run_dir: str | os.PathLike, profile, variant: str = "cyclegan-cyst",
                  timings: str | os.PathLike | None = None) -> str:
    """Regenerate the README's results section (and its figure) from ``run_dir`` (the shared run folder, or
    any seed's), its attack x defence section and its "when is a backdoor learnt" section, each when its chapter
    (6, 7) has run; returns the new sections.
    A run folder where neither has run raises the error that names chapter 6."""
    readme = Path(readme)
    p = get_profile(profile)
    run = as_layout(run_dir)
    new, bodies = readme.read_text(), []
    if run.headline.is_file() or not (run.attack_table.is_file() or run.learning_table.is_file()):
        head = read_headline(run.require(run.headline, "06_evaluation"))
        first = run.for_seed(min(int(s) for s in head["seed"].astype(str) if s != ALL_SEEDS))
        fig_rel = Path("book") / "figures" / f"results_{p.name}.png"
        write_results_figure(first, readme.parent / fig_rel, variant)
        bodies.append(results_markdown(run_dir, p, variant, timings, figure=fig_rel.as_posix()))
        new = replace_section(new, bodies[-1])
    if run.attack_table.is_file():  # chapter 7 ran
        bodies.append(attack_markdown(run_dir, p))
        new = replace_section(new, bodies[-1], ATTACK_START, ATTACK_END)
    if run.learning_table.is_file():
        bodies.append(learning_markdown(run_dir, p))
        new = replace_section(new, bodies[-1], LEARNING_START, LEARNING_END)
    with atomic_path(readme) as tmp:
        tmp.write_text(new)
    return "\n\n".join(bodies)


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
