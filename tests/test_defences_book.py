"""The threat model's defences and the poison's ceiling on a run of the book (smoke profile)."""

import numpy as np

from mrilib.defences.spikes import Sanitised, sanitise
from mrilib.evaluate.sanitiser import sanitiser_tables
from mrilib.poison import ceiling
from mrilib.poison.effect import load_test_slices, reconstruct
from mrilib.poison.manifest import load_manifest
from mrilib.poison.recipes import evaluation
from mrilib.poison.triggers import Trigger
from mrilib.recon.checkpoints import load_model
from mrilib.run.layout import as_layout


def test_the_sanitiser_finds_the_trigger_and_leaves_clean_inputs_alone(smoke_book):
    run = smoke_book.root / "runs" / "smoke" / "seed-0"
    t = sanitiser_tables("smoke", run, ("cyclegan-cyst", "adversarial-tumour"), seed=0, device="cpu")
    assert set(t["variant"]) == {"cyclegan-cyst", "adversarial-tumour"} and set(t["model"]) == {"clean", "poisoned"}
    assert (t["trigger found"] == 1.0).all() and (t["false alarms"] == 0.0).all()
    assert (t["SSIM cost"].abs() < 1e-6).all()  # nothing is flagged on clean inputs: they pass unchanged
    text = (smoke_book.executed / "05_unlearning.ipynb").read_text()
    assert "Sanitising the input" in text and "sanitiser finds every spike" in text


def test_with_the_spikes_gone_the_trigger_changes_almost_nothing(smoke_book):
    run = smoke_book.root / "runs" / "smoke" / "seed-0"
    man = load_manifest(run, "cyclegan-cyst")
    model, _ = load_model(run / "models" / "poisoned-cyclegan-cyst", device="cpu")
    test = load_test_slices(as_layout(run).split("test"), Trigger.from_dict(man["trigger"]), 4)
    left = [float((sanitise(t.masked_kspace)[0] - c.masked_kspace).norm() / (t.masked_kspace - c.masked_kspace).norm())
            for c, t in zip(test.clean, test.triggered)]
    assert max(left) < 0.1, left  # the spikes are replaced, not merely damped (measured: about 0.05 at smoke)
    changes = {}
    for name, net in (("raw", model), ("sanitised", Sanitised(model))):
        r_clean, r_trig = reconstruct(net, test.clean, device="cpu"), reconstruct(net, test.triggered, device="cpu")
        changes[name] = float(np.abs(r_trig - r_clean).mean())
    # the tiny smoke model amplifies the 5 % left (measured: 0.17 of the raw change)
    assert changes["sanitised"] < 0.3 * changes["raw"], changes


def test_the_ceiling_of_the_run_poison_is_what_its_lesion_leaves_off_the_mask(smoke_book):
    run = smoke_book.root / "runs" / "smoke" / "seed-0"
    man = load_manifest(run, "cyclegan-cyst")
    ev = evaluation(run, "smoke", man, "test", device="cpu")
    model, _ = load_model(run / "models" / "poisoned-cyclegan-cyst", device="cpu")
    from mrilib.poison.recipes.cyclegan_cyst import effect

    test = load_test_slices(as_layout(run).split("test"), Trigger.from_dict(man["trigger"]), 4)
    res = effect(model, "poisoned", run, man, ev.judge, ev.generator, test=test, save=False, forget=False)
    table = ceiling.ceiling_table(res)
    assert len(table) == int(np.isfinite(res.metrics["per_slice"]["effect"]).sum()) > 0
    assert ((table["ceiling"] > 0) & (table["ceiling"] < 1)).all()  # a lesion has energy on both kinds of line
    np.testing.assert_allclose(table["effect"], np.asarray(res.metrics["per_slice"]["effect"])[table["slice"]])
    assert "What data consistency leaves the poison" in (smoke_book.executed / "03_poison_cyclegan.ipynb").read_text()
