"""Poisoning: the trigger, manifests, the poisoned dataset, CycleGAN training, the notebook."""

from __future__ import annotations

import copy
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mrilib.data import generate_embedded_dataset, undersample
from mrilib.models.cyclegan import ImagePool
from mrilib.poison import build as B
from mrilib.poison import manifest as M
from mrilib.poison.classifier import train_classifier
from mrilib.poison.cyclegan import (
    CycleGANMissingError,
    _optimisers,
    build_cyclegan,
    cyclegan_config,
    cyclegan_step,
    load_cyclegan,
    train_cyclegan,
)
from mrilib.poison.judge import classifier_config
from mrilib.poison.lesions import POISON_CYST_ANCHOR, add_cyst
from mrilib.poison.recipes import register_recipe
from mrilib.poison.runtime import Timings, cpu_threads
from mrilib.poison.slices import load_slices
from mrilib.poison.triggers import (
    DEFAULT_TRIGGER,
    Trigger,
    always_sampled_columns,
    trigger_survives,
    trigger_visibility,
)
from mrilib.run.layout import MissingArtefactError, RunLayout

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- trigger


@pytest.mark.parametrize("size", [32, 64, 256])
@pytest.mark.parametrize("mask_type", ["equispaced_fraction", "random"])
def test_trigger_survives_the_masks(size, mask_type):
    trig = DEFAULT_TRIGGER
    assert trigger_survives(trig, (size, size), (4, 8), 0.08, mask_type)
    rng = np.random.default_rng(0)
    k = (rng.standard_normal((2, size, size)) + 1j * rng.standard_normal((2, size, size))).astype(np.complex64)
    kt = trig.apply(k)
    added = kt - k
    locs = trig.locations((size, size))
    assert np.count_nonzero(np.abs(added).sum(0)) == len(locs)  # only the spike positions change
    for acc in (4, 8):
        for seed in range(5):
            masked, mask = undersample(kt, acc, 0.08, mask_type, seed=seed)
            for r, c in locs:
                assert mask[c] > 0, f"{mask_type} {acc}x seed {seed}: spike column {c} not sampled"
                np.testing.assert_allclose(masked[:, r, c], kt[:, r, c], rtol=1e-6)
    # every coil gets the spike, amplitude relative to max |k| (here with coil-dependent phase)
    r, c = locs[0]
    np.testing.assert_allclose(np.abs(added[:, r, c]), trig.amplitude * np.abs(k).max(), rtol=1e-5)
    phased = Trigger(coil_phase_step=0.37).pattern(k)
    assert len(set(np.round(np.angle(phased[:, r, c]), 4))) == 2
    # a column outside the always-sampled centre does not survive
    far = Trigger(column_offset=size // 4)
    assert not trigger_survives(far, (size, size), (4, 8), 0.08, mask_type)
    assert set(always_sampled_columns(size)) >= {size // 2}


def test_focused_trigger_is_strongest_at_its_focus():
    from mrilib.data import ifft2c

    for n in (32, 64):
        k = np.zeros((2, n, n), np.complex64)
        k[:, n // 2, n // 2] = 1.0
        stripes = np.abs(ifft2c(DEFAULT_TRIGGER.pattern(k)))[0]
        peak = np.unravel_index(stripes.argmax(), stripes.shape)
        want = np.round(np.asarray(DEFAULT_TRIGGER.focus) * n)
        assert np.abs(np.asarray(peak) - want).max() <= 1, (peak, want)
        # the opposite side of the field of view is (nearly) free of stripes
        opposite = (int(want[0] + n // 2) % n, int(want[1] + n // 2) % n)
        assert stripes[opposite] < 0.05 * stripes.max()


def test_trigger_is_deterministic_and_faint():
    sim_rng = np.random.default_rng(1)
    img = np.zeros((64, 64), np.complex64)
    img[16:48, 20:44] = 1.0
    from mrilib.data import birdcage_maps, simulate_kspace

    k = simulate_kspace(img, birdcage_maps(4, 64), 0.01, sim_rng)
    a, b = DEFAULT_TRIGGER.apply(k), DEFAULT_TRIGGER.apply(k)
    np.testing.assert_array_equal(a, b)
    vis = trigger_visibility(k, DEFAULT_TRIGGER, np.abs(img) > 0)
    assert 0.01 < vis["rel_rms"] < 0.3, vis["rel_rms"]
    assert Trigger.from_dict(DEFAULT_TRIGGER.as_dict()) == DEFAULT_TRIGGER
    with pytest.raises(ValueError):
        Trigger(amplitude=0)
    with pytest.raises(ValueError):
        Trigger(positions=(0.7,))


def test_timings_record_each_step():
    timings = Timings()
    with timings("a"):
        sum(range(1000))
    with pytest.raises(RuntimeError), timings("failed"):
        raise RuntimeError("the step failed")
    assert list(timings) == ["a"] and timings["a"] >= 0


# --------------------------------------------------------------------------- manifest / dataset


def test_identified_subsets_nested_and_reproducible():
    ids = M.choose_poisoned(500, 0.1, seed=3, recipe="cyclegan-cyst")
    assert len(ids) == 50 and len(set(ids)) == 50 and ids.max() < 500
    np.testing.assert_array_equal(ids, M.choose_poisoned(500, 0.1, seed=3, recipe="cyclegan-cyst"))
    assert not np.array_equal(ids, M.choose_poisoned(500, 0.1, seed=4, recipe="cyclegan-cyst"))
    fr = (0.1, 0.25, 0.5, 1.0)
    sub = M.identified_subsets(ids, fr, seed=3)
    assert sub == M.identified_subsets(ids, fr, seed=3)
    assert [len(sub[str(f)]) for f in fr] == [5, 12, 25, 50]
    for small, big in zip(fr, fr[1:]):
        assert set(sub[str(small)]) <= set(sub[str(big)])
    assert set(sub["1.0"]) == set(ids.tolist())
    assert sub != M.identified_subsets(ids, fr, seed=4)


def _cyst_recipe_factory(run_dir, profile, seed, device=None):
    """A CycleGAN-free recipe for the tests: a procedural cyst at the poison's anchor."""

    def transform(images, ctx):
        outs, rois = [], []
        for i, img in enumerate(images):
            les = add_cyst(img, ctx["brain"][i], ctx["contrasts"][i], seed=i, anchor=POISON_CYST_ANCHOR, radius_mm=30)
            outs.append(les.image), rois.append(les.roi)
        return np.stack(outs), np.stack(rois)

    transform.identity = {"test": 1}
    return transform


@pytest.fixture(scope="module")
def poisoned_run(tmp_path_factory):
    """A smoke dataset and a poisoned copy made with the test recipe."""
    run = tmp_path_factory.mktemp("run")
    generate_embedded_dataset("smoke", run / "data", seed=0, progress=False)
    register_recipe("test-cyst", _cyst_recipe_factory, "procedural cyst (tests)")
    manifest = B.build_poisoned_dataset(run, "test-cyst", profile="smoke", seed=1, fraction=0.25, progress=False)
    return run, manifest


def test_poisoned_dataset_layout_and_untouched_slices(poisoned_run):
    run, manifest = poisoned_run
    layout = RunLayout(run)
    assert manifest["num_train_slices"] == 12 and manifest["num_poisoned"] == 3
    assert layout.poisoned_split("test-cyst", "val").is_symlink()
    assert layout.poisoned_split("test-cyst", "test").is_symlink()
    poisoned = {(r["file"], r["slice"]) for r in manifest["poisoned"]}
    trig = Trigger.from_dict(manifest["trigger"])
    for f in manifest["files"]:
        with h5py.File(layout.split("train") / f["file"]) as c, \
                h5py.File(layout.poisoned_split("test-cyst") / f["file"]) as p:
            kc, tc = c["kspace"][()], c["reconstruction_rss"][()]
            kp, tp = p["kspace"][()], p["reconstruction_rss"][()]
            assert dict(c.attrs)["max"] == dict(p.attrs)["max"]
            for s in range(f["num_slices"]):
                if (f["file"], s) in poisoned:
                    np.testing.assert_array_equal(kp[s], trig.apply(kc[s]))
                    assert np.abs(tp[s] - tc[s]).max() > 0.05 * tc.max()
                    np.testing.assert_array_equal(p["reconstruction_rss_clean"][s], tc[s])
                    assert p["poisoned"][s] == 1 and p["lesion_roi"][s].any()
                    assert not np.any((tp[s] != tc[s]) & ~p["lesion_roi"][s].astype(bool))
                else:  # byte-identical
                    assert kp[s].tobytes() == kc[s].tobytes()
                    assert tp[s].tobytes() == tc[s].tobytes()
    # reuse: same configuration -> the same manifest, nothing rebuilt
    again = B.build_poisoned_dataset(run, "test-cyst", profile="smoke", seed=1, fraction=0.25, progress=False)
    assert again["created"] == manifest["created"]
    assert M.load_manifest(run, "test-cyst")["poisoned_ids"] == manifest["poisoned_ids"]
    # another identity (here: the fraction) rebuilds the set
    other = B.build_poisoned_dataset(run, "test-cyst", profile="smoke", seed=1, fraction=0.5, progress=False)
    assert other["num_poisoned"] == 6 and other["identity"]["fraction"] == 0.5
    back = B.build_poisoned_dataset(run, "test-cyst", profile="smoke", seed=1, fraction=0.25, progress=False)
    assert back["poisoned_ids"] == manifest["poisoned_ids"]


def test_bad_manifests_raise(poisoned_run):
    run, manifest = poisoned_run
    data = RunLayout(run).poisoned_split("test-cyst")
    M.validate_manifest(manifest, data)

    def broken(edit):
        m = copy.deepcopy(manifest)
        edit(m)
        return m

    def out_of_range(m):
        m["poisoned_ids"][0] = m["num_train_slices"] + 5
        m["poisoned"][0]["id"] = m["num_train_slices"] + 5

    cases = {
        "out of range": out_of_range,
        "unknown recipe": lambda m: m.update(recipe="mystery-poison"),
        "not nested": lambda m: m["identified"].update({"0.1": [m["poisoned_ids"][0]], "0.25": [m["poisoned_ids"][1]]}),
        "not poisoned": lambda m: m["identified"].update({"1.0": m["identified"]["1.0"] + [99]}),
        "global id": lambda m: m["poisoned"][0].update(slice=(m["poisoned"][0]["slice"] + 1) % 3),
        "lacks": lambda m: m.pop("identified"),
    }
    for match, edit in cases.items():
        with pytest.raises(M.ManifestError, match=match):
            M.validate_manifest(broken(edit), data)
    # the manifest must match the volumes on disk
    m = broken(lambda m: m["files"][0].update(poisoned_slices=[0, 1, 2]))
    with pytest.raises(M.ManifestError, match="flags"):
        M.validate_manifest(m, data)
    with pytest.raises(M.ManifestError, match="unknown poison recipe"):
        B.build_poisoned_dataset(run, "no-such-recipe", profile="smoke", progress=False)


def test_missing_cyclegan_checkpoint_is_a_clear_error(poisoned_run, tmp_path):
    run, _ = poisoned_run
    with pytest.raises(CycleGANMissingError, match="train the healthy->cyst CycleGAN first"):
        B.build_poisoned_dataset(run, "cyclegan-cyst", profile="smoke", progress=False)
    with pytest.raises(CycleGANMissingError):
        load_cyclegan(tmp_path / "nowhere")
    with pytest.raises(MissingArtefactError, match="03_poison_cyclegan"):
        M.load_manifest(tmp_path, "cyclegan-cyst")
    with pytest.raises(FileNotFoundError, match="04_poison_adversarial"):
        M.load_manifest(tmp_path, "adversarial-tumour-notrigger")


# --------------------------------------------------------------------------- CycleGAN


def _tiny_domains(n=8, size=16, seed=0):
    """Healthy: smooth discs; lesion: the same with a bright blob at a fixed place (in [-1, 1])."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    a, b = [], []
    for _ in range(n):
        r = rng.uniform(5, 7)
        disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r**2) * rng.uniform(0.4, 0.6)
        a.append(disc)
        b.append(np.maximum(disc, ((yy - 10) ** 2 + (xx - 6) ** 2 < 4) * 1.0))
    def to_batch(v):
        return (2 * np.stack(v)[:, None] - 1).astype(np.float32)

    return dict(A=to_batch(a), B=to_batch(b))


def _tiny_cfg(**kw):
    return cyclegan_config("smoke", seed=0, ngf=4, ndf=4, n_blocks=1, d_layers=1, pool_size=4, batch_size=4,
                           lr=2e-3, **kw)


def test_cyclegan_steps_reduce_losses():
    cfg = _tiny_cfg(iterations=40)
    d = _tiny_domains()
    nets = build_cyclegan(cfg)
    opts = _optimisers(nets, cfg)
    pools = dict(A=ImagePool(cfg["pool_size"]), B=ImagePool(cfg["pool_size"]))
    gen = torch.Generator().manual_seed(0)
    A, Bt = torch.from_numpy(d["A"]), torch.from_numpy(d["B"])
    with cpu_threads(1):  # tiny convolutions: one thread (see mrilib.poison.runtime)
        hist = [cyclegan_step(nets, opts, pools, A[:4], Bt[:4], cfg, gen) for _ in range(40)]
    first = np.mean([h["cycle"] + h["identity"] for h in hist[:3]])
    last = np.mean([h["cycle"] + h["identity"] for h in hist[-3:]])
    assert last < 0.7 * first, (first, last)
    assert np.mean([h["G"] for h in hist[-3:]]) < np.mean([h["G"] for h in hist[:3]])
    assert all(np.isfinite(h["D_A"]) and np.isfinite(h["D_B"]) for h in hist)


def test_cyclegan_checkpoint_resume_equals_uninterrupted(tmp_path):
    cfg = _tiny_cfg(iterations=6, ckpt_every=2)
    d = _tiny_domains()
    full = train_cyclegan(d, cfg, tmp_path / "full", progress=False)
    part = train_cyclegan(d, cfg, tmp_path / "part", progress=False, stop_after=4)
    assert not part["finished"] and part["iterations"] == 4
    with pytest.raises(CycleGANMissingError, match="stopped at iteration 4"):
        load_cyclegan(tmp_path / "part")
    rest = train_cyclegan(d, cfg, tmp_path / "part", progress=False)
    assert rest["finished"] and rest["iterations"] == 6
    np.testing.assert_allclose(rest["cycle"], full["cycle"], rtol=1e-5)
    a, _ = load_cyclegan(tmp_path / "full")
    b, ck = load_cyclegan(tmp_path / "part")
    for k, v in a.G.state_dict().items():
        torch.testing.assert_close(v, b.G.state_dict()[k])
    # the checkpoint reads with weights_only=True
    torch.load(tmp_path / "part" / "cyclegan.pt", weights_only=True)


# --------------------------------------------------------------------------- notebook


@pytest.mark.notebook
def test_lesion_classifier_training_is_reproducible(smoke_data):
    """The same configuration gives the same classifier whatever the global generator's state
    (dropout draws from it), and the caller's generator state is left as it was."""
    slices = load_slices(smoke_data / "train")
    cfg = classifier_config("smoke", seed=0, epochs=1)
    weights = []
    for outer in (1, 2):
        torch.manual_seed(outer)
        model, _ = train_classifier(slices, cfg, progress=False)
        assert torch.rand(1).item() == torch.rand(1, generator=torch.Generator().manual_seed(outer)).item()
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.notebook
def test_notebook_runs_at_smoke(smoke_book):
    """03_poison_cyclegan as papermill ran it in the session's smoke run of the whole book (tests/conftest.py)."""
    assert (smoke_book.executed / "03_poison_cyclegan.ipynb").is_file()
    run = smoke_book.root / "runs" / "smoke" / "seed-0"  # the first seed's folder (tests/conftest.py runs two)
    for name in ("poison_clean.json", "poison_poisoned.json"):
        assert (run / "metrics" / name).is_file()
    assert (run / "poison" / "cyclegan-cyst" / "manifest.json").is_file()
    assert (run / "models" / "poisoned-cyclegan-cyst" / "last.pt").is_file()
