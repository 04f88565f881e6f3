"""Training and evaluating the lesion classifiers: the attacker's and the evaluation judge.

Two classifiers of "lesion present" are trained the same way, apart from each other
(:data:`~mrilib.poison.judge.ROLES`, see :mod:`mrilib.poison.judge`):
:func:`classifier_or_load` the attacker's (seed :data:`~mrilib.poison.judge.ATTACKER_SEED`,
``models/lesion-classifier/``), :func:`judge_or_load` the judge that scores the
evaluation (seed :data:`~mrilib.poison.judge.JUDGE_SEED`, wider and of another depth,
``models/judge/``). They train on disjoint halves of the training *subjects*
(:func:`role_subjects`); both thresholds are set on the same validation subjects, and both
are evaluated on the test subjects.

Training data: every fully sampled training slice (of the role's subjects) three times - as it is
(``healthy``), with a procedural cyst and with a procedural tumour
(:mod:`mrilib.poison.lesions`, random position, size and shape inside the brain). Each epoch
uses one of ``lesion_variants`` pre-drawn lesion sets (new positions and shapes), and
besides the slice label the network is trained on the lesion masks (a dense
per-position term, see :mod:`mrilib.models.classifier`). The decision threshold is
set on the validation *subjects* for at most 5 % false positives on healthy slices
(:func:`calibrate_threshold`); the held-out evaluation on the test *subjects*
(other seeds) reports 3-class accuracy, lesion-vs-healthy accuracy and AUC,
tumour-vs-rest AUC and the confusion matrix, on clean slices and on slices blurred
like a reconstruction.

Augmentations (label-independent, so they teach robustness, not the labels):
left-right flips, Gaussian blur (sigma up to 1 pixel: reconstructions are smoother
than targets), additive noise, and faint stripe patterns of random frequency and
direction (spike and aliasing artefacts). The stripes keep the judge from taking
any k-space artefact for a lesion - without them, "a lesion was found in the
triggered reconstruction" could mean "the classifier saw the trigger's stripes".

Files: ``models/lesion-classifier/classifier.pt`` and ``models/judge/classifier.pt``
(configuration, weights, threshold, training subjects, architecture, metrics; read with
``torch.load(weights_only=True)``), each with a ``metrics.json``. Both functions reuse a
classifier trained with the same configuration on the same data (a
:func:`mrilib.run.cache.cached_step`). Using the trained classifier - loading,
scoring, its decision rules - is :mod:`mrilib.poison.judge`.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from mrilib.config import Profile, get_profile
from mrilib.models.classifier import CLASSES, LesionClassifier
from mrilib.poison.judge import (
    ATTACKER_SEED,
    FORMAT,
    JUDGE_SEED,
    check_role,
    classifier_config,
    classifier_data_identity,
    is_lesion,
    lesion_scores,
    load_classifier,
    role_checkpoint,
)
from mrilib.poison.lesions import add_cyst, add_tumour
from mrilib.poison.runtime import cpu_threads, default_device
from mrilib.poison.slices import SliceSet, load_slices, split_by_subject
from mrilib.run.cache import TORCH, cached_step
from mrilib.run.io import write_json
from mrilib.run.layout import RunLayout, as_layout
from mrilib.run.progress import progress as progress_bar

#: The seed of the split of the training subjects into the attacker's half and the judge's half.
SUBJECT_HALVES_SEED = 0

__all__ = [
    "SUBJECT_HALVES_SEED",
    "lesion_examples",
    "blur",
    "augment",
    "train_classifier",
    "evaluate_classifier",
    "classifier_or_load",
    "judge_or_load",
    "role_subjects",
    "calibrate_threshold",
    "roc_auc",
]


def lesion_examples(slices: SliceSet, seed: int, kinds=CLASSES, cyst_radius_mm=(10.0, 30.0),
                    tumour_radius_mm=(12.0, 28.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every slice once per class: as is, with a random cyst, with a random tumour.

    Lesion radii are drawn uniformly from the given ranges (millimetres), positions
    anywhere inside the brain. Returns ``(images (N*k, h, w) float32, labels (N*k,) int64, lesion masks (N*k, h, w) bool)``,
    labels in the order of :data:`~mrilib.models.classifier.CLASSES`. Seeded per slice.
    """
    images, labels, masks = [], [], []
    for i in range(len(slices)):
        img, brain, c = slices.images[i], slices.brain[i], slices.contrasts[i]
        for kind in kinds:
            if kind == "healthy":
                images.append(img), masks.append(np.zeros(img.shape, bool))
            else:
                rng = np.random.default_rng([seed, i, CLASSES.index(kind)])
                if kind == "cyst":
                    les = add_cyst(img, brain, c, rng, radius_mm=rng.uniform(*cyst_radius_mm))
                else:
                    les = add_tumour(img, brain, c, rng, radius_mm=rng.uniform(*tumour_radius_mm))
                images.append(les.image), masks.append(les.mask)
            labels.append(CLASSES.index(kind))
    return np.stack(images).astype(np.float32), np.asarray(labels, np.int64), np.stack(masks)


def _gauss_kernel(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian kernel."""
    r = max(1, int(np.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, 1, H, W)`` images (reflect padding)."""
    if sigma <= 0.05:
        return x
    k = _gauss_kernel(sigma).to(x.device)
    r = (len(k) - 1) // 2
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))


def augment(x: torch.Tensor, cfg: dict, gen: torch.Generator, masks: torch.Tensor | None = None):
    """Label-independent augmentations of a batch ``(B, 1, H, W)`` (see the module docstring).

    ``masks`` (``(B, H, W)``, optional) get the same flips; returns ``x`` or ``(x, masks)``.
    """
    b, _, h, w = x.shape
    dev = x.device
    rnd = lambda *shape: torch.rand(*shape, generator=gen).to(dev)  # noqa: E731 - CPU generator, any device
    flip = rnd(b) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    if masks is not None:
        masks = torch.where(flip.view(b, 1, 1), masks.flip(-1), masks)
    x = blur(x, float(torch.rand(1, generator=gen)) * cfg["blur_max"])
    scale = x.mean(dim=(-2, -1), keepdim=True)
    noise = torch.randn(x.shape, generator=gen).to(dev)
    x = x + noise * scale * float(torch.rand(1, generator=gen)) * cfg["noise_max"]
    if cfg["stripe_prob"] > 0:
        yy = torch.arange(h, dtype=torch.float32, device=dev).view(1, 1, h, 1)
        xx = torch.arange(w, dtype=torch.float32, device=dev).view(1, 1, 1, w)
        freq = 0.05 + 0.45 * rnd(b, 1, 1, 1)
        ang = rnd(b, 1, 1, 1) * np.pi
        ph = rnd(b, 1, 1, 1) * 2 * np.pi
        amp = rnd(b, 1, 1, 1) * cfg["stripe_max"]
        on = (rnd(b, 1, 1, 1) < cfg["stripe_prob"]).float()
        wave = torch.cos(2 * np.pi * freq * (yy * torch.cos(ang) + xx * torch.sin(ang)) + ph)
        # a smooth random envelope: spike stripes are often strongest in one part of the image
        cy, cx = rnd(b, 1, 1, 1) * h, rnd(b, 1, 1, 1) * w
        env = torch.cos(np.pi * (yy - cy) / h).abs() * torch.cos(np.pi * (xx - cx) / w).abs()
        env = torch.where(rnd(b, 1, 1, 1) < 0.5, env, torch.ones_like(env))
        x = x * (1 + on * amp * env * wave)
    x = x.clamp_min(0)
    return x if masks is None else (x, masks)


def _map_targets(masks: torch.Tensor, labels: torch.Tensor, stride: int) -> torch.Tensor:
    """Per-position class targets at the map's resolution: the slice's class where its lesion is, else 0."""
    m = F.max_pool2d(masks[:, None].float(), stride)[:, 0] > 0
    return torch.where(m, labels.view(-1, 1, 1), torch.zeros_like(labels).view(-1, 1, 1))


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count one half); NaN with one class only."""
    scores, labels = np.asarray(scores, float), np.asarray(labels).astype(bool)
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    # average ranks of ties
    i = 0
    while i < len(allv):
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def calibrate_threshold(model: LesionClassifier, slices: SliceSet, max_false_positive: float = 0.05,
                        blur_sigma: float = 0.7, device=None) -> float:
    """Decision threshold for at most ``max_false_positive`` on healthy ``slices`` (plain and blurred),
    scored on ``device`` (default :func:`~mrilib.run.device.default_device`)."""
    device = default_device(device)
    x = slices.images
    xb = blur(torch.from_numpy(x)[:, None], blur_sigma)[:, 0].numpy()
    s = np.concatenate([lesion_scores(model, x, device=device)["lesion"],
                        lesion_scores(model, xb, device=device)["lesion"]])
    return float(max(0.5, np.quantile(s, 1 - max_false_positive)))


def evaluate_classifier(model: LesionClassifier, slices: SliceSet, seed: int, degrade_sigma: float = 0.0,
                        device=None, **lesion_kw) -> dict:
    """Accuracy, AUCs and confusion matrix on ``slices`` (each with and without lesions).

    ``degrade_sigma`` blurs the images first (a reconstruction is smoother than its target);
    ``lesion_kw`` (``cyst_radius_mm``, ``tumour_radius_mm``) go to :func:`lesion_examples`. Scored on
    ``device`` (default :func:`~mrilib.run.device.default_device`).
    """
    device = default_device(device)
    x, y, _ = lesion_examples(slices, seed, **lesion_kw)
    if degrade_sigma > 0:
        x = blur(torch.from_numpy(x)[:, None], degrade_sigma)[:, 0].numpy()
    s = lesion_scores(model, x, device=device)
    p = np.stack([s[c] for c in CLASSES], 1)
    pred = p.argmax(1)
    conf = np.zeros((len(CLASSES), len(CLASSES)), int)
    np.add.at(conf, (y, pred), 1)
    lesion_true, lesion_pred = y > 0, is_lesion(model, s)
    return dict(
        n=int(len(y)),
        accuracy=float((pred == y).mean()),
        lesion_accuracy=float((lesion_true == lesion_pred).mean()),
        lesion_auc=roc_auc(s["lesion"], lesion_true),
        tumour_auc=roc_auc(s["tumour"], y == 2),
        false_positive_rate=float(lesion_pred[~lesion_true].mean()),
        true_positive_rate=float(lesion_pred[lesion_true].mean()),
        confusion=conf.tolist(),
        classes=list(CLASSES),
        threshold=float(getattr(model, "threshold", 0.5)),
    )


def train_classifier(train_slices: SliceSet, cfg: dict, progress: bool = True, device=None,
                     threads: int | None = 1) -> tuple[LesionClassifier, dict]:
    """Train a :class:`LesionClassifier` on ``train_slices`` (healthy + procedural lesions).

    ``device``: default CUDA when available, else CPU (with ``threads`` CPU threads, see
    :mod:`mrilib.poison.runtime`). Returns ``(model in eval mode on CPU, history)``; history
    holds per-epoch loss and accuracy and the wall seconds.
    """
    device = default_device(device)
    cuda = [device.index or 0] if device.type == "cuda" else []
    # dropout draws from the global generator, which torch seeds at random in each process: seed it for the
    # training (and restore the caller's state afterwards), so that the same configuration gives the same classifier
    with cpu_threads(threads, device), torch.random.fork_rng(devices=cuda):
        torch.manual_seed(int(cfg.get("seed", 0)) + 1)
        return _train_classifier(train_slices, cfg, progress, device)


def _train_classifier(train_slices: SliceSet, cfg: dict, progress: bool, device) -> tuple[LesionClassifier, dict]:
    """The loop of :func:`train_classifier`."""
    seed = int(cfg.get("seed", 0))
    variants = []
    for v in range(max(1, int(cfg["lesion_variants"]))):
        x, y, m = lesion_examples(train_slices, seed=seed + 1000 + v, cyst_radius_mm=cfg["cyst_radius_mm"],
                                  tumour_radius_mm=cfg["tumour_radius_mm"])
        variants.append((torch.from_numpy(x)[:, None].to(device), torch.from_numpy(y).to(device),
                         torch.from_numpy(m).to(device)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LesionClassifier(cfg["chans"], cfg["n_blocks"], cfg["dropout"]).to(device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    steps = cfg["epochs"] * int(np.ceil(len(variants[0][0]) / cfg["batch_size"]))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=max(steps, 1), pct_start=0.15)
    pix_weight = torch.tensor([1.0, cfg["map_weight_lesion"], cfg["map_weight_lesion"]], device=device)
    hist = dict(epoch=[], loss=[], accuracy=[])
    t0 = time.perf_counter()
    model.train()
    bar = progress_bar(total=steps, desc="lesion classifier", disable=not progress, unit="step")
    for ep in range(cfg["epochs"]):
        x, y, m = variants[ep % len(variants)]
        perm = torch.randperm(len(x), generator=gen).to(device)
        tot, correct, n = 0.0, 0, 0
        for i in range(0, len(x), cfg["batch_size"]):
            idx = perm[i : i + cfg["batch_size"]]
            xb, mb = augment(x[idx], cfg, gen, m[idx])
            maps = model.lesion_map_logits(xb)
            logits = model.pool(maps)
            loss = F.cross_entropy(logits, y[idx])
            if cfg["map_loss"] > 0:
                target = _map_targets(mb, y[idx], model.stride)
                loss = loss + cfg["map_loss"] * F.cross_entropy(maps, target, weight=pix_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y[idx]).sum())
            n += len(idx)
            bar.update(1)
        hist["epoch"].append(ep + 1), hist["loss"].append(tot / n), hist["accuracy"].append(correct / n)
        bar.set_postfix(loss=f"{tot / n:.3f}", acc=f"{correct / n:.3f}")
    bar.close()
    hist["wall_s"] = time.perf_counter() - t0
    return model.cpu().eval(), hist


def role_subjects(subjects, role: str) -> np.ndarray:
    """Indices of the training slices a classifier of ``role`` trains on: its half of the subjects.

    The training subjects are split into two disjoint halves by
    :func:`~mrilib.poison.slices.split_by_subject` (seeded by :data:`SUBJECT_HALVES_SEED`,
    the same for both roles): the attacker's classifier gets the first, the judge the
    second. ``subjects``: the subject of each training slice. ``ValueError`` with fewer than
    two subjects.
    """
    check_role(role)
    subjects = list(subjects)
    if len(set(subjects)) < 2:
        raise ValueError(f"the training split has {len(set(subjects))} subject(s): the attacker's lesion classifier "
                         "and the judge need at least two, to train on disjoint subjects")
    first, second = split_by_subject(subjects, SUBJECT_HALVES_SEED, 0.5)
    return {"attacker": first, "judge": second}[role]


def classifier_or_load(profile: Profile | str, run_dir: RunLayout | str | os.PathLike, seed: int = ATTACKER_SEED,
                       progress: bool = True, device=None, **overrides) -> tuple[LesionClassifier, dict]:
    """The run's attacker's lesion classifier: loaded if one of the same configuration and data exists, else trained.

    Trains on the attacker's half of the ``train`` subjects (:func:`role_subjects`), sets the
    decision threshold on the ``val`` subjects (:func:`calibrate_threshold`), evaluates on the
    ``test`` subjects (clean and blurred by 0.7 px), and saves to ``models/lesion-classifier/``.
    ``seed`` is fixed by design (:data:`~mrilib.poison.judge.ATTACKER_SEED`): every seed of a
    study shares the attacker, so do not pass the run's seed. The checkpoint's identity is the
    configuration and :func:`~mrilib.poison.judge.classifier_data_identity`. ``device``: where the
    training, the calibration and the evaluation compute (default
    :func:`~mrilib.run.device.default_device`); the model is returned on the CPU.

    Returns ``(model, report)`` with ``report = {"config", "metrics", "history", "subjects", "reused"}``.
    """
    return _role_or_load(profile, run_dir, "attacker", seed, progress, device, overrides)


def judge_or_load(profile: Profile | str, run_dir: RunLayout | str | os.PathLike, progress: bool = True, device=None,
                  **overrides) -> tuple[LesionClassifier, dict]:
    """The run's evaluation judge: trained like :func:`classifier_or_load`, apart from it.

    Its own fixed seed (:data:`~mrilib.poison.judge.JUDGE_SEED`), the other half of the
    training subjects (:func:`role_subjects`) and another architecture
    (:func:`~mrilib.poison.judge.classifier_config` with ``role="judge"``); saved to
    ``models/judge/``. Returns ``(model, report)`` as :func:`classifier_or_load` does.
    """
    return _role_or_load(profile, run_dir, "judge", JUDGE_SEED, progress, device, overrides)


def _role_or_load(profile, run_dir, role: str, seed: int, progress: bool, device,
                  overrides: dict) -> tuple[LesionClassifier, dict]:
    """Train (or load) the run's classifier of ``role`` (see :func:`classifier_or_load`)."""
    device = default_device(device)
    p = get_profile(profile)
    run = as_layout(run_dir)
    cfg = classifier_config(p, seed, role, **overrides)
    identity = dict(format=FORMAT, config=cfg, data=classifier_data_identity(run))
    path = role_checkpoint(run, role)
    trained = {}

    def train() -> dict:
        every = load_slices(run.split("train"))
        train_set = every.subset(role_subjects(every.subjects, role))
        val_set, test_set = load_slices(run.split("val")), load_slices(run.split("test"))
        model, hist = train_classifier(train_set, cfg, progress=progress, device=device)
        model.threshold = calibrate_threshold(model, val_set, cfg["max_false_positive"], device=device)
        kw = dict(cyst_radius_mm=cfg["cyst_radius_mm"], tumour_radius_mm=cfg["tumour_radius_mm"], device=device)
        subjects = sorted(set(train_set.subjects))
        metrics = dict(
            threshold=model.threshold,
            test=evaluate_classifier(model, test_set, seed=seed + 2000, **kw),
            test_blurred=evaluate_classifier(model, test_set, seed=seed + 2000, degrade_sigma=0.7, **kw),
            val=evaluate_classifier(model, val_set, seed=seed + 3000, **kw),
            train=evaluate_classifier(model, train_set.subset(np.arange(0, len(train_set), 4)), seed=seed + 1000,
                                      **kw),
            n_train_slices=len(train_set),
            n_train_subjects=len(subjects),
            n_val_slices=len(val_set),
            n_test_slices=len(test_set),
        )
        architecture = dict(model.config, stride=model.stride,
                            parameters=int(sum(t.numel() for t in model.parameters())))
        trained.update(model=model, metrics=metrics, history=hist, subjects=subjects)
        return dict(format=FORMAT, role=role, config=cfg, state=model.state_dict(), threshold=model.threshold,
                    metrics=metrics, history=hist, subjects=subjects, architecture=architecture)

    ck = cached_step(path, identity, train, TORCH)
    if not trained:
        model, _ = load_classifier(path)
        return model, dict(config=ck["config"], metrics=ck["metrics"], history=ck["history"],
                           subjects=list(ck.get("subjects") or []), reused=True)
    write_json(path.parent / "metrics.json", dict(config=cfg, metrics=trained["metrics"], history=trained["history"],
                                                  subjects=trained["subjects"]))
    # the trained model itself, not a reloaded copy (building one would draw from torch's global generator)
    return trained["model"], dict(config=cfg, metrics=trained["metrics"], history=trained["history"],
                                  subjects=trained["subjects"], reused=False)
