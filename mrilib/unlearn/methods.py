"""Corrective unlearning for VarNet: one interface, many methods.

``unlearn(name, model, forget, retain, device=None, **hp) -> UnlearnResult`` runs the method
called ``name`` on a copy of ``model`` on ``device`` (the poisoned checkpoint is never touched) and
returns the new model with its wall seconds and forward/backward slice-passes.
Every method is registered here, in :data:`METHODS`; this module also gathers the
package's public names (``from mrilib.unlearn.methods import ssd, fisher_importance``).
"""

from __future__ import annotations

from mrilib.unlearn.base import PassCounter, UnlearnError, UnlearnResult
from mrilib.unlearn.gradient import bad_teacher, finetune, gradient_ascent, noisy_labels
from mrilib.unlearn.regions import (
    disagreement_peak,
    disagreement_regions,
    label_disagreement,
    lesion_regions,
    scan_disagreement,
)
from mrilib.unlearn.ssd import (
    alpha_for_fraction,
    fisher_importance,
    label_free_importance,
    lf_ssd,
    region_importance,
    ssd,
    ssd_auto_alpha,
    ssd_dampen,
    ssd_tuned,
)

__all__ = [
    "METHODS",
    "unlearn",
    "UnlearnError",
    "UnlearnResult",
    "PassCounter",
    "ssd",
    "lf_ssd",
    "ssd_auto_alpha",
    "ssd_tuned",
    "ssd_dampen",
    "fisher_importance",
    "label_free_importance",
    "region_importance",
    "label_disagreement",
    "disagreement_peak",
    "scan_disagreement",
    "disagreement_regions",
    "lesion_regions",
    "alpha_for_fraction",
    "finetune",
    "noisy_labels",
    "gradient_ascent",
    "bad_teacher",
]

#: name → method(model, forget, retain, device=None, **hp) -> UnlearnResult
METHODS = {
    "ssd": ssd,
    "lf-ssd": lf_ssd,
    "ssd-auto": ssd_auto_alpha,
    "ssd-tuned": ssd_tuned,
    "finetune": finetune,
    "noisy-labels": noisy_labels,
    "gradient-ascent": gradient_ascent,
    "bad-teacher": bad_teacher,
}


def unlearn(name: str, model, forget, retain, device=None, **hp) -> UnlearnResult:
    """Run the unlearning method ``name`` (a key of :data:`METHODS`) with hyper-parameters ``hp`` on ``device``
    (default :func:`mrilib.run.device.default_device`)."""
    try:
        method = METHODS[name]
    except KeyError:
        raise UnlearnError(f"unknown unlearning method {name!r}; known: {sorted(METHODS)}") from None
    return method(model, forget, retain, device=device, **hp)
