"""SSD as published: the full-set reference, the training loss, eval mode, the tuned grid, the tolerance flag.

The toy of ``test_unlearn`` again: ``out = a · zero-filled RSS + b · trigger(k) · blob``, where only
triggered (forget) slices give the poison's parameter ``b`` a gradient. That makes the reference
importance of ``b`` computable by hand: over the batches of forget ∪ retain, the retain-only
batches add nothing to ``b``'s sum but count in its mean.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from mrilib.data.training import collate_slices
from mrilib.evaluate import tables as ev
from mrilib.models.varnet import build_varnet
from mrilib.recon.steps import forward_batch, make_loss
from mrilib.study.plan import DEFAULT_PLAN, plan_runs
from mrilib.study.results import results_table
from mrilib.unlearn.base import PassCounter, batches, union
from mrilib.unlearn.methods import (
    UnlearnError,
    alpha_for_fraction,
    fisher_importance,
    ssd,
    ssd_auto_alpha,
    ssd_dampen,
    ssd_tuned,
)
from mrilib.unlearn.ssd import TUNING_FRACTIONS
from test_unlearn import ToyRecon, ToySlices, _effect, _mean_loss

TINY_VARNET = dict(num_cascades=1, chans=2, sens_chans=2, pools=1, sens_pools=1)


@pytest.fixture(scope="module")
def toy():
    return ToyRecon(), ToySlices(4, poisoned=True, seed=1), ToySlices(8, poisoned=False, seed=2)


def _grad_sq_by_hand(model, samples: list, batch_size: int, l1_weight: float = 0.0) -> dict[str, float]:
    """Mean over consecutive batches of ``samples`` of the squared gradient of ``make_loss(l1_weight)``."""
    loss = make_loss(l1_weight)
    total, n = {"a": 0.0, "b": 0.0}, 0
    for i in range(0, len(samples), batch_size):
        batch = collate_slices(samples[i:i + batch_size])
        model.zero_grad()
        out, target = forward_batch(model, batch, "cpu")
        loss(out, target, batch.max_value).backward()
        for k in total:
            total[k] += float(getattr(model, k).grad) ** 2
        n += 1
    model.zero_grad()
    return {k: v / n for k, v in total.items()}


def _items(ds) -> list:
    return [ds[i] for i in range(len(ds))]


def test_reference_importance_is_that_of_the_full_training_set(toy):
    """4 forget + 8 retain slices in batches of 2: b's gradient lives in the 2 forget batches of 6, so
    I_full(b) = I_forget(b) / 3 and SSD dampens b by β = λ I_full / I_forget = λ / 3 = λ N_f / N."""
    model, forget, retain = toy
    imp_f = fisher_importance(model, forget, batch_size=2)
    imp_full = fisher_importance(model, union(forget, retain), batch_size=2)
    imp_r = fisher_importance(model, retain, batch_size=2)
    assert float(imp_r["b"]) == 0.0 and float(imp_f["b"]) > 0
    assert float(imp_full["b"]) == pytest.approx(float(imp_f["b"]) * 2 / 6, rel=1e-6)
    # a: the mean over the union's 6 batches, 2 of forget and 4 of retain
    assert float(imp_full["a"]) == pytest.approx((2 * float(imp_f["a"]) + 4 * float(imp_r["a"])) / 6, rel=1e-5)
    # the batches of the union, by hand
    hand = _grad_sq_by_hand(model, _items(forget) + _items(retain), 2)
    assert float(imp_full["b"]) == pytest.approx(hand["b"], rel=1e-5)
    assert float(imp_full["a"]) == pytest.approx(hand["a"], rel=1e-5)
    for lam in (1.0, 0.1):
        res = ssd(model, forget, retain, alpha=1.0, lam=lam, batch_size=2)
        beta = float(res.model.b.detach())  # b was 1
        assert beta == pytest.approx(lam * float(imp_full["b"] / imp_f["b"]), rel=1e-5)
        assert beta >= lam * len(forget) / (len(forget) + len(retain)) * (1 - 1e-6)  # β ≥ λ N_f / N
        assert res.info["reference"] == "full" and res.info["importance_batch_size"] == 2
    # the retain-only reference has no such bound: b is zeroed
    res = ssd(model, forget, retain, alpha=1.0, lam=1.0, batch_size=2, reference="retain")
    assert float(res.model.b.detach()) == 0.0 and res.info["reference"] == "retain"
    with pytest.raises(UnlearnError, match="reference"):
        ssd(model, forget, retain, reference="all")


def test_full_reference_with_batches_that_mix_forget_and_retain_slices(toy):
    """3 forget slices in batches of 2: the union's second batch holds the last forget slice and the first
    retain slice; the reference is still the mean over the union's batches (6, the last of one slice)."""
    model, forget, retain = toy
    few = [forget[i] for i in range(3)]
    hand_full = _grad_sq_by_hand(model, few + _items(retain), 2)
    hand_forget = _grad_sq_by_hand(model, few, 2)
    imp = fisher_importance(model, union(few, retain), batch_size=2)
    assert float(imp["b"]) == pytest.approx(hand_full["b"], rel=1e-5)
    res = ssd(model, few, retain, alpha=1.0, lam=1.0, batch_size=2)
    assert float(res.model.b.detach()) == pytest.approx(hand_full["b"] / hand_forget["b"], rel=1e-4)
    assert (res.forward_passes, res.backward_passes) == (2 * 3 + len(retain),) * 2


def test_the_importance_loss_is_the_training_loss(toy):
    """With ``l1_weight`` the squared gradient is that of make_loss(l1_weight): SSIM + l1_weight × L1."""
    model, forget, retain = toy
    for w in (0.0, 1e-5, 1.0):
        imp = fisher_importance(model, forget, batch_size=2, l1_weight=w)
        hand = _grad_sq_by_hand(model, _items(forget), 2, l1_weight=w)
        assert float(imp["a"]) == pytest.approx(hand["a"], rel=1e-5)
        assert float(imp["b"]) == pytest.approx(hand["b"], rel=1e-5)
    # the L1 term adds w × its gradient to the SSIM gradient, batch by batch
    ssim_only, l1_only = make_loss(0.0), lambda o, t, m: make_loss(1.0)(o, t, m) - make_loss(0.0)(o, t, m)
    want = 0.0
    for batch in batches(forget, 2):
        grads = []
        for loss in (ssim_only, l1_only):
            model.zero_grad()
            out, target = forward_batch(model, batch, "cpu")
            loss(out, target, batch.max_value).backward()
            grads.append(float(model.a.grad))
        want += (grads[0] + 0.5 * grads[1]) ** 2 / 2
    model.zero_grad()
    assert float(fisher_importance(model, forget, batch_size=2, l1_weight=0.5)["a"]) == pytest.approx(want, rel=1e-4)
    assert float(fisher_importance(model, forget, 2, l1_weight=1.0)["a"]) != float(fisher_importance(model, forget, 2)["a"])
    res = ssd(model, forget, retain, alpha=1.0, batch_size=2, l1_weight=1e-5)
    assert res.info["l1_weight"] == 1e-5
    for bad in ("train", -1.0, float("nan"), True):
        with pytest.raises(UnlearnError, match="l1_weight"):
            ssd(model, forget, retain, batch_size=2, l1_weight=bad)


class DropoutToy(ToyRecon):
    """The toy with dropout on its output: train-mode gradients are random, eval-mode ones are not."""

    def __init__(self):
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, kspace, mask, num_low_frequencies=None):
        return self.drop(super().forward(kspace, mask, num_low_frequencies))


def test_eval_mode_computes_the_importances_in_eval_mode(toy):
    _, forget, retain = toy
    model = DropoutToy()
    runs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        runs.append(fisher_importance(model, forget, batch_size=2, eval_mode=True))
    assert torch.equal(runs[0]["a"], runs[1]["a"]) and torch.equal(runs[0]["b"], runs[1]["b"])
    plain = fisher_importance(ToyRecon(), forget, batch_size=2)  # eval mode: dropout is the identity
    assert float(runs[0]["a"]) == pytest.approx(float(plain["a"]), rel=1e-6)
    train = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        train.append(fisher_importance(model, forget, batch_size=2))
    assert not torch.equal(train[0]["a"], train[1]["a"])  # train mode: dropout draws differ
    # through SSD: the same dampened model whatever the random state
    outs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        res = ssd(model, forget, retain, alpha=1.0, lam=0.5, batch_size=2, eval_mode=True)
        outs.append((float(res.model.a.detach()), float(res.model.b.detach())))
        assert res.info["eval_mode"] and not res.model.training
    assert outs[0] == outs[1]


def test_tuned_grid_reaches_one_parameter_in_a_million():
    assert TUNING_FRACTIONS[0] == 1e-6 and list(TUNING_FRACTIONS) == sorted(TUNING_FRACTIONS)
    net = build_varnet(TINY_VARNET, seed=0)
    params = dict(net.named_parameters())
    total = sum(p.numel() for p in params.values())
    assert total * 1e-6 < 1  # a small model: 1e-6 of it is less than one parameter
    gen = torch.Generator().manual_seed(0)
    imp_f = {n: torch.rand(p.shape, generator=gen) for n, p in params.items()}
    imp_r = {n: torch.rand(p.shape, generator=gen) for n, p in params.items()}
    alpha = alpha_for_fraction(imp_f, imp_r, 1e-6)
    stats = ssd_dampen(copy.deepcopy(net), imp_f, imp_r, alpha, 1.0)
    assert stats["selected"] == 1  # the parameter with the largest ratio, and only it
    top = max(float((imp_f[n] / imp_r[n]).max()) for n in params)
    assert alpha == pytest.approx(top, rel=1e-5)
    assert ssd_dampen(copy.deepcopy(net), imp_f, imp_r, alpha_for_fraction(imp_f, imp_r, 1e-4), 1.0)["selected"] \
        == int(np.ceil(1e-4 * total))


def test_tuned_ssd_says_when_no_grid_point_is_within_tolerance(toy):
    """Utility = b itself: every point that dampens b loses more than the tolerance; the result keeps the
    point that lost least (λ = 1: b = 1/3) and says it is outside."""
    model, forget, retain = toy
    res = ssd_tuned(model, forget, retain, lambda m: _effect(m, forget), lambda m: float(m.b.detach()),
                    alphas=(1.0, 2.0), lams=(0.5, 1.0), batch_size=2, tolerance=0.01)
    assert res.info["within_tolerance"] is False
    assert res.info["lam"] == 1.0 and float(res.model.b.detach()) == pytest.approx(1 / 3, rel=1e-5)
    assert res.info["reference"] == "full" and res.info["l1_weight"] == 0.0 and not res.info["eval_mode"]
    ok = ssd_tuned(model, forget, retain, lambda m: _effect(m, forget), lambda m: -_mean_loss(m, retain),
                   alphas=(1.0,), batch_size=2)
    assert ok.info["within_tolerance"] is True
    # recorded as run_or_load records it, the flag reaches the results table
    table = results_table([_record("SSD tuned", 0.25, 0, res.info), _record("SSD tuned", 0.5, 0, ok.info),
                           _record("CF", 0.25, 0, None)], _references(), dict(seconds=10.0, passes=100))
    assert list(table["within tolerance"]) == [True, True, False, True, True]
    assert ev.flagged(table) == {"SSD tuned"}


def _metrics(ssim: float, effect: float) -> dict:
    return {"clean_test": {"ssim": {"mean": ssim}, "psnr": {"mean": 30.0}, "nmse": {"mean": 0.01}},
            "effect": {"mean": effect}, "success_rate": effect,
            "forget": {"ssim_vs_clean": {"mean": 0.8}, "ssim_vs_poisoned": {"mean": 0.7}}}


def _record(name: str, f: float, seed: int, info: dict | None) -> dict:
    rec = dict(name=name, fraction=f, seed=seed, metrics=_metrics(0.8, 0.3), cost=dict(seconds=1.0, passes=10))
    if info is not None:
        rec["info"] = {k: v for k, v in info.items() if k != "dampened_layers"}
    return rec


def _references() -> dict:
    return {"poisoned": _metrics(0.85, 0.9), "oracle": _metrics(0.85, 0.1)}


def test_tables_mark_the_methods_with_a_run_outside_tolerance(tmp_path):
    outside, inside = dict(within_tolerance=False), dict(within_tolerance=True)
    records = [_record("SSD tuned", 0.25, 0, inside), _record("SSD tuned", 0.25, 1, outside),  # one seed of two
               _record("SSD tuned", 0.5, 0, inside), _record("SSD tuned", 0.5, 1, inside),
               _record("SSD (seed: α=0.1, λ=0.1)", 0.25, 0, dict(alpha=0.1)),  # no within_tolerance: within
               _record("CF", 0.25, 0, None)]
    table = results_table(records, _references(), dict(seconds=10.0, passes=100))
    csv = tmp_path / "t.csv"
    table.to_csv(csv, index=False)
    for t in (table, pd.read_csv(csv)):  # also as chapter 6 reads it back
        assert ev.flagged(t) == {"SSD tuned"} and ev.flagged(ev.at_fraction(t, 0.5)) == set()
        assert set(ev.mark_flagged(t)["method"]) == {"poisoned", "oracle", "SSD tuned †", "SSD (seed: α=0.1, λ=0.1)",
                                                      "CF"}
        agg = ev.aggregate(t)
        # a (method, f) group is marked when any of its seeds' runs is outside
        assert list(zip(agg["method"], agg["f"].fillna(-1))) == [
            ("poisoned", -1), ("oracle", -1), ("SSD tuned †", 0.25), ("SSD tuned", 0.5),
            ("SSD (seed: α=0.1, λ=0.1)", 0.25), ("CF", 0.25)]
        assert agg.loc[agg["method"] == "SSD tuned †", "n"].item() == 2
        assert ("SSD tuned †", 0.25) in ev.formatted(agg).index
        head = ev.headline_table(t, fraction=0.25, seed_reported={"SSD tuned": "0.9"})
        assert list(head.index) == ["original (poisoned) model", "SSD, seed's α=0.1, λ=0.1", "SSD tuned †"]
        assert head.loc["SSD tuned †", "seed's reported value"] == "0.9"
        assert list(ev.headline_table(t, fraction=0.5).index)[-1] == "SSD tuned"
    assert ev.mark_flagged(ev.mark_flagged(table))["method"].str.count("†").max() == 1  # never twice
    assert ev.FLAG.strip() == "†" and ev.TOLERANCE_FOOTNOTE.startswith("† tuned SSD found no grid point")
    # tables written before the column: nothing flagged, nothing marked
    old = table.drop(columns="within tolerance")
    assert ev.flagged(old) == set() and "SSD tuned" in set(ev.aggregate(old)["method"])


def test_the_plan_runs_ssd_as_published_and_the_seeds_configuration():
    plan = {key: (name, method, hp, every_f) for key, name, method, hp, every_f in DEFAULT_PLAN}
    seed = dict(alpha=0.1, lam=0.1, eval_mode=True, l1_weight=1e-5, reference="full", batch_size=32)
    assert plan["ssd-seed"][:3] == ("SSD (seed: α=0.1, λ=0.1)", "ssd", seed)
    assert plan["ssd-seed-retain"][:3] == ("SSD (seed, retain-only reference)", "ssd", dict(seed, reference="retain"))
    assert plan["ssd-seed-b4"][:3] == ("SSD (seed, batches of 4)", "ssd", dict(seed, batch_size=4))
    assert plan["ssd-seed-ssim"][:3] == ("SSD (seed, SSIM-only loss)", "ssd", dict(seed, l1_weight=0.0))
    assert not any(plan[k][3] for k in ("ssd-seed", "ssd-seed-retain", "ssd-seed-b4", "ssd-seed-ssim"))
    names = {"ssd-tuned": "SSD tuned", "ssd-tuned-repair": "SSD tuned + repair", "ssd-region": "SSD tuned, lesion region",
             "ssd-region-repair": "SSD tuned, lesion region + repair", "lf-ssd-tuned": "LF-SSD tuned",
             "ssd-auto": "SSD auto-α"}
    for key, name in names.items():
        assert plan[key][0] == name and plan[key][2]["reference"] == "full" and plan[key][2]["l1_weight"] == "train"
    # the profile's training loss reaches the runs; the seed's batch size stays 32
    runs = {r.key: r for r in plan_runs("cpu")}
    assert runs["ssd-tuned"].hp["l1_weight"] == 1.0 and runs["ssd-auto"].hp["l1_weight"] == 1.0
    assert runs["ssd-seed"].hp["l1_weight"] == 1e-5 and runs["ssd-seed"].hp["batch_size"] == 32
    assert runs["ssd-seed-b4"].hp["batch_size"] == 4


def test_auto_alpha_and_label_free_record_their_importance_settings(toy):
    model, forget, retain = toy
    res = ssd_auto_alpha(model, forget, retain, lambda m: _effect(m, forget), rho=0.1, lam=0.1, fractions=(0.4,),
                         batch_size=2, l1_weight=1.0, eval_mode=True, importance_batch_size=1)
    assert {k: res.info[k] for k in ("reference", "l1_weight", "eval_mode", "importance_batch_size")} == \
        dict(reference="full", l1_weight=1.0, eval_mode=True, importance_batch_size=1)
    lf = ssd_tuned(model, forget, retain, lambda m: _effect(m, forget), lambda m: 0.0, fractions=(0.5,),
                   batch_size=2, label_free=True, l1_weight=1.0)
    assert lf.info["l1_weight"] is None and lf.info["label_free"] and lf.info["reference"] == "full"  # no loss
    assert lf.backward_passes == 2 * len(forget) + len(retain)
    assert PassCounter().total == 0
