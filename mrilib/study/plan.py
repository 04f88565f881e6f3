"""Which runs the unlearning study makes.

A *run* is one method with its hyper-parameters at one identified fraction ``f`` and
seed. :data:`DEFAULT_PLAN` lists the study's methods; :func:`plan_runs` expands it for a
profile (``Profile.unlearn``) into the runs, in the order they are executed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mrilib.config import Profile, get_profile
from mrilib.unlearn.base import UnlearnError
from mrilib.unlearn.methods import METHODS
from mrilib.unlearn.ssd import TUNING_FRACTIONS

__all__ = ["Run", "DEFAULT_PLAN", "plan_runs"]


@dataclass(frozen=True)
class Run:
    """One unlearning run: method, hyper-parameters, identified fraction, seed."""

    key: str  # short ascii id, e.g. "ssd-tuned"
    name: str  # label in tables, e.g. "SSD (seed: α=0.1, λ=0.1)"
    method: str  # key of mrilib.unlearn.methods.METHODS
    fraction: float
    seed: int = 0
    hp: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """A file-system-safe unique label."""
        return f"{self.key}-f{self.fraction:g}-s{self.seed}"


#: The methods of the study: (key, table name, method, hyper-parameters, runs at every f?).
#: ``steps`` scale with the profile (``Profile.unlearn.steps``); ``l1_weight="train"`` is the profile's
#: training loss (``Profile.train.l1_weight``): SSD's importances differentiate the loss the model was
#: trained on. Every SSD row uses the published reference, the full training set (forget ∪ retain).
#: ``ssd-seed`` is the seed study's configuration exactly (α = λ = 0.1, eval mode, SSIM + 1e-5·L1,
#: batches of 32); its variants change one thing each, at the main fraction only.
_SSD = dict(reference="full", l1_weight="train")
_SEED = dict(alpha=0.1, lam=0.1, eval_mode=True, l1_weight=1e-5, reference="full", batch_size=32)
DEFAULT_PLAN = (
    ("ssd-seed", "SSD (seed: α=0.1, λ=0.1)", "ssd", dict(_SEED), False),
    ("ssd-seed-retain", "SSD (seed, retain-only reference)", "ssd", dict(_SEED, reference="retain"), False),
    ("ssd-seed-b4", "SSD (seed, batches of 4)", "ssd", dict(_SEED, batch_size=4), False),
    ("ssd-seed-ssim", "SSD (seed, SSIM-only loss)", "ssd", dict(_SEED, l1_weight=0.0), False),
    ("ssd-tuned", "SSD tuned", "ssd-tuned", dict(_SSD), True),
    ("ssd-tuned-repair", "SSD tuned + repair", "ssd-tuned",
     dict(_SSD, repair="steps/4", repair_before_scoring=True), True),
    ("ssd-region", "SSD tuned, lesion region", "ssd-tuned", dict(_SSD, region=True, importance_batch_size=1), True),
    ("ssd-region-repair", "SSD tuned, lesion region + repair", "ssd-tuned",
     dict(_SSD, region=True, importance_batch_size=1, repair="steps/4", repair_before_scoring=True), True),
    ("lf-ssd-tuned", "LF-SSD tuned", "ssd-tuned", dict(_SSD, label_free=True), False),
    ("ssd-auto", "SSD auto-α", "ssd-auto", dict(_SSD, rho=0.25), True),
    ("bad-teacher", "Bad Teacher", "bad-teacher", dict(steps="steps"), False),
    ("nl", "Noisy labels", "noisy-labels", dict(steps="steps"), False),
    ("nl-ft", "Noisy labels + FT", "noisy-labels", dict(steps="steps", retain_weight=1.0), False),
    ("ga", "Gradient ascent", "gradient-ascent", dict(steps="steps"), False),
    ("ga-ft", "Gradient ascent + FT", "gradient-ascent", dict(steps="steps", retain_weight=1.0), False),
    ("cf", "Fine-tune (CF)", "finetune", dict(steps="steps"), True),
    # the corrective baseline of a defender who trusts the measurement: the identified labels replaced by
    # what their own k-space gives, then fine-tuning on the whole (corrected) training set
    ("relabel-ft", "Relabel + fine-tune", "finetune", dict(steps="steps", relabel=True, include_forget=True), True),
)


def plan_runs(profile: Profile | str, plan=DEFAULT_PLAN, seed: int = 0) -> list[Run]:
    """Every run of the study for ``profile`` in the run of seed ``seed``.

    Only the plan's keys in ``Profile.unlearn.methods`` when it lists some. Methods marked "every f" run at each
    identified fraction of the profile, the others at its main fraction only (``Profile.unlearn.main_fraction``). Symbolic step
    counts (``"steps"``, ``"steps/4"``) are resolved from ``Profile.unlearn.steps``, the
    loss weight ``"train"`` from the model's training loss (``Profile.train.l1_weight``).
    Several seeds are several runs of the book (``make book SEEDS="0 1 2"``), each with its own
    folder: a seed changes the trainings too, not only the unlearning.
    """
    p = get_profile(profile)
    u = p.unlearn
    steps = int(u.steps)
    fractions = [float(f) for f in (u.fractions or p.poison.identified_fractions)]
    main = float(u.main_fraction)
    chosen = None if u.methods is None else set(u.methods)
    unknown = sorted((chosen or set()) - {entry[0] for entry in plan})
    if unknown:
        raise UnlearnError(f"profile {p.name!r} names methods {unknown} the plan lacks; planned: {[e[0] for e in plan]}")
    runs = []
    for key, name, method, hp, every_f in plan:
        if method not in METHODS:
            raise UnlearnError(f"plan names unknown method {method!r}")
        if chosen is not None and key not in chosen:
            continue
        hp = dict(hp)
        for k, v in list(hp.items()):
            if v == "steps":
                hp[k] = steps
            elif v == "steps/4":
                hp[k] = max(1, steps // 4)
            elif v == "train":
                hp[k] = float(p.train.l1_weight)
        if "repair" in hp:
            hp["repair_steps"] = hp.pop("repair")
        hp.setdefault("batch_size", int(u.batch_size or p.train.batch_size))
        if method == "ssd-tuned":  # the grid is part of a run's identity: a new grid recomputes the run
            if u.alphas is not None:
                hp.setdefault("alphas", tuple(u.alphas))
            else:
                hp.setdefault("fractions", tuple(u.tuning_fractions or TUNING_FRACTIONS))
        for f in (fractions if every_f else [main]):
            runs.append(Run(key, name, method, f, int(seed), {**hp, "seed": int(seed)}))
    return runs
