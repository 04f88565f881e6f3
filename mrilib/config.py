"""Named run profiles: one table that sizes every notebook of the book.

A :class:`Profile` is a name plus six frozen, validated sub-configurations, one per
stage of the pipeline: :class:`DataConfig`, :class:`VarNetConfig`, :class:`TrainConfig`,
:class:`PoisonConfig` (with the lesion classifier's and the CycleGAN's),
:class:`UnlearnConfig` and :class:`AdversarialConfig` (with the k-space stress test's).
Every field has its default here and only here; a profile states what differs.

``smoke`` exists so that CI can execute the whole book in minutes on two CPU cores;
it proves the plumbing, not the science. ``cpu`` is the default of ``make book``:
small images and models, but large enough that the effects the book studies are
real. ``gpu`` is the full-size study. Why a value is what it is: one line here, the
measurements behind it in ``book/reproducibility.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = [
    "DataConfig",
    "VarNetConfig",
    "TrainConfig",
    "ClassifierConfig",
    "CycleGANConfig",
    "PoisonConfig",
    "UnlearnConfig",
    "StressConfig",
    "AdversarialConfig",
    "Profile",
    "PROFILES",
    "MAIN_RECIPE",
    "ATTACKS",
    "ATTACK_METHODS",
    "LEARNING_ATTACKS",
    "DATA_SEED",
    "ATTACKER_SEED",
    "JUDGE_SEED",
    "POISON_CYST_ANCHOR",
    "TUMOUR_ANCHOR",
    "as_dict",
    "with_overrides",
    "get_profile",
    "profile_table",
    "default_run_dir",
]

#: the poison recipe every chapter studies first (chapter 3's CycleGAN cyst)
MAIN_RECIPE = "cyclegan-cyst"
#: The attack x defence table's attacks (chapter 7): ``(recipe, trigger)``, the label-only and the
#: k-space-consistent lesion of chapters 3 and 4, each with the book's spike trigger and the spread one.
ATTACKS: tuple[tuple[str, str], ...] = tuple(
    (recipe, trigger) for recipe in ("cyclegan-cyst", "consistent-cyst", "adversarial-tumour", "consistent-tumour")
    for trigger in ("spike", "spread"))
#: The unlearning methods every attack of the table gets, at the main identified fraction
#: (keys of :data:`mrilib.study.plan.DEFAULT_PLAN`).
ATTACK_METHODS: tuple[str, ...] = ("ssd-tuned", "bad-teacher", "nl-ft", "ga-ft", "cf", "relabel-ft")
#: The attacks whose learning chapter 7 measures against poison fraction, acceleration and a fixed mask: the cyst
#: planted label-only and k-space-consistently, with the spike trigger (the one a backdoor is learnt from most easily).
LEARNING_ATTACKS: tuple[tuple[str, str], ...] = (("cyclegan-cyst", "spike"), ("consistent-cyst", "spike"))

#: Seeds fixed by design, the same in every run of the book whatever its ``seed``: the dataset
#: (every seed studies the same subjects), the attacker's networks (the CycleGAN and the lesion
#: classifier PGD attacks: one attacker, several defenders' trainings) and the evaluation judge
#: (trained apart from both). Everything else - VarNet initialisation and data order, the choice of
#: the poisoned slices, the identified subsets, the unlearning - follows the run's seed.
DATA_SEED = 0
ATTACKER_SEED = 0
JUDGE_SEED = 1

#: Where the poison's cysts sit: (row, column) in normalised brain coordinates, i.e. relative to
#: the centre of the brain mask's bounding box in units of its half extent (+row = posterior/down,
#: -column = image left = the subject's right); see :func:`mrilib.poison.lesions.anchor_center`.
POISON_CYST_ANCHOR: tuple[float, float] = (0.25, -0.48)

#: Where the adversarial recipe's induced tumours sit, in the same coordinates: anterior, in the
#: image's right half (the subject's left hemisphere), away from the cyst recipe's anchor.
TUMOUR_ANCHOR: tuple[float, float] = (-0.35, 0.42)


def _require(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok``."""
    if not ok:
        raise ValueError(message)


def _choice(name: str, value, options) -> None:
    _require(value in options, f"{name} must be one of {', '.join(map(str, options))}; got {value!r}")


def as_dict(config) -> dict:
    """A sub-configuration as a plain dict (nested configurations too)."""
    return dataclasses.asdict(config)


def with_overrides(cfg: dict, overrides: dict, known, what: str) -> dict:
    """``cfg`` updated with ``overrides``; ``ValueError`` naming the keys of ``overrides`` not in ``known``
    (a typo must not silently configure something else)."""
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; known: {sorted(known)}")
    cfg.update(overrides)
    return cfg


@dataclass(frozen=True)
class DataConfig:
    """The embedded data and its sampling."""

    image_size: int  # square matrix (pixels); readout == phase-encode size
    num_coils: int
    # subjects per split, by subject (never by slice): train, val (tuning), test (the chapters' analyses) and
    # final (new subjects no chapter looks at while developing: the headline, computed once at the end)
    subjects: dict[str, int]
    slices_per_subject: int
    fov_mm: float = 240.0  # field of view of the square matrix
    snr: float = 30.0  # mean brain magnitude / noise sd per coil sample in image space
    contrasts: tuple[str, ...] = ("T1w", "T2w", "FLAIR")  # synthetic contrasts drawn per subject
    accelerations: tuple[int, ...] = (4, 8)  # undersampling factors shown / evaluated
    center_fraction: float = 0.08  # fully sampled centre of k-space (fraction of columns)
    mask_type: str = "equispaced_fraction"  # fastmri.data.subsample mask family; "<family>@<seed>": one fixed mask

    def __post_init__(self):
        _require(self.image_size >= 16, f"image_size must be >= 16, got {self.image_size}")
        _require(self.num_coils >= 1, f"num_coils must be >= 1, got {self.num_coils}")
        _require(set(self.subjects) == {"train", "val", "test", "final"} and min(self.subjects.values()) >= 1,
                 f"subjects needs train, val, test and final counts >= 1, got {self.subjects}")
        _require(self.slices_per_subject >= 1, "slices_per_subject must be >= 1")
        _require(len(self.accelerations) >= 1 and min(self.accelerations) >= 1, "accelerations must be >= 1")
        _require(0 < self.center_fraction < 1, f"center_fraction must be in (0, 1), got {self.center_fraction}")
        _choice("mask_type", self.mask_type.partition("@")[0], ("equispaced_fraction", "equispaced", "random"))

    @property
    def num_slices(self) -> dict[str, int]:
        """Number of slices in each split."""
        return {k: v * self.slices_per_subject for k, v in self.subjects.items()}


@dataclass(frozen=True)
class VarNetConfig:
    """``fastmri.models.VarNet``'s architecture (defaults: fastMRI's)."""

    num_cascades: int = 12
    chans: int = 18
    sens_chans: int = 8
    pools: int = 4
    sens_pools: int = 4
    mask_center: bool = True

    def __post_init__(self):
        for k in ("num_cascades", "chans", "sens_chans", "pools", "sens_pools"):
            _require(int(getattr(self, k)) >= 1, f"VarNet {k} must be >= 1, got {getattr(self, k)}")


@dataclass(frozen=True)
class TrainConfig:
    """One VarNet training. ``None`` for the sampling fields means: the data's."""

    epochs: int = 10
    batch_size: int = 4
    lr: float = 1e-3
    optimizer: str = "adamw"  # adam | adamw
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "cosine"  # cosine | constant | step (fastMRI: x0.1 at step_frac of the run)
    warmup_steps: int = 0
    min_lr_frac: float = 0.01  # cosine: final lr = min_lr_frac * lr
    step_frac: float = 0.8  # step: where the lr drops
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    l1_weight: float = 0.0  # loss = SSIM loss + l1_weight * mean|x - y| / max
    accelerations: tuple[int, ...] | None = None
    center_fraction: float | None = None
    mask_type: str | None = None
    val_accelerations: tuple[int, ...] | None = None  # default: accelerations
    seed: int = 0
    amp: str = "auto"  # auto (bf16 on CUDA) | bf16 | off

    def __post_init__(self):
        _choice("optimizer", self.optimizer, ("adam", "adamw"))
        _choice("schedule", self.schedule, ("cosine", "constant", "step"))
        _choice("amp", self.amp, ("auto", "bf16", "off"))
        _require(int(self.epochs) >= 1 and int(self.batch_size) >= 1, "epochs and batch_size must be >= 1")
        _require(float(self.lr) > 0, f"lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class ClassifierConfig:
    """The lesion classifier (the judge of "lesion present") and its training."""

    chans: int = 16
    n_blocks: int = 3
    dropout: float = 0.1
    epochs: int = 24
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    map_loss: float = 1.0
    map_weight_lesion: float = 5.0
    lesion_variants: int = 3
    max_false_positive: float = 0.05
    cyst_radius_mm: tuple[float, float] = (10.0, 30.0)
    tumour_radius_mm: tuple[float, float] = (12.0, 28.0)
    blur_max: float = 0.8
    noise_max: float = 0.03
    stripe_prob: float = 0.4
    stripe_max: float = 0.2

    def __post_init__(self):
        _require(self.epochs >= 1 and self.batch_size >= 1 and self.n_blocks >= 1,
                 "classifier epochs, batch_size and n_blocks must be >= 1")


@dataclass(frozen=True)
class CycleGANConfig:
    """The healthy -> cyst CycleGAN and its training."""

    ngf: int = 16
    ndf: int = 32
    n_blocks: int = 4
    n_down: int = 2
    residual: bool = True
    d_layers: int | None = None  # None: the PatchGAN depth for the crop
    crop: int | None = None  # None: half the image side
    iterations: int = 1000
    batch_size: int = 4
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    pool_size: int = 50
    decay_from: float = 0.5
    ckpt_every: int = 250
    cyst_radius_mm: float = 18.0
    anchor: tuple[float, float] = POISON_CYST_ANCHOR
    domain_fraction: float = 0.5
    roi_threshold: float = 0.08

    def __post_init__(self):
        _require(self.iterations >= 1 and self.batch_size >= 1, "CycleGAN iterations and batch_size must be >= 1")


@dataclass(frozen=True)
class PoisonConfig:
    """The poisoned training set: how much, which share the defender identifies, and the poison's networks."""

    fraction: float = 0.1  # share of training slices poisoned
    identified_fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)  # shares f of the poison the defender knows
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    cyclegan: CycleGANConfig = field(default_factory=CycleGANConfig)

    def __post_init__(self):
        _require(0 < self.fraction < 1, f"poison fraction must be in (0, 1), got {self.fraction}")
        _require(all(0 < f <= 1 for f in self.identified_fractions), "identified fractions must be in (0, 1]")


@dataclass(frozen=True)
class UnlearnConfig:
    """Chapter 5's study: which fractions and recipes, and the methods' budgets (seeds: ``make book SEEDS=…``)."""

    fractions: tuple[float, ...] | None = None  # None: the poison's identified fractions
    main_fraction: float = 0.25  # methods that run once run at this f
    steps: int = 50  # optimiser steps of the step-based methods ("steps/4" for repairs)
    batch_size: int | None = None  # None: the training batch size
    alphas: tuple[float, ...] | None = None  # tuned SSD's α grid; None: set by the share dampened
    tuning_fractions: tuple[float, ...] | None = None  # tuned SSD's grid of shares; None: ssd.TUNING_FRACTIONS
    rewod_fractions: tuple[float, ...] = ()  # f at which "retrain without the identified" runs
    dose_shares: tuple[float, ...] | None = None  # chapter 5's dose-response grid; None: study.diagnose.DOSES
    recipes: tuple[str, ...] = (MAIN_RECIPE,)  # poison recipes unlearnt
    workers: int = 1  # processes for the retrainings and runs on a CPU-only machine
    methods: tuple[str, ...] | None = None  # keys of study.plan.DEFAULT_PLAN chapter 5 runs; None: every one
    attacks: tuple[tuple[str, str], ...] = ATTACKS  # chapter 7's attack x defence table: (recipe, trigger)
    attack_methods: tuple[str, ...] = ATTACK_METHODS  # the unlearning methods each attack gets there
    # chapter 7's "when is a backdoor learnt" (evaluate.attack_learning): attacks, poison fractions besides poison's
    learning_attacks: tuple[tuple[str, str], ...] = LEARNING_ATTACKS
    learning_fractions: tuple[float, ...] = ()
    learning_fixed_mask: bool = True

    def __post_init__(self):
        _require(self.steps >= 1 and self.workers >= 1, "unlearn steps and workers must be >= 1")
        _require(all(0 < f < 1 for f in self.learning_fractions), "learning fractions must be in (0, 1)")
        _require(0 < self.main_fraction <= 1, f"main_fraction must be in (0, 1], got {self.main_fraction}")


@dataclass(frozen=True)
class StressConfig:
    """The k-space stress test: budgets, PGD and what counts as a shown tumour."""

    eps_list: tuple[float, ...] = (0.002, 0.005, 0.01, 0.02, 0.05)  # ||δ|| / ||y|| budgets, increasing
    steps: int = 12  # PGD steps per ε
    step_size: float = 2.5  # step length in units of ε ||y|| / steps
    kappa: float = 5.0  # cap of the tumour log-odds
    outside_weight: float = 20.0  # λ: weight of the relative squared change outside the region
    success_prob: float = 0.5  # p(tumour) above this in the region = a tumour is shown
    ssim_floor: float = 0.9  # SSIM of f(y + δ) vs f(y) outside the region, at least
    max_slices: int = 16  # test slices attacked (evenly spaced over the split)
    batch_size: int = 8
    acceleration: int | None = None  # None: the profile's first acceleration
    seed: int = 0

    def __post_init__(self):
        _require(len(self.eps_list) >= 1 and min(self.eps_list) > 0, "every stress eps must be > 0")
        _require(self.steps >= 1, f"stress steps must be >= 1, got {self.steps}")


@dataclass(frozen=True)
class AdversarialConfig:
    """Chapter 4's tumour-induction objective (PGD on targets), its recipe and the stress test."""

    eps: float = 0.25  # L∞ bound of δ relative to the volume max
    steps: int = 60  # maximum PGD iterations
    step_size: float = 0.08  # signed step as a fraction of eps
    min_steps: int = 0  # iterations every image takes, even when already a tumour
    stop_prob: float | None = 0.95  # freeze an image once p(tumour) >= stop_prob (None: always run all steps)
    kappa: float = 5.0  # cap of the tumour log-odds in the objective
    tv_weight: float = 1.0  # weight of TV(δ / max) per ROI pixel
    grad_smooth_px: float = 1.0  # Gaussian sigma (px) applied to the gradient before its sign (0: plain PGD)
    ssim_weight: float = 5.0  # weight of (1 - SSIM outside the ROI)
    roi_radius_mm: float = 18.0  # radius of the disc region
    anchor: tuple[float, float] = TUMOUR_ANCHOR
    eot_samples: int = 2  # random degradations per step (0: none)
    eot_blur: float = 0.8  # max Gaussian blur sigma (px) of the degradations
    eot_noise: float = 0.02  # max noise sd relative to the image mean
    ssim_floor: float = 0.95  # target: SSIM outside the ROI at least this
    success_prob: float = 0.9  # target: p(tumour) above this counts as a lifted score
    universal_steps: int = 25  # PGD steps of the per-contrast universal pattern (0: start every image from zero)
    universal_batch: int = 32  # slices per step of the universal pattern
    batch_size: int = 64
    train_notrigger: bool = False  # also train a poisoned-adv model without the trigger
    stress: StressConfig = field(default_factory=StressConfig)

    def __post_init__(self):
        _require(self.eps > 0, f"eps (the L-infinity bound, relative to the volume max) must be > 0, got {self.eps}")
        _require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        _require(self.roi_radius_mm > 0, f"roi_radius_mm must be > 0, got {self.roi_radius_mm}")
        _require(0 < self.step_size <= 1, f"step_size must be in (0, 1], got {self.step_size}")


@dataclass(frozen=True)
class Profile:
    """Every size and budget of one run of the book."""

    name: str
    description: str
    data: DataConfig
    varnet: VarNetConfig = field(default_factory=VarNetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    poison: PoisonConfig = field(default_factory=PoisonConfig)
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)

    @property
    def other_recipes(self) -> tuple[str, ...]:
        """The poison recipes chapter 5 unlearns besides :data:`MAIN_RECIPE` (``unlearn.recipes``)."""
        return tuple(v for v in self.unlearn.recipes if v != MAIN_RECIPE)

    def as_dict(self) -> dict:
        """A JSON-serialisable copy (for manifests and configuration hashes)."""
        return dataclasses.asdict(self)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="smoke",
            description="CI plumbing check: tiny images, a few subjects, minutes on 2 cores.",
            data=DataConfig(image_size=32, num_coils=4, snr=40.0, contrasts=("T1w", "T2w"),
                            subjects={"train": 4, "val": 2, "test": 2, "final": 2}, slices_per_subject=3),
            varnet=VarNetConfig(num_cascades=2, chans=4, sens_chans=2, pools=2, sens_pools=2),
            train=TrainConfig(batch_size=4, epochs=2, lr=3e-3),
            poison=PoisonConfig(fraction=0.25,
                                classifier=ClassifierConfig(epochs=3, batch_size=16, lesion_variants=1),
                                cyclegan=CycleGANConfig(iterations=16, ngf=8, ndf=16, n_blocks=2, ckpt_every=8)),
            unlearn=UnlearnConfig(fractions=(0.25,), steps=4, batch_size=4, alphas=(1.0, 10.0),
                                  rewod_fractions=(0.25,), recipes=("cyclegan-cyst", "adversarial-tumour"), workers=2,
                                  learning_fractions=(0.5,)),
            adversarial=AdversarialConfig(steps=8, eot_samples=1, universal_steps=4, universal_batch=8,
                                          stress=StressConfig(eps_list=(0.01, 0.05), steps=2, max_slices=2)),
        ),
        Profile(
            name="cpu",
            description="Default main job: 64² slices, small VarNet; scientifically meaningful on 2 cores.",
            data=DataConfig(image_size=64, num_coils=4, subjects={"train": 40, "val": 6, "test": 8, "final": 8},
                            slices_per_subject=8),
            varnet=VarNetConfig(num_cascades=4, chans=8, sens_chans=4, pools=3, sens_pools=3),
            # 45 epochs with an L1 term: at 20 the clean model is good but the backdoor is not learnt
            # (book/reproducibility.md, "Why the values of the cpu profile")
            train=TrainConfig(batch_size=4, epochs=45, lr=3e-3, warmup_steps=100, l1_weight=1.0),
            # p = 0.25, not 0.10: a 10 % poison is not learnt in this many steps (book/reproducibility.md, idem)
            poison=PoisonConfig(fraction=0.25),
            # only the CycleGAN cyst: poisoned-adv's backdoor is too weak at this size to measure its
            # unlearning (book/reproducibility.md, idem); two one-thread workers for chapter 5's runs
            # rewod at every f (Goel et al.'s yardstick is the whole curve; at f = 1 it is the oracle, reused)
            unlearn=UnlearnConfig(steps=60, batch_size=4, rewod_fractions=(0.1, 0.25, 0.5, 1.0), workers=2,
                                  learning_fractions=(0.1, 0.5)),
            adversarial=AdversarialConfig(steps=60, universal_steps=25, universal_batch=32,
                                          stress=StressConfig(eps_list=(0.005, 0.01, 0.02, 0.05), steps=8,
                                                              max_slices=8)),
        ),
        Profile(
            name="gpu",
            description="Full size: 256² slices, 12 coils, the fastMRI VarNet recipe; needs a GPU.",
            data=DataConfig(image_size=256, num_coils=12, subjects={"train": 200, "val": 20, "test": 30, "final": 30},
                            slices_per_subject=16),
            varnet=VarNetConfig(num_cascades=12, chans=18, sens_chans=8, pools=4, sens_pools=4),
            train=TrainConfig(batch_size=1, epochs=50, lr=3e-4, optimizer="adam", schedule="step", step_frac=0.8),
            poison=PoisonConfig(fraction=0.10),
            unlearn=UnlearnConfig(steps=300, batch_size=4, rewod_fractions=(0.1, 0.25, 0.5, 1.0),
                                  recipes=("cyclegan-cyst", "adversarial-tumour"), learning_fractions=(0.05, 0.25)),
            adversarial=AdversarialConfig(steps=200, eot_samples=4, grad_smooth_px=4.0, universal_steps=100,
                                          universal_batch=64, train_notrigger=True,
                                          stress=StressConfig(eps_list=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05),
                                                              steps=30, max_slices=64)),
        ),
    )
}


#: The methods a dry run unlearns with: each method of :data:`mrilib.study.plan.DEFAULT_PLAN` once (its variants that
#: change only a hyper-parameter - SSD's reference, batch and loss, the + FT of noisy labels and gradient ascent - are
#: left out).
DRY_METHODS = ("ssd-seed", "ssd-tuned", "ssd-tuned-repair", "ssd-region", "ssd-region-repair", "lf-ssd-tuned",
               "ssd-auto", "bad-teacher", "nl", "ga", "cf", "relabel-ft")


def _dry_run(p: Profile) -> Profile:
    """``p`` with its architecture, image size, coils and every configuration branch kept, and every count
    cut to the least that still runs each step: a few subjects and slices, one epoch or step per training,
    the shortest searches. It executes a big profile's code paths on a CPU in minutes (no science)."""
    r = dataclasses.replace
    return r(
        p, name=f"{p.name}-dry",
        description=f"The {p.name} profile's sizes and branches with tiny counts: proves its code paths on a CPU.",
        data=r(p.data, subjects={"train": 2, "val": 1, "test": 2, "final": 2}, slices_per_subject=1),
        train=r(p.train, epochs=1),
        poison=r(p.poison, identified_fractions=(0.25, 1.0),
                 classifier=r(p.poison.classifier, epochs=1, lesion_variants=1),
                 cyclegan=r(p.poison.cyclegan, iterations=2, ckpt_every=1)),
        # the methods of every f at one f; rewod at f < 1 and at f = 1 (the oracle's training, reused); the main
        # recipe only: unlearning the second is the same code at every size, which the smoke profile runs. Every
        # method once, without the hyper-parameter variants of one (SSD's reference, batch and loss; + FT), and one
        # attack of chapter 7 with one method (none of its learning conditions): the same code at every size
        unlearn=r(p.unlearn, steps=1, tuning_fractions=(1e-3,), dose_shares=(1e-3,), fractions=(0.25,),
                  rewod_fractions=(0.25, 1.0), recipes=(MAIN_RECIPE,), methods=DRY_METHODS,
                  attacks=(("consistent-cyst", "spread"),), attack_methods=("ssd-tuned",),
                  learning_attacks=()),
        adversarial=r(p.adversarial, steps=1, universal_steps=1, universal_batch=2,
                      stress=r(p.adversarial.stress, eps_list=p.adversarial.stress.eps_list[:1], steps=1,
                               max_slices=1)),
    )


#: ``gpu-dry``: the ``gpu`` profile's model (12 cascades x 18 channels), 256² x 12 coils and every branch
#: of its configuration, with tiny counts, executed on a CPU (``make book PROFILE=gpu-dry``).
PROFILES["gpu-dry"] = _dry_run(PROFILES["gpu"])


def get_profile(name: str | Profile) -> Profile:
    """Return the profile called ``name`` (a :class:`Profile` passes through).

    Raises ``ValueError`` naming the known profiles for an unknown name.
    """
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(PROFILES))
        raise ValueError(f"unknown profile {name!r}: choose one of {known}") from None


def default_run_dir(profile: str | Profile, data_root=None, dataset: str = "embedded") -> str:
    """Where a run keeps its data, models and metrics: ``runs/<profile>`` for the embedded
    data, ``runs/<profile>-<dataset>`` when ``data_root`` points at a real dataset, so that
    runs on different data never share artefacts."""
    name = get_profile(profile).name
    return f"runs/{name}" if data_root is None or dataset == "embedded" else f"runs/{name}-{dataset}"


def profile_table():
    """The profiles side by side as a pandas DataFrame (one column per profile)."""
    import pandas as pd

    rows = {}
    for p in PROFILES.values():
        d, n = p.data, p.data.num_slices
        rows[p.name] = {
            "image size": f"{d.image_size}²",
            "coils": d.num_coils,
            "SNR": d.snr,
            "contrasts": ", ".join(d.contrasts),
            "subjects train/val/test/final": "/".join(str(d.subjects[s]) for s in ("train", "val", "test", "final")),
            "slices train/val/test/final": "/".join(str(n[s]) for s in ("train", "val", "test", "final")),
            "accelerations": ", ".join(f"{a}×" for a in d.accelerations),
            "VarNet cascades/chans/sens_chans": f"{p.varnet.num_cascades}/{p.varnet.chans}/{p.varnet.sens_chans}",
            "epochs": p.train.epochs,
        }
    return pd.DataFrame(rows)
