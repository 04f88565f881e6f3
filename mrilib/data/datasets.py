"""One interface to every real dataset: ``open_dataset(name, root, split)``.

::

    from mrilib.data.datasets import open_dataset
    ds = open_dataset("m4raw", "/data/m4raw", "train")
    for sample in ds:                 # SliceSample: kspace (C, H, W), reference(), metadata …
        ...
    ds = open_dataset("m4raw:average_repetitions=true", "/data/m4raw", "val")
    ds = open_dataset("brats", "/data/BraTS2021", "test", seed=0, image_size=64, snr=30)

A dataset name may carry reader options after a colon (``name:key=value,key=value``;
lists with ``+``), so a notebook's single ``dataset`` parameter can choose them.

**Splits** are by subject, never by slice. A dataset's own split folders/files are
used where they hold fully sampled data; a split it lacks is carved from its training
subjects (or from all, if it has no splits at all) by a seeded permutation of the
sorted subject ids, so the same ``seed`` always gives the same split. ``holdout``
sets how many subjects (int) or which fraction (float) a carved split gets (default
10 % each for ``val`` and ``test``, at least one). When ``holdout`` asks for ``final``
(a run's conversion always does), the untouched final split is taken from the test
subjects, the dataset's own or carved, disjoint by subject (:func:`final_subjects`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from mrilib.data.formats import FORMATS
from mrilib.data.formats.base import DataFormat, DataFormatError, SliceSample, VolumeRef, normalise_contrast
from mrilib.data.manifest import SPLITS

__all__ = [
    "DATASETS",
    "SPLITS",
    "RealDataset",
    "open_dataset",
    "get_format",
    "dataset_anatomy",
    "parse_dataset_spec",
    "assign_splits",
    "final_subjects",
    "split_origins",
    "select_volumes",
    "slug",
    "dataset_table",
]

#: registry of real datasets: name -> reader class (see :mod:`mrilib.data.formats`)
DATASETS: dict[str, type[DataFormat]] = dict(FORMATS)

_ALIASES: dict[str, tuple[str, dict]] = {
    "skm-tea": ("skmtea", {}),
    "skm_tea": ("skmtea", {}),
    "cmrx": ("cmrxrecon", {}),
    "fastmri-brain": ("fastmri", {"anatomy": "brain"}),
    "fastmri-knee": ("fastmri", {"anatomy": "knee"}),
    "brats2023": ("brats", {}),
}


def _parse_value(text: str):
    """``true``/``false``/``none``/int/float/``a+b`` list/string from an option value."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null", ""):
        return None
    if "+" in t:
        return [_parse_value(p) for p in t.split("+") if p]
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            pass
    return t


def parse_dataset_spec(spec: str) -> tuple[str, dict]:
    """Split ``"name:key=value,key=value"`` into the registry name and its options.

    Aliases (``skm-tea``, ``cmrx``, ``fastmri-brain``, ``fastmri-knee``) resolve to
    their reader plus preset options. Raises ``ValueError`` naming the known
    datasets for an unknown name.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"dataset name must be a non-empty string, got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    options: dict = {}
    if name in _ALIASES:
        name, preset = _ALIASES[name]
        options.update(preset)
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"dataset option {item!r} in {spec!r} is not key=value")
        options[key.strip()] = _parse_value(value)
    if name not in DATASETS:
        known = ", ".join(list(DATASETS) + sorted(_ALIASES))
        raise ValueError(f"unknown dataset {name!r}: choose one of {known} (or 'embedded' without data_root)")
    return name, options


def dataset_anatomy(spec: str) -> str | None:
    """What a dataset spec images: ``"brain"``, ``"knee"``, ``"heart"``, or ``None`` when the format holds
    several and the spec does not choose (fastMRI without ``anatomy=``)."""
    fmt = get_format(spec)
    return fmt.options.get("anatomy") or fmt.anatomy


def get_format(name: str, **options) -> DataFormat:
    """The reader for ``name`` (a spec string may carry options) with ``options`` applied."""
    base, spec_opts = parse_dataset_spec(name)
    return DATASETS[base](**{**spec_opts, **options})


def _count(value, pool: int) -> int:
    """A holdout given as a count (int) or a fraction (float) of ``pool`` subjects."""
    if isinstance(value, float) and 0 < value < 1:
        return max(1, int(round(value * pool)))
    return max(0, int(value))


def final_subjects(test_ids: Sequence[str], test: int, final: int) -> list[str]:
    """Which of the test pool's subjects go to ``final``: spread evenly over the sorted ids.

    ``final`` gets ``len(test_ids) * final / (test + final)`` of them (rounded down; at
    least one, and at least one left for ``test``), at evenly spaced places of the
    sorted ids: every second one, starting with the second, when the counts are equal
    (and the ids even in number).
    Interleaving (rather than a seeded draw or one half) keeps both splits spread over
    the ids, which in several datasets follow the acquisition date. Needs at least two ids.
    """
    ids = sorted(test_ids)
    n = len(ids)
    if n < 2:
        raise ValueError(f"splitting test and final needs at least 2 subjects, got {n}")
    k = min(n - 1, max(1, n * int(final) // max(1, int(test) + int(final))))
    return [ids[i] for i in range(n) if (i + 1) * k // n > i * k // n]


def _native_splits(refs: Sequence[VolumeRef]) -> dict[str, str | None]:
    """Each subject's native split: the first of :data:`SPLITS` its volumes appear in, else ``None``."""
    subject_split: dict[str, str | None] = {}
    for split in (*SPLITS, None):
        for r in refs:
            if r.split == split:
                subject_split.setdefault(r.patient_id, split)
    return subject_split


def split_origins(refs: Sequence[VolumeRef]) -> dict[str, str]:
    """Where :func:`assign_splits` takes each split of ``refs`` from, in words (for a dataset's manifest)."""
    native = set(_native_splits(refs).values())
    out = {"train": "the dataset's own train split" if "train" in native else "the subjects not held out"}
    for split in ("val", "test"):
        out[split] = f"the dataset's own {split} split" if split in native else "carved from the training subjects (seeded)"
    out["final"] = ("from the test subjects, evenly interleaved by sorted id (every second one when the test and "
                    "final counts are equal)")
    return out


def assign_splits(
    refs: Sequence[VolumeRef],
    seed: int = 0,
    holdout: dict | None = None,
    train_subjects: int | None = None,
) -> dict[str, list[VolumeRef]]:
    """Group volumes into ``train`` / ``val`` / ``test`` / ``final`` by subject.

    A subject's volumes all go to one split: the first native split it appears in
    (train, val, test), else the pool. Splits without native data are carved from
    the pool (native-train plus unsplit subjects) in the order test, val, taking
    ``holdout[split]`` subjects (int) or that fraction (float; default 0.1, at least
    one) from a permutation of the sorted subject ids drawn with ``seed``; the rest
    of the pool is ``train``. When ``train_subjects`` is given and the pool cannot
    serve it and the carved counts together, the carved counts shrink in proportion
    (at least one each), so a small dataset is not emptied into its test split. At
    least one subject is always left for training.

    ``holdout["final"]`` (default 0: no final split) asks for the untouched final
    split: it is taken from the test subjects (a carved test then carves test and
    final together, at least two), by :func:`final_subjects`, so that no subject is in
    both. Raises :class:`DataFormatError` naming the dataset when fewer than two test
    subjects are there to share.
    """
    holdout = {"val": 0.1, "test": 0.1, "final": 0, **(holdout or {})}
    subject_split = _native_splits(refs)
    native = {s for s in SPLITS if any(v == s for v in subject_split.values())}
    pool = sorted(p for p, s in subject_split.items() if s in ("train", None))
    order = [pool[i] for i in np.random.default_rng(int(seed)).permutation(len(pool))]
    final = _count(holdout["final"], len(pool))
    least = {"test": 2 if final else 1, "val": 1}
    wanted = {s: _count(holdout[s], len(pool)) for s in ("test", "val") if s not in native}
    if "test" in wanted:
        wanted["test"] += final
    if train_subjects is not None and wanted and len(pool) < train_subjects + sum(wanted.values()):
        total = train_subjects + sum(wanted.values())
        wanted = {s: max(least[s], int(len(pool) * k / total)) if k else 0 for s, k in wanted.items()}
    for split in ("test", "val"):
        if split in native:
            continue
        k = min(wanted[split], max(0, len(order) - 1))
        for p in order[:k]:
            subject_split[p] = split
        order = order[k:]
    for p in order:
        subject_split[p] = "train"
    if final:
        tests = [p for p, s in subject_split.items() if s == "test"]
        if len(tests) < 2:
            name = refs[0].dataset if refs else "dataset"
            where = "its own test split has" if "test" in native else f"{len(pool)} training subject(s) leave"
            raise DataFormatError(
                f"{name}: {where} {len(tests)} test subject(s) with fully sampled data; the untouched 'final' split "
                "is carved from the test subjects, so a run needs at least 2 there (one for 'test', one for 'final'), "
                "plus at least one training subject"
            )
        for p in final_subjects(tests, _count(holdout["test"], len(pool)) or 1, final):
            subject_split[p] = "final"
    out: dict[str, list[VolumeRef]] = {s: [] for s in SPLITS}
    for r in refs:
        out[subject_split[r.patient_id]].append(r)
    return out


def select_volumes(
    refs: Sequence[VolumeRef],
    num_subjects: int | None,
    seed: int = 0,
    contrasts: Sequence[str] | None = None,
) -> list[VolumeRef]:
    """Pick ``num_subjects`` subjects (seeded) and one volume each.

    Subjects are taken from a permutation of the sorted ids drawn with ``seed``
    (``None``: all). The ``i``-th subject prefers contrast ``contrasts[i % n]``, then
    any of ``contrasts``, then its first volume, so the chosen volumes cycle through
    the profile's contrasts where the dataset has them.
    """
    by_subject: dict[str, list[VolumeRef]] = {}
    for r in refs:
        by_subject.setdefault(r.patient_id, []).append(r)
    ids = sorted(by_subject)
    ids = [ids[i] for i in np.random.default_rng(int(seed)).permutation(len(ids))]
    if num_subjects is not None:
        ids = ids[: int(num_subjects)]
    prefs = [normalise_contrast(c) for c in (contrasts or [])]
    chosen = []
    for i, pid in enumerate(ids):
        vols = sorted(by_subject[pid], key=lambda r: (r.contrast, r.files))
        pick = None
        if prefs:
            first = prefs[i % len(prefs)]
            pick = next((v for v in vols if v.contrast == first), None)
            pick = pick or next((v for v in vols if v.contrast in prefs), None)
        chosen.append(pick or vols[0])
    return chosen


class RealDataset:
    """The volumes of one split of a real dataset, iterable as :class:`SliceSample`.

    Attributes:
        format: the reader (:class:`~mrilib.data.formats.base.DataFormat`).
        root: the dataset folder.
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` (all).
        volumes: the split's :class:`~mrilib.data.formats.base.VolumeRef` list.
    """

    def __init__(self, fmt: DataFormat, root: Path, split: str | None, volumes: list[VolumeRef]):
        self.format, self.root, self.split, self.volumes = fmt, Path(root), split, list(volumes)

    @property
    def name(self) -> str:
        """The reader's registry name."""
        return self.format.name

    def __len__(self) -> int:
        """Number of slices over all volumes."""
        return sum(v.num_slices for v in self.volumes)

    def __iter__(self) -> Iterator[SliceSample]:
        for v in self.volumes:
            yield from self.format.read(v)

    def __repr__(self) -> str:
        return (
            f"RealDataset({self.name!r}, split={self.split!r}, {len(self.volumes)} volumes, "
            f"{len(self.subjects())} subjects, {len(self)} slices)"
        )

    def subjects(self) -> list[str]:
        """Sorted subject ids of this split."""
        return sorted({v.patient_id for v in self.volumes})

    def read(self, volume: VolumeRef | int, slices: Sequence[int] | None = None) -> list[SliceSample]:
        """The slices (default all) of one volume (a :class:`VolumeRef` or its index)."""
        if isinstance(volume, int):
            volume = self.volumes[volume]
        return list(self.format.read(volume, slices))


def open_dataset(
    name: str,
    root: str | os.PathLike,
    split: str | None = "train",
    *,
    seed: int = 0,
    holdout: dict | None = None,
    **options,
) -> RealDataset:
    """Open a real dataset's split as a :class:`RealDataset` yielding :class:`SliceSample`.

    Args:
        name: registry name (``m4raw``, ``fastmri``, ``skmtea``, ``cmrxrecon``,
            ``brats``, ``paired``, or an alias), optionally with options
            (``"m4raw:average_repetitions=true"``).
        root: the folder holding the dataset (layouts in each reader's docstring and
            the book's "Real datasets" page).
        split: ``"train"``, ``"val"``, ``"test"``, ``"final"`` (empty unless ``holdout`` asks for it),
            or ``None`` for every volume.
        seed: seed of the subject-level carving of splits the dataset lacks.
        holdout: subjects (int) or fraction (float) for carved ``val``/``test``, and for ``final``
            (taken from the test subjects; see :func:`assign_splits`).
        **options: reader options (e.g. ``echo=1`` for SKM-TEA, ``image_size=64``,
            ``snr=30``, ``num_coils=4`` for image-only data).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        DataFormatError: no volume of the dataset found, or a file breaks its format.
    """
    fmt = get_format(name, **options)
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such dataset folder")
    if split not in (*SPLITS, None):
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    refs = fmt.discover(root)
    if not refs:
        raise DataFormatError(f"{root}: no {fmt.name} volumes found ({fmt.title}); see its expected layout")
    if split is None:
        return RealDataset(fmt, root, None, refs)
    return RealDataset(fmt, root, split, assign_splits(refs, seed, holdout)[split])


def dataset_table():
    """The registered real datasets as a pandas DataFrame (name, data kind, source, options)."""
    import pandas as pd

    rows = []
    for name, cls in DATASETS.items():
        rows.append(
            dict(
                name=name,
                dataset=cls.title,
                data="k-space" if cls.kind == "kspace" else "images → simulated k-space",
                source=cls.url,
                options=", ".join(f"{k}={v!r}" for k, v in cls.defaults.items()),
            )
        )
    return pd.DataFrame(rows).set_index("name")


def slug(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-") or "x"
