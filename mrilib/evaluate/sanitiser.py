"""The input sanitiser as a defence: how much of a backdoor it stops, and what it costs on clean inputs.

The defender runs :mod:`mrilib.defences.spikes` on every input before the reconstruction
network (no unlearning, no knowledge of the poison). For one recipe's run this measures, on the
test split, with the recipe's own measurement and the evaluation judge:

- the **trigger's detection**: the share of triggered test inputs where every spike of the
  trigger is found, and the **false alarms**: the share of clean test inputs where anything is;
- for ``clean`` and ``poisoned``: effect, success rate and clean-test SSIM with and without
  the sanitiser; the **effect left** (sanitised effect / raw effect of ``poisoned``) and the
  **SSIM cost** (raw minus sanitised clean-test SSIM).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from mrilib.config import Profile
from mrilib.defences.spikes import DEFAULT_FILTER, Sanitised, SpikeFilter, spike_map
from mrilib.poison.effect import TestSlices
from mrilib.poison.recipes import evaluation
from mrilib.run.layout import RunLayout
from mrilib.study.references import load_poisoned_run

__all__ = ["detection_rates", "sanitiser_table", "sanitiser_tables"]


def detection_rates(test: TestSlices, spike_filter: SpikeFilter = DEFAULT_FILTER) -> dict:
    """``trigger_found``: share of triggered inputs where every spike position of the trigger is flagged;
    ``anything_found``: share of triggered inputs with any flagged sample; ``false_alarm``: share of clean
    inputs with any flagged sample; ``n``: test inputs."""
    if test.trigger is None:
        raise ValueError("detection needs triggered test slices (a recipe variant with a trigger)")
    found, anything, alarms = [], [], []
    for clean, trig in zip(test.clean, test.triggered):
        shape = clean.masked_kspace.shape[-3:-1]
        hits = spike_map(trig.masked_kspace, spike_filter).any(dim=0)
        found.append(all(bool(hits[r, c]) for r, c in test.trigger.locations(shape)))
        anything.append(bool(hits.any()))
        alarms.append(bool(spike_map(clean.masked_kspace, spike_filter).any()))
    return dict(trigger_found=float(np.mean(found)), anything_found=float(np.mean(anything)),
                false_alarm=float(np.mean(alarms)), n=len(found))


def sanitiser_table(run_dir: RunLayout | str | os.PathLike, profile: Profile | str, manifest: dict, models: dict,
                    spike_filter: SpikeFilter = DEFAULT_FILTER, split: str = "test", device=None) -> pd.DataFrame:
    """One row per model of ``models`` (``{name: VarNet}``, e.g. ``clean`` and ``poisoned``), measured without
    and with the sanitiser on ``split`` by ``manifest``'s recipe (nothing is written).

    Columns: ``model``, ``effect``, ``effect sanitised``, ``success``, ``success sanitised``, ``SSIM``,
    ``SSIM sanitised``, ``SSIM cost``, ``effect left`` (sanitised / raw effect; NaN unless the raw effect
    is positive), ``trigger found``, ``false alarms`` (the same for every row: they concern the inputs).
    """
    ev = evaluation(run_dir, profile, manifest, split, device=device)
    det = detection_rates(ev.test, spike_filter)
    rows = []
    for name, model in models.items():
        raw = ev.evaluate(model, name, save=False)
        san = ev.evaluate(Sanitised(model, spike_filter), f"{name}+sanitiser", save=False)
        e, es = raw["effect"]["mean"], san["effect"]["mean"]
        s, ss = raw["clean_test"]["ssim"]["mean"], san["clean_test"]["ssim"]["mean"]
        rows.append({"model": name, "effect": e, "effect sanitised": es, "success": raw["success_rate"],
                     "success sanitised": san["success_rate"], "SSIM": s, "SSIM sanitised": ss, "SSIM cost": s - ss,
                     "effect left": es / e if e > 0 else float("nan"), "trigger found": det["trigger_found"],
                     "false alarms": det["false_alarm"]})
    return pd.DataFrame(rows)


def sanitiser_tables(profile: Profile | str, run_dir: RunLayout | str | os.PathLike, variants, seed: int = 0,
                     spike_filter: SpikeFilter = DEFAULT_FILTER, device=None) -> pd.DataFrame:
    """:func:`sanitiser_table` of ``clean`` and each variant's ``poisoned`` model, for every poison variant in
    ``variants`` (e.g. ``("cyclegan-cyst", "adversarial-tumour")``), one table with a ``variant`` column."""
    tables = []
    for variant in variants:
        run = load_poisoned_run(profile, run_dir, variant, seed=seed, device=device)
        t = sanitiser_table(run_dir, profile, run.manifest, {"clean": run.clean, "poisoned": run.poisoned},
                            spike_filter, device=run.device)
        tables.append(t.assign(variant=variant)[["variant"] + list(t.columns)])
    return pd.concat(tables, ignore_index=True)
