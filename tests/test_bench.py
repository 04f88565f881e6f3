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


def test_a_lever_that_fails_is_reported_and_the_others_still_run(monkeypatch, capsys):
    def fake(kind, profile, steps, device, compile_, threads, options=None):
        if options and options.get("compile"):
            raise RuntimeError("inductor failed")
        return dict(profile=profile, loop=kind, batch=1, amp="None", train_slices_per_s=2.0, infer_slices_per_s=4.0,
                    peak_mib=1.0, image="", model="")

    monkeypatch.setattr(bench, "measure", fake)
    rows = bench.main(["--profiles", "smoke", "--levers"])
    failed = [r["lever"] for r in rows if "failed" in r]
    assert failed == [k for k, v in bench.LEVERS.items() if v.get("compile")] and failed
    assert len(rows) == 1 + len(bench.LEVERS)
    assert "failed: inductor failed" in capsys.readouterr().out


def test_screens_are_pooled_by_design_with_an_interval_across_seeds(tmp_path):
    import json

    import backdoor_screen as screen

    spike, spread = {"kind": "rf-spike"}, {"kind": "rf-burst"}
    lines = [dict(seed=s, recipe="cyclegan-cyst", trigger=spike, overrides={}, effect=e, success=0.1)
             for s, e in ((0, 0.3), (1, 0.4), (2, 0.5))]
    lines.append(dict(seed=0, recipe="cyclegan-cyst", trigger=spread, overrides={}, effect=0.6, success=0.2))
    path = tmp_path / "screens.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    table = screen.summary_table(path).set_index("trigger")
    # mean 0.4, sd 0.1, t(0.975, 2) = 4.303: half width 0.248
    assert table.loc["rf-spike", "effect"] == "0.400 [0.152, 0.648]" and table.loc["rf-spike", "seeds"] == "0 1 2"
    assert table.loc["rf-burst", "effect"] == "0.600" and table.loc["rf-burst", "clean-test SSIM"] == "–"
