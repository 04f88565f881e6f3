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

A study with several seeds (``make book SEEDS="0 1 2"``) keeps what every seed shares in the
run folder - the dataset, the attacker's networks (the CycleGAN, the lesion classifier PGD
attacks), the evaluation judge, and the pooled ``metrics/headline.csv`` - and everything a seed
changes in ``seed-<k>/`` below it (VarNet trainings, the poisoned slices, the identified subsets,
the unlearning runs, their metrics). A :class:`RunLayout` whose folder is a ``seed-<k>`` folder
resolves the shared paths in its parent (:attr:`RunLayout.shared`), so a chapter given
``runs/cpu/seed-1`` finds the dataset in ``runs/cpu/data``.

:class:`RunLayout` names each of these; code asks the layout for a path instead of
joining strings, so a reader finds every artefact of a run here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from mrilib.config import default_run_dir

__all__ = ["RunLayout", "MissingArtefactError", "RunLockedError", "as_layout", "seed_folder", "seed_run_dir"]

_SEED_FOLDER = re.compile(r"seed-(\d+)")


def seed_folder(seed: int) -> str:
    """The name of one seed's folder in a run folder: ``seed-<k>``."""
    if int(seed) < 0:
        raise ValueError(f"a seed must be >= 0, got {seed}")
    return f"seed-{int(seed)}"

#: Chapters (notebook stems) in pipeline order.
CHAPTERS = ("01_data", "02_varnet", "03_poison_cyclegan", "04_poison_adversarial", "05_unlearning", "06_evaluation",
            "07_attack_defence")


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

    @property
    def seed(self) -> int | None:
        """The seed of a ``seed-<k>`` folder, else ``None``."""
        m = _SEED_FOLDER.fullmatch(self.root.name)
        return int(m.group(1)) if m else None

    @property
    def shared(self) -> Path:
        """Where what every seed shares lives: the parent of a ``seed-<k>`` folder, else the folder itself."""
        return self.root.parent if self.seed is not None else self.root

    def for_seed(self, seed: int) -> RunLayout:
        """The layout of seed ``seed``'s folder in this run's shared folder: ``<shared>/seed-<k>``."""
        return RunLayout(self.shared / seed_folder(seed))

    @property
    def headline(self) -> Path:
        """Chapter 6's pooled headline table (every seed): ``<shared>/metrics/headline.csv``."""
        return self.shared / "metrics" / "headline.csv"

    @property
    def attack_table(self) -> Path:
        """Chapter 7's pooled attack x defence rows (every seed): ``<shared>/metrics/attack_defence.csv``."""
        return self.shared / "metrics" / "attack_defence.csv"

    @property
    def learning_table(self) -> Path:
        """Chapter 7's pooled rows of when each backdoor is learnt (every seed): ``<shared>/metrics/attack_learning.csv``."""
        return self.shared / "metrics" / "attack_learning.csv"

    @classmethod
    def default(cls, profile, data_root=None, dataset: str = "embedded", base: str | os.PathLike = ".") -> RunLayout:
        """``<base>/runs/<profile>`` (embedded data) or ``<base>/runs/<profile>-<dataset>`` (real data)."""
        return cls(Path(base) / default_run_dir(profile, data_root, dataset))

    # --- data (01_data) ----------------------------------------------------------------
    @property
    def data(self) -> Path:
        """The run's dataset in the fastMRI layout: ``data/`` (shared by every seed)."""
        return self.shared / "data"

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
        """The attacker's lesion classifier (03_poison_cyclegan; shared by every seed)."""
        return self.shared / "models" / "lesion-classifier"

    @property
    def judge(self) -> Path:
        """The evaluation judge, trained apart from the attacker's classifier (03_poison_cyclegan; shared)."""
        return self.shared / "models" / "judge"

    @property
    def judge_checkpoint(self) -> Path:
        """The judge's weights, threshold and metrics: ``models/judge/classifier.pt``."""
        return self.judge / "classifier.pt"

    @property
    def cyclegan(self) -> Path:
        """The healthy -> cyst CycleGAN (03_poison_cyclegan; shared by every seed)."""
        return self.shared / "models" / "cyclegan-cyst"

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


def seed_run_dir(profile, seed: int = 0, data_root=None, dataset: str = "embedded") -> Path:
    """Where a chapter run by hand (not by ``make book``, which injects ``run_dir``) works: seed ``seed``'s
    folder of the default run folder, ``runs/<profile>/seed-<k>`` (see :meth:`RunLayout.default`)."""
    return RunLayout.default(profile, data_root, dataset).for_seed(seed).root
