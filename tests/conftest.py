"""Shared fixtures: the repository root, one smoke run of the whole book, and the
small helpers of the model tests (``one_thread``, ``smoke_data``).

``smoke_book`` copies the book's sources (``_config.yml``, ``_toc.yml``, ``book/``
without ``executed/``, ``notebooks/``) into a temporary directory and runs
``python -m mrilib.book --profile smoke`` there, exactly as ``make book`` would,
so nothing touches the repository's ``runs/``, ``book/executed/`` or ``_build/``. It
runs once per test session and is shared by every test that asks for it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class SmokeBook:
    """Where the smoke run put things, and how long it took."""

    root: Path  # temporary copy of the book sources (the pipeline's --root)
    executed: Path  # book/executed/ of the copy
    html: Path  # _build/html/ of the copy
    log: str  # the pipeline's combined output
    seconds: float  # wall time of the whole run (execution + build)


def pytest_collection_modifyitems(config, items):
    """Mark every test that asks for ``smoke_book`` as ``notebook``: it executes the whole
    book, so ``-m "not notebook"`` (``make test-fast``) must never pull it in by accident."""
    for item in items:
        if "smoke_book" in getattr(item, "fixturenames", ()) and item.get_closest_marker("notebook") is None:
            item.add_marker(pytest.mark.notebook)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """``test-artifacts/`` (git-ignored): logs and screenshots worth keeping from CI."""
    path = REPO_ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


def copy_book_sources(dest: Path, src: Path = REPO_ROOT) -> Path:
    """Copy what the pipeline needs to build the book from ``src`` into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(src / name, dest / name)
    skip = shutil.ignore_patterns("executed", ".ipynb_checkpoints", "__pycache__")
    shutil.copytree(src / "book", dest / "book", ignore=skip)
    shutil.copytree(src / "notebooks", dest / "notebooks", ignore=skip)
    return dest


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory, artifacts_dir) -> SmokeBook:
    """Execute every notebook at ``--profile smoke`` with two seeds (``--seeds 0 1``, what ``make book
    PROFILE=smoke SEEDS="0 1"`` runs) in a temporary copy and build the book.

    Fails (for every test that uses it) with the tail of the pipeline's output when a
    notebook or the build fails; the full log is kept in
    ``test-artifacts/pipeline-smoke.log``.
    """
    root = copy_book_sources(tmp_path_factory.mktemp("book"))
    cmd = [sys.executable, "-m", "mrilib.book", "--profile", "smoke", "--seeds", "0", "1",
           "--root", str(root), "--no-progress"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    (artifacts_dir / "pipeline-smoke.log").write_text(f"$ {' '.join(cmd)}\n{log}")
    if proc.returncode != 0:
        pytest.fail(f"smoke run of the book failed (exit {proc.returncode}):\n{log[-6000:]}")
    return SmokeBook(root, root / "book" / "executed", root / "_build" / "html", log, seconds)


@pytest.fixture
def one_thread():
    """One torch thread: these models are tiny, and on a shared 2-core machine a second
    OpenMP thread that waits for a busy core makes each step many times slower.

    Opt in per module with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory) -> Path:
    """The smoke profile's embedded dataset (32², 4 coils; ~2 s), generated once per test module."""
    from mrilib.data import generate_embedded_dataset

    root = tmp_path_factory.mktemp("smoke") / "data"
    generate_embedded_dataset("smoke", root, seed=0, progress=False)
    return root
