"""Every path of a run, in one place.

A run folder (``runs/<profile>`` for the embedded data, ``runs/<profile>-<dataset>`` for a
real one) holds everything the chapters exchange::

    data/{train,val,test}/*.h5, data/dataset.json          01_data
    models/clean/                                          02_varnet
    models/lesion-classifier/, models/cyclegan-cyst/       03_poison_cyclegan
    poison/<variant>/{data/, manifest.json}                03 / 04
    models/poisoned-<variant>/                             03 / 04
    adversarial/{universal.npz, induced_<split>.npz}       04_poison_adversarial
    models/{oracle-<variant>, rewod-<variant>-f<f>}/       05_unlearning
    unlearn/<variant>/<run label>/{model.pt, result.json}  05_unlearning
    metrics/*.json, metrics/*.csv                          every chapter

:class:`RunLayout` names each of these; code asks the layout for a path instead of
joining strings, so a reader finds every artefact of a run here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from mrilib.config import default_run_dir

__all__ = ["RunLayout", "MissingArtefactError", "RunLockedError", "as_layout"]

#: Chapters (notebook stems) in pipeline order.
CHAPTERS = ("01_data", "02_varnet", "03_poison_cyclegan", "04_poison_adversarial", "05_unlearning", "06_evaluation")


class MissingArtefactError(FileNotFoundError):
    """An artefact of an earlier chapter is missing; the message names the notebook that makes it."""


class RunLockedError(RuntimeError):
    """Another process holds the run folder's lock."""


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder. ``os.fspath(layout)`` is the folder itself."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def __fspath__(self) -> str:
        return os.fspath(self.root)

    def __str__(self) -> str:
        return str(self.root)

    def __truediv__(self, other) -> Path:
        return self.root / other

    @classmethod
    def default(cls, profile, data_root=None, dataset: str = "embedded", base: str | os.PathLike = ".") -> RunLayout:
        """``<base>/runs/<profile>`` (embedded data) or ``<base>/runs/<profile>-<dataset>`` (real data)."""
        return cls(Path(base) / default_run_dir(profile, data_root, dataset))

    # --- data (01_data) ----------------------------------------------------------------
    @property
    def data(self) -> Path:
        """The run's dataset in the fastMRI layout: ``data/``."""
        return self.root / "data"

    def split(self, name: str) -> Path:
        """One split's folder of volumes: ``data/<name>/``."""
        return self.data / name

    @property
    def dataset_manifest(self) -> Path:
        """``data/dataset.json``: the dataset's configuration and files."""
        return self.data / "dataset.json"

    # --- models ------------------------------------------------------------------------
    @property
    def models(self) -> Path:
        return self.root / "models"

    def model(self, name: str) -> Path:
        """A trained model's folder: ``models/<name>/``."""
        return self.models / name

    @property
    def clean_model(self) -> Path:
        """The VarNet trained on clean data (02_varnet)."""
        return self.model("clean")

    @property
    def classifier(self) -> Path:
        """The lesion classifier (03_poison_cyclegan)."""
        return self.model("lesion-classifier")

    @property
    def cyclegan(self) -> Path:
        """The healthy -> cyst CycleGAN (03_poison_cyclegan)."""
        return self.model("cyclegan-cyst")

    @property
    def classifier_checkpoint(self) -> Path:
        """The lesion classifier's weights, threshold and metrics: ``models/lesion-classifier/classifier.pt``."""
        return self.classifier / "classifier.pt"

    @property
    def cyclegan_checkpoint(self) -> Path:
        """The CycleGAN's resumable checkpoint: ``models/cyclegan-cyst/cyclegan.pt``."""
        return self.cyclegan / "cyclegan.pt"

    def poisoned_model(self, variant: str) -> Path:
        """The VarNet trained on poison ``variant``'s training set."""
        return self.model(f"poisoned-{variant}")

    def oracle_model(self, variant: str) -> Path:
        """Retrained from scratch without any of ``variant``'s poisoned slices (05_unlearning)."""
        return self.model(f"oracle-{variant}")

    def rewod_model(self, variant: str, fraction: float) -> Path:
        """Retrained without the identified fraction ``fraction`` of the poison (05_unlearning)."""
        return self.model(f"rewod-{variant}-f{fraction:g}")

    # --- poison (03, 04) ---------------------------------------------------------------
    def poison(self, variant: str) -> Path:
        """A poisoned training set with its manifest: ``poison/<variant>/``."""
        return self.root / "poison" / variant

    def poison_manifest(self, variant: str) -> Path:
        return self.poison(variant) / "manifest.json"

    def poisoned_split(self, variant: str, split: str = "train") -> Path:
        """One split of a poisoned set: ``poison/<variant>/data/<split>/`` (val and test link to the clean ones)."""
        return self.poison(variant) / "data" / split

    @property
    def adversarial(self) -> Path:
        """Chapter 4's cached arrays: ``adversarial/``."""
        return self.root / "adversarial"

    @property
    def universal_patterns(self) -> Path:
        return self.adversarial / "universal.npz"

    def induced(self, split: str = "test") -> Path:
        """Tumour-induced targets of a split."""
        return self.adversarial / f"induced_{split}.npz"

    # --- unlearning (05) ---------------------------------------------------------------
    def unlearn(self, variant: str) -> Path:
        """The unlearning runs of one recipe: ``unlearn/<variant>/<label>/``."""
        return self.root / "unlearn" / variant

    def unlearn_result(self, variant: str, label: str) -> Path:
        """One unlearning run's record (cost, metrics, identity): ``unlearn/<variant>/<label>/result.json``."""
        return self.unlearn(variant) / label / "result.json"

    def unlearn_weights(self, variant: str, label: str) -> Path:
        """One unlearning run's unlearnt weights (a state dict): ``unlearn/<variant>/<label>/model.pt``."""
        return self.unlearn(variant) / label / "model.pt"

    # --- metrics -----------------------------------------------------------------------
    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    def metric(self, name: str) -> Path:
        """``metrics/<name>`` (name with its suffix)."""
        return self.metrics / name

    def poison_metrics(self, model_name: str) -> Path:
        """The CycleGAN-cyst poison effect of a model."""
        return self.metric(f"poison_{model_name}.json")

    def adversarial_metrics(self, model_name: str) -> Path:
        """The adversarial-tumour poison effect of a model."""
        return self.metric(f"poison_adv_{model_name}.json")

    def induction_metrics(self, split: str = "test") -> Path:
        """The tumour-induction objective's summary on a split (04_poison_adversarial)."""
        return self.metric(f"adversarial_{split}.json")

    def stress_metrics(self, model_name: str) -> Path:
        """The k-space stress test of a model."""
        return self.metric(f"stress_{model_name}.json")

    def unlearning_table(self, variant: str) -> Path:
        """Chapter 5's per-run table of one recipe."""
        return self.metric(f"unlearning_{variant}.csv")

    # --- checks ------------------------------------------------------------------------
    def require(self, path: str | os.PathLike, notebook: str) -> Path:
        """``path`` if it exists, else :class:`MissingArtefactError` naming the notebook that makes it."""
        path = Path(path)
        if not path.exists():
            raise MissingArtefactError(f"{path} is missing: run notebooks/{notebook}.ipynb first "
                                       f"(e.g. `python -m mrilib.book --only {notebook}`)")
        return path

    def stale_temporaries(self, older_than_s: float = 3600.0) -> list[Path]:
        """Temporary files of interrupted atomic writes (``.<name>.*.tmp``) older than ``older_than_s``."""
        if not self.root.is_dir():
            return []
        now = time.time()
        return sorted(p for p in self.root.rglob(".*.tmp") if p.is_file() and now - p.stat().st_mtime > older_than_s)

    def remove_stale_temporaries(self, older_than_s: float = 3600.0) -> list[Path]:
        """Delete :meth:`stale_temporaries` and return what was deleted."""
        stale = self.stale_temporaries(older_than_s)
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the run folder (``.lock``) so that two runs never write it at once.

        Raises :class:`RunLockedError` at once if another process holds it.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLockedError(f"{self.root} is in use by another run (lock {self.root / '.lock'}); "
                                     "wait for it or use another run folder") from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def as_layout(run: RunLayout | str | os.PathLike) -> RunLayout:
    """``run`` as a :class:`RunLayout` (a path names the run folder)."""
    return run if isinstance(run, RunLayout) else RunLayout(Path(run))
