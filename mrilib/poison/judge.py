"""The lesion classifiers as judges of "a lesion is present": loading, checking, scoring.

Chapter 3 trains two lesion classifiers (:mod:`mrilib.poison.classifier`), in two
:data:`ROLES`, apart from each other so that the poison is not scored by the network it
was made against:

- the **attacker's** classifier (``models/lesion-classifier/classifier.pt``): what the
  attacker builds the poison with - the CycleGAN recipe's checks, the PGD of the
  adversarial recipe and of the k-space stress test (:mod:`mrilib.attacks`);
- the **judge** (``models/judge/classifier.pt``): what scores the poison's effect and
  success in the evaluation (the recipes' evaluators, :mod:`mrilib.poison.recipes`). It
  has its own seed (:data:`JUDGE_SEED`), its own training subjects (the other half of the
  training subjects, :func:`mrilib.poison.classifier.role_subjects`) and another
  architecture (wider and of another depth, :func:`classifier_config`). Neither is the
  defender's signal: a defender has no lesion classifier
  (:func:`mrilib.unlearn.regions.defender_effect`).

Both seeds are fixed by design and do not follow the run's seed: the seeds of a
multi-seed study share the attacker and the judge. Each checkpoint holds its
configuration (with ``role`` and ``seed``), weights, calibrated decision threshold,
training subjects, architecture and metrics; read with ``torch.load(weights_only=True)`` and
checked against the content digest stored with it (:func:`load_classifier`).

Everything that *uses* them lives here: their configuration (:func:`classifier_config`),
reading one back (:func:`load_classifier`; :func:`load_run_classifier` and
:func:`load_run_judge` also check it against the run), class probabilities
(:func:`lesion_scores`), the two decision rules (:func:`is_lesion` for any lesion,
:func:`tumour_threshold` for a tumour), a classifier's identity in other outputs' caches
(:func:`classifier_identity`), and how far the defender's signal agrees with the judge
(:func:`signal_agreement`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from mrilib.config import ATTACKER_SEED, JUDGE_SEED, ClassifierConfig, Profile, as_dict, get_profile, with_overrides
from mrilib.models.classifier import CLASSES, LesionClassifier
from mrilib.run.cache import TORCH, CacheError, canonical, data_identity, digest, weights_digest
from mrilib.run.device import default_device, module_device, on_device
from mrilib.run.layout import RunLayout, as_layout

__all__ = [
    "CLASSIFIER_DEFAULTS",
    "FORMAT",
    "ATTACKER_SEED",
    "JUDGE_SEED",
    "ROLES",
    "JUDGE_WIDTH",
    "ClassifierMismatchError",
    "classifier_config",
    "check_role",
    "role_checkpoint",
    "classifier_data_identity",
    "load_classifier",
    "lesion_scores",
    "is_lesion",
    "tumour_threshold",
    "check_classifier",
    "classifier_identity",
    "load_run_classifier",
    "load_run_judge",
    "signal_agreement",
]

#: Every knob of the classifier and its training (:class:`mrilib.config.ClassifierConfig`).
CLASSIFIER_DEFAULTS = as_dict(ClassifierConfig())
#: Version of the checkpoint layout.
FORMAT = 1
#: The two lesion classifiers: the attacker's and the evaluation judge, with their fixed seeds.
ROLES = {"attacker": ATTACKER_SEED, "judge": JUDGE_SEED}
#: The judge's channels relative to the attacker's classifier.
JUDGE_WIDTH = 1.5


class ClassifierMismatchError(ValueError):
    """A lesion-classifier checkpoint that does not fit the run or the images."""


def check_role(role: str) -> str:
    """``role`` if it is one of :data:`ROLES`, else ``ValueError``."""
    if role not in ROLES:
        raise ValueError(f"unknown lesion-classifier role {role!r}: one of {sorted(ROLES)}")
    return role


def _fit_blocks(n_blocks: int, image_size: int) -> int:
    """The most blocks up to ``n_blocks`` whose map stride ``2**n`` divides ``image_size`` (at least 1)."""
    while image_size % (2 ** n_blocks) and n_blocks > 1:
        n_blocks -= 1
    return n_blocks


def _judge_architecture(cfg: dict, image_size: int) -> dict:
    """The judge's ``chans`` and ``n_blocks``: :data:`JUDGE_WIDTH` times wider than the attacker's
    classifier and one block deeper (its lesion map half as fine) where the image size allows
    a map of at least 2x2, else one block shallower, so that its layers differ from the attacked ones."""
    n = _fit_blocks(cfg["n_blocks"], image_size)
    deeper = n + 1
    if image_size % (2 ** deeper) == 0 and image_size // (2 ** deeper) >= 2:
        n = deeper
    elif n > 1:
        n -= 1
    return dict(chans=int(round(cfg["chans"] * JUDGE_WIDTH)), n_blocks=n)


def classifier_config(profile: Profile | str, seed: int | None = None, role: str = "attacker", **overrides) -> dict:
    """The configuration of a lesion classifier in ``role`` (one of :data:`ROLES`).

    The profile's ``poison.classifier``; for the ``"judge"`` its architecture changed
    (:data:`JUDGE_WIDTH` times the channels, another depth); then ``overrides``. The blocks
    are reduced until the map stride divides the image size. ``seed`` defaults to the
    role's fixed seed (:data:`ATTACKER_SEED`, :data:`JUDGE_SEED`), not the run's. The
    configuration records ``seed`` and ``role``.
    """
    p = get_profile(profile)
    cfg = as_dict(p.poison.classifier)
    if check_role(role) == "judge":
        cfg.update(_judge_architecture(cfg, p.data.image_size))
    cfg = with_overrides(cfg, overrides, CLASSIFIER_DEFAULTS, "classifier")
    cfg["n_blocks"] = _fit_blocks(cfg["n_blocks"], p.data.image_size)
    cfg["seed"] = int(ROLES[role] if seed is None else seed)
    cfg["role"] = role
    return cfg


def role_checkpoint(run: RunLayout | str | os.PathLike, role: str) -> Path:
    """Where the run keeps the classifier of ``role``: ``models/lesion-classifier/classifier.pt``
    (the attacker's) or ``models/judge/classifier.pt``."""
    run = as_layout(run)
    return run.judge_checkpoint if check_role(role) == "judge" else run.classifier_checkpoint


def classifier_data_identity(run: RunLayout | str | os.PathLike) -> dict:
    """What the run's classifier is trained, calibrated and tested on: the three clean splits."""
    run = as_layout(run)
    return data_identity([run.split(s) for s in ("train", "val", "test")])


def load_classifier(path: str | os.PathLike) -> tuple[LesionClassifier, dict]:
    """Load a saved classifier (a ``classifier.pt`` or its folder); returns ``(model, checkpoint)``.

    The file is a :data:`mrilib.run.cache.TORCH` entry, read on the CPU with ``weights_only=True``
    and checked against the :func:`~mrilib.run.cache.content_digest` stored when it was written
    (files written before digests were kept have none and load as before). Raises
    ``FileNotFoundError`` naming the notebook that makes it when missing, and
    :class:`~mrilib.run.cache.CacheError` naming the file and the fix when it is damaged.
    """
    path = Path(path)
    if path.is_dir() or path.suffix != ".pt":
        path = path / "classifier.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no lesion classifier at {path}: train it with mrilib.poison.classifier."
                                "classifier_or_load or judge_or_load (notebooks/03_poison_cyclegan.ipynb)")
    try:
        ck = TORCH.load(path)  # loaded on the CPU; lesion_scores moves it
    except CacheError as err:
        raise CacheError(f"{err}; delete {path} and train it again with mrilib.poison.classifier.classifier_or_load "
                         "or judge_or_load (notebooks/03_poison_cyclegan.ipynb)") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise ValueError(f"{path}: not a lesion-classifier checkpoint")
    c = ck["config"]
    model = LesionClassifier(c["chans"], c["n_blocks"], c["dropout"])
    model.load_state_dict(ck["state"])
    model.threshold = float(ck.get("threshold", 0.5))
    return model.eval(), ck


@torch.no_grad()
def lesion_scores(model: LesionClassifier, images, batch_size: int = 128, device=None) -> dict[str, np.ndarray]:
    """Class probabilities of magnitude images ``(N, H, W)`` (numpy or tensor).

    Returns numpy arrays ``healthy``, ``cyst``, ``tumour`` (probabilities) and
    ``lesion`` (= 1 - p(healthy)). "A lesion is present": :func:`is_lesion`. Computed on
    ``device`` (default :func:`~mrilib.run.device.default_device`; the classifier is copied
    there when it is elsewhere).
    """
    model.eval()
    device = default_device(device)
    net = on_device(model, device)
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if x.dim() == 2:
        x = x[None]
    probs = [net.probabilities(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]  # to numpy
    p = torch.cat(probs).numpy() if probs else np.zeros((0, len(CLASSES)), np.float32)
    out = {name: p[:, k] for k, name in enumerate(CLASSES)}
    out["lesion"] = 1.0 - p[:, 0]
    return out


def is_lesion(model: LesionClassifier, scores: dict) -> np.ndarray:
    """"A lesion is present": ``scores["lesion"]`` above the model's decision threshold.

    The threshold (``model.threshold``) is set when the classifier is trained: the
    smallest value >= 0.5 that keeps the false-positive rate on healthy *validation*
    subjects at most ``max_false_positive`` (5 %); 0.5 when not calibrated.
    """
    return np.asarray(scores["lesion"]) > float(getattr(model, "threshold", 0.5))


def tumour_threshold(classifier, level: float = 0.5) -> float:
    """The ``p(tumour)`` above which "the classifier sees a tumour": ``max(level, classifier.threshold)``.

    ``classifier.threshold`` is the lesion decision threshold calibrated in chapter 3 for
    at most 5 % false positives on healthy validation subjects (0.5 when absent); since
    ``p(lesion) >= p(tumour)``, a tumour above it is also a lesion by that rule.
    """
    return float(max(float(level), float(getattr(classifier, "threshold", 0.5) or 0.5)))


def check_classifier(classifier, image_shape) -> None:
    """Check that ``classifier`` is a lesion classifier that can score images of ``image_shape``.

    It must have ``tumour_score`` and return 3 class logits for a ``(1, H, W)`` batch;
    ``H`` and ``W`` must be divisible by its ``stride`` (if it has one). Raises
    :class:`ClassifierMismatchError`.
    """
    if not callable(getattr(classifier, "tumour_score", None)):
        raise ClassifierMismatchError(f"{type(classifier).__name__} is not a lesion classifier (no tumour_score); "
                                      "load it with mrilib.poison.judge.load_classifier")
    h, w = (int(s) for s in image_shape[-2:])
    stride = int(getattr(classifier, "stride", 1) or 1)
    if h % stride or w % stride:
        raise ClassifierMismatchError(f"the classifier (stride {stride}) needs images whose sides divide by {stride}; "
                                      f"got {h}x{w}: it was made for another image size")
    was = classifier.training
    classifier.eval()
    try:
        with torch.no_grad():
            z = classifier(torch.ones(1, h, w, device=module_device(classifier)))
    except Exception as err:  # noqa: BLE001 - any failure means: this classifier does not fit
        raise ClassifierMismatchError(f"the classifier cannot score {h}x{w} images: {type(err).__name__}: {err}") from None
    finally:
        classifier.train(was)
    if tuple(z.shape) != (1, 3):
        raise ClassifierMismatchError(f"the classifier returns logits of shape {tuple(z.shape)}, expected (1, 3)")


def classifier_identity(classifier) -> str:
    """A digest of a lesion classifier - a model or its checkpoint - for the identities of what it judged.

    Its weights (:func:`mrilib.run.cache.weights_digest`) and its decision threshold: the
    two things its verdicts depend on.
    """
    if isinstance(classifier, dict):
        state, threshold = classifier["state"], classifier.get("threshold", 0.5)
    else:
        state, threshold = classifier.state_dict(), getattr(classifier, "threshold", 0.5)
    return digest({"weights": weights_digest(state), "threshold": float(threshold)})


def load_run_classifier(run_dir: RunLayout | str | os.PathLike, profile: Profile | str, seed: int = ATTACKER_SEED):
    """The run's attacker's lesion classifier (made by ``03_poison_cyclegan``), checked against the run.

    What the attacker builds the poison with (PGD, the CycleGAN's checks); never what scores
    the evaluation (:func:`load_run_judge`). ``seed`` is the classifier's own, fixed
    :data:`ATTACKER_SEED` - not the run's seed. Returns ``(model, checkpoint)``. Raises
    :class:`~mrilib.run.layout.MissingArtefactError` (a ``FileNotFoundError``) naming
    ``notebooks/03_poison_cyclegan.ipynb`` when it is missing, and
    :class:`ClassifierMismatchError` when the checkpoint is unreadable, was trained with
    another configuration than the profile's, on other data than the run's, or does not fit
    the profile's image size.
    """
    return _load_run(run_dir, profile, "attacker", seed)


def load_run_judge(run_dir: RunLayout | str | os.PathLike, profile: Profile | str):
    """The run's evaluation judge (made by ``03_poison_cyclegan``), checked against the run like
    :func:`load_run_classifier`: ``(model, checkpoint)``, the checkpoint holding its training
    ``subjects`` and ``architecture``."""
    return _load_run(run_dir, profile, "judge", JUDGE_SEED)


def _load_run(run_dir, profile, role: str, seed: int):
    """Load and check the run's classifier of ``role`` (see :func:`load_run_classifier`)."""
    run = as_layout(run_dir)
    p = get_profile(profile)
    path = run.require(role_checkpoint(run, role), "03_poison_cyclegan")
    try:
        model, ck = load_classifier(path)
    except Exception as err:  # noqa: BLE001 - unreadable or not a classifier
        raise ClassifierMismatchError(f"{path}: not a usable lesion-classifier checkpoint ({type(err).__name__}: "
                                      f"{err}); delete it and re-run notebooks/03_poison_cyclegan.ipynb") from None
    want = canonical(classifier_config(p, seed, role))
    have = canonical(ck.get("config") or {})
    diffs = [f"{k}: checkpoint {have.get(k)!r} != profile {want[k]!r}" for k in sorted(want) if have.get(k) != want[k]]
    if diffs:
        raise ClassifierMismatchError(f"{path} was trained with another configuration than profile {p.name!r} "
                                      f"({role}, seed {seed}) asks for: " + "; ".join(diffs)
                                      + " - re-run notebooks/03_poison_cyclegan.ipynb")
    ident = ck.get("identity") or {}
    if "data" in ident and ident["data"] != classifier_data_identity(run):
        raise ClassifierMismatchError(f"{path} was trained on other data than {run.data}: "
                                      "re-run notebooks/03_poison_cyclegan.ipynb for this run")
    check_classifier(model, (p.data.image_size, p.data.image_size))
    return model, ck


def signal_agreement(rows) -> dict:
    """How far the defender's signal ranks unlearnt models as the judge does: Spearman correlations.

    ``rows``: one ``(defender signal, judge effect, judge success rate)`` per unlearnt model
    (for example :func:`mrilib.unlearn.regions.defender_effect`'s value and the
    ``effect["mean"]`` and ``success_rate`` of its evaluation). Rows with a non-finite value
    are left out. Returns ``{"n", "effect", "effect_p", "success", "success_p"}``: the rank
    correlation of the signal with the judge's effect and with its success rate and their
    two-sided p-values; NaN with fewer than 3 rows or a constant column.
    """
    a = np.asarray([tuple(r) for r in rows], float).reshape(-1, 3)
    a = a[np.isfinite(a).all(axis=1)]
    out = dict(n=int(len(a)))
    for k, name in ((1, "effect"), (2, "success")):
        rho = p = float("nan")
        if len(a) >= 3 and np.ptp(a[:, 0]) > 0 and np.ptp(a[:, k]) > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = spearmanr(a[:, 0], a[:, k])
            rho, p = float(res[0]), float(res[1])
        out[name], out[f"{name}_p"] = rho, p
    return out
