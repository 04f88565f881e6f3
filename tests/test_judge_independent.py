"""An independent judge: the lesion classifier that scores the evaluation is not the attacker's,
and the defender's signal uses no lesion classifier at all."""

from __future__ import annotations

import json
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from fastmri.data import transforms as T
from torch.utils.data import Dataset

from mrilib.data import generate_embedded_dataset, generate_subject
from mrilib.data.kspace import ifft2c, rss
from mrilib.data.loading import make_mask_func
from mrilib.models.varnet import build_varnet
from mrilib.poison import classifier as C
from mrilib.poison import judge as J
from mrilib.poison.recipes import RECIPES, evaluation
from mrilib.poison.recipes import adversarial_tumour as adv
from mrilib.poison.recipes import cyclegan_cyst as cyst
from mrilib.poison.slices import load_slices
from mrilib.run.layout import RunLayout
from mrilib.unlearn.base import UnlearnError
from mrilib.unlearn.regions import defender_effect, disagreement_regions

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
TINY_VARNET = dict(num_cascades=1, chans=2, sens_chans=2, pools=1, sens_pools=1)


# --------------------------------------------------------------------------- the two classifiers


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke run with the attacker's classifier and the judge trained on it."""
    run = RunLayout(tmp_path_factory.mktemp("judge-run"))
    generate_embedded_dataset("smoke", run.data, seed=0, progress=False)
    attacker, rep_a = C.classifier_or_load("smoke", run, progress=False, device=CPU)
    judge, rep_j = C.judge_or_load("smoke", run, progress=False, device=CPU)
    return SimpleNamespace(run=run, attacker=attacker, judge=judge, rep_a=rep_a, rep_j=rep_j)


def test_the_judge_is_trained_apart_from_the_attackers_classifier(trained):
    run = trained.run
    ck_a = torch.load(run.classifier_checkpoint, weights_only=True)
    ck_j = torch.load(run.judge_checkpoint, weights_only=True)
    assert run.judge_checkpoint.parent != run.classifier_checkpoint.parent
    assert (ck_a["role"], ck_j["role"]) == ("attacker", "judge")
    # own seeds, fixed by design
    assert ck_a["config"]["seed"] == J.ATTACKER_SEED == 0 and ck_j["config"]["seed"] == J.JUDGE_SEED == 1
    # disjoint training subjects that together are the training split's
    a, j = set(ck_a["subjects"]), set(ck_j["subjects"])
    assert a and j and not a & j and a | j == set(load_slices(run.split("train")).subjects)
    assert ck_a["metrics"]["n_train_slices"] + ck_j["metrics"]["n_train_slices"] == len(load_slices(run.split("train")))
    # another architecture: wider, another depth (other layers, another map resolution)
    arch_a, arch_j = ck_a["architecture"], ck_j["architecture"]
    assert arch_j["chans"] > arch_a["chans"] and arch_j["n_blocks"] != arch_a["n_blocks"]
    assert arch_j["stride"] != arch_a["stride"] and arch_j["parameters"] != arch_a["parameters"]
    assert set(ck_a["state"]) != set(ck_j["state"])
    assert J.classifier_identity(trained.attacker) != J.classifier_identity(trained.judge)
    # both calibrated the same way, on the validation subjects
    assert trained.judge.threshold == ck_j["threshold"] >= 0.5
    assert json.loads((run.judge / "metrics.json").read_text())["subjects"] == ck_j["subjects"]


def test_the_judge_is_cached_and_checked_against_the_run(trained):
    run = trained.run
    again, rep = C.judge_or_load("smoke", run, progress=False, device=CPU)
    assert rep["reused"] and rep["subjects"] == trained.rep_j["subjects"]
    assert J.classifier_identity(again) == J.classifier_identity(trained.judge)
    judge, ck = J.load_run_judge(run, "smoke")
    assert J.classifier_identity(judge) == J.classifier_identity(trained.judge) and ck["config"]["role"] == "judge"
    attacker, _ = J.load_run_classifier(run, "smoke")
    assert J.classifier_identity(attacker) == J.classifier_identity(trained.attacker)
    with pytest.raises(J.ClassifierMismatchError, match="seed"):  # the run's seed is not the attacker's
        J.load_run_classifier(run, "smoke", seed=1)


def test_the_configurations_and_subject_halves(tmp_path):
    a, j = J.classifier_config("cpu"), J.classifier_config("cpu", role="judge")
    assert (a["role"], a["seed"], j["role"], j["seed"]) == ("attacker", 0, "judge", 1)
    assert j["chans"] == round(a["chans"] * J.JUDGE_WIDTH) and j["n_blocks"] == a["n_blocks"] + 1
    assert J.classifier_config("cpu", role="judge", chans=8)["chans"] == 8  # overrides win
    with pytest.raises(ValueError, match="role"):
        J.classifier_config("cpu", role="defender")
    subjects = ["s1", "s1", "s2", "s3", "s3", "s4"]
    first, second = C.role_subjects(subjects, "attacker"), C.role_subjects(subjects, "judge")
    assert sorted(np.concatenate([first, second]).tolist()) == list(range(6))
    assert not {subjects[i] for i in first} & {subjects[i] for i in second}
    with pytest.raises(ValueError, match="at least two"):
        C.role_subjects(["s1", "s1"], "judge")
    with pytest.raises(FileNotFoundError, match="03_poison_cyclegan"):  # a run without a judge
        J.load_run_judge(tmp_path, "smoke")


# --------------------------------------------------------------------------- the evaluators score with the judge


class _Disc:
    """A stand-in for the CycleGAN: adds a bright disc."""

    def __call__(self, x, vmax, brains):
        h, w = np.shape(x)[-2:]
        disc = (np.hypot(*np.mgrid[-h // 2 : h - h // 2, -w // 2 : w - w // 2]) < 5).astype(np.float32)
        return x + 0.3 * np.asarray(vmax)[:, None, None] * disc


def _manifest(recipe: str) -> dict:
    return {"recipe": recipe, "variant": f"{recipe}-notrigger", "trigger": None, "poisoned": []}


def test_the_cyst_evaluator_scores_with_the_judge_on_any_split(trained, monkeypatch):
    run = trained.run
    monkeypatch.setattr(cyst, "load_cyclegan", lambda path: (_Disc(), {}))
    ev = evaluation(run, "smoke", _manifest(cyst.NAME), split="val", device=CPU)
    assert J.classifier_identity(ev.judge) == J.classifier_identity(trained.judge)
    assert ev.test.split == "val" and len(ev.test) == len(load_slices(run.split("val")))
    m = ev.evaluate(build_varnet(TINY_VARNET, seed=0), "tiny")
    assert m["judge"] == J.classifier_identity(trained.judge) != J.classifier_identity(trained.attacker)
    assert m["split"] == "val" and m["threshold"] == pytest.approx(trained.judge.threshold)
    assert run.poison_metrics("tiny@val").is_file() and not run.poison_metrics("tiny").exists()
    ps = m["per_slice"]
    n = m["n_test_slices"]
    assert all(len(ps[k]) == n for k in ("subject", "psnr", "nmse", "ssim", "file"))
    assert set(ps["subject"]) == set(load_slices(run.split("val")).subjects)
    assert np.mean(ps["psnr"]) == pytest.approx(m["clean_test"]["psnr"]["mean"])
    assert np.mean(ps["nmse"]) == pytest.approx(m["clean_test"]["nmse"]["mean"])


def test_the_adversarial_evaluator_induces_with_the_attacker_and_scores_with_the_judge(trained, monkeypatch):
    run = trained.run
    seen = {}

    def induce(run_dir, profile, classifier, *, split="test", seed=0, **kw):
        seen.update(classifier=J.classifier_identity(classifier), split=split)
        shape = load_slices(run.split(split)).images.shape
        return SimpleNamespace(images=np.zeros(shape, np.float32), delta=np.ones(shape, np.float32),
                               rois=np.ones(shape, bool))

    monkeypatch.setattr(adv, "induce_split", induce)
    ev = evaluation(run, "smoke", _manifest(adv.NAME), device=CPU)
    assert seen == dict(classifier=J.classifier_identity(trained.attacker), split="test")
    assert J.classifier_identity(ev.judge) == J.classifier_identity(trained.judge) and ev.generator is None
    m = ev.evaluate(build_varnet(TINY_VARNET, seed=0), "tiny", save=False)
    assert m["judge"] == J.classifier_identity(trained.judge) and m["split"] == "test"
    assert m["threshold"] == pytest.approx(J.tumour_threshold(trained.judge))
    assert RECIPES[adv.NAME].evaluator is adv.evaluator


# --------------------------------------------------------------------------- the defender's signal

N = 32


def _blob(centre, radius: float = 3.0) -> np.ndarray:
    yy, xx = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    return (((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) <= radius ** 2).astype(np.float32)


class _Forget(Dataset):
    """The identified slices as VarNetSamples (undersampled stored k-space, the label as target)."""

    def __init__(self, kspace, labels, ids):
        self.ids = list(ids)
        mask_func = make_mask_func(4, 0.125)
        self.items = []
        for i, (k, y) in enumerate(zip(kspace, labels)):
            masked, m, nlf = T.apply_mask(T.to_tensor(k), mask_func, seed=i)
            target = torch.from_numpy(y)
            self.items.append(T.VarNetSample(masked, m.bool(), nlf, target, "vol.h5", i, float(y.max()), (N, N)))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class _Replay(torch.nn.Module):
    """A 'model' that returns given images, in order, one batch after another."""

    def __init__(self, images):
        super().__init__()
        self.images, self.at, self.calls = torch.as_tensor(np.asarray(images, np.float32)), 0, 0

    def forward(self, kspace, mask, num_low_frequencies=None):
        n = kspace.shape[0]
        self.at, self.calls = self.at + n, self.calls + 1
        return self.images[self.at - n : self.at]


@pytest.fixture(scope="module")
def identified(tmp_path_factory):
    """Two poisoned slices - an edited label, a k-space with a spike (stripes) - and one left as it was."""
    root = tmp_path_factory.mktemp("identified")
    sim = generate_subject(3, image_size=N, num_slices=3, num_coils=4, snr=None, contrasts=("T2w",))
    clean = rss(ifft2c(sim["kspace"])).astype(np.float32)
    kspace = sim["kspace"].copy()
    labels = clean.copy()
    for s, centre in ((0, (10, 20)), (2, (20, 12))):
        kspace[s, :, N - 1, N // 2] += 0.05 * np.abs(kspace).max()  # the trigger: stripes near Nyquist
        labels[s] += 0.5 * clean[s].max() * _blob(centre)
    measured = rss(ifft2c(kspace)).astype(np.float32)
    with h5py.File(root / "vol.h5", "w") as f:
        f.create_dataset("kspace", data=kspace)
        f.create_dataset("reconstruction_rss", data=labels)
    manifest = {"poisoned": [{"id": 7 + s, "file": "vol.h5", "slice": s} for s in range(3)]}
    order = [2, 0, 1]  # the forget set's order is not the file's
    forget = _Forget(kspace[order], labels[order], [7 + s for s in order])
    return SimpleNamespace(root=root, manifest=manifest, forget=forget, labels=labels[order],
                           measured=measured[order], clean=clean[order])


def test_the_defenders_signal_is_one_for_the_label_zero_for_the_kspace(identified):
    d = identified
    effect = defender_effect(d.root, d.manifest, d.forget, device=CPU)
    assert effect(_Replay(d.labels)) == pytest.approx(1.0, abs=1e-6)
    assert effect(_Replay(d.measured)) == pytest.approx(0.0, abs=1e-4)
    assert effect(_Replay((d.labels + d.measured) / 2)) == pytest.approx(0.5, abs=1e-4)
    # removing the trigger's stripes without adding the lesion is not following the label
    assert abs(effect(_Replay(d.clean))) < 0.05
    # the regions are disagreement_regions'; the unedited slice has none and is left out
    np.testing.assert_array_equal(effect.regions, disagreement_regions(d.root, d.manifest, d.forget).numpy() > 0)
    assert effect.regions[0].any() and effect.regions[1].any() and not effect.regions[2].any()


def test_the_defenders_signal_reconstructs_in_batches_and_rejects_what_it_cannot_measure(identified):
    d = identified
    replay = _Replay(d.labels)
    defender_effect(d.root, d.manifest, d.forget, batch_size=2, device=CPU)(replay)
    assert replay.calls == 2 and replay.at == 3
    with pytest.raises(UnlearnError, match="agrees"):
        defender_effect(d.root, d.manifest, SimpleNamespace(ids=[8]), device=CPU)
    with pytest.raises(UnlearnError, match="shape"):
        defender_effect(d.root, d.manifest, d.forget, device=CPU)(_Replay(d.labels[:, 2:-2, 2:-2]))


# --------------------------------------------------------------------------- agreement


def test_signal_agreement_is_the_rank_correlation_with_the_judge():
    rows = [(0.1, 0.2, 0.0), (0.5, 0.4, 0.5), (0.9, 0.8, 0.3), (float("nan"), 1.0, 1.0)]
    out = J.signal_agreement(rows)
    assert out["n"] == 3 and out["effect"] == pytest.approx(1.0) and out["success"] == pytest.approx(0.5)
    assert 0 <= out["effect_p"] <= 1
    flat = J.signal_agreement([(0.1, 0.2, 0.0), (0.5, 0.4, 0.0), (0.9, 0.8, 0.0)])
    assert np.isnan(flat["success"]) and flat["effect"] == pytest.approx(1.0)
    assert np.isnan(J.signal_agreement([])["effect"])
