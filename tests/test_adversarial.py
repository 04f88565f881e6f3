"""Chapter 4: the tumour-induction objective, the ``adversarial-tumour`` recipe, the k-space stress test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mrilib.attacks import objective as obj
from mrilib.attacks.differentiable import ssim_map_torch
from mrilib.attacks.stress import _collate, attack_batch, read_stress, stress_config, stress_samples, stress_test
from mrilib.attacks.universal import universal_patterns
from mrilib.data import generate_embedded_dataset
from mrilib.models.classifier import LesionClassifier
from mrilib.models.varnet import build_varnet
from mrilib.poison import build as B
from mrilib.poison import manifest as M
from mrilib.poison.effect import load_test_slices
from mrilib.poison.judge import ClassifierMismatchError, check_classifier, classifier_identity, load_run_classifier
from mrilib.poison.lesions import add_tumour
from mrilib.poison.recipes import RECIPES
from mrilib.poison.recipes import adversarial_tumour as adv
from mrilib.poison.recipes import cyclegan_cyst as cyst
from mrilib.poison.roi import ROIError, roi_centres, tumour_roi, tumour_rois
from mrilib.poison.slices import load_slices
from mrilib.poison.triggers import DEFAULT_TRIGGER, Trigger, trigger_survives
from mrilib.run.layout import MissingArtefactError, RunLayout
from mrilib.viz.poison import effect_table

REPO = Path(__file__).resolve().parents[1]
TINY_VARNET = dict(num_cascades=1, chans=2, sens_chans=2, pools=1, sens_pools=1)


def _tiny_classifier(seed: int = 0) -> LesionClassifier:
    """A randomly initialised small classifier (eval mode)."""
    torch.manual_seed(seed)
    return LesionClassifier(chans=4, n_blocks=2, dropout=0.0).eval()


def _phantoms(n: int = 4, size: int = 32, seed: int = 0):
    """Smooth elliptical 'heads' with a brain mask, in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / (size - 1) * 2 - 1
    images, brains = [], []
    for _ in range(n):
        a, b = rng.uniform(0.7, 0.85, 2)
        head = (yy / a) ** 2 + (xx / b) ** 2 <= 1
        brain = (yy / (a - 0.12)) ** 2 + (xx / (b - 0.12)) ** 2 <= 1
        img = 0.3 * head + 0.5 * brain + 0.1 * np.cos(7 * xx + rng.uniform(0, 6)) * brain
        img = img + 0.02 * rng.standard_normal(img.shape)
        images.append(np.clip(img, 0, None)), brains.append(brain)
    images = np.stack(images).astype(np.float32)
    return images, np.stack(brains), images.max(axis=(1, 2))


@pytest.fixture(scope="module")
def trained_clf():
    """A tiny classifier trained for a few seconds on phantoms with and without a procedural tumour."""
    x, brains, _ = _phantoms(n=48, seed=10)
    imgs, labels = [], []
    for i in range(len(x)):
        imgs.append(x[i]), labels.append(0)
        imgs.append(add_tumour(x[i], brains[i], "T2w", seed=i, radius_mm=20, pixel_mm=7.5).image), labels.append(2)
    xt = torch.from_numpy(np.stack(imgs).astype(np.float32))
    yt = torch.tensor(labels)
    clf = _tiny_classifier(5).train()
    opt = torch.optim.Adam(clf.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        idx = torch.randperm(len(xt), generator=gen)[:32]
        loss = torch.nn.functional.cross_entropy(clf(xt[idx]), yt[idx])
        opt.zero_grad(), loss.backward(), opt.step()
    return clf.eval()


def _cfg(**kw) -> dict:
    cfg = dict(obj.ADVERSARIAL_DEFAULTS, pixel_mm=7.5, roi_radius_mm=45.0, seed=0, eps=0.2, steps=12, stop_prob=None,
               eot_samples=1)
    cfg.update(kw)
    return cfg


# --------------------------------------------------------------------------- the objective


def test_perturbation_respects_linf_bound_region_and_positivity(trained_clf):
    x, brains, vmax = _phantoms()
    cfg = _cfg(eps=0.1)
    res = obj.tumour_induction(x, brains, vmax, trained_clf, cfg)
    d = res.images - x
    assert res.rois.any(axis=(1, 2)).all()
    assert (res.rois <= brains).all(), "the region must lie inside the brain"
    assert np.all(np.abs(d) <= cfg["eps"] * vmax[:, None, None] * (1 + 1e-5) + 1e-7)
    assert np.all(d[~res.rois] == 0), "no change outside the region"
    assert np.all(res.images >= 0)
    assert np.abs(d).max() > 0.5 * cfg["eps"] * vmax.min(), "PGD moved towards the bound"
    assert (res.report["linf"] <= cfg["eps"] + 1e-6).all()
    assert (res.report["linf_outside_roi"] == 0).all()
    assert (res.report["iterations"] == cfg["steps"]).all()


def test_objective_increases_the_tumour_score(trained_clf):
    x, brains, vmax = _phantoms(seed=1)
    clf = trained_clf
    res = obj.tumour_induction(x, brains, vmax, clf, _cfg(eps=0.3, steps=15))
    r = res.report
    assert (r["score_after"] > r["score_before"]).all(), r[["score_before", "score_after"]]
    assert (r["score_after"] - r["score_before"]).mean() > 1.0
    assert r["p_tumour_after"].mean() > r["p_tumour_before"].mean() + 0.2
    # the report's scores are the classifier's own
    with torch.no_grad():
        s = clf.tumour_score(torch.from_numpy(res.images)).numpy()
    np.testing.assert_allclose(r["score_after"].to_numpy(), s, rtol=1e-4, atol=1e-4)
    # early stopping: an image reaching stop_prob is frozen, its iterations recorded
    easy = obj.tumour_induction(x, brains, vmax, clf, _cfg(eps=0.3, steps=15, stop_prob=1e-6))
    assert (easy.report["iterations"] == 0).all() and np.all(easy.delta == 0)


def test_ssim_outside_region_stays_above_the_floor(trained_clf):
    x, brains, vmax = _phantoms(seed=2)
    cfg = _cfg(eps=0.3, steps=12, ssim_floor=0.95, ssim_weight=5.0, tv_weight=0.05)
    res = obj.tumour_induction(x, brains, vmax, trained_clf, cfg)
    assert (res.report["score_after"] > res.report["score_before"]).all()
    assert (res.report["ssim_outside"] >= cfg["ssim_floor"]).all()
    assert res.report["plausible"].all()
    assert (res.report["ssim_band"] <= res.report["ssim_outside"] + 1e-9).all()  # the ring is the hard part
    # the reported number is scikit-image's SSIM map averaged outside the region
    from skimage.metrics import structural_similarity

    _, smap = structural_similarity(x[0].astype(float), res.images[0].astype(float), data_range=float(vmax[0]), full=True)
    assert res.report["ssim_outside"].iloc[0] == pytest.approx(float(smap[~res.rois[0]].mean()), abs=1e-6)
    # the torch SSIM map used in the loss agrees with scikit-image's in the interior
    t = ssim_map_torch(torch.from_numpy(x[:1]), torch.from_numpy(res.images[:1]), float(vmax[0]))[0].numpy()
    np.testing.assert_allclose(t[3:-3, 3:-3], smap[3:-3, 3:-3], atol=1e-4)


def test_universal_pattern_is_one_bounded_lesion_per_contrast(trained_clf):
    x, brains, vmax = _phantoms(n=6, seed=3)
    contrasts = ["T1w", "T2w"] * 3
    cfg = _cfg(eps=0.25, universal_steps=10, universal_batch=3)
    pats = universal_patterns(x, brains, vmax, contrasts, trained_clf, cfg)
    assert set(pats) == {"T1w", "T2w"}
    r = int(np.ceil(cfg["roi_radius_mm"] / cfg["pixel_mm"]))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    for p in pats.values():
        assert p.shape == (2 * r + 1, 2 * r + 1)
        assert np.abs(p).max() <= cfg["eps"] + 1e-6 and np.abs(p).max() > 0
        assert np.all(p[yy**2 + xx**2 > (cfg["roi_radius_mm"] / cfg["pixel_mm"]) ** 2] == 0)
    init = obj.paste_patterns(pats, contrasts, brains, cfg)
    rois = tumour_rois(brains, cfg["roi_radius_mm"] / cfg["pixel_mm"], cfg["anchor"])
    assert np.all(init[~rois] == 0)
    # the pasted pattern sits at the region's centre: the same values there on every slice of a contrast
    centres = np.round(roi_centres(brains, cfg["roi_radius_mm"] / cfg["pixel_mm"], cfg["anchor"])).astype(int)
    for i, c in enumerate(contrasts):
        assert init[i][tuple(centres[i])] == pytest.approx(float(pats[c][r, r]))
    # a start from the patterns, frozen at once, is exactly the pasted pattern (times the volume max)
    frozen = obj.tumour_induction(x, brains, vmax, trained_clf, {**cfg, "stop_prob": 1e-9}, patterns=pats,
                                  contrasts=contrasts)
    assert (frozen.report["iterations"] == 0).all()
    np.testing.assert_allclose(frozen.delta, np.maximum(init * vmax[:, None, None], -x), atol=1e-6)
    assert frozen.report["score_after"].mean() > frozen.report["score_before"].mean()
    with pytest.raises(ValueError, match="contrast"):
        obj.tumour_induction(x, brains, vmax, trained_clf, cfg, patterns=pats)


def test_bad_inputs_raise_clear_errors(tmp_path):
    x, brains, vmax = _phantoms(n=1)
    clf = _tiny_classifier()
    for eps in (0.0, -0.1):
        with pytest.raises(ValueError, match="eps"):
            obj.tumour_induction(x, brains, vmax, clf, _cfg(eps=eps))
    with pytest.raises(ValueError, match="eps"):
        obj.adversarial_config("smoke", eps=0)
    with pytest.raises(ROIError, match="empty"):
        obj.tumour_induction(x, brains, vmax, clf, _cfg(), rois=np.zeros_like(brains))
    corner = np.zeros_like(brains)
    corner[0, 0, 0] = True
    with pytest.raises(ROIError, match="outside the brain"):
        obj.tumour_induction(x, brains, vmax, clf, _cfg(), rois=corner)
    with pytest.raises(ROIError, match="empty"):
        tumour_roi(np.zeros((32, 32)), 3.0)
    # a classifier that cannot score these images (stride 4 does not divide 30)
    with pytest.raises(ClassifierMismatchError, match="divide"):
        obj.tumour_induction(np.ones((1, 30, 30), np.float32), np.ones((1, 30, 30), bool), 1.0, clf, _cfg())
    with pytest.raises(ClassifierMismatchError):
        check_classifier(torch.nn.Linear(3, 3), (32, 32))
    # the run's classifier: missing -> names the notebook; another configuration -> mismatch
    with pytest.raises(MissingArtefactError, match="03_poison_cyclegan"):
        load_run_classifier(tmp_path, "smoke")
    path = RunLayout(tmp_path).classifier_checkpoint
    path.parent.mkdir(parents=True)
    torch.save(dict(format=1, config=dict(chans=4, n_blocks=2, dropout=0.0), state=clf.state_dict(), identity={}),
               path)
    with pytest.raises(ClassifierMismatchError, match="another configuration"):
        load_run_classifier(tmp_path, "smoke")
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ClassifierMismatchError, match="not a usable"):
        load_run_classifier(tmp_path, "smoke")
    # the stress test's budgets
    with pytest.raises(ValueError, match="eps"):
        stress_config(eps_list=[0.01, 0.0])
    with pytest.raises(ValueError, match="at least one"):
        stress_config(eps_list=[])


# --------------------------------------------------------------------------- recipe and k-space


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A smoke dataset (no models)."""
    run = tmp_path_factory.mktemp("adv-run")
    generate_embedded_dataset("smoke", run / "data", seed=0, progress=False)
    return run


def test_recipe_builds_a_valid_poisoned_set(smoke_run):
    assert set(RECIPES) >= {adv.NAME, cyst.NAME}
    assert RECIPES[adv.NAME].evaluator is adv.evaluator and RECIPES[cyst.NAME].factory is cyst.factory
    clf = _tiny_classifier()
    cfg = obj.adversarial_config("smoke", 0, steps=4)
    transform = adv.adversarial_transform(clf, cfg)
    for trig in (DEFAULT_TRIGGER, None):
        man = B.build_poisoned_dataset(smoke_run, adv.NAME, profile="smoke", seed=0, trigger=trig,
                                       transform=transform, progress=False)
        M.validate_manifest(man, RunLayout(smoke_run).poisoned_split(man["variant"]))
        assert man["recipe"] == adv.NAME and man["recipe_identity"]["classifier"] == classifier_identity(clf)
        assert man["variant"] == M.variant_name(adv.NAME, trig)
        assert (man["trigger"] is None) == (trig is None)
        ex = M.poisoned_examples(smoke_run, man["variant"], n=man["num_poisoned"])
        d = ex["poisoned"] - ex["clean"]
        assert np.all(d[~ex["rois"]] == 0) and ex["rois"].any(axis=(1, 2)).all()
        vmax = [float(r) for r in np.abs(ex["clean"]).max(axis=(1, 2))]
        assert all(np.abs(d[i]).max() <= cfg["eps"] * 1.5 * vmax[i] for i in range(len(d)))
    # same identity: reused, not rebuilt
    again = B.build_poisoned_dataset(smoke_run, adv.NAME, profile="smoke", seed=0, transform=transform,
                                     progress=False)
    assert again["created"] == M.load_manifest(smoke_run, adv.NAME)["created"]


def test_adversarial_trigger_is_focused_on_the_tumour_region(smoke_run):
    trig = adv.adversarial_trigger(smoke_run, "smoke")
    assert trigger_survives(trig, (32, 32))
    if getattr(DEFAULT_TRIGGER, "focus", None) is None:
        assert trig == DEFAULT_TRIGGER
        return
    cfg = obj.adversarial_config("smoke")
    sl = load_slices(smoke_run / "data" / "train")
    c = roi_centres(sl.brain, cfg["roi_radius_mm"] / cfg["pixel_mm"], cfg["anchor"]).mean(0) / 32
    assert trig.focus == pytest.approx(tuple(c), abs=0.006)
    assert trig.amplitude == DEFAULT_TRIGGER.amplitude and trig.positions == DEFAULT_TRIGGER.positions


def test_kspace_perturbation_bounds_and_sampled_locations_only(smoke_run):
    samples = stress_samples(smoke_run, "smoke", max_slices=2)
    model = build_varnet(TINY_VARNET, seed=0).eval()
    clf = _tiny_classifier(2)
    k, m, nlf = _collate(samples.samples)
    eps_list = [0.01, 0.05]
    cfg = stress_config("smoke", steps=3, ssim_floor=1.1)  # floor > 1: never a success, always the full budget
    res = attack_batch(model, clf, k, m, nlf, torch.from_numpy(samples.rois.astype(np.float32)),
                       torch.from_numpy(samples.vmax), eps_list, cfg)
    ynorm = k.flatten(1).norm(dim=1)
    sampled = m.expand_as(k)
    for r in res:
        d = r["delta"]
        ratio = d.flatten(1).norm(dim=1) / ynorm
        assert torch.all(ratio <= r["eps"] * (1 + 1e-4)), (ratio, r["eps"])
        assert torch.all(ratio > 0)
        assert torch.all(d[~sampled] == 0), "unsampled k-space must stay untouched"
        np.testing.assert_allclose(r["delta_rel"], ratio.numpy(), rtol=1e-5)
        assert not r["success"].any()
    # and the perturbed input equals the measured one wherever nothing was sampled
    perturbed = k + res[-1]["delta"]
    assert torch.equal(perturbed[~sampled], k[~sampled])


def test_stress_test_returns_a_curve_and_reuses_its_file(smoke_run):
    samples = stress_samples(smoke_run, "smoke", max_slices=2)
    model = build_varnet(TINY_VARNET, seed=1).eval()
    clf = _tiny_classifier(4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    df = stress_test(model, samples, clf, [0.02, 0.005], model_name="tiny", run_dir=smoke_run, steps=2)
    assert list(df["eps"]) == [0.005, 0.02] and (df["n"] == len(samples)).all()
    assert df["success_rate"].between(0, 1).all() and df["mean_p_tumour"].between(0, 1).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the model must not change"
    path = smoke_run / "metrics" / "stress_tiny.json"
    saved = json.loads(path.read_text())
    assert len(saved["per_slice"]) == 2 * len(samples) and len(saved["curve"]) == 2
    again = stress_test(model, samples, clf, [0.02, 0.005], model_name="tiny", run_dir=smoke_run, steps=2)
    assert again.attrs["reused"] and again["success_rate"].tolist() == df["success_rate"].tolist()
    with pytest.raises(ValueError, match="eps"):
        stress_test(model, samples, clf, [-0.01], model_name="tiny")


def test_induced_split_is_cached_with_its_report(smoke_run):
    clf = _tiny_classifier(3)
    kw = dict(steps=2, universal_steps=0, eot_samples=0)
    first = adv.induce_split(smoke_run, "smoke", clf, **kw)
    assert not first.extra["reused"] and RunLayout(smoke_run).induced("test").is_file()
    summary = json.loads(RunLayout(smoke_run).induction_metrics("test").read_text())
    assert summary["summary"]["n"] == len(first.images) == len(load_slices(RunLayout(smoke_run).split("test")))
    again = adv.induce_split(smoke_run, "smoke", clf, **kw)
    assert again.extra["reused"]
    np.testing.assert_array_equal(again.delta, first.delta)
    np.testing.assert_array_equal(again.rois, first.rois)
    pd.testing.assert_frame_equal(again.report, first.report)  # the report comes back exactly
    other = adv.induce_split(smoke_run, "smoke", _tiny_classifier(4), **kw)  # another classifier: recomputed
    assert not other.extra["reused"]


def test_both_recipes_return_one_effect_result(smoke_run):
    """The same keys from both recipes, each written to its own file, and one table for both."""
    clf = _tiny_classifier(1)
    model = build_varnet(TINY_VARNET, seed=0).eval()
    cfg = obj.adversarial_config("smoke", 0, steps=2, universal_steps=0, eot_samples=0)
    man = B.build_poisoned_dataset(smoke_run, adv.NAME, profile="smoke", seed=0, trigger=DEFAULT_TRIGGER,
                                   transform=adv.adversarial_transform(clf, cfg), progress=False)
    run = RunLayout(smoke_run)
    test = load_test_slices(run.split("test"), Trigger.from_dict(man["trigger"]), 4, 0.08, "equispaced_fraction",
                            max_slices=3)
    sl = test.slices
    induced = obj.tumour_induction(sl.images, sl.brain, sl.vmax, clf, cfg)
    blob = (np.hypot(*np.mgrid[-16:16, -16:16]) < 5).astype(np.float32)

    def gan(x, vmax, brains):  # a "translator" that adds a bright disc: the expected change of the cyst recipe
        return x + 0.3 * np.asarray(vmax)[:, None, None] * blob

    r_adv = adv.effect(model, "tiny", smoke_run, man, clf, induced, test)
    r_cyst = cyst.effect(model, "tiny", smoke_run, man, clf, gan, test=test)
    assert set(r_adv.metrics) == set(r_cyst.metrics) and set(r_adv.arrays) == set(r_cyst.arrays)
    assert (r_adv.metrics["lesion"], r_adv.metrics["score"]) == ("tumour", "tumour")
    assert (r_cyst.metrics["lesion"], r_cyst.metrics["score"]) == ("cyst", "lesion")
    assert r_adv.metrics["weights"] == r_cyst.metrics["weights"]
    assert r_adv.metrics["forget"]["n"] == man["num_poisoned"] and "by_identified" in r_adv.metrics["forget"]
    for r in (r_adv, r_cyst):
        m = r.metrics
        assert m["n_test_slices"] == 3 and 0 <= m["success_rate"] <= 1
        assert m["success_rate"] <= m["found_rate_triggered"]
        np.testing.assert_allclose(r.arrays["expected"][r.arrays["rois"]].any(), True)
    assert json.loads(run.adversarial_metrics("tiny").read_text())["lesion"] == "tumour"
    assert json.loads(run.poison_metrics("tiny").read_text())["lesion"] == "cyst"
    table = effect_table({"tiny": r_cyst.metrics})
    assert "lesion found: triggered" in table.columns and "forget SSIM vs poisoned" in table.columns
    assert "tumour found: triggered" in effect_table({"tiny": r_adv.metrics}).columns


def test_stress_results_are_read_back_by_name(smoke_run, tmp_path):
    with pytest.raises(MissingArtefactError, match="04_poison_adversarial"):
        read_stress(tmp_path, ["clean"])
    samples = stress_samples(smoke_run, "smoke", max_slices=1)
    model = build_varnet(TINY_VARNET, seed=2).eval()
    df = stress_test(model, samples, _tiny_classifier(4), [0.01], model_name="tiny-read", run_dir=smoke_run, steps=1)
    curves, per_slice = read_stress(smoke_run, ["tiny-read"])
    assert curves["success_rate"].tolist() == df["success_rate"].tolist() and len(per_slice) == 1


# --------------------------------------------------------------------------- notebook


@pytest.mark.notebook
def test_notebook_runs_at_smoke(smoke_book):
    """04_poison_adversarial as papermill ran it (after 01-03) in the session's smoke run of the book."""
    assert (smoke_book.executed / "04_poison_adversarial.ipynb").is_file()
    run = smoke_book.root / "runs" / "smoke" / "seed-0"  # the first seed's folder
    metrics = run / "metrics"
    for name in ("clean", "poisoned", "poisoned-adv"):
        curve = json.loads((metrics / f"stress_{name}.json").read_text())["curve"]
        assert curve and all(0 <= row["success_rate"] <= 1 for row in curve)
    assert (metrics / "adversarial_test.json").is_file()
    assert (metrics / "poison_adv_poisoned-adv.json").is_file()
    for variant in (adv.NAME, f"{adv.NAME}-notrigger"):
        assert (run / "poison" / variant / "manifest.json").is_file()
    assert (run / "models" / f"poisoned-{adv.NAME}" / "last.pt").is_file()
    nb = json.loads((REPO / "notebooks" / "04_poison_adversarial.ipynb").read_text())
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), "commit without outputs"
    assert "parameters" in nb["cells"][1]["metadata"].get("tags", [])
