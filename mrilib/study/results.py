"""The study's results in one table: utility, poison effect, healing and cost of every run.

- :func:`healed`: the share of the poison effect a model removed, relative to retraining
  (1 = as good as ``oracle``, 0 = as ``poisoned``);
- :func:`reference_cost`: what a (re)training cost, in the units of unlearning runs;
- :func:`results_table`: one row per reference model and per run, the table chapter 5
  writes to ``metrics/unlearning_<variant>.csv`` and chapter 6 reads back
  (:func:`mrilib.evaluate.tables.load_unlearning_table`). Its ``within tolerance`` column says
  whether a run that selects on validation utility (tuned SSD) found a point within its
  tolerance (``info["within_tolerance"]``); tables mark the runs that did not
  (:func:`mrilib.evaluate.tables.flagged`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["healed", "reference_cost", "results_table"]


def reference_cost(history: dict) -> dict:
    """Cost of a (re)training run from its ``history.json``, in the units of unlearning runs.

    One training step of one slice is a forward and a backward pass; validation adds
    forward passes.
    """
    fwd = int(history["train_slice_passes"]) + int(history.get("val_slice_passes", 0))
    bwd = int(history["train_slice_passes"])
    return dict(seconds=float(history["wall_s"]), forward_passes=fwd, backward_passes=bwd, passes=fwd + bwd)


def healed(effect: float, effect_poisoned: float, effect_oracle: float) -> float:
    """Share of the poison effect removed, relative to retraining: 1 = as good as ``oracle``, 0 = as ``poisoned``."""
    denom = effect_poisoned - effect_oracle
    if not np.isfinite(denom) or abs(denom) < 1e-12:
        return float("nan")
    return float((effect_poisoned - effect) / denom)


def _within(info: dict | None) -> bool:
    """A run's ``info["within_tolerance"]``; ``True`` when it records none (a method without a tolerance)."""
    value = (info or {}).get("within_tolerance")
    return True if value is None else bool(value)


def results_table(records: list[dict], references: dict[str, dict], oracle_cost: dict) -> pd.DataFrame:
    """One row per run (and per reference model): utility, poison effect, healed, forget SSIM, cost, and
    ``within tolerance``: the run's ``info["within_tolerance"]`` (tuned SSD: a grid point within its
    validation-SSIM tolerance was found), ``True`` for reference models and runs that do not record it.

    Args:
        records: results of :func:`mrilib.study.execute.run_or_load`.
        references: ``{"poisoned": metrics, "oracle": metrics, "clean": metrics, "rewod f=…": metrics}``
            (metrics as the evaluation returns them), each optionally with a ``cost`` key.
        oracle_cost: :func:`reference_cost` of the oracle's training.
    """
    e_p = references["poisoned"]["effect"]["mean"]
    e_o = references["oracle"]["effect"]["mean"]

    def row(name, f, seed, m, cost, info=None):
        fg = m.get("forget") or {}
        return {
            "method": name, "f": f, "seed": seed,
            "SSIM": m["clean_test"]["ssim"]["mean"], "PSNR": m["clean_test"]["psnr"]["mean"],
            "NMSE": m["clean_test"]["nmse"]["mean"],
            "poison effect": m["effect"]["mean"], "success rate": m["success_rate"],
            "healed": healed(m["effect"]["mean"], e_p, e_o),
            "forget SSIM vs clean": (fg.get("ssim_vs_clean") or {}).get("mean", np.nan),
            "forget SSIM vs poisoned": (fg.get("ssim_vs_poisoned") or {}).get("mean", np.nan),
            "seconds": cost.get("seconds", np.nan) if cost else np.nan,
            "passes": cost.get("passes", np.nan) if cost else np.nan,
            "time vs oracle": (cost["seconds"] / oracle_cost["seconds"]) if cost else np.nan,
            "passes vs oracle": (cost["passes"] / oracle_cost["passes"]) if cost else np.nan,
            "within tolerance": _within(info),
        }

    rows = [row(name, np.nan, np.nan, m, m.get("cost")) for name, m in references.items()]
    rows += [row(r["name"], r["fraction"], r["seed"], r["metrics"], r["cost"], r.get("info")) for r in records]
    return pd.DataFrame(rows)
