"""The unlearning study: which runs, the defender's selection signals, cached results.

A *run* is one method with its hyper-parameters at one identified fraction ``f`` and
seed. :func:`plan_runs` lists them from the profile (``Profile.unlearn``);
:func:`run_or_load` executes one (or loads it when ``<out_dir>/<label>/result.json``
exists for the same poisoned model and configuration), saves the unlearnt weights
(``model.pt``, atomically) and the result: cost (wall seconds, slice-passes) and the
evaluation the caller supplies (poison effect, utility, forget-set SSIM).

The defender's signals, used to *select* hyper-parameters (tuned SSD, automatic α), see
only what a defender has: the identified slices and held-out clean data.

- :func:`identified_effect`: the lesion classifier's mean lesion probability on the
  reconstructions of the identified (poisoned, triggered) inputs;
- :func:`validation_utility`: mean SSIM on the clean validation split;
- for region-targeted SSD (``region=True`` in a run's hyper-parameters), where each
  identified slice's label disagrees with its own k-space
  (:func:`~mrilib.unlearn.regions.disagreement_regions`).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mrilib.run.io import atomic_path, read_json, write_json
from mrilib.config import Profile, get_profile
from mrilib.unlearn import METHODS, UnlearnError, unlearn
from mrilib.unlearn.ssd import TUNING_FRACTIONS

__all__ = ["Run", "plan_runs", "identified_effect", "validation_utility", "model_digest", "run_or_load",
           "load_unlearnt", "stored_result", "DEFAULT_PLAN", "reference_cost", "healed", "results_table", "PoisonedRun", "load_poisoned_run",
           "reference_models", "Study", "StudyInputs", "study_inputs", "unlearning_study"]


@dataclass(frozen=True)
class Run:
    """One unlearning run: method, hyper-parameters, identified fraction, seed."""

    key: str  # short ascii id, e.g. "ssd-tuned"
    name: str  # label in tables, e.g. "SSD (seed: α=0.1, λ=0.1)"
    method: str  # key of mrilib.unlearn.METHODS
    fraction: float
    seed: int = 0
    hp: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """A file-system-safe unique label."""
        return f"{self.key}-f{self.fraction:g}-s{self.seed}"


#: The methods of the study: (key, table name, method, hyper-parameters, runs at every f?).
#: ``steps`` scale with the profile (``Profile.unlearn.steps``).
DEFAULT_PLAN = (
    ("ssd-seed", "SSD (seed: α=0.1, λ=0.1)", "ssd", dict(alpha=0.1, lam=0.1), False),
    ("ssd-tuned", "SSD tuned", "ssd-tuned", dict(), True),
    ("ssd-tuned-repair", "SSD tuned + repair", "ssd-tuned", dict(repair="steps/4", repair_before_scoring=True), True),
    ("ssd-region", "SSD tuned, lesion region", "ssd-tuned", dict(region=True, importance_batch_size=1), True),
    ("ssd-region-repair", "SSD tuned, lesion region + repair", "ssd-tuned",
     dict(region=True, importance_batch_size=1, repair="steps/4", repair_before_scoring=True), True),
    ("lf-ssd-tuned", "LF-SSD tuned", "ssd-tuned", dict(label_free=True), False),
    ("ssd-auto", "SSD auto-α", "ssd-auto", dict(rho=0.25), True),
    ("bad-teacher", "Bad Teacher", "bad-teacher", dict(steps="steps"), False),
    ("nl", "Noisy labels", "noisy-labels", dict(steps="steps"), False),
    ("nl-ft", "Noisy labels + FT", "noisy-labels", dict(steps="steps", retain_weight=1.0), False),
    ("ga", "Gradient ascent", "gradient-ascent", dict(steps="steps"), False),
    ("ga-ft", "Gradient ascent + FT", "gradient-ascent", dict(steps="steps", retain_weight=1.0), False),
    ("cf", "Fine-tune (CF)", "finetune", dict(steps="steps"), True),
)


def plan_runs(profile: Profile | str, plan=DEFAULT_PLAN) -> list[Run]:
    """Every run of the study for ``profile``.

    Methods marked "every f" run at each identified fraction of the profile, the
    others at its main fraction only (``Profile.unlearn.main_fraction``); each for
    every seed. Symbolic step counts (``"steps"``, ``"steps/4"``) are resolved from
    ``Profile.unlearn.steps``.
    """
    p = get_profile(profile)
    u = p.unlearn
    steps = int(u.steps)
    fractions = [float(f) for f in (u.fractions or p.poison.identified_fractions)]
    main = float(u.main_fraction)
    runs = []
    for key, name, method, hp, every_f in plan:
        if method not in METHODS:
            raise UnlearnError(f"plan names unknown method {method!r}")
        hp = dict(hp)
        for k, v in list(hp.items()):
            if v == "steps":
                hp[k] = steps
            elif v == "steps/4":
                hp[k] = max(1, steps // 4)
        if "repair" in hp:
            hp["repair_steps"] = hp.pop("repair")
        hp.setdefault("batch_size", int(u.batch_size or p.train.batch_size))
        if method == "ssd-tuned":  # the grid is part of a run's identity: a new grid recomputes the run
            if u.alphas is not None:
                hp.setdefault("alphas", tuple(u.alphas))
            else:
                hp.setdefault("fractions", tuple(u.tuning_fractions or TUNING_FRACTIONS))
        for seed in u.seeds:
            for f in (fractions if every_f else [main]):
                runs.append(Run(key, name, method, f, int(seed), {**hp, "seed": int(seed)}))
    return runs


@torch.no_grad()
def _reconstruct(model, dataset, batch_size: int = 8) -> np.ndarray:
    """Reconstructions ``(N, h, w)`` of a dataset of VarNetSamples (fixed masks of epoch 0)."""
    from mrilib.recon.train import forward_batch
    from mrilib.unlearn.base import batches

    model.eval()
    out = [forward_batch(model, b, "cpu")[0].numpy() for b in batches(dataset, batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0, 0), np.float32)


def identified_effect(classifier, forget) -> Callable[[torch.nn.Module], float]:
    """``effect_fn(model)``: mean lesion probability on reconstructions of the identified inputs."""
    from mrilib.poison.classifier import lesion_scores

    def effect(model) -> float:
        return float(np.mean(lesion_scores(classifier, _reconstruct(model, forget))["lesion"]))

    return effect


def validation_utility(val_dir: str | os.PathLike, profile: Profile | str,
                       max_slices: int | None = None) -> tuple[Callable[[torch.nn.Module], float], int]:
    """``(utility_fn, slices)``: mean SSIM on the clean validation split at the first acceleration.

    The validation samples (fixed masks, seeded by file name) are read once and kept in memory.
    """
    from mrilib.data.loading import varnet_dataset
    from mrilib.evaluate.metrics import ssim

    p = get_profile(profile)
    ds = varnet_dataset(val_dir, p.data.accelerations[0], p.data.center_fraction, p.data.mask_type)
    samples = [ds[i] for i in range(min(len(ds), max_slices or len(ds)))]

    def utility(model) -> float:
        recon = _reconstruct(model, samples)
        return float(np.mean([ssim(s.target.numpy(), r, float(s.max_value)) for s, r in zip(samples, recon)]))

    return utility, len(samples)


def model_digest(model: torch.nn.Module) -> str:
    """A short hash of a model's weights (identifies the poisoned model a run started from)."""
    h = hashlib.blake2b(digest_size=12)
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _identity(run: Run, poisoned_digest: str) -> dict:
    hp = {k: v for k, v in run.hp.items() if not callable(v)}
    return read_json_roundtrip(dict(run=asdict(run) | {"hp": hp}, poisoned=poisoned_digest))


def read_json_roundtrip(obj):
    """``obj`` as it reads back from JSON (tuples → lists), for comparisons with stored files."""
    import json

    return json.loads(json.dumps(obj, sort_keys=True))


def stored_result(run: Run, out_dir: str | os.PathLike, poisoned_digest: str) -> dict | None:
    """The stored result of ``run`` under ``out_dir`` when it was computed from the same poisoned
    model (``poisoned_digest``) with the same configuration and its weights exist; else ``None``."""
    folder = Path(out_dir) / run.label
    result_path = folder / "result.json"
    if result_path.exists() and (folder / "model.pt").exists():
        old = read_json(result_path)
        if old.get("identity") == _identity(run, poisoned_digest):
            return old
    return None


def run_or_load(run: Run, poisoned: torch.nn.Module, sets: Callable, evaluate: Callable, out_dir: str | os.PathLike,
                signals: Callable | None = None, poisoned_digest: str | None = None) -> dict:
    """Execute ``run`` (or load its stored result) and return the result record.

    Args:
        run: the run.
        poisoned: the poisoned model (never modified).
        sets: ``sets(fraction) -> (forget, retain)``.
        evaluate: ``evaluate(model, label) -> dict`` of metrics (test poison effect, utility…).
        out_dir: ``<run_dir>/unlearn/<variant>``; the run goes to ``out_dir/<label>/``.
        signals: ``signals(forget, region=False) -> dict`` of extra keyword arguments the method
            needs (``effect_fn``, ``utility_fn``, pass counts, and ``regions`` for a run with
            ``region=True``) — only for methods that select hyper-parameters.
        poisoned_digest: :func:`model_digest` of ``poisoned`` (computed if not given).
    """
    folder = Path(out_dir) / run.label
    poisoned_digest = poisoned_digest or model_digest(poisoned)
    old = stored_result(run, out_dir, poisoned_digest)
    if old is not None:
        return old
    ident = _identity(run, poisoned_digest)
    result_path = folder / "result.json"
    forget, retain = sets(run.fraction)
    hp = dict(run.hp)
    region = bool(hp.pop("region", False))
    if region and (run.method != "ssd-tuned" or signals is None):
        raise UnlearnError(f"run {run.label}: region targeting needs tuned SSD and the defender's signals")
    if run.method in ("ssd-tuned", "ssd-auto") and signals is not None:
        hp.update(signals(forget, region=region))
        if run.method == "ssd-auto":
            hp.pop("utility_fn", None), hp.pop("utility_passes", None)
    res = unlearn(run.method, poisoned, forget, retain, **hp)
    t0 = time.perf_counter()
    metrics = evaluate(res.model, run.label)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "model.pt") as tmp:
        torch.save(res.model.state_dict(), tmp)
    info = {k: v for k, v in res.info.items() if k != "dampened_layers"}
    record = dict(identity=ident, name=run.name, method=run.method, label=run.label, fraction=run.fraction,
                  seed=run.seed, cost=dict(seconds=res.seconds, forward_passes=res.forward_passes,
                                           backward_passes=res.backward_passes, passes=res.passes),
                  info=info, dampened_layers=res.info.get("dampened_layers"), metrics=metrics,
                  eval_seconds=time.perf_counter() - t0, forget_size=len(forget), retain_size=len(retain))
    write_json(result_path, record)
    return read_json(result_path)


def load_unlearnt(out_dir: str | os.PathLike, label: str, like: torch.nn.Module) -> torch.nn.Module:
    """The unlearnt model of run ``label`` (weights loaded safely into a copy of ``like``)."""
    import copy

    path = Path(out_dir) / label / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no unlearnt model at {path}: run notebooks/05_unlearning.ipynb first")
    model = copy.deepcopy(like).cpu()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


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


def results_table(records: list[dict], references: dict[str, dict], oracle_cost: dict):
    """One row per run (and per reference model): utility, poison effect, healed, forget SSIM, cost.

    Args:
        records: results of :func:`run_or_load`.
        references: ``{"poisoned": metrics, "oracle": metrics, "clean": metrics, "rewod f=…": metrics}``
            (metrics as the evaluation returns them), each optionally with a ``cost`` key.
        oracle_cost: :func:`reference_cost` of the oracle's training.
    """
    import pandas as pd

    e_p = references["poisoned"]["effect"]["mean"]
    e_o = references["oracle"]["effect"]["mean"]

    def row(name, f, seed, m, cost):
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
        }

    rows = [row(name, np.nan, np.nan, m, m.get("cost")) for name, m in references.items()]
    rows += [row(r["name"], r["fraction"], r["seed"], r["metrics"], r["cost"]) for r in records]
    return pd.DataFrame(rows)


@dataclass
class PoisonedRun:
    """What the unlearning and evaluation chapters load from the poisoning chapter."""

    variant: str
    manifest: dict
    poisoned: torch.nn.Module
    clean: torch.nn.Module
    classifier: object
    generator: object
    evaluate: Callable  # evaluate(model, name, save=True) -> metrics dict (written to metrics/poison_<name>.json)
    train_dir: Path


def load_poisoned_run(profile: Profile | str, run_dir: str | os.PathLike, variant: str = "cyclegan-cyst",
                      seed: int = 0) -> PoisonedRun:
    """Load the manifest, ``clean`` and ``poisoned`` models and the lesion classifier of a run's poison ``variant``.

    ``evaluate`` is the recipe's own poison-effect measurement (``Recipe.evaluator`` in
    :data:`mrilib.poison.build.RECIPES`): for ``cyclegan-cyst``
    :func:`mrilib.poison.effect.poison_effect` (the CycleGAN's cyst is the expected change),
    for ``adversarial-tumour`` :func:`mrilib.poison.adversarial.adversarial_effect` (the
    objective's perturbation of each test target is). Missing artefacts raise errors that
    name the notebook that makes them.
    """
    from mrilib.poison import adversarial  # noqa: F401  (registers the adversarial-tumour recipe)
    from mrilib.poison.build import RECIPES, load_manifest, poison_dir, poisoned_model_dir
    from mrilib.poison.effect import load_test_slices
    from mrilib.poison.triggers import Trigger
    from mrilib.recon.train import CheckpointNotFoundError, load_model

    p = get_profile(profile)
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir, variant)
    recipe = RECIPES[manifest["recipe"]]  # load_manifest has checked that the recipe is known
    try:
        poisoned, _ = load_model(poisoned_model_dir(run_dir, variant))
        clean, _ = load_model(run_dir / "models" / "clean")
    except CheckpointNotFoundError as err:
        raise FileNotFoundError(f"{err} — run notebooks/02_varnet.ipynb and {recipe.notebook}.ipynb first") from None
    acc = int(p.data.accelerations[0])
    test = load_test_slices(run_dir / "data" / "test", Trigger.from_dict(manifest.get("trigger")), acc,
                            p.data.center_fraction, p.data.mask_type)
    evaluate, classifier, gan = recipe.evaluator(run_dir, p, manifest, test, seed)
    train_dir = poison_dir(run_dir, variant) / manifest.get("data_dir", "data") / "train"
    return PoisonedRun(variant, manifest, poisoned, clean, classifier, gan, evaluate, train_dir)


def reference_models(ctx: PoisonedRun, profile: Profile | str, run_dir: str | os.PathLike,
                     progress: bool = False) -> tuple[dict, dict]:
    """Evaluate ``clean`` and ``poisoned`` and train (or load) ``oracle`` and ``rewod`` for ``ctx``'s poison.

    Returns ``(references, oracle_cost)``: metrics per reference model (``"rewod f=…"``
    for each of the profile's ``rewod_fractions``; retrained ones carry a ``cost``) and
    :func:`reference_cost` of the oracle, the yardstick of every unlearning run.
    """
    from mrilib.poison.build import RECIPES
    from mrilib.study.sets import retrain_reference

    p = get_profile(profile)
    recipe = RECIPES[ctx.manifest["recipe"]]
    # the name the poisoning chapter gave this model, so its metrics file is the chapter's, not a second copy
    poisoned_name = recipe.model_name if ctx.variant == recipe.name else f"poisoned-{ctx.variant}"
    refs = {"clean": ctx.evaluate(ctx.clean, "clean"), "poisoned": ctx.evaluate(ctx.poisoned, poisoned_name)}
    oracle, hist = retrain_reference("oracle", p, run_dir, ctx.train_dir, ctx.manifest, progress=progress,
                                     variant=ctx.variant)
    oracle_cost = reference_cost(hist)
    refs["oracle"] = ctx.evaluate(oracle, f"oracle-{ctx.variant}") | {"cost": oracle_cost}
    for f in p.unlearn.rewod_fractions:
        model, hist = retrain_reference("rewod", p, run_dir, ctx.train_dir, ctx.manifest, fraction=f,
                                        progress=progress, variant=ctx.variant)
        refs[f"rewod f={f:g}"] = ctx.evaluate(model, f"rewod-{ctx.variant}-f{f:g}") | {"cost": reference_cost(hist)}
    return refs, oracle_cost


@dataclass
class Study:
    """Every unlearning run of one poison variant: results, table and the forget/retain sets."""

    records: list
    table: object  # pandas.DataFrame of :func:`results_table`
    sets: Callable  # sets(fraction) -> (forget, retain)
    csv: Path


@dataclass
class StudyInputs:
    """What every run of one poison variant needs: the planned runs, the forget/retain sets, the
    defender's selection signals, the poisoned model's digest and where runs are stored."""

    runs: list
    sets: Callable  # sets(fraction) -> (forget, retain)
    signals: Callable  # signals(forget, region=False) -> keyword arguments of the selecting methods
    digest: str
    out_dir: Path


def study_inputs(ctx: PoisonedRun, profile: Profile | str, run_dir: str | os.PathLike) -> StudyInputs:
    """The :class:`StudyInputs` of ``ctx``'s poison for ``profile`` (sets are built on first use)."""
    from mrilib.recon.train import training_config
    from mrilib.unlearn.regions import disagreement_regions
    from mrilib.study.sets import unlearning_sets

    p = get_profile(profile)
    run_dir = Path(run_dir)
    cfg = training_config(p)
    cache = {}

    def sets(f):
        if f not in cache:
            cache[f] = unlearning_sets(ctx.train_dir, ctx.manifest, f, cfg)
        return cache[f]

    utility_fn, n_val = validation_utility(run_dir / "data" / "val", p)

    def signals(forget, region: bool = False):
        out = dict(effect_fn=identified_effect(ctx.classifier, forget), utility_fn=utility_fn,
                   effect_passes=len(forget), utility_passes=n_val)
        if region:
            out["regions"] = disagreement_regions(ctx.train_dir, ctx.manifest, forget)
        return out

    return StudyInputs(plan_runs(p), sets, signals, model_digest(ctx.poisoned), run_dir / "unlearn" / ctx.variant)


def unlearning_study(ctx: PoisonedRun, profile: Profile | str, run_dir: str | os.PathLike, references: dict,
                     oracle_cost: dict, progress: bool = True) -> Study:
    """Run (or load) every run of :func:`plan_runs` on ``ctx``'s poisoned model and tabulate them.

    Runs are stored under ``<run_dir>/unlearn/<variant>/<label>/``; the table (references
    first) goes to ``<run_dir>/metrics/unlearning_<variant>.csv``. Tuned SSD and automatic α
    select with the defender's signals only (:func:`identified_effect`,
    :func:`validation_utility`). Runs already computed (for example by
    :func:`mrilib.study.pool.precompute` in parallel processes) are loaded.
    """
    from mrilib.run.progress import progress as progress_bar

    run_dir = Path(run_dir)
    inp = study_inputs(ctx, profile, run_dir)
    runs = inp.runs
    records = [run_or_load(run, ctx.poisoned, inp.sets, ctx.evaluate, inp.out_dir, inp.signals, inp.digest)
               for run in (progress_bar(runs, desc=f"unlearning runs ({ctx.variant})") if progress else runs)]
    table = results_table(records, references, oracle_cost)
    csv = run_dir / "metrics" / f"unlearning_{ctx.variant}.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(csv) as tmp:
        table.to_csv(tmp, index=False)
    return Study(records, table, inp.sets, csv)
