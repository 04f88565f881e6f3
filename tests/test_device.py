"""One device for every step: the default device, and its plumbing through every entry point.

The plumbing is proved on the CPU with a *poisoned default*: ``torch.cuda.is_available`` is
patched to ``False`` and ``MRILIB_DEVICE=cuda``, so any step that falls back to the default
device raises (``default_device`` refuses CUDA on a machine without it), while the same step
called with ``device=torch.device("cpu")`` must pass it on everywhere and run. A spy on
``forward_batch`` records the device every VarNet forward pass was asked to use; others record
where the attacks, the judge and the effect put a classifier or a model (``on_device``), and the
device the evaluation tables reconstruct on and chapter 3's CycleGAN trains on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mrilib.attacks import objective as obj
from mrilib.attacks import universal
from mrilib.attacks.stress import stress_samples, stress_test
from mrilib.evaluate import tables
from mrilib.models.classifier import LesionClassifier
from mrilib.models.varnet import build_varnet
from mrilib.poison import classifier as clf_training
from mrilib.poison import cyclegan, judge
from mrilib.poison import effect as poison_effect
from mrilib.poison.effect import Judge, load_test_slices, measure_effect
from mrilib.poison.judge import lesion_scores
from mrilib.poison.recipes import adversarial_tumour as adv
from mrilib.poison.runtime import default_device as runtime_default_device
from mrilib.poison.slices import load_slices
from mrilib.run.device import ENV, default_device, module_device, on_device, same_device
from mrilib.study import execute
from mrilib.unlearn import base, gradient, regions, ssd
from mrilib.unlearn.methods import METHODS, fisher_importance, unlearn
from test_unlearn import ToyRecon, ToySlices

CPU = torch.device("cpu")
TINY_VARNET = dict(num_cascades=1, chans=2, sens_chans=2, pools=1, sens_pools=1)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_default(monkeypatch):
    """Every fall-back to the default device raises; returns the devices ``forward_batch`` was given."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(ENV, "cuda")
    seen = []
    for module in (base, ssd, gradient, regions):
        real = module.forward_batch

        def spy(model, batch, device, *args, _real=real, **kw):
            seen.append(torch.device(device))
            return _real(model, batch, device, *args, **kw)

        monkeypatch.setattr(module, "forward_batch", spy)
    return seen


@pytest.fixture(scope="module")
def toy():
    return ToyRecon(), ToySlices(2, poisoned=True, seed=1), ToySlices(4, poisoned=False, seed=2)


def test_default_device_cuda_when_present_else_cpu_and_overridable(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert default_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert default_device("cpu") == CPU
    monkeypatch.setenv(ENV, "cpu")
    assert default_device() == CPU
    assert default_device("cpu") == CPU and runtime_default_device() == CPU  # one function, re-exported
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(ENV, "cuda")
    with pytest.raises(ValueError, match=r"\$MRILIB_DEVICE='cuda'.*no CUDA"):
        default_device()
    monkeypatch.setenv(ENV, "gpu")
    with pytest.raises(ValueError, match="not a torch device"):
        default_device()


def test_on_device_never_moves_the_callers_module():
    net = torch.nn.Linear(2, 2)
    assert on_device(net, CPU) is net and module_device(net) == CPU
    assert module_device(torch.nn.ReLU()) == CPU
    assert same_device("cpu", CPU) and not same_device("cpu", "meta")
    moved = on_device(net, "meta")
    assert moved is not net and module_device(moved).type == "meta" and module_device(net) == CPU


def _hp(name: str) -> dict:
    """Small hyper-parameters of every method (the selecting ones get constant signals)."""
    signals = dict(effect_fn=lambda m: float(m.b.detach().cpu()), utility_fn=lambda m: 1.0)
    return {"ssd": dict(alpha=0.5, lam=0.5, batch_size=2, repair_steps=1),
            "lf-ssd": dict(alpha=0.5, lam=0.5, batch_size=2),
            "ssd-auto": dict(effect_fn=signals["effect_fn"], fractions=(0.5,), batch_size=2),
            "ssd-tuned": dict(signals, fractions=(0.5,), batch_size=2),
            "finetune": dict(steps=2, batch_size=2),
            "noisy-labels": dict(steps=2, batch_size=2, retain_weight=1.0),
            "gradient-ascent": dict(steps=2, batch_size=2),
            "bad-teacher": dict(steps=2, batch_size=2)}[name]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_unlearning_method_computes_on_the_device_it_is_given(name, toy, no_default):
    model, forget, retain = toy
    hp = _hp(name)
    res = unlearn(name, model, forget, retain, device=CPU, **hp)
    assert module_device(res.model) == CPU
    assert no_default and set(no_default) == {CPU}, "every forward pass on the given device"
    with pytest.raises(ValueError, match="MRILIB_DEVICE"):  # without it: the (poisoned) default
        unlearn(name, model, forget, retain, **hp)


def test_fisher_importance_computes_on_the_device_it_is_given(toy, no_default):
    model, forget, _ = toy
    imp = fisher_importance(model, forget, batch_size=2, device=CPU)
    assert imp["b"].device == CPU and set(no_default) == {CPU}
    with pytest.raises(ValueError, match="MRILIB_DEVICE"):
        fisher_importance(model, forget, batch_size=2)


@pytest.fixture(scope="module")
def smoke_run(smoke_data):
    return smoke_data.parent


def _classifier() -> LesionClassifier:
    torch.manual_seed(0)
    return LesionClassifier(chans=4, n_blocks=2, dropout=0.0).eval()


def test_study_signals_compute_on_the_device_they_are_given(toy, smoke_run, no_default):
    utility, n = execute.validation_utility(smoke_run / "data" / "val", "smoke", max_slices=2, device=CPU)
    assert n == 2 and np.isfinite(utility(build_varnet(TINY_VARNET, seed=0)))
    assert set(no_default) == {CPU}
    with pytest.raises(ValueError, match="MRILIB_DEVICE"):
        execute.validation_utility(smoke_run / "data" / "val", "smoke", max_slices=2)[0](build_varnet(TINY_VARNET))


def test_effect_evaluation_and_judge_compute_on_the_device_they_are_given(smoke_run, tmp_path, no_default):
    test = load_test_slices(smoke_run / "data" / "test", None, 4, 0.08, "equispaced_fraction", max_slices=2)
    shape = test.slices.images.shape
    res = measure_effect(build_varnet(TINY_VARNET, seed=0), "tiny", tmp_path, {"recipe": "none", "trigger": None},
                         _classifier(), test, np.zeros(shape, np.float32), np.zeros(shape, bool),
                         Judge("cyst", "lesion", 0.5), forget=False, device=CPU)
    assert res.metrics["n_test_slices"] == 2 and res.arrays["r_clean"].shape == shape
    assert lesion_scores(_classifier(), test.slices.images, device=CPU)["lesion"].shape == (2,)
    with pytest.raises(ValueError, match="MRILIB_DEVICE"):
        lesion_scores(_classifier(), test.slices.images)


def test_attacks_compute_on_the_device_they_are_given(smoke_run, no_default):
    samples = stress_samples(smoke_run, "smoke", max_slices=1)
    model, clf = build_varnet(TINY_VARNET, seed=0).eval(), _classifier()
    df = stress_test(model, samples, clf, [0.01], model_name="tiny", steps=1, device=CPU)
    assert list(df["eps"]) == [0.01]
    with pytest.raises(ValueError, match="MRILIB_DEVICE"):
        stress_test(model, samples, clf, [0.01], model_name="tiny", steps=1)
    images = samples.samples[0].target.numpy()[None]
    brains = images > 0.1 * images.max()
    cfg = obj.adversarial_config("smoke", 0, steps=1, eot_samples=1)
    rois = np.zeros_like(brains)
    rois[0, 14:18, 14:18] = brains[0, 14:18, 14:18]
    res = obj.tumour_induction(images, brains | rois, float(images.max()), clf, cfg, rois=rois, device=CPU)
    assert res.images.shape == images.shape


@pytest.fixture
def copies(monkeypatch):
    """The devices every classifier or model was put on (``on_device``) by the attacks, the judge and the effect."""
    seen = []
    for module in (universal, obj, judge, poison_effect):
        real = module.on_device

        def spy(net, device, _real=real):
            seen.append(torch.device(device))
            return _real(net, device)

        monkeypatch.setattr(module, "on_device", spy)
    return seen


def test_universal_patterns_and_the_induced_split_compute_on_the_device_they_are_given(smoke_run, no_default, copies):
    clf = _classifier()
    kw = dict(steps=1, universal_steps=1, universal_batch=2, eot_samples=0)
    patterns = universal.run_universal_patterns(smoke_run, "smoke", clf, device=CPU, **kw)
    assert patterns and copies and set(copies) == {CPU}
    with pytest.raises(ValueError, match="MRILIB_DEVICE"):  # without it: the (poisoned) default
        universal.run_universal_patterns(smoke_run, "smoke", clf, **kw)
    copies.clear()
    induced = adv.induce_split(smoke_run, "smoke", clf, device=CPU, **kw)
    assert not induced.extra["reused"] and induced.images.shape == induced.extra["slices"].images.shape
    assert copies and set(copies) == {CPU}
    with pytest.raises(ValueError, match="MRILIB_DEVICE"):
        adv.induce_split(smoke_run, "smoke", clf, **kw)


def test_the_evaluation_tables_reconstruct_on_the_device_they_are_given(smoke_run, no_default, monkeypatch):
    seen = []
    real = tables.reconstruct

    def spy(model, samples, *args, device=None, **kw):
        seen.append(torch.device(device))
        return real(model, samples, *args, device=device, **kw)

    monkeypatch.setattr(tables, "reconstruct", spy)
    test = load_test_slices(smoke_run / "data" / "test", None, 4, 0.08, "equispaced_fraction", max_slices=2)
    models = {"tiny": build_varnet(TINY_VARNET, seed=0)}
    panels = tables.qualitative_panels(models, test.clean, test.slices.images, device=CPU)
    assert panels["tiny"]["nullspace"].shape == test.slices.images.shape and seen == [CPU]
    robust = tables.artefact_robustness(models, smoke_run / "data" / "test", "smoke", max_slices=2, device=CPU)
    assert list(robust.columns) == ["clean", "motion", "metal"] and set(seen) == {CPU} and len(seen) == 4
    with pytest.raises(ValueError, match="MRILIB_DEVICE"):
        tables.qualitative_panels(models, test.clean, test.slices.images)
    with pytest.raises(ValueError, match="MRILIB_DEVICE"):
        tables.artefact_robustness(models, smoke_run / "data" / "test", "smoke", max_slices=2)


def _own_run(smoke_run: Path, tmp_path: Path) -> Path:
    """A run folder of its own (its models are this test's) on the smoke run's data."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "data").symlink_to(smoke_run / "data", target_is_directory=True)
    return run


def test_chapter_3_trains_the_classifier_on_the_device_it_is_given(smoke_run, tmp_path, no_default, copies):
    run = _own_run(smoke_run, tmp_path)
    small = dict(epochs=1, lesion_variants=1, chans=4, n_blocks=2)
    model, report = clf_training.classifier_or_load("smoke", run, progress=False, device=CPU, **small)
    assert not report["reused"] and module_device(model) == CPU and 0.5 <= model.threshold <= 1
    assert copies and set(copies) == {CPU}, "calibration and evaluation score on the given device"
    with pytest.raises(ValueError, match="MRILIB_DEVICE"):
        clf_training.judge_or_load("smoke", run, progress=False, **small)
    slices = load_slices(run / "data" / "val")
    assert clf_training.evaluate_classifier(model, slices, seed=0, device=CPU)["n"] == 3 * len(slices)
    with pytest.raises(ValueError, match="MRILIB_DEVICE"):
        clf_training.calibrate_threshold(model, slices)
    with pytest.raises(ValueError, match="MRILIB_DEVICE"):
        clf_training.evaluate_classifier(model, slices, seed=0)


def test_chapter_3_trains_the_cyclegan_on_the_device_it_is_given(smoke_run, tmp_path, no_default, monkeypatch):
    seen = []
    real = cyclegan.train_cyclegan

    def spy(*args, device=None, **kw):
        seen.append(torch.device(device))
        return real(*args, device=device, **kw)

    monkeypatch.setattr(cyclegan, "train_cyclegan", spy)
    run = _own_run(smoke_run, tmp_path)
    small = dict(iterations=2, ckpt_every=1, ngf=4, ndf=4, n_blocks=1, pool_size=4)
    gan, report = cyclegan.cyclegan_or_load("smoke", run, seed=0, progress=False, device=CPU, **small)
    assert not report["reused"] and len(report["history"]["cycle"]) == 2 and seen == [CPU]
    assert module_device(gan.G) == CPU
    with pytest.raises(ValueError, match="MRILIB_DEVICE"):
        cyclegan.cyclegan_or_load("smoke", run, seed=0, progress=False, **small)


def test_the_same_numbers_with_the_default_and_an_explicit_cpu(toy, monkeypatch):
    """On the CPU passing the device changes nothing: the same computation, bit for bit."""
    monkeypatch.setenv(ENV, "cpu")
    model, forget, retain = toy
    a = unlearn("ssd", model, forget, retain, alpha=0.5, lam=0.5, batch_size=2)
    b = unlearn("ssd", model, forget, retain, alpha=0.5, lam=0.5, batch_size=2, device=CPU)
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_device_check_without_cuda_exits_at_once_with_the_fix():
    code = ("import runpy, sys, torch; torch.cuda.is_available = lambda: False; "
            "sys.argv = ['bench/device_check.py']; runpy.run_path('bench/device_check.py', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "no CUDA device" in proc.stderr and "TORCH_SPEC" in proc.stderr, proc.stderr
