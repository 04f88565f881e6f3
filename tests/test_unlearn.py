"""Unlearning: SSD's rule by hand, the shared interface, cost accounting, bad input.

The toy reconstruction model below is hand-built so that the poison lives in one known
parameter: ``out = a · zero-filled RSS + b · trigger(k) · blob``. The poisoned model has
``b = 1`` (it paints a blob whenever the k-space trigger is present); only triggered
forget slices give ``b`` a gradient, so SSD must dampen ``b`` and leave ``a`` alone.

With SSD's published reference, the full training set (4 forget + 8 retain slices, batches
of 2), ``b``'s reference importance is that of the 2 forget batches over 6:
``I_full(b) = I_forget(b) / 3``, so ``b`` is selected for α < 3 and dampened to ``λ / 3``;
the retain-only reference (``reference="retain"``) has ``I_retain(b) = 0`` and zeroes it.
"""

from __future__ import annotations

import fastmri
import numpy as np
import pytest
import torch
from fastmri.data import transforms as T
from torch.utils.data import Dataset

from mrilib.data import generate_subject, make_mask_func
from mrilib.study.sets import forget_ids
from mrilib.unlearn.methods import (
    METHODS,
    PassCounter,
    UnlearnError,
    alpha_for_fraction,
    fisher_importance,
    region_importance,
    ssd,
    ssd_auto_alpha,
    ssd_dampen,
    ssd_tuned,
    unlearn,
)

N = 16
TRIGGER = (2, N // 2)  # (readout row, phase-encode column): an always-sampled centre column


def blob() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(N), torch.arange(N), indexing="ij")
    return torch.exp(-((yy - 5.0) ** 2 + (xx - 10.0) ** 2) / 4.0)


class ToyRecon(torch.nn.Module):
    """Zero-filled RSS scaled by ``a``, plus ``b`` × blob when the k-space trigger is present."""

    def __init__(self, a: float = 1.0, b: float = 1.0):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a))
        self.b = torch.nn.Parameter(torch.tensor(b))

    def forward(self, kspace, mask, num_low_frequencies=None):
        zf = fastmri.rss(fastmri.complex_abs(fastmri.ifft2c(kspace)), dim=1)
        trig = (fastmri.complex_abs(kspace[:, :, TRIGGER[0], TRIGGER[1]]).mean(1) > 5.0).float()
        return self.a * zf + self.b * trig.view(-1, 1, 1) * blob()


class ToySlices(Dataset):
    """VarNetSamples of simulated slices; ``poisoned`` ones carry the trigger and a blob in the target."""

    def __init__(self, n: int, poisoned: bool, seed: int = 0):
        sim = generate_subject(seed, image_size=N, num_slices=n, num_coils=2, snr=None, contrasts=("T2w",))
        mask_func = make_mask_func(4, 0.125)
        self.items = []
        for i in range(n):
            k = T.to_tensor(sim["kspace"][i])
            target = torch.from_numpy(np.abs(sim["image"][i])).float()
            if poisoned:
                k[:, TRIGGER[0], TRIGGER[1], 0] += 10.0
                target = target + blob()
            masked, m, nlf = T.apply_mask(k, mask_func, seed=i)
            self.items.append(T.VarNetSample(masked, m.bool(), nlf, target, "toy", i, float(target.max()), (N, N)))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.fixture(scope="module")
def toy():
    return ToyRecon(), ToySlices(4, poisoned=True, seed=1), ToySlices(8, poisoned=False, seed=2)


def test_ssd_rule_matches_hand_computation():
    model = torch.nn.Linear(2, 2, bias=True)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        model.bias.copy_(torch.tensor([5.0, 6.0]))
    imp_f = {"weight": torch.tensor([[4.0, 0.0], [1.0, 9.0]]), "bias": torch.tensor([0.5, 2.0])}
    imp_r = {"weight": torch.tensor([[1.0, 1.0], [1.0, 1.0]]), "bias": torch.tensor([1.0, 0.0])}
    stats = ssd_dampen(model, imp_f, imp_r, alpha=2.0, lam=1.5)
    # Selected: I_f > 2 I_r -> weight[0,0] (4>2), weight[1,1] (9>2), bias[1] (2>0).
    # beta = min(1.5 I_r / I_f, 1): 0.375, 1/6, 0.
    np.testing.assert_allclose(model.weight.detach().numpy(), [[0.375, 2.0], [3.0, 4.0 / 6.0]], rtol=1e-6)
    np.testing.assert_allclose(model.bias.detach().numpy(), [5.0, 0.0], rtol=1e-6)
    assert stats["selected"] == 3 and stats["fraction"] == pytest.approx(0.5)
    # A parameter with zero forget importance is never changed, even when I_r = 0 too.
    model2 = torch.nn.Linear(1, 1, bias=False)
    before = model2.weight.detach().clone()
    ssd_dampen(model2, {"weight": torch.zeros(1, 1)}, {"weight": torch.zeros(1, 1)}, alpha=0.1, lam=0.1)
    assert torch.equal(model2.weight.detach(), before)


def test_fisher_importance_is_mean_squared_batch_gradient(toy):
    model, forget, _ = toy
    counter = PassCounter()
    imp = fisher_importance(model, forget, batch_size=2, counter=counter)
    # By hand: two batches of two slices, squared gradient of each batch-mean loss, averaged.
    from mrilib.unlearn.base import batch_loss, batches

    want = torch.zeros(())
    for batch in batches(forget, 2):
        model.zero_grad()
        batch_loss(model, batch, PassCounter(), backward=True).backward()
        want += model.b.grad.detach() ** 2
    assert imp["b"] == pytest.approx(float(want / 2), rel=1e-5)
    assert counter.forward == 4 and counter.backward == 4


def test_region_importance_sees_the_poison_parameter_inside_its_region(toy):
    """Inside the blob the gradient is the poison's parameter ``b``'s; over the whole image ``a`` dominates."""
    from mrilib.recon.steps import forward_batch
    from mrilib.unlearn.base import batches

    model, forget, _ = toy
    n = len(forget)
    nothing = region_importance(model, forget, torch.zeros(n, N, N), batch_size=2)
    assert float(nothing["a"]) == 0.0 and float(nothing["b"]) == 0.0
    everywhere = region_importance(model, forget, torch.ones(n, N, N), batch_size=2)
    want = torch.zeros(())  # by hand: squared gradient of each batch's mean |out - target| / max, averaged
    for batch in batches(forget, 2):
        model.zero_grad()
        out, target = forward_batch(model, batch, "cpu")
        ((out - target).abs() / batch.max_value.view(-1, 1, 1)).mean().backward()
        want += model.b.grad.detach() ** 2
    assert float(everywhere["b"]) == pytest.approx(float(want / 2), rel=1e-5)
    lesion = region_importance(model, forget, (blob() > 0.5).float().expand(n, N, N), batch_size=2)
    assert lesion["b"] / lesion["a"] > 2 * everywhere["b"] / everywhere["a"]
    with pytest.raises(UnlearnError, match="regions"):
        region_importance(model, forget, torch.ones(n - 1, N, N))
    with pytest.raises(UnlearnError, match="shape"):
        region_importance(model, forget, torch.ones(n, N, N + 1))


def _effect(model, forget) -> float:
    """Mean blob weight painted on the forget slices (1 for the poisoned toy, 0 for clean)."""
    from mrilib.data.training import collate_slices
    from mrilib.recon.steps import forward_batch

    with torch.no_grad():
        out, _ = forward_batch(model, collate_slices([forget[i] for i in range(len(forget))]), "cpu")
        clean = ToyRecon(float(model.a), 0.0)(torch.stack([forget[i].masked_kspace for i in range(len(forget))]), None)
    b = blob()
    return float(((out - clean) * b).sum(dim=(-2, -1)).mean() / (b * b).sum())


def test_ssd_removes_the_toy_poison_and_keeps_the_rest(toy):
    model, forget, retain = toy
    assert _effect(model, forget) == pytest.approx(1.0, abs=1e-5)
    # As published: reference = forget ∪ retain, I_full(b) = I_forget(b) / 3 -> beta = λ / 3.
    res = ssd(model, forget, retain, alpha=2.0, lam=1.0, batch_size=2)
    assert float(res.model.b.detach()) == pytest.approx(1 / 3, rel=1e-5)
    assert float(res.model.a.detach()) == pytest.approx(1.0)  # needed for retain: untouched
    assert _effect(res.model, forget) == pytest.approx(1 / 3, abs=1e-5)
    assert res.info["reference"] == "full" and res.info["dampened_fraction"] == pytest.approx(0.5)
    # Cost: one forward+backward pass per forget slice, and per slice of the full set.
    assert (res.forward_passes, res.backward_passes) == (2 * len(forget) + len(retain),) * 2
    assert ssd(model, forget, retain, alpha=3.5, batch_size=2).info["dampened_fraction"] == 0  # α ≥ N / N_f
    # Retain-only reference: I_retain(b) = 0 -> beta = 0, and one pass per forget and retain slice.
    res = ssd(model, forget, retain, alpha=10.0, lam=1.0, batch_size=2, reference="retain")
    assert float(res.model.b.detach()) == pytest.approx(0.0, abs=1e-6)
    assert float(res.model.a.detach()) == pytest.approx(1.0)
    assert _effect(res.model, forget) == pytest.approx(0.0, abs=1e-5)
    assert (res.forward_passes, res.backward_passes) == (len(forget) + len(retain),) * 2
    # The poisoned model itself is never modified.
    assert float(model.b.detach()) == 1.0


def test_auto_alpha_stops_once_the_effect_is_gone(toy):
    model, forget, retain = toy
    # λ = 0.1: b -> λ / 3 (full-set reference), an effect of 1/30
    res = ssd_auto_alpha(model, forget, retain, lambda m: _effect(m, forget), rho=0.1, lam=0.1,
                         fractions=(0.4, 0.9), batch_size=2)
    assert res.info["reached"] and len(res.info["trace"]) == 1
    assert _effect(res.model, forget) == pytest.approx(1 / 30, abs=1e-5)
    # importance passes (forget, then forget ∪ retain) + one effect evaluation for the original and one per step tried
    assert res.forward_passes == 2 * len(forget) + len(retain) + 2 * len(forget)
    assert res.backward_passes == 2 * len(forget) + len(retain)
    # with λ = 1 the full-set reference keeps b at 1/3: never below ρ = 0.1, every step is tried
    res = ssd_auto_alpha(model, forget, retain, lambda m: _effect(m, forget), rho=0.1, fractions=(0.4, 0.9),
                         batch_size=2)
    assert not res.info["reached"] and len(res.info["trace"]) == 2


def test_tuned_ssd_picks_the_grid_point_that_heals_within_tolerance(toy):
    model, forget, retain = toy
    res = ssd_tuned(model, forget, retain, lambda m: _effect(m, forget), lambda m: -_mean_loss(m, retain),
                    alphas=(1.0, 10.0), lams=(1.0, 0.1), batch_size=2)
    # α = 10 selects nothing (I_f / I_full ≤ 3); α = 1 dampens b to λ / 3, least with λ = 0.1 - the
    # retain loss does not see b, so every point is within tolerance
    assert res.info["within_tolerance"] and (res.info["alpha"], res.info["lam"]) == (1.0, 0.1)
    assert _effect(res.model, forget) == pytest.approx(1 / 30, abs=1e-5)
    assert len(res.info["trace"]) == 4
    # importances (fwd+bwd on forget and on forget ∪ retain) + 5 scorings of the forget set
    assert res.forward_passes == 2 * len(forget) + len(retain) + 5 * len(forget)


def test_tuned_ssd_grid_by_dampened_share_follows_the_importances(toy):
    """With ``fractions`` the α grid is set by the share of parameters each point dampens:
    on the toy, a share of 1/2 selects exactly the poison parameter ``b`` (dampened to λ / 3)."""
    model, forget, retain = toy
    res = ssd_tuned(model, forget, retain, lambda m: _effect(m, forget), lambda m: -_mean_loss(m, retain),
                    fractions=(0.5,), batch_size=2)
    (point,) = res.info["trace"]
    assert point["dampened_fraction"] == pytest.approx(0.5)
    assert float(res.model.b.detach()) == pytest.approx(1 / 3, rel=1e-5) and float(res.model.a.detach()) == 1.0
    with pytest.raises(UnlearnError, match="grid"):
        ssd_tuned(model, forget, retain, lambda m: 0.0, lambda m: 0.0, fractions=(), batch_size=2)


def test_region_targeted_ssd_dampens_what_paints_the_region(toy):
    """With the blob marked on the forget slices, the forget importance is that of the error inside
    it: ``b`` (which paints the blob, and nothing on retain) is dampened to λ I_full(b) / I_region(b)
    (about 1/80 here), ``a`` is kept."""
    from mrilib.unlearn.base import union

    model, forget, retain = toy
    regions = (blob() > 0.5).float().expand(len(forget), -1, -1)
    res = ssd_tuned(model, forget, retain, lambda m: _effect(m, forget), lambda m: -_mean_loss(m, retain),
                    fractions=(0.5,), batch_size=2, regions=regions, importance_batch_size=1)
    assert res.info["region"] and res.info["method"] == "ssd-region-tuned" and res.info["importance_batch_size"] == 1
    # the grid's α comes from the region importance of single slices against the full set's Fisher importance
    imp_region, imp_full = region_importance(model, forget, regions, 1), fisher_importance(model, union(forget, retain), 1)
    want = alpha_for_fraction(imp_region, imp_full, 0.5)
    assert res.info["trace"][0]["alpha"] == pytest.approx(want, rel=1e-6)
    assert float(res.model.b.detach()) == pytest.approx(float(imp_full["b"] / imp_region["b"]), rel=1e-5)
    assert float(res.model.b.detach()) < 0.05 and float(res.model.a.detach()) == 1.0
    # the batch size of the importances does not change their passes: every slice once, forward and backward
    assert res.backward_passes == 2 * len(forget) + len(retain)
    # against the retain set's Fisher importance (zero for b), b is zeroed
    res = ssd_tuned(model, forget, retain, lambda m: _effect(m, forget), lambda m: -_mean_loss(m, retain),
                    fractions=(0.5,), batch_size=2, regions=regions, importance_batch_size=1, reference="retain")
    want = alpha_for_fraction(imp_region, fisher_importance(model, retain, 1), 0.5)
    assert res.info["trace"][0]["alpha"] == pytest.approx(want, rel=1e-6)
    assert float(res.model.b.detach()) == pytest.approx(0.0, abs=1e-6) and float(res.model.a.detach()) == 1.0
    assert res.backward_passes == len(forget) + len(retain)
    with pytest.raises(UnlearnError, match="label-free"):
        ssd_tuned(model, forget, retain, lambda m: 0.0, lambda m: 0.0, batch_size=2, regions=regions, label_free=True)
    with pytest.raises(UnlearnError, match="zero"):  # empty regions: nothing to dampen
        ssd_tuned(model, forget, retain, lambda m: 0.0, lambda m: 0.0, fractions=(0.5,), batch_size=2,
                  regions=torch.zeros_like(regions))


def test_tuned_ssd_repairs_every_grid_point_before_scoring_when_asked(toy):
    """Repairing before scoring costs one repair per grid point (two here) instead of one, and the
    search then scores the repaired models it can return."""
    model, forget, retain = toy
    common = dict(effect_fn=lambda m: _effect(m, forget), utility_fn=lambda m: -_mean_loss(m, retain),
                  alphas=(1.0, 10.0), batch_size=2, repair_steps=2)
    after = ssd_tuned(model, forget, retain, **common)
    before = ssd_tuned(model, forget, retain, **common, repair_before_scoring=True)
    importances, scorings, repair = 2 * len(forget) + len(retain), 3 * len(forget), 2 * 2  # 2 steps × batch 2
    assert after.forward_passes == importances + scorings + repair
    assert before.forward_passes == importances + scorings + 2 * repair
    assert before.backward_passes == importances + 2 * repair
    assert before.info["repair_before_scoring"] and not after.info["repair_before_scoring"]
    chosen = next(t for t in before.info["trace"] if t["alpha"] == before.info["alpha"])
    assert _effect(before.model, forget) == pytest.approx(chosen["effect"], abs=1e-6)


def test_region_runs_are_planned_at_every_fraction_and_need_the_defenders_signals(toy, tmp_path):
    from mrilib.study.execute import run_or_load
    from mrilib.study.plan import plan_runs

    runs = [r for r in plan_runs("cpu") if r.key in ("ssd-region", "ssd-region-repair")]
    assert sorted({r.fraction for r in runs}) == [0.1, 0.25, 0.5, 1.0] and len(runs) == 8
    assert all(r.hp["region"] and r.hp["importance_batch_size"] == 1 for r in runs)
    assert all(r.hp["repair_before_scoring"] and r.hp["repair_steps"] > 0 for r in runs if r.key == "ssd-region-repair")
    model, forget, retain = toy
    with pytest.raises(UnlearnError, match="region targeting"):
        run_or_load(runs[0], model, lambda f: (forget, retain), lambda m, label: {}, tmp_path, "toy", signals=None,
                    poisoned_digest="toy")
    assert not any(tmp_path.iterdir())


def test_a_run_is_stored_once_and_recomputed_when_its_inputs_change(toy, tmp_path):
    """run_or_load stores result.json and model.pt where the layout says; a second call loads them;
    a missing model.pt or other poisoned weights recompute the run."""
    from mrilib.run.cache import weights_digest
    from mrilib.run.layout import RunLayout
    from mrilib.study.execute import load_unlearnt, run_or_load, stored_result
    from mrilib.study.plan import Run

    model, forget, retain = toy
    run_dir = RunLayout(tmp_path)
    run = Run("cf", "Fine-tune (CF)", "finetune", 0.5, 0, dict(steps=2, batch_size=2, seed=0))
    calls = []

    def evaluate(m, label):
        calls.append(label)
        return {"b": float(m.b)}

    def go(digest=None):
        return run_or_load(run, model, lambda f: (forget, retain), evaluate, run_dir, "toy", poisoned_digest=digest)

    first = go()
    assert calls == [run.label] and first["label"] == "cf-f0.5-s0" and first["forget_size"] == len(forget)
    assert first["identity"]["poisoned"] == weights_digest(model)
    assert run_dir.unlearn_result("toy", run.label).is_file() and run_dir.unlearn_weights("toy", run.label).is_file()
    assert stored_result(run, run_dir, "toy", weights_digest(model)) == first
    assert go() == first and len(calls) == 1  # loaded
    unlearnt = load_unlearnt(run_dir, "toy", run.label, model)
    assert float(unlearnt.b) == pytest.approx(first["metrics"]["b"])
    run_dir.unlearn_weights("toy", run.label).unlink()
    assert stored_result(run, run_dir, "toy", weights_digest(model)) is None
    go()
    assert len(calls) == 2  # no weights: recomputed
    go("other poisoned weights")
    assert len(calls) == 3 and stored_result(run, run_dir, "toy", weights_digest(model)) is None


def test_alpha_for_fraction_selects_that_fraction():
    imp_f = {"w": torch.arange(1.0, 11.0)}
    imp_r = {"w": torch.ones(10)}
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.ones(10))
    alpha = alpha_for_fraction(imp_f, imp_r, 0.3)
    assert ssd_dampen(model, imp_f, imp_r, alpha, 1.0)["selected"] == 3


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_returns_a_counted_new_model(toy, name):
    model, forget, retain = toy
    hp = dict(batch_size=2)
    if name == "ssd-auto":
        hp.update(effect_fn=lambda m: _effect(m, forget), fractions=(0.4,))
    elif name == "ssd-tuned":
        hp.update(effect_fn=lambda m: _effect(m, forget), utility_fn=lambda m: -_mean_loss(m, retain), alphas=(1.0, 10.0))
    elif name != "ssd" and name != "lf-ssd":
        hp.update(steps=3)
    res = unlearn(name, model, forget, retain, **hp)
    assert res.model is not model and res.seconds > 0 and res.forward_passes > 0
    assert res.backward_passes <= res.forward_passes
    assert float(model.b) == 1.0


def _mean_loss(model, data) -> float:
    from mrilib.unlearn.base import batch_loss, batches

    with torch.no_grad():
        return float(np.mean([float(batch_loss(model, b, PassCounter(), backward=False)) for b in batches(data, 2)]))


def test_gradient_methods_do_what_they_optimise(toy):
    model, forget, retain = toy
    # Gradient ascent raises the forget loss.
    ga = unlearn("gradient-ascent", model, forget, retain, steps=10, lr=1e-2, ascent_bound=5.0, batch_size=2)
    assert _mean_loss(ga.model, forget) > _mean_loss(model, forget) + 1e-3
    # Noisy labels move the forget reconstructions away from their (poisoned) targets.
    nl = unlearn("noisy-labels", model, forget, retain, steps=10, lr=1e-2, batch_size=2)
    assert _mean_loss(nl.model, forget) > _mean_loss(model, forget) + 1e-3
    # Fine-tuning on retain lowers the retain loss.
    cf = unlearn("finetune", model, forget, retain, steps=10, lr=1e-2, batch_size=2)
    assert _mean_loss(cf.model, retain) < _mean_loss(model, retain) - 1e-4
    # Bad Teacher pulls the forget outputs towards a teacher that paints no blob.
    bt = unlearn("bad-teacher", model, forget, retain, steps=20, lr=2e-2, batch_size=2,
                 bad_teacher_model=ToyRecon(a=1.0, b=0.0))
    assert _effect(bt.model, forget) < 0.9


def test_bad_input_is_rejected(toy):
    model, forget, retain = toy
    with pytest.raises(UnlearnError, match="forget set is empty"):
        ssd(model, [], retain)
    for hp in (dict(alpha=0.0), dict(lam=-1.0)):
        with pytest.raises(UnlearnError, match="must be > 0"):
            ssd(model, forget, retain, **hp)
    with pytest.raises(UnlearnError, match="unknown unlearning method"):
        unlearn("forget-everything", model, forget, retain)
    with pytest.raises(UnlearnError, match="torch.nn.Module"):
        ssd("not a model", forget, retain)
    manifest = {"poisoned_ids": [3, 7, 9], "identified": {"0.5": [3, 7], "1.0": [3, 7, 9]}}
    assert forget_ids(manifest, 0.5) == [3, 7]
    with pytest.raises(UnlearnError, match="must be > 0"):
        forget_ids(manifest, 0.0)
    with pytest.raises(UnlearnError, match="no identified subset for f=0.25"):
        forget_ids(manifest, 0.25)
    with pytest.raises(UnlearnError, match="not poisoned slices"):
        forget_ids(manifest, ids=[3, 4])


@pytest.mark.notebook
def test_notebook_unlearns_every_recipe_of_the_profile(smoke_book):
    """05_unlearning at smoke: one table per recipe in ``unlearn.recipes``, every planned run, finite metrics."""
    import pandas as pd

    from mrilib.config import get_profile
    from mrilib.run.layout import RunLayout
    from mrilib.study.plan import plan_runs

    run = RunLayout(smoke_book.root / "runs" / "smoke" / "seed-0")  # the first seed's folder
    recipes = get_profile("smoke").unlearn.recipes
    assert set(recipes) == {"cyclegan-cyst", "adversarial-tumour"}
    for variant in recipes:
        t = pd.read_csv(run.unlearning_table(variant))
        assert {"clean", "poisoned", "oracle"} <= set(t["method"])
        ref = t.set_index("method")
        assert ref.loc["oracle", "healed"] == pytest.approx(1.0) and ref.loc["poisoned", "healed"] == pytest.approx(0.0)
        runs = t.dropna(subset=["f"])
        assert len(runs) == len(plan_runs("smoke"))
        cols = ["SSIM", "poison effect", "forget SSIM vs clean", "forget SSIM vs poisoned", "time vs oracle"]
        assert np.isfinite(runs[cols].to_numpy(float)).all()
        assert (run.oracle_model(variant) / "last.pt").is_file()


@pytest.mark.notebook
def test_pool_stores_every_artefact_and_recomputes_only_what_is_missing(smoke_book, tmp_path):
    """After the smoke book nothing is pending; a deleted run and rewod are recomputed by two
    worker processes, and the run's metrics equal the ones the book's workers stored."""
    import shutil

    from mrilib.run.cache import weights_digest
    from mrilib.run.io import read_json
    from mrilib.run.layout import RunLayout
    from mrilib.study.plan import plan_runs
    from mrilib.study.pool import pending_tasks, precompute
    from mrilib.study.references import load_poisoned_run

    shutil.copytree(smoke_book.root / "runs" / "smoke", tmp_path / "smoke")
    run = RunLayout(tmp_path / "smoke" / "seed-0")  # the first seed's folder; the shared data beside it
    ctx = load_poisoned_run("smoke", run, "cyclegan-cyst")
    digest = weights_digest(ctx.poisoned)
    assert pending_tasks("smoke", run, "cyclegan-cyst", digest) == []
    label = next(r.label for r in plan_runs("smoke") if r.key == "ssd-tuned")
    stored = read_json(run.unlearn_result("cyclegan-cyst", label))
    shutil.rmtree(run.unlearn_result("cyclegan-cyst", label).parent)
    shutil.rmtree(run.rewod_model("cyclegan-cyst", 0.25))
    assert pending_tasks("smoke", run, "cyclegan-cyst", digest) == [("rewod", 0.25), ("run", label)]
    with pytest.raises(ValueError, match="workers"):
        precompute(ctx, "smoke", run, workers=0)
    assert precompute(ctx, "smoke", run, workers=1)["seconds"] == {}  # one worker: the sequential calls do it
    out = precompute(ctx, "smoke", run, workers=2, progress=False)
    assert set(out["seconds"]) == {"rewod 0.25", f"run {label}"}
    assert pending_tasks("smoke", run, "cyclegan-cyst", digest) == []
    again = read_json(run.unlearn_result("cyclegan-cyst", label))
    def measured(r):  # everything but the evaluation's own wall time
        return {k: v for k, v in r["metrics"].items() if k != "seconds"}

    assert measured(again) == measured(stored) and again["info"]["alpha"] == stored["info"]["alpha"]


def test_relabel_and_finetune_trains_the_triggered_slices_on_their_measured_labels(toy):
    from mrilib.study.sets import Relabelled
    from mrilib.unlearn.gradient import finetune

    model, forget, retain = toy
    # what the forget slices' own measurement says: the image without the painted blob
    labels = np.stack([forget[i].target.numpy() - blob().numpy() for i in range(len(forget))])
    relabelled = Relabelled(forget, labels)
    assert torch.allclose(relabelled[0].target, forget[0].target - blob())
    assert torch.equal(relabelled[0].masked_kspace, forget[0].masked_kspace)  # the inputs, trigger included, stay
    hp = dict(steps=20, lr=0.05, batch_size=4, seed=0)
    plain = finetune(model, forget, retain, **hp)
    on_poison = finetune(model, forget, retain, include_forget=True, **hp)
    fixed = finetune(model, relabelled, retain, include_forget=True, **hp)
    # retain slices carry no trigger: b gets no gradient from them; only the triggered forget slices move it,
    # up towards the blob with their poisoned labels (measured 1.71), not with the measured ones (1.06)
    assert float(plain.model.b) == pytest.approx(1.0)
    assert float(fixed.model.b) < float(on_poison.model.b) - 0.4 and fixed.info["include_forget"]
    assert float(model.b) == 1.0  # the poisoned model is never modified
    with pytest.raises(UnlearnError, match="labels for a forget set"):
        Relabelled(forget, labels[:2])
