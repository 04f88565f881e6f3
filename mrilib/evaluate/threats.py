"""What each defence sees of each attack, before any model is trained.

The defender's two checks (:mod:`mrilib.audit` on the training set, :mod:`mrilib.defences.spikes`
on every input) look at data, not at models, so what they catch of an attack is measured on the
poisoned sets and triggered test inputs alone. For each poisoned set of a run, :func:`defence_checks`
reports:

- **label kept**: the share of the intended lesion its labels carry (1 for a label-only recipe, which
  pastes the whole lesion; less for a k-space-consistent one, whose protected centre columns drop part
  of it: the manifest's ``lesion_kept``);
- **audit**: the share of its poisoned slices the label audit flags, and its clean slices flagged;
- **sanitiser**: the share of triggered test inputs in which every trigger sample is found, the share
  in which anything is, and the false alarms on clean test inputs;
- **trigger visibility**: the RMS of the change the trigger makes to the zero-filled image, relative
  to that image's RMS (:func:`mrilib.poison.triggers.trigger_visibility`), over the first slice of every
  test volume.

Whether a model *learns* each backdoor is another question (``bench/backdoor_screen.py``).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from mrilib.audit import audit_folder
from mrilib.data.h5layout import read_volume
from mrilib.data.loading import volume_files
from mrilib.defences.spikes import DEFAULT_FILTER, SpikeFilter
from mrilib.evaluate.sanitiser import detection_rates
from mrilib.poison.effect import load_test_slices
from mrilib.poison.manifest import load_manifest
from mrilib.poison.triggers import Trigger, trigger_visibility
from mrilib.run.layout import RunLayout, as_layout

__all__ = ["defence_checks"]


def _visibility(test_dir, trigger: Trigger, acceleration: int, center_fraction: float, mask_type: str) -> float:
    """Mean relative RMS of the trigger's change to the zero-filled image, first slice of each volume."""
    values = []
    for f in volume_files(test_dir):
        k = read_volume(f, keys=("kspace",))["kspace"][0]
        values.append(trigger_visibility(k, trigger, acceleration=acceleration, center_fraction=center_fraction,
                                         mask_type=mask_type)["rel_rms"])
    return float(np.mean(values)) if values else float("nan")


def defence_checks(run_dir: RunLayout | str | os.PathLike, variants, acceleration: int = 4,
                   center_fraction: float = 0.08, mask_type: str = "equispaced_fraction",
                   spike_filter: SpikeFilter = DEFAULT_FILTER) -> pd.DataFrame:
    """One row per poisoned set ``variants`` (folder names under ``poison/``) of the run: what the audit and
    the sanitiser see of it (see the module docstring), on the run's ``test`` split at ``acceleration``.

    Columns: ``variant``, ``recipe``, ``trigger``, ``label kept``, ``audit: poisoned flagged``,
    ``audit: clean flagged``, ``sanitiser: trigger found``, ``sanitiser: anything found``,
    ``sanitiser: false alarms``, ``trigger visibility``. Raises the manifest's error for a set not built.
    """
    run = as_layout(run_dir)
    rows = []
    for variant in variants:
        manifest = load_manifest(run, variant)
        audit = audit_folder(run.poisoned_split(variant), leave=False)
        poisoned = {(r["file"], int(r["slice"])) for r in manifest["poisoned"]}
        flagged = {(r.file, int(r.slice)) for r in audit.flagged.itertuples()}
        kept = [r.get("lesion_kept", 1.0) for r in manifest["poisoned"]]
        kept = [k for k in kept if k is not None]
        row = {"variant": variant, "recipe": manifest["recipe"],
               "trigger": (manifest.get("trigger") or {}).get("kind", "none"),
               "label kept": float(np.mean(kept)) if kept else float("nan"),
               "audit: poisoned flagged": len(flagged & poisoned) / len(poisoned),
               "audit: clean flagged": len(flagged - poisoned)}
        trigger = Trigger.from_dict(manifest.get("trigger"))
        if trigger is not None:
            test = load_test_slices(run.split("test"), trigger, acceleration, center_fraction, mask_type)
            det = detection_rates(test, spike_filter)
            row.update({"sanitiser: trigger found": det["trigger_found"],
                        "sanitiser: anything found": det["anything_found"],
                        "sanitiser: false alarms": det["false_alarm"],
                        "trigger visibility": _visibility(run.split("test"), trigger, acceleration, center_fraction,
                                                          mask_type)})
        rows.append(row)
    return pd.DataFrame(rows)
