"""k-space-consistent poisoning (mrilib.poison.consistent): lesions the label-vs-k-space audit does not see."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from dataset_fixtures import phantom
from mrilib.audit import audit_folder, label_score, measured_label
from mrilib.data import generate_embedded_dataset
from mrilib.data.coils import birdcage_maps
from mrilib.data.kspace import fft2c
from mrilib.data.loading import make_mask_func
from mrilib.poison import build as B
from mrilib.poison.consistent import embed_lesion, lesion_kept, protected_columns
from mrilib.poison.recipes import RECIPES, adversarial_tumour, cyclegan_cyst, register_recipe
from mrilib.poison.recipes import consistent as C
from mrilib.poison.triggers import DEFAULT_TRIGGER, SPREAD_TRIGGER, always_sampled_columns
from mrilib.run.layout import RunLayout
from mrilib.study.references import oracle_dir, oracle_twin
from test_poison import _cyst_recipe_factory

N, COILS = 32, 4
ROUNDING = 1e-5


def _slice(height: int = N, seed: int = 1):
    """A smooth complex phantom on an ``height × N`` grid (``height > N``: readout-oversampled), its
    4-coil k-space (birdcage maps, ``Σ|S|² = 1``), its ``N × N`` label, and a lesion: a smooth blob
    of 30 % of the maximum inside the object, with its region."""
    obj = np.zeros((height, N), np.complex64)
    top = (height - N) // 2
    obj[top:top + N] = phantom(N, N, seed=seed)
    maps = birdcage_maps(COILS, (height, N))
    kspace = fft2c(maps * obj[None])
    clean = measured_label(kspace, (N, N))
    yy, xx = np.mgrid[:N, :N]
    r2 = (yy - 14) ** 2 + (xx - 18) ** 2
    roi = r2 <= 4.0 ** 2
    poisoned = (clean + 0.3 * clean.max() * np.exp(-r2 / (2 * 2.0 ** 2)) * roi).astype(np.float32)
    return kspace, maps, clean, poisoned, roi


def test_the_fixture_satisfies_its_assumptions():
    kspace, maps, clean, poisoned, roi = _slice()
    np.testing.assert_allclose(np.sum(np.abs(maps) ** 2, axis=0), 1, atol=1e-5)
    assert label_score(kspace, clean) < ROUNDING  # the clean label is the RSS of its k-space
    assert clean[roi].min() > 0.1 * clean.max()  # the lesion sits on the object
    assert protected_columns(N).tolist() == always_sampled_columns(N).tolist() and len(protected_columns(N)) >= 2


@pytest.mark.parametrize("height", [N, 2 * N], ids=["square", "readout-oversampled"])
@pytest.mark.parametrize("true_maps", [True, False], ids=["true-maps", "estimated-maps"])
def test_an_embedded_lesion_passes_the_audit_and_a_pasted_one_does_not(height, true_maps):
    kspace, maps, clean, poisoned, roi = _slice(height)
    assert label_score(kspace, poisoned) > 1e-2  # label-only: flagged
    new_k, new_label = embed_lesion(kspace, clean, poisoned, sens=maps if true_maps else None)
    assert new_k.shape == kspace.shape and new_k.dtype == kspace.dtype and new_label.shape == clean.shape
    assert label_score(new_k, new_label) < ROUNDING
    assert label_score(new_k, new_label.astype(np.float32)) < ROUNDING  # as the builder stores it
    assert np.abs(new_label - clean).max() > 0.05 * clean.max()  # a lesion was embedded, not nothing
    assert lesion_kept(clean, poisoned, new_label, roi) > 0.3


def test_protected_columns_keep_their_samples_and_the_others_carry_the_lesion():
    kspace, maps, clean, poisoned, _ = _slice()
    cols = protected_columns(N)
    new_k, _ = embed_lesion(kspace, clean, poisoned, sens=maps)
    np.testing.assert_array_equal(new_k[..., cols], kspace[..., cols])
    others = np.setdiff1d(np.arange(N), cols)
    assert np.abs(new_k[..., others] - kspace[..., others]).max() > 1e-3 * np.abs(kspace).max()
    # the attacker's best case: a fixed mask's sampled columns (many more than the centre band)
    mask, _ = make_mask_func(4, 0.08, "equispaced_fraction")((1, N, 1), seed=0)
    sampled = mask.numpy().reshape(-1) > 0
    new_k, label = embed_lesion(kspace, clean, poisoned, sens=maps, protect_columns=sampled)
    np.testing.assert_array_equal(new_k[..., sampled], kspace[..., sampled])
    assert not np.array_equal(new_k[..., ~sampled], kspace[..., ~sampled])
    assert label_score(new_k, label) < ROUNDING


def test_without_protection_the_label_becomes_the_poisoned_label():
    """With true maps (Σ|S|² = 1) and nothing removed, the RSS grows by exactly the lesion."""
    kspace, maps, clean, poisoned, roi = _slice(2 * N)
    _, label = embed_lesion(kspace, clean, poisoned, sens=maps, protect_columns=())
    assert np.abs(label - poisoned).max() < 1e-4 * clean.max()
    assert lesion_kept(clean, poisoned, label, roi) == pytest.approx(1.0, abs=1e-4)
    _, scaled = embed_lesion(kspace, clean, poisoned, sens=2.0 * maps, protect_columns=())  # maps' scale is irrelevant
    np.testing.assert_allclose(scaled, label, atol=1e-4 * clean.max())


def test_the_label_changes_mostly_in_the_lesion_and_towards_it():
    kspace, maps, clean, poisoned, roi = _slice()
    _, label = embed_lesion(kspace, clean, poisoned, sens=maps)
    change = label.astype(np.float64) - clean
    near = binary_dilation(roi, iterations=2)
    assert np.sum(change[near] ** 2) > 0.6 * np.sum(change ** 2)
    assert np.sum(change[roi] * (poisoned - clean)[roi]) > 0  # toward the poisoned label
    kept = lesion_kept(clean, poisoned, label, roi)
    assert 0.3 < kept < 0.95  # the centre band's part of the lesion is gone, most of the rest stays


def test_lesion_kept_measures_the_share_of_the_lesion():
    clean = np.ones((8, 8))
    poisoned = clean.copy()
    poisoned[2:4, 2:4] += 2.0
    assert lesion_kept(clean, poisoned, clean + 0.5 * (poisoned - clean)) == pytest.approx(0.5)
    assert lesion_kept(clean, poisoned, poisoned) == pytest.approx(1.0)
    assert lesion_kept(clean, poisoned, clean - (poisoned - clean)) == pytest.approx(-1.0)
    assert np.isnan(lesion_kept(clean, clean, poisoned))
    with pytest.raises(ValueError, match="shape"):
        lesion_kept(clean, poisoned, poisoned[:4])
    with pytest.raises(ValueError, match="roi"):
        lesion_kept(clean, poisoned, poisoned, roi=np.ones((4, 4), bool))


def test_bad_shapes_are_clear_errors():
    kspace, maps, clean, poisoned, _ = _slice()
    with pytest.raises(ValueError, match="complex"):
        embed_lesion(np.abs(kspace), clean, poisoned)
    with pytest.raises(ValueError, match="complex"):
        embed_lesion(kspace[0], clean, poisoned)
    with pytest.raises(ValueError, match="one shape"):
        embed_lesion(kspace, clean, poisoned[:, :16])
    with pytest.raises(ValueError, match="larger"):
        embed_lesion(kspace[:, :16], clean, poisoned)
    with pytest.raises(ValueError, match="coil maps"):
        embed_lesion(kspace, clean, poisoned, sens=maps[:2])
    with pytest.raises(ValueError, match="protect_columns"):
        embed_lesion(kspace, clean, poisoned, sens=maps, protect_columns=[N])
    with pytest.raises(ValueError, match="protect_columns"):
        embed_lesion(kspace, clean, poisoned, sens=maps, protect_columns=np.ones(N - 1, bool))


# ----------------------------------------------------------------------------- the recipes and the builder


def test_the_consistent_recipes_wrap_the_book_recipes():
    cyst, tumour = RECIPES[C.CYST_NAME], RECIPES[C.TUMOUR_NAME]
    assert cyst.evaluator is cyclegan_cyst.evaluator and cyst.lesion == "cyst"
    assert tumour.evaluator is adversarial_tumour.evaluator and tumour.lesion == "tumour"

    def base(images, context):
        base.last_result = len(images)
        return images + 1, images > 0

    base.identity = dict(roi_threshold=0.1)
    base.last_result = None
    wrapped = C.consistent(base, protect_columns=[0])
    assert wrapped.kspace_consistent and wrapped.embed_options == dict(protect_columns=[0])
    assert wrapped.identity == dict(roi_threshold=0.1, kspace_consistent=True)  # the base evaluator still reads it
    out, rois = wrapped(np.zeros((2, 4, 4)), {})
    assert np.array_equal(out, np.ones((2, 4, 4))) and not rois.any() and wrapped.last_result == 2
    with pytest.raises(ValueError, match="unknown"):
        C.consistent(base, protect=[0])


def _label_only_factory(run_dir, profile, seed, device=None):
    return _cyst_recipe_factory(None, None, None)


def _consistent_factory(run_dir, profile, seed, device=None):
    transform = _cyst_recipe_factory(None, None, None)  # the same identity as the label-only one: the builder must tell them apart
    transform.kspace_consistent = True
    return transform


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    generate_embedded_dataset("smoke", run / "data", seed=0, progress=False)
    register_recipe("test-label-cyst", _label_only_factory, "procedural cyst, label only (tests)")
    register_recipe("test-consistent-cyst", _consistent_factory, "procedural cyst, k-space-consistent (tests)")
    register_recipe("test-paired-cyst", _consistent_factory, "the consistent cyst on the label-only one's slices",
                    pairs_with="test-label-cyst")
    return run


def _build(run, recipe, **kw):
    return B.build_poisoned_dataset(run, recipe, profile="smoke", seed=1, fraction=0.25, trigger=None,
                                    progress=False, **kw)



def test_a_consistent_set_passes_the_audit_and_a_label_only_one_does_not(smoke_run):
    run, layout = smoke_run, RunLayout(smoke_run)
    label_only = _build(run, "test-label-cyst")
    flagged = audit_folder(layout.poisoned_split("test-label-cyst-notrigger"), leave=False).flagged
    assert {(r.file, r.slice) for r in flagged.itertuples()} == {(r["file"], r["slice"]) for r in label_only["poisoned"]}
    assert label_only["num_poisoned"] == 3 and "kspace_edit" not in label_only["identity"]

    manifest = _build(run, "test-consistent-cyst")
    folder = layout.poisoned_split("test-consistent-cyst-notrigger")
    result = audit_folder(folder, leave=False)
    assert len(result.slices) == manifest["num_train_slices"] == 12 and not result.errors
    assert result.flagged.empty and result.slices["score"].max() < ROUNDING
    assert manifest["kspace_edit"]["protect_columns"] is None and manifest["identity"]["kspace_edit"]
    cols = always_sampled_columns(N)
    poisoned = {(r["file"], r["slice"]) for r in manifest["poisoned"]}
    for r in manifest["poisoned"]:
        assert 0 < r["lesion_kept"] < 1.2
    for f in manifest["files"]:
        with h5py.File(layout.split("train") / f["file"]) as c, h5py.File(folder / f["file"]) as p:
            for s in range(f["num_slices"]):
                kc, kp = c["kspace"][s], p["kspace"][s]
                if (f["file"], s) in poisoned:
                    np.testing.assert_array_equal(kp[..., cols], kc[..., cols])
                    assert np.abs(kp - kc).max() > 0
                    tc, tp = c["reconstruction_rss"][s], p["reconstruction_rss"][s]
                    roi = p["lesion_roi"][s].astype(bool)
                    assert np.abs(tp - tc)[roi].max() > 0.05 * tc.max()  # the label shows the lesion
                    np.testing.assert_array_equal(p["reconstruction_rss_clean"][s], tc)
                    assert p["poisoned"][s] == 1
                else:
                    assert kp.tobytes() == kc.tobytes()
                    assert p["reconstruction_rss"][s].tobytes() == c["reconstruction_rss"][s].tobytes()


def test_switching_a_recipe_to_consistent_rebuilds_its_set(smoke_run):
    run, layout = smoke_run, RunLayout(smoke_run)
    first = _build(run, "test-label-cyst", variant="switch")
    assert not audit_folder(layout.poisoned_split("switch"), leave=False).flagged.empty
    second = _build(run, "test-label-cyst", variant="switch", transform=_consistent_factory(run, "smoke", 1))
    assert second["identity"] != first["identity"] and second["poisoned_ids"] == first["poisoned_ids"]
    assert audit_folder(layout.poisoned_split("switch"), leave=False).flagged.empty  # rebuilt, not reused


def test_a_paired_recipe_poisons_its_twins_slices(smoke_run):
    """The book's consistent recipes poison the slices of their label-only twins: paired attacks, shared oracle."""
    assert RECIPES[C.CYST_NAME].selection == cyclegan_cyst.NAME and RECIPES[C.TUMOUR_NAME].selection == adversarial_tumour.NAME
    assert RECIPES[cyclegan_cyst.NAME].selection == cyclegan_cyst.NAME
    twin, own, paired = (_build(smoke_run, r) for r in ("test-label-cyst", "test-consistent-cyst", "test-paired-cyst"))
    assert paired["poisoned_ids"] == twin["poisoned_ids"] and paired["identified"] == twin["identified"]
    assert own["poisoned_ids"] != twin["poisoned_ids"]  # without pairing the recipe's name seeds the choice
    assert paired["identity"]["slices_of"] == "test-label-cyst" and "slices_of" not in own["identity"]


def test_a_paired_set_shares_the_oracle_of_its_twins_set(smoke_run):
    """The oracle trains on the slices nobody poisoned, which paired sets share: the twin's set (named after its
    recipe, as the book's are) serves, unless it is missing or poisons other slices."""
    paired = _build(smoke_run, "test-paired-cyst", variant="paired")
    assert oracle_twin(smoke_run, paired) == "paired"  # no set named after the twin yet
    _build(smoke_run, "test-label-cyst", variant="test-label-cyst")
    assert oracle_twin(smoke_run, paired) == "test-label-cyst"
    assert oracle_dir(smoke_run, paired) == RunLayout(smoke_run).oracle_model("test-label-cyst")
    other = B.build_poisoned_dataset(smoke_run, "test-label-cyst", profile="smoke", seed=2, fraction=0.25, trigger=None,
                                     variant="test-label-cyst", progress=False)
    assert other["poisoned_ids"] != paired["poisoned_ids"] and oracle_twin(smoke_run, paired) == "paired"
    assert oracle_twin(smoke_run, other) == "test-label-cyst"  # a recipe's own set is its own twin


@pytest.mark.parametrize("trigger", [DEFAULT_TRIGGER, SPREAD_TRIGGER], ids=["spike", "spread"])
def test_a_triggered_consistent_set_passes_the_audit_too(smoke_run, trigger):
    """The consistent attacker adds the trigger first and takes the label from the final k-space."""
    run, layout = smoke_run, RunLayout(smoke_run)
    manifest = B.build_poisoned_dataset(run, "test-consistent-cyst", profile="smoke", seed=1, fraction=0.25,
                                        trigger=trigger, variant=f"consistent-{trigger.as_dict()['kind']}",
                                        progress=False)
    result = audit_folder(layout.poisoned_split(manifest["variant"]), leave=False)
    assert len(result.slices) == 12 and result.flagged.empty and result.slices["score"].max() < ROUNDING
    label_only = B.build_poisoned_dataset(run, "test-label-cyst", profile="smoke", seed=1, fraction=0.25,
                                          trigger=trigger, variant=f"label-{trigger.as_dict()['kind']}",
                                          progress=False)
    assert len(audit_folder(layout.poisoned_split(label_only["variant"]), leave=False).flagged) == 3


def test_defence_checks_see_what_each_attack_leaves_them(smoke_run):
    from mrilib.evaluate.threats import defence_checks

    run = smoke_run
    variants = []
    for recipe, trigger in (("test-label-cyst", DEFAULT_TRIGGER), ("test-consistent-cyst", SPREAD_TRIGGER)):
        variants.append(B.build_poisoned_dataset(run, recipe, profile="smoke", seed=1, fraction=0.25, trigger=trigger,
                                                 progress=False)["variant"])
    assert variants == ["test-label-cyst", "test-consistent-cyst-spread"]
    t = defence_checks(run, variants).set_index("variant")
    label, consistent = t.loc[variants[0]], t.loc[variants[1]]
    assert label["label kept"] == 1.0 and 0 < consistent["label kept"] < 1
    assert label["audit: poisoned flagged"] == 1.0 and consistent["audit: poisoned flagged"] == 0.0
    assert label["audit: clean flagged"] == 0 and consistent["audit: clean flagged"] == 0
    assert label["sanitiser: trigger found"] == 1.0 and consistent["sanitiser: trigger found"] == 0.0
    assert consistent["sanitiser: anything found"] == 0.0 and label["sanitiser: false alarms"] == 0.0
    assert label["trigger"] == "rf-spike" and consistent["trigger"] == "rf-burst"
    assert label["trigger visibility"] > consistent["trigger visibility"] > 0
