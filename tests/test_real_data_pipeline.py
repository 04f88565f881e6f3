"""The whole book on every supported real-dataset layout: a fixture of each format via ``data_root``.

Each run executes all six chapters at the ``smoke`` profile on a tiny fixture written in the
format's exact on-disk layout (``tests/dataset_fixtures.py``) and builds the HTML with
warnings as errors, so a chapter that needs something a format lacks (coil maps, a brain)
fails here rather than in a user's hands.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import copy_book_sources
from dataset_fixtures import FIXTURE_WRITERS
from mrilib.book.pipeline import study_note
from mrilib.data.datasets import dataset_anatomy

FORMATS = ("m4raw", "fastmri", "skmtea", "cmrxrecon", "brats")


def test_every_format_has_a_fixture_and_an_anatomy():
    assert set(FORMATS) <= set(FIXTURE_WRITERS)
    assert {f: dataset_anatomy(f) for f in FORMATS} == {
        "m4raw": "brain", "fastmri": None, "skmtea": "knee", "cmrxrecon": "heart", "brats": "brain"}
    assert dataset_anatomy("fastmri:anatomy=brain") == "brain"


def test_a_study_note_only_for_data_that_is_not_brain():
    assert study_note("embedded") is None and study_note("m4raw") is None
    assert "heart images" in study_note("cmrxrecon") and "check the pipeline" in study_note("cmrxrecon")
    assert "knee" in study_note("skmtea") and "fastmri:anatomy=brain" in study_note("fastmri")


@pytest.mark.notebook
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_whole_book_runs_and_builds_on_each_format(fmt, tmp_path, artifacts_dir):
    data_root = tmp_path / fmt
    FIXTURE_WRITERS[fmt](data_root)
    root = copy_book_sources(tmp_path / "book")
    cmd = [sys.executable, "-m", "mrilib.book", "--profile", "smoke", "--no-progress", "--data-root", str(data_root),
           "--dataset", fmt, "--root", str(root)]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=1800)
    log = proc.stdout + proc.stderr
    (artifacts_dir / f"pipeline-smoke-{fmt}.log").write_text(log)
    assert proc.returncode == 0, log[-4000:]
    note = study_note(fmt)
    assert (note in log) if note else ("note:" not in log)  # said up front for data that is not brain MRI
    run_dir = root / "runs" / f"smoke-{fmt}"
    manifest = json.loads((run_dir / "data" / "dataset.json").read_text())
    assert manifest["config"]["dataset"].startswith(fmt)
    assert {r["split"] for r in manifest["files"]} == {"train", "val", "test", "final"}
    for nb in sorted((root / "book" / "executed").glob("0*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        assert not [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"], nb.name
    assert (root / "_build" / "html" / "book" / "executed" / "07_attack_defence.html").is_file()
    assert json.loads((run_dir / "seed-0" / "metrics" / "varnet_clean.json").read_text())  # the first seed's folder
