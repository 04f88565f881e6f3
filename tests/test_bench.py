"""The throughput benchmark runs and reports every lever against the fastMRI loop (numbers are not asserted)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import train_throughput as bench  # noqa: E402


@pytest.mark.slow
def test_levers_are_measured_against_one_reference(monkeypatch, capsys):
    # compile is left out here: the inductor's first compile costs minutes on 2 cores
    monkeypatch.setattr(bench, "LEVERS", {k: v for k, v in bench.LEVERS.items() if not v.get("compile")})
    rows = bench.main(["--profiles", "smoke", "--steps", "1", "--levers", "--threads", "1"])
    levers = [r["lever"] for r in rows]
    assert levers[0] == "fastMRI loop (reference)" and levers[1:] == list(bench.LEVERS)
    ref = rows[0]
    assert ref["batch"] == 1 and ref["amp"] == "None"
    by = {r["lever"]: r for r in rows}
    assert by["bf16 autocast"]["amp"] == "torch.bfloat16" and by["fp32"]["amp"] == "None"
    assert by["batch x2, bf16"]["batch"] == 2 * by["fp32"]["batch"]
    assert all(r["train_slices_per_s"] > 0 and r["infer_slices_per_s"] > 0 for r in rows)
    out = capsys.readouterr().out
    assert "x ref" in out and "channels_last" in out
