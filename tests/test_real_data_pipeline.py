"""The book's first chapters on a real-dataset layout: an M4RAW-format fixture via ``data_root``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dataset_fixtures import write_m4raw_fixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.notebook
def test_data_and_varnet_chapters_run_on_an_m4raw_fixture(tmp_path):
    data_root = tmp_path / "m4raw"
    write_m4raw_fixture(data_root)
    run_dir, executed = tmp_path / "run", tmp_path / "executed"
    cmd = [sys.executable, "-m", "mrilib.book", "--profile", "smoke", "--only", "01", "02", "--no-html",
           "--no-progress", "--data-root", str(data_root), "--dataset", "m4raw", "--run-dir", str(run_dir),
           "--executed-dir", str(executed), "--root", str(ROOT)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = json.loads((run_dir / "data" / "dataset.json").read_text())
    assert manifest["config"]["dataset"].startswith("m4raw")
    assert {r["split"] for r in manifest["files"]} == {"train", "val", "test"}
    for nb in ("01_data", "02_varnet"):
        cells = json.loads((executed / f"{nb}.ipynb").read_text())["cells"]
        assert not [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    metrics = json.loads((run_dir / "metrics" / "varnet_clean.json").read_text())
    assert metrics  # the VarNet chapter scored its model on the converted M4RAW test split
