"""The book end to end: notebooks executed at ``smoke``, HTML built, offline, rendered.

The expensive part (executing every notebook and building the book) happens once, in
the session fixture ``smoke_book`` of ``conftest.py``, inside a temporary copy of the
book sources. The browser test renders the built pages in headless Chromium with every
host name unresolvable, so it also proves that the pages need no network.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
import yaml

from mrilib.book import kernels, pipeline, publish
from mrilib.run.layout import RunLayout

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_MIME = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")
CDN_LIBS = re.compile(r"mathjax|require|jupyter-widgets|html-manager|embed-amd", re.I)


# --- helpers ------------------------------------------------------------------------


def toc_files(root: Path = REPO_ROOT) -> list[str]:
    """Every ``file:`` of ``_toc.yml`` (root first), without suffix."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


def toc_chapters(root: Path = REPO_ROOT) -> list[str]:
    """Stems of the executed notebooks the table of contents lists (``01_data`` …)."""
    return [f.split("/")[-1] for f in toc_files(root) if f.startswith("book/executed/")]


def source_notebooks(root: Path = REPO_ROOT) -> list[Path]:
    """The chapter notebooks the pipeline executes."""
    return pipeline.find_notebooks(root / "notebooks")


class _Tags(HTMLParser):
    """Collects the attributes of every ``<img>`` and ``<script>`` of a page."""

    def __init__(self):
        super().__init__()
        self.imgs: list[dict] = []
        self.scripts: list[dict] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs))
        elif tag == "script":
            self.scripts.append(dict(attrs))


def parse_tags(page: Path) -> _Tags:
    """Parse ``page`` and return its ``<img>`` and ``<script>`` attributes."""
    tags = _Tags()
    tags.feed(page.read_text(encoding="utf-8"))
    return tags


def resolves(page: Path, src: str) -> bool:
    """Whether ``src`` (as found in ``page``) is inline data or an existing local file."""
    if src.startswith("data:"):
        return True
    path = src.split("?", 1)[0].split("#", 1)[0]
    return (page.parent / path).resolve().is_file()


def image_outputs(nb) -> int:
    """Number of image outputs (PNG, JPEG, SVG, GIF) in an executed notebook."""
    return sum(
        any(m in out.get("data", {}) for m in IMAGE_MIME)
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )


# --- fast checks (no notebook execution) ----------------------------------------------


def test_find_notebooks_order_and_selection(tmp_path):
    """Chapters are NN_*.ipynb in name order; --only accepts stems, names and numbers."""
    for name in ("02_b.ipynb", "01_a.ipynb", "10_c.ipynb", "README.md", "1_x.ipynb", "scratch.ipynb"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in pipeline.find_notebooks(tmp_path)] == ["01_a.ipynb", "02_b.ipynb", "10_c.ipynb"]
    assert [p.stem for p in pipeline.find_notebooks(tmp_path, ["10", "01_a.ipynb", "02_b"])] == ["01_a", "02_b", "10_c"]
    with pytest.raises(ValueError, match="available: 01_a, 02_b, 10_c"):
        pipeline.find_notebooks(tmp_path, ["03_missing"])


def test_unknown_profile_is_refused(capsys):
    """A typo in --profile fails before anything runs, naming the known profiles."""
    assert pipeline.main(["--profile", "nope", "--root", str(REPO_ROOT)]) == 2
    assert "smoke" in capsys.readouterr().err


def test_a_locked_run_folder_is_refused_before_anything_runs(tmp_path, capsys):
    """Two runs of the book on one run folder would overwrite each other's artefacts: the second stops at once."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "01_x.ipynb").write_text("{}")
    (tmp_path / "_config.yml").write_text("title: x\n")
    stale = tmp_path / "runs" / "smoke" / "metrics" / ".a.json.x.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_text("partial")
    with RunLayout(tmp_path / "runs" / "smoke").lock():
        assert pipeline.main(["--profile", "smoke", "--root", str(tmp_path), "--no-html"]) == 1
    assert "in use by another run" in capsys.readouterr().err
    assert stale.exists()  # nothing of the locked run was touched
    assert not (tmp_path / "book" / "executed" / "01_x.ipynb").exists()


def test_toc_lists_every_notebook():
    """Every notebooks/NN_name.ipynb appears in _toc.yml as book/executed/NN_name, in order."""
    chapters = toc_chapters()
    assert chapters == [nb.stem for nb in source_notebooks()]
    for f in toc_files():
        if not f.startswith("book/executed/"):
            assert (REPO_ROOT / f"{f}.md").exists(), f"_toc.yml lists {f}, which does not exist"


def test_vendored_files_exist():
    """The files _config.yml points Sphinx and myst-nb at are vendored, with licences."""
    config = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())["sphinx"]["config"]
    vendor = REPO_ROOT / config["html_static_path"][0]
    assert vendor == REPO_ROOT / "book" / "_vendor"
    for rel in [config["mathjax_path"], *config["nb_ipywidgets_js"]]:
        assert "://" not in rel and (vendor / rel).is_file(), rel
    for lic in ("mathjax/LICENSE", "html-manager/LICENSE", "README.md"):
        assert (vendor / lic).is_file()
    assert not (REPO_ROOT / "_static").exists(), "a top-level _static/ makes jupyter-book add every vendored JS file to every page"


def test_source_notebooks_are_normalised_and_without_outputs():
    """Every chapter validates (cell ids, nbformat >= 4.5, so papermill warns of nothing) and is committed clean."""
    import warnings

    for path in source_notebooks():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # MissingIDFieldWarning and friends
            nb = nbformat.read(path, as_version=4)
            nbformat.validate(nb)
        assert (nb.nbformat, nb.nbformat_minor) >= (4, 5), path.name
        ids = [c.get("id") for c in nb.cells]
        assert all(ids) and len(set(ids)) == len(ids), f"{path.name}: missing or repeated cell ids"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert not any(c.outputs or c.execution_count for c in code), f"{path.name}: commit without outputs"
        assert any("parameters" in c.metadata.get("tags", []) for c in code), f"{path.name}: no parameters cell"


# --- publishing an executed copy (small in-memory notebooks) ---------------------------


def _executed_like(root: Path):
    """A notebook as papermill leaves it: parameters, injected parameters, outputs with paths."""
    v4 = nbformat.v4
    cells = [
        v4.new_code_cell('profile = "cpu"', metadata={"tags": ["parameters"]}),
        v4.new_code_cell('profile = "smoke"', metadata={"tags": ["injected-parameters"]}),
        v4.new_code_cell("print(run_dir)", outputs=[
            v4.new_output("stream", name="stdout", text=f"run directory: {root}/runs/smoke\n"),
            v4.new_output("stream", name="stderr", text="\rbar:   0%|  | 0/2"),
            v4.new_output("stream", name="stderr", text="\rbar:  50%|# | 1/2"),
            v4.new_output("stream", name="stderr", text="\rbar: 100%|##| 2/2\n"),
            v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": f"<Figure in {root}>"}),
            v4.new_output("stream", name="stderr", text=f"{root}/mrilib/x.py:3: UserWarning: w\n"),
        ]),
        v4.new_code_cell("1/0", outputs=[v4.new_output(
            "error", ename="ZeroDivisionError", evalue=f"in {root}2/other",
            traceback=[f"File \x1b[0;32m{root}/mrilib/y.py\x1b[0m, line 1", f"cwd {root}"])]),
    ]
    nb = v4.new_notebook(cells=cells)
    nb.metadata["papermill"] = {"input_path": f"{root}/notebooks/01_x.ipynb",
                                "output_path": f"{root}/book/executed/.01_x.partial.ipynb"}
    return nb


def test_injected_parameters_cell_is_removed_from_the_page():
    nb = _executed_like(Path("/srv/book"))
    assert publish.hide_injected_parameters(nb) == 1
    assert nb.cells[1].metadata["tags"] == ["injected-parameters", "remove-cell"]
    assert nb.cells[0].metadata["tags"] == ["parameters"]  # the chapter's own cell stays visible
    assert publish.hide_injected_parameters(nb) == 0  # idempotent


def test_machine_paths_in_outputs_become_relative(tmp_path):
    root = tmp_path / "book"
    nb = _executed_like(root)
    source = nbformat.writes(nb)
    replacements = publish.path_replacements(root)
    assert replacements[0][0] == max((p for p, _ in replacements), key=len)  # longest first
    assert publish.scrub_paths(nb, replacements) == 4
    out = nb.cells[2].outputs
    assert out[0].text == "run directory: runs/smoke\n"
    assert out[4].data["text/plain"] == "<Figure in .>"
    assert out[4].data["image/png"] == "iVBORw0KGgo="
    assert out[5].text == "mrilib/x.py:3: UserWarning: w\n"
    err = nb.cells[3].outputs[0]
    assert err.evalue == f"in {root}2/other"  # a sibling folder whose name merely starts alike is kept
    assert err.traceback == ["File \x1b[0;32mmrilib/y.py\x1b[0m, line 1", "cwd ."]
    assert str(root) not in json.dumps([c.outputs for c in nb.cells]).replace(f"{root}2", "")
    assert nbformat.writes(nb).count("profile") == source.count("profile")  # sources untouched


def test_path_replacements_cover_the_environment_and_home(tmp_path, monkeypatch):
    import sys

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    pairs = dict(publish.path_replacements(tmp_path / "home" / "proj", data_root="/data/m4raw"))
    assert pairs[str(tmp_path / "home" / "proj")] == ""
    assert pairs[str(tmp_path / "home")] == "~"
    assert pairs["/data/m4raw"] == "<data_root>"
    assert pairs[sys.prefix] == "<python>"
    assert pairs[str(REPO_ROOT)] in ("", "<python>", "~")  # the imported mrilib's repository
    assert "/" not in pairs
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("", outputs=[nbformat.v4.new_output(
        "stream", name="stdout", text=f"{tmp_path}/home/notes /data/m4raw/multicoil_train {sys.prefix}/lib\n")])])
    publish.scrub_paths(nb, publish.path_replacements(tmp_path / "home" / "proj", data_root="/data/m4raw"))
    assert nb.cells[0].outputs[0].text == "~/notes <data_root>/multicoil_train <python>/lib\n"


def test_progress_bar_updates_collapse_to_their_last_line():
    nb = _executed_like(Path("/srv/book"))
    assert publish.coalesce_streams(nb) == 2
    kinds = [(o.output_type, o.get("name")) for o in nb.cells[2].outputs]
    assert kinds == [("stream", "stdout"), ("stream", "stderr"), ("display_data", None), ("stream", "stderr")]
    assert nb.cells[2].outputs[1].text == "bar: 100%|##| 2/2\n"
    assert publish.coalesce_streams(nb) == 0


def test_finalise_notebook_rewrites_the_executed_copy(tmp_path):
    root = tmp_path / "book"
    (root / "book" / "executed").mkdir(parents=True)
    partial = root / "book" / "executed" / ".01_x.partial.ipynb"
    nbformat.write(_executed_like(root), partial)
    state = tmp_path / "state"
    state.mkdir()
    (state / "w.json").write_text(json.dumps({"m1": {"state": {"description": f"{root}/runs"}}}))
    publish.finalise_notebook(partial, root=root, state_dir=state, published_as=partial.with_name("01_x.ipynb"))
    nb = nbformat.read(partial, as_version=4)
    nbformat.validate(nb)
    assert "remove-cell" in nb.cells[1].metadata["tags"]
    assert nb.metadata["papermill"]["input_path"] == "notebooks/01_x.ipynb"
    assert nb.metadata["papermill"]["output_path"] == "book/executed/01_x.ipynb"
    widgets = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert widgets == {"m1": {"state": {"description": "runs"}}} and not list(state.iterdir())
    assert str(root) not in partial.read_text().replace(f"{root}2", "")


def test_kernels_use_ipc_sockets_in_a_private_directory():
    """IPC instead of TCP: ipykernel then prints no 'running over TCP without encryption' warning."""
    import os

    with kernels.ipc_kernels() as kwargs:
        if os.name == "nt":
            assert kwargs == {}
            return
        km = kwargs["config"]["KernelManager"]
        assert km["transport"] == "ipc"
        sockets = Path(km["ip"]).parent
        assert sockets.is_dir() and sockets.is_absolute() and not sockets.is_relative_to(REPO_ROOT)
    assert not sockets.exists()


@pytest.mark.notebook
def test_failing_notebook_is_named(tmp_path):
    """A failing notebook stops the run with its name; its partial copy is kept, no final copy."""
    shutil.copy2(REPO_ROOT / "_config.yml", tmp_path / "_config.yml")
    (tmp_path / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = 'cpu'\nseed = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("raise RuntimeError('boom ' + profile)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "notebooks" / "07_broken.ipynb")
    proc = subprocess.run(
        [sys.executable, "-m", "mrilib.book", "--profile", "smoke", "--root", str(tmp_path), "--no-html", "--no-progress"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "notebook 07_broken failed" in proc.stderr and "RuntimeError: boom smoke" in proc.stderr
    executed = tmp_path / "book" / "executed"
    assert (executed / "07_broken.failed.ipynb").exists()
    assert not (executed / "07_broken.ipynb").exists()
    assert not list(executed.glob(".*.partial.ipynb"))


# --- the smoke run of the whole book ----------------------------------------------------


@pytest.mark.notebook
def test_every_notebook_executed(smoke_book):
    """Every chapter notebook ran to the end: all code cells executed, no error output."""
    notebooks = source_notebooks(smoke_book.root)
    assert notebooks, "no notebooks/NN_*.ipynb to execute"
    timings = json.loads((smoke_book.executed / "timings.json").read_text())
    assert timings["profile"] == "smoke"
    for source in notebooks:
        executed = smoke_book.executed / source.name
        assert executed.exists(), f"{source.stem} was not executed"
        nb = nbformat.read(executed, as_version=4)
        assert not nb.metadata.get("papermill", {}).get("exception"), source.stem
        assert nb.metadata["papermill"]["parameters"]["profile"] == "smoke"
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            assert cell.execution_count is not None, f"{source.stem}: cell {i} did not run"
            errors = [o for o in cell.outputs if o.output_type == "error"]
            assert not errors, f"{source.stem}: cell {i} raised {errors[0].ename}: {errors[0].evalue}"
        assert timings["notebooks"][source.stem] > 0
        # published form: papermill's cell hidden, no machine path in any output
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and all("remove-cell" in c.metadata["tags"] for c in injected), source.stem
        outputs = json.dumps([c.get("outputs", []) for c in nb.cells])
        for machine_path in {str(smoke_book.root), str(REPO_ROOT), sys.prefix}:
            assert machine_path not in outputs, f"{source.stem} shows {machine_path}"
    # one line per chapter, no kernel or nbformat warnings, no per-cell bars
    for noise in ("without encryption", "MissingIDFieldWarning", "Executing:", "cell/s"):
        assert noise not in smoke_book.log, noise
    # a run of every notebook is recorded as the full run that the README quotes
    assert timings["full_run"]["notebooks"] == {s.stem: timings["notebooks"][s.stem] for s in notebooks}
    # the run stayed inside the temporary copy
    assert (smoke_book.root / "runs" / "smoke").is_dir()


@pytest.mark.notebook
def test_two_seeds_run_in_their_own_folders_and_share_what_is_fixed(smoke_book):
    """``--seeds 0 1``: chapters 1-5 per seed in ``seed-<k>/``, chapter 6 once; the dataset, the attacker's
    networks and the judge shared; the seeds' VarNets differ; ``headline.csv`` has both seeds and the pooled rows."""
    from mrilib.evaluate.uncertainty import HEADLINE_COLUMNS, read_headline
    from mrilib.recon.checkpoints import load_model
    from mrilib.run.cache import weights_digest
    from mrilib.run.layout import RunLayout

    shared = RunLayout(smoke_book.root / "runs" / "smoke")
    s0, s1 = shared.for_seed(0), shared.for_seed(1)
    for path in (shared.data / "final", shared.classifier_checkpoint, shared.judge_checkpoint, shared.cyclegan_checkpoint):
        assert path.exists(), path
    assert not (s0.root / "data").exists() and not (s1.root / "models" / "judge").exists()
    for nb in source_notebooks(smoke_book.root):
        other = s1.root / "executed" / nb.name
        assert other.exists() == (nb.stem not in pipeline.POOLING_CHAPTERS), other  # chapters 6-7 run once
    timings = json.loads((smoke_book.executed / "timings.json").read_text())
    assert timings["seeds"] == [0, 1] and set(timings["by_seed"]) == {"0", "1"}
    for stem in pipeline.POOLING_CHAPTERS:
        assert stem in timings["by_seed"]["0"] and stem not in timings["by_seed"]["1"]
    # the seed reaches the trainings: another seed, another clean model (same seed, same model: test_train)
    digests = [weights_digest(load_model(s.clean_model)[0]) for s in (s0, s1)]
    assert digests[0] != digests[1]
    m0, m1 = (json.loads(s.poison_manifest("cyclegan-cyst").read_text()) for s in (s0, s1))
    assert m0["poisoned_ids"] != m1["poisoned_ids"]  # the choice of poisoned slices follows the seed
    head = read_headline(shared.headline)
    assert list(head.columns)[:7] == list(HEADLINE_COLUMNS)[:7]
    assert set(head["seed"]) == {"0", "1", "all"}
    pooled = head[(head["seed"] == "all") & (head["method"] == "poisoned") & (head["metric"] == "ssim")].iloc[0]
    per_seed = head[(head["seed"] != "all") & (head["method"] == "poisoned") & (head["metric"] == "ssim")]["value"]
    assert pooled["value"] == pytest.approx(per_seed.mean())
    assert pooled["ci_low"] < pooled["value"] < pooled["ci_high"]
    assert (head[head["metric"] == "ssim"]["n_subjects"] == 2).all()  # smoke: two final subjects per seed


@pytest.mark.notebook
def test_every_attack_meets_every_defence_in_both_seeds(smoke_book):
    """Chapter 7: every attack of the profile built, trained and scored in each seed's folder, pooled in the shared
    ``metrics/attack_defence.csv``; the paired attacks poison their twins' slices and train no oracle of their own.
    Every condition of "when is a backdoor learnt" likewise, in ``metrics/attack_learning.csv``."""
    from mrilib.config import get_profile
    from mrilib.evaluate.attack_defence import TRIGGERS
    from mrilib.evaluate.uncertainty import read_headline
    from mrilib.poison.manifest import variant_name
    from mrilib.run.layout import RunLayout

    shared = RunLayout(smoke_book.root / "runs" / "smoke")
    attacks = get_profile("smoke").unlearn.attacks
    names = [variant_name(r, TRIGGERS[t]) for r, t in attacks]
    assert len(set(names)) == len(attacks) == 8
    table = read_headline(shared.shared / "metrics" / "attack_defence.csv")
    assert list(dict.fromkeys(table["attack"])) == names
    assert set(table["seed"]) == {"0", "1", "all"}
    for seed in (0, 1):
        lay = shared.for_seed(seed)
        manifests = {n: json.loads(lay.poison_manifest(n).read_text()) for n in names}
        for n in names:
            assert lay.metric(f"attack_{n}.json").is_file() and (lay.poisoned_model(n) / "last.pt").is_file()
        for twin, paired in (("cyclegan-cyst", "consistent-cyst-spread"), ("adversarial-tumour", "consistent-tumour")):
            assert manifests[paired]["poisoned_ids"] == manifests[twin]["poisoned_ids"]
        assert not lay.oracle_model("consistent-cyst").exists() and not lay.oracle_model("cyclegan-cyst-spread").exists()
        audit = table[(table["method"] == "audit") & (table["metric"] == "poisoned flagged") & (table["seed"] == str(seed))]
        flagged = dict(zip(audit["attack"], audit["value"]))
        assert all(flagged[n] == (0.0 if n.startswith("consistent") else 1.0) for n in names), flagged
    # when is a backdoor learnt: every condition in both seeds, at every acceleration (the fixed mask at its one)
    from mrilib.evaluate import attack_learning as al

    learning = read_headline(shared.shared / "metrics" / "attack_learning.csv")
    conds = al.conditions("smoke")
    assert list(dict.fromkeys(learning["attack"])) == [al.condition_variant("smoke", c) for c in conds]
    assert set(learning["seed"]) == {"0", "1", "all"}
    gaps = learning[(learning["method"] == "attack") & (learning["metric"] == "learnt gap") & (learning["seed"] == "0")]
    assert sorted(gaps.groupby("masks")["acceleration"].unique().map(sorted).map(tuple).items()) == [
        ("fixed", (4,)), ("random", (4, 8))]
    fixed = json.loads(shared.for_seed(1).poison_manifest("consistent-cyst-fixed-mask").read_text())
    assert fixed["kspace_edit"]["mask_type"] == "equispaced_fraction@0" and fixed["kspace_edit"]["accelerations"] == [4]
    assert (shared.for_seed(1).model(al.FIXED_CLEAN) / "best.pt").is_file()


@pytest.mark.notebook
def test_book_pages_and_figures(smoke_book):
    """index.html and every page of the toc exist; each chapter shows its notebook's figures."""
    html = smoke_book.html
    assert (html / "index.html").is_file()
    for f in toc_files(smoke_book.root):
        assert (html / f"{f}.html").is_file(), f"{f}.html was not built"
    for stem in toc_chapters(smoke_book.root):
        page = html / "book" / "executed" / f"{stem}.html"
        nb = nbformat.read(smoke_book.executed / f"{stem}.ipynb", as_version=4)
        imgs = parse_tags(page).imgs
        missing = [i.get("src", "")[:80] for i in imgs if not resolves(page, i.get("src", ""))]
        assert not missing, f"{stem}.html: images that do not resolve: {missing}"
        assert len(imgs) >= image_outputs(nb), f"{stem}.html has fewer <img> than the notebook has figures"
        assert image_outputs(nb) > 0, f"{stem}: no figure in the executed notebook"


@pytest.mark.notebook
def test_figures_are_numbered_captioned_and_referenced(smoke_book):
    """Every figure output of a captioned cell is a numbered figure with its caption, and every
    {numref} of a chapter resolves to a figure number (Sphinx's -W already fails on unknown labels)."""
    import html as html_lib

    numbers = {}
    for stem in toc_chapters(smoke_book.root):
        page = (smoke_book.html / "book" / "executed" / f"{stem}.html").read_text(encoding="utf-8")
        text = html_lib.unescape(re.sub(r"<[^>]+>", "", page)).replace("\u2019", "'")  # Sphinx's smart quotes
        nb = nbformat.read(smoke_book.executed / f"{stem}.ipynb", as_version=4)
        captioned = [c for c in nb.cells if c.cell_type == "code" and c.metadata.get("mystnb", {}).get("figure")]
        assert captioned, f"{stem}: no captioned figure"
        shown = sum(image_outputs(nbformat.v4.new_notebook(cells=[c])) for c in captioned)
        found = re.findall(r'<span class="caption-number">Fig\. (\d+)', page)
        assert len(found) >= shown, f"{stem}: {shown} captioned figures, {len(found)} numbered in the page"
        for c in captioned:
            if image_outputs(nbformat.v4.new_notebook(cells=[c])):
                words = re.split(r"[`$*]", c.metadata["mystnb"]["figure"]["caption"])[0].split()[:4]  # before markup
                assert " ".join(words) in text, f"{stem}: caption {words} not in the page"
        numbers[stem] = [int(n) for n in found]
        refs = re.findall(r"\{numref\}`([^`]+)`", "".join(c.source for c in nb.cells if c.cell_type == "markdown"))
        for label in refs:
            assert re.search(rf'href="#{re.escape(label)}"[^>]*>\s*<span class="std std-numref">Fig\. \d+', page), \
                f"{stem}: {{numref}}`{label}` does not resolve to a figure number"
    # Sphinx's numfig numbers the book's figures in one sequence, in the order of the table of contents
    sequence = [n for stem in numbers for n in numbers[stem]]
    assert sequence == list(range(1, len(sequence) + 1)), f"figure numbers {numbers}"


@pytest.mark.notebook
def test_no_cdn_scripts(smoke_book):
    """No page loads a script from the network; MathJax/require/widgets come from _static/."""
    html = smoke_book.html
    pages = sorted(p for p in html.rglob("*.html") if p.relative_to(html).parts[0] != "_static")
    assert pages
    seen = set()
    for page in pages:
        for script in parse_tags(page).scripts:
            src = script.get("src")
            if not src:
                continue
            assert not re.match(r"(https?:)?//", src), f"{page.name} loads {src}"
            assert resolves(page, src), f"{page.name}: {src} is missing"
            if CDN_LIBS.search(src):
                seen.add(src.split("?")[0].split("_static/")[-1])
    assert "mathjax/tex-chtml.js" in seen
    text = "\n".join(p.read_text(encoding="utf-8") for p in pages)
    if "application/vnd.jupyter.widget-state+json" in text:
        assert {"requirejs/require.js", "html-manager/embed-amd.js"} <= seen
    assert not re.search(r"cdn\.jsdelivr\.net|cdnjs\.cloudflare\.com", text)


# --- headless browser -----------------------------------------------------------------

#: Injected into a copy of a page: after load, records on <body> how many images there
#: are, which failed to decode, and the MathJax version that ran.
_CHECK_SCRIPT = """
<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  imgs.forEach(function (i) { i.loading = 'eager'; });
  function settle(i) {  // resolves once the image loaded or failed (or after 10 s)
    return new Promise(function (resolve) {
      if (i.complete) { resolve(); return; }
      i.addEventListener('load', resolve);
      i.addEventListener('error', resolve);
      setTimeout(resolve, 10000);
    });
  }
  Promise.all(imgs.map(settle)).then(function () {
    var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                  .map(function (i) { return (i.getAttribute('src') || '').slice(0, 80); });
    document.body.setAttribute('data-check-images', String(imgs.length));
    document.body.setAttribute('data-check-broken', bad.join(' | '));
    document.body.setAttribute('data-check-mathjax', (window.MathJax && MathJax.version) || 'none');
  });
});
</script>
"""


def _chromium() -> str | None:
    """Path of a Chromium executable, if one is installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run_chromium(browser: str, url: str, profile_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """Render ``url`` headless, offline (no host name resolves), and return the result."""
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
        f"--user-data-dir={profile_dir}", "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=60000", "--window-size=1280,6000", *extra, url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.mark.notebook
@pytest.mark.browser
@pytest.mark.parametrize("page", toc_files())
def test_pages_render_offline_in_chromium(smoke_book, page, tmp_path, artifacts_dir):
    """Each page renders from file:// with no network: images decode, math is typeset.

    A screenshot of every page is saved to test-artifacts/.
    """
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not on PATH (.ci/run installs Debian's chromium); browser check skipped")
    original = smoke_book.html / f"{page}.html"
    checked = original.with_name(original.stem + ".browsercheck.html")
    checked.write_text(original.read_text(encoding="utf-8").replace("</body>", _CHECK_SCRIPT + "</body>"))

    for attempt in range(3):  # a loaded machine can run out of virtual time before the load event
        proc = _run_chromium(browser, checked.as_uri(), tmp_path / f"profile{attempt}", "--dump-dom")
        dom = proc.stdout
        if 'data-check-images="' in dom:
            break
    assert "<body" in dom, f"chromium produced no DOM (exit {proc.returncode}): {proc.stderr[-2000:]}"
    count = re.search(r'data-check-images="(\d+)"', dom)
    assert count, "the page's load event never fired"
    assert int(count.group(1)) >= len(parse_tags(original).imgs)
    broken = re.search(r'data-check-broken="([^"]*)"', dom).group(1)
    assert broken == "", f"images that did not load: {broken}"
    if 'class="math notranslate nohighlight"' in original.read_text(encoding="utf-8"):
        assert re.search(r'data-check-mathjax="3\.', dom), "MathJax 3 did not load"
        assert "<mjx-container" in dom, "MathJax rendered nothing"
        assert "<mjx-merror" not in dom, "MathJax reported a TeX error (unknown macro or extension?)"
        raw = re.findall(r'class="math notranslate nohighlight">\s*\\[(\[]', dom)
        assert not raw, f"{len(raw)} math element(s) left untypeset"

    shot = artifacts_dir / f"{page.replace('/', '__')}.png"
    proc = _run_chromium(browser, original.as_uri(), tmp_path / "profile2", f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 10_000, f"no screenshot: {proc.stderr[-2000:]}"
