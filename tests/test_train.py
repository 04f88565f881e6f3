"""The VarNet training loop: learning, resume, DDP, checkpoints, and the 02_varnet notebook."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

from mrilib.data.training import TrainSlices, collate_slices
from mrilib.models.varnet import build_varnet, count_parameters
from mrilib.recon.checkpoints import (
    CheckpointError,
    CheckpointNotFoundError,
    ConfigMismatchError,
    load_checkpoint,
    load_model,
    read_history,
)
from mrilib.recon.steps import lr_lambda, make_loss, train_step
from mrilib.recon.train import TrainingInterrupted, train, train_or_load, training_config

REPO = Path(__file__).resolve().parents[1]
TINY = dict(num_cascades=2, chans=4, sens_chans=2, pools=2, sens_pools=2)


# one_thread and smoke_data: tests/conftest.py
pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**train):
    """A tiny, fast configuration on the smoke data."""
    return training_config("smoke", model=TINY, **{"epochs": 2, "batch_size": 2, **train})


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_config_from_profile():
    cfg = training_config("cpu", lr=2e-3)
    assert cfg["model"]["num_cascades"] >= 1 and cfg["train"]["lr"] == 2e-3
    assert cfg["train"]["accelerations"] == [4, 8]
    with pytest.raises(ValueError, match="unknown training keys"):
        training_config("cpu", learning_rate=1.0)
    with pytest.raises(ValueError, match="unknown VarNet"):
        training_config("cpu", model=dict(cascades=3))


def test_lr_schedule_warmup_and_cosine():
    t = training_config("smoke", warmup_steps=10, schedule="cosine", min_lr_frac=0.1)["train"]
    f = lr_lambda(t, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1)
    g = lr_lambda(training_config("smoke", schedule="step", step_frac=0.5)["train"], 100)
    assert g(49) == 1.0 and g(50) == pytest.approx(0.1)


def test_overfitting_a_few_slices_drives_ssim_loss_down(smoke_data):
    torch.manual_seed(0)
    ds = TrainSlices(smoke_data / "train", accelerations=[4], seed=0)
    batch = collate_slices([ds[i] for i in range(4)])
    model = build_varnet(TINY, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = make_loss()
    losses = [float(train_step(model, opt, batch, loss_fn, "cpu", grad_clip=1.0)) for _ in range(20)]
    assert losses[0] > 0.3  # an untrained VarNet is far from the target
    assert max(losses[-3:]) < 0.5 * losses[0], losses


def test_train_writes_history_checkpoints_and_cost(smoke_data, tmp_path):
    cfg = _cfg(epochs=2)
    hist = train(cfg, smoke_data / "train", smoke_data / "val", tmp_path / "m", progress=False)
    assert hist["finished"] and len(hist["epochs"]) == 2
    assert hist["steps"] == 2 * 6 and len(hist["step_loss"]) == 12  # 12 slices, batch 2
    assert hist["train_slice_passes"] == 24
    assert hist["val_slice_passes"] == 2 * 6 * 2  # 6 val slices x 2 accelerations x 2 epochs
    assert hist["wall_s"] > 0
    for name in ("last.pt", "best.pt", "history.json"):
        assert (tmp_path / "m" / name).is_file()
    disk = read_history(tmp_path / "m")
    assert disk["steps"] == hist["steps"] and disk["finished"]
    e = hist["epochs"][-1]
    assert 0 < e["val"]["4x"]["ssim"] < 1 and e["val"]["4x"]["psnr"] > 0
    ck = load_checkpoint(tmp_path / "m" / "last.pt", cfg)
    assert ck["finished"] and ck["config"]["data"]["train"]["volumes"] == 4


def test_resume_after_kills_reproduces_uninterrupted_weights(smoke_data, tmp_path):
    cfg = _cfg(epochs=2, warmup_steps=3)
    ref, ref_model = train(cfg, smoke_data / "train", None, tmp_path / "ref", progress=False, ckpt_every=2, return_model=True)
    out = tmp_path / "killed"
    # killed mid-epoch 1 after step 5 (last checkpoint: step 4), then mid-epoch 2 after step 9 (checkpoint: 8)
    with pytest.raises(TrainingInterrupted):
        train(cfg, smoke_data / "train", None, out, progress=False, ckpt_every=2, stop_after_steps=5)
    assert load_checkpoint(out / "last.pt")["step"] == 4
    with pytest.raises(TrainingInterrupted):
        train(cfg, smoke_data / "train", None, out, progress=False, ckpt_every=2, stop_after_steps=5)
    ck = load_checkpoint(out / "last.pt")
    assert ck["step"] == 8 and ck["epoch"] == 1 and ck["batch"] == 2
    hist, model = train(cfg, smoke_data / "train", None, out, progress=False, ckpt_every=2, return_model=True)
    assert hist["steps"] == ref["steps"] == 12
    assert hist["step_loss"] == ref["step_loss"]
    assert _state_equal(model.state_dict(), ref_model.state_dict())
    assert hist["train_slice_passes"] >= ref["train_slice_passes"]  # redone steps are counted


def test_the_run_seed_reaches_the_training(smoke_data, tmp_path):
    """Same seed: the same model, weight for weight; another seed: another model (initial weights, data order and
    masks all follow ``training_config(profile, seed=...)``, as every chapter's training does)."""
    from mrilib.run.cache import weights_digest

    models = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = _cfg(epochs=1, seed=seed)
        assert cfg["train"]["seed"] == seed
        models[name], _ = train_or_load(cfg, smoke_data, tmp_path / name, progress=False)
    a, b, c = (weights_digest(models[k]) for k in "abc")
    assert a == b and a != c


def test_train_or_load_skips_finished_run(smoke_data, tmp_path):
    cfg = _cfg(epochs=1)
    m1, h1 = train_or_load(cfg, smoke_data, tmp_path / "m", progress=False)
    stamp = (tmp_path / "m" / "last.pt").stat().st_mtime_ns
    m2, h2 = train_or_load(cfg, smoke_data, tmp_path / "m", progress=False)
    assert (tmp_path / "m" / "last.pt").stat().st_mtime_ns == stamp  # nothing retrained or rewritten
    assert h2["wall_s"] == h1["wall_s"]
    assert _state_equal(m1.state_dict(), m2.state_dict())
    assert not m2.training


def test_bad_checkpoints_raise_clear_errors(smoke_data, tmp_path):
    cfg = _cfg(epochs=1)
    out = tmp_path / "m"
    train(cfg, smoke_data / "train", None, out, progress=False)
    # missing
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint"):
        load_model(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nothing" / "last.pt")
    # another model configuration
    other = training_config("smoke", model=dict(TINY, chans=6), epochs=1, batch_size=2)
    with pytest.raises(ConfigMismatchError, match="model.chans"):
        load_model(out, expected=other)
    with pytest.raises(ConfigMismatchError, match="model.chans"):
        train_or_load(other, smoke_data, out, progress=False)
    with pytest.raises(ConfigMismatchError, match="train.lr"):
        train_or_load(_cfg(epochs=1, lr=5e-4), smoke_data, out, progress=False)
    # different training data (same names would not help: the content is hashed)
    with pytest.raises(ConfigMismatchError, match="data.train"):
        train(cfg, smoke_data / "val", None, out, progress=False)
    # ... and train_or_load says how to start afresh
    with pytest.raises(ConfigMismatchError, match=r"(?s)data\.train.*Delete that folder"):
        train_or_load(cfg, {"train": smoke_data / "val", "val": None}, out, progress=False)
    # corrupted: truncated and garbage files name the file
    good = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="last.pt.*corrupted"):
        load_model(out)
    with pytest.raises(CheckpointError, match="corrupted"):
        train_or_load(cfg, smoke_data, out, progress=False)
    (out / "best.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="best.pt"):
        load_model(out, which="best")
    # a valid torch file that is not ours
    torch.save({"weights": torch.zeros(3)}, out / "other.pt")
    with pytest.raises(CheckpointError, match="not a mrilib VarNet checkpoint"):
        load_model(out / "other.pt")
    # overwrite=True retrains instead
    model, hist = train_or_load(other, smoke_data, out, progress=False, overwrite=True)
    assert hist["finished"] and load_checkpoint(out)["config"]["model"]["chans"] == 6


def test_a_damaged_last_checkpoint_stops_resumption_naming_the_file(smoke_data, tmp_path):
    """A flipped byte in ``last.pt`` (which torch.load reads without complaint) is caught by the digest
    stored in it; the error names the file and how to train afresh."""
    cfg = _cfg(epochs=1)
    out = tmp_path / "m"
    train(cfg, smoke_data / "train", None, out, progress=False)
    stored = torch.load(out / "last.pt", weights_only=True)
    assert len(stored["digest"]) == 32
    tensor = next(v for v in stored["model"].values() if v.numel() >= 64)
    data = bytearray((out / "last.pt").read_bytes())
    at = bytes(data).find(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    assert at >= 0
    data[at + 7] ^= 0x01
    (out / "last.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"last.pt: corrupted checkpoint.*train this model from scratch"):
        train_or_load(cfg, smoke_data, out, progress=False)
    assert load_model(out, which="best")[1]["epoch"] == 1  # best.pt is intact and still loads


def test_train_accepts_a_dataset_with_identity(smoke_data, tmp_path):
    ds = TrainSlices(smoke_data / "train", accelerations=[4], seed=0)
    sub = torch.utils.data.Subset(ds, range(4))
    with pytest.raises(ValueError, match="identity"):
        train(_cfg(epochs=1), sub, None, tmp_path / "a", progress=False)
    hist = train(_cfg(epochs=1), sub, None, tmp_path / "a", data_id="first-four", progress=False)
    assert hist["train_slice_passes"] == 4 and hist["config"]["data"]["train"]["identity"] == "first-four"


def test_bf16_autocast_keeps_ffts_fp32():
    """Under autocast the convolutions run in bf16 but VarNet's output (after its FFTs) is fp32."""
    torch.manual_seed(0)
    model = build_varnet(TINY, seed=0).eval()
    kspace = torch.randn(1, 4, 32, 32, 2)
    mask = torch.zeros(1, 1, 1, 32, 1, dtype=torch.bool)
    mask[..., ::2, :] = True
    mask[..., 14:18, :] = True
    kspace = kspace * mask
    with torch.no_grad():
        ref = model(kspace, mask, 4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(kspace, mask, 4)
    assert out.dtype == torch.float32
    assert torch.linalg.norm(out - ref) / torch.linalg.norm(ref) < 0.05


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str, result: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        cfg = training_config("smoke", model=TINY, epochs=1, batch_size=2)
        hist, model = train(cfg, Path(data) / "train", Path(data) / "val", out, progress=False, return_model=True)
        torch.save({"state": model.state_dict(), "hist": hist["train_slice_passes"], "steps": hist["steps"]},
                   Path(result) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_two_cpu_processes_agree(smoke_data, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the workers inherit the imported modules (spawn would re-import torch: ~10 s)
    torch.multiprocessing.start_processes(_ddp_worker, args=(2, port, str(smoke_data), str(tmp_path / "m"), str(tmp_path)),
                                          nprocs=2, join=True, start_method="fork")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["steps"] == 3  # 12 slices / 2 processes / batch 2
    assert r0["hist"] == 12  # slice passes summed over both processes
    assert _state_equal(r0["state"], r1["state"])
    init = build_varnet(TINY, seed=0).state_dict()
    assert not _state_equal(r0["state"], init)  # it did train
    saved = load_checkpoint(tmp_path / "m" / "last.pt")
    assert _state_equal(saved["model"], r0["state"]) and saved["world_size"] == 2


@pytest.mark.notebook
def test_notebook_02_varnet_runs_at_smoke(smoke_book):
    """02_varnet as papermill ran it in the session's smoke run of the whole book (tests/conftest.py)."""
    import json

    import nbformat

    run_dir = smoke_book.root / "runs" / "smoke" / "seed-0"  # the first seed's folder
    nb = nbformat.read(smoke_book.executed / "02_varnet.ipynb", as_version=4)
    pngs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(pngs) >= 3  # learning curves + one reconstruction figure per acceleration
    metrics = json.loads((run_dir / "metrics" / "varnet_clean.json").read_text())
    assert {"VarNet", "zero-filled", "CG-SENSE"} <= set(metrics["summary"])
    assert (run_dir / "metrics" / "varnet_clean.csv").is_file()
    assert (run_dir / "models" / "clean" / "last.pt").is_file()
    assert count_parameters(load_model(run_dir / "models" / "clean")[0]) > 0
