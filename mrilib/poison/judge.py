"""The lesion classifier as the judge of "a lesion is present": loading, checking, scoring.

Chapter 3 trains the classifier (:mod:`mrilib.poison.classifier`) and stores it in
``models/lesion-classifier/classifier.pt`` (configuration, weights, calibrated decision
threshold, metrics; read with ``torch.load(weights_only=True)``). Everything that *uses*
it lives here: its configuration (:func:`classifier_config`), reading it back
(:func:`load_classifier`, :func:`load_run_classifier` which also checks it against the
run), class probabilities (:func:`lesion_scores`), the two decision rules
(:func:`is_lesion` for any lesion, :func:`tumour_threshold` for a tumour) and its
identity in other outputs' caches (:func:`classifier_identity`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from mrilib.config import ClassifierConfig, Profile, as_dict, get_profile, with_overrides
from mrilib.models.classifier import CLASSES, LesionClassifier
from mrilib.run.cache import canonical, data_identity, digest, weights_digest
from mrilib.run.device import default_device, module_device, on_device
from mrilib.run.layout import RunLayout, as_layout

__all__ = [
    "CLASSIFIER_DEFAULTS",
    "FORMAT",
    "ClassifierMismatchError",
    "classifier_config",
    "classifier_data_identity",
    "load_classifier",
    "lesion_scores",
    "is_lesion",
    "tumour_threshold",
    "check_classifier",
    "classifier_identity",
    "load_run_classifier",
]

#: Every knob of the classifier and its training (:class:`mrilib.config.ClassifierConfig`).
CLASSIFIER_DEFAULTS = as_dict(ClassifierConfig())
#: Version of the checkpoint layout.
FORMAT = 1


class ClassifierMismatchError(ValueError):
    """A lesion-classifier checkpoint that does not fit the run or the images."""


def classifier_config(profile: Profile | str, seed: int = 0, **overrides) -> dict:
    """The classifier configuration: the profile's ``poison.classifier``, then overrides."""
    p = get_profile(profile)
    cfg = with_overrides(as_dict(p.poison.classifier), overrides, CLASSIFIER_DEFAULTS, "classifier")
    while p.data.image_size % (2 ** cfg["n_blocks"]) and cfg["n_blocks"] > 1:
        cfg["n_blocks"] -= 1
    cfg["seed"] = int(seed)
    return cfg


def classifier_data_identity(run: RunLayout | str | os.PathLike) -> dict:
    """What the run's classifier is trained, calibrated and tested on: the three clean splits."""
    run = as_layout(run)
    return data_identity([run.split(s) for s in ("train", "val", "test")])


def load_classifier(path: str | os.PathLike) -> tuple[LesionClassifier, dict]:
    """Load a saved classifier (a ``classifier.pt`` or its folder); returns ``(model, checkpoint)``.

    Raises ``FileNotFoundError`` naming the notebook that makes it when missing.
    """
    path = Path(path)
    if path.is_dir() or path.suffix != ".pt":
        path = path / "classifier.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no lesion classifier at {path}: train it with "
                                "mrilib.poison.classifier.classifier_or_load (notebooks/03_poison_cyclegan.ipynb)")
    ck = torch.load(path, map_location="cpu", weights_only=True)  # loaded on the CPU; lesion_scores moves it
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


def load_run_classifier(run_dir: RunLayout | str | os.PathLike, profile: Profile | str, seed: int = 0):
    """The run's lesion classifier (made by ``03_poison_cyclegan``), checked against the run.

    Returns ``(model, checkpoint)``. Raises :class:`~mrilib.run.layout.MissingArtefactError`
    (a ``FileNotFoundError``) naming ``notebooks/03_poison_cyclegan.ipynb`` when it is
    missing, and :class:`ClassifierMismatchError` when the checkpoint is unreadable, was
    trained with another configuration than the profile's, on other data than the run's,
    or does not fit the profile's image size.
    """
    run = as_layout(run_dir)
    p = get_profile(profile)
    path = run.require(run.classifier_checkpoint, "03_poison_cyclegan")
    try:
        model, ck = load_classifier(path)
    except Exception as err:  # noqa: BLE001 - unreadable or not a classifier
        raise ClassifierMismatchError(f"{path}: not a usable lesion-classifier checkpoint ({type(err).__name__}: "
                                      f"{err}); delete it and re-run notebooks/03_poison_cyclegan.ipynb") from None
    want = canonical(classifier_config(p, seed))
    have = canonical(ck.get("config") or {})
    diffs = [f"{k}: checkpoint {have.get(k)!r} != profile {want[k]!r}" for k in sorted(want) if have.get(k) != want[k]]
    if diffs:
        raise ClassifierMismatchError(f"{path} was trained with another configuration than profile {p.name!r} "
                                      f"(seed {seed}) asks for: " + "; ".join(diffs)
                                      + " - re-run notebooks/03_poison_cyclegan.ipynb")
    ident = ck.get("identity") or {}
    if "data" in ident and ident["data"] != classifier_data_identity(run):
        raise ClassifierMismatchError(f"{path} was trained on other data than {run.data}: "
                                      "re-run notebooks/03_poison_cyclegan.ipynb for this run")
    check_classifier(model, (p.data.image_size, p.data.image_size))
    return model, ck
