"""Real datasets into a run: fastMRI-layout volumes the notebooks read like the embedded data.

:func:`prepare_real_dataset` (called by :func:`mrilib.data.prepare.prepare_dataset`
when a ``data_root`` is given) reads the named dataset through
:func:`mrilib.data.datasets.open_dataset`'s readers and writes

- ``<out>/{train,val,test,final}/<dataset>-<subject>_<contrast>.h5``: one volume per
  subject (splits by subject, never by slice, :func:`mrilib.data.datasets.assign_splits`:
  ``final`` is carved from the test subjects; the profile's subject counts cap each split; the
  profile's ``slices_per_subject`` slices spread over the central half of the volume),
  each slice fitted to the profile's ``image_size`` (:mod:`mrilib.data.resample`:
  k-space cropped = a lower-resolution acquisition; readout oversampling removed;
  phase encode last), coils compressed (SVD) to at most the profile's ``num_coils`` so
  that every volume of the run has the same coil count, intensities scaled so the
  reference's 99.5th percentile is 1. Besides fastMRI's ``kspace`` /
  ``reconstruction_rss`` / ``ismrmrd_header`` (whose phase-encode limits exclude
  zero-filled lines from the masks) a volume holds ``brain_mask`` (the object's
  foreground; for heads that are not skull-stripped, eroded to drop the scalp, an
  approximation of the brain; BraTS: the real brain mask), and where known ``image`` (complex ground truth), ``sens_maps``
  (``(C, H, W)``, or ``(S, C, H, W)`` when they differ per slice, as SKM-TEA's),
  ``tumour_mask`` / ``tumour_labels`` (BraTS), ``artefact_mask`` (paired data);
  attributes ``noise_sigma``, ``intensity_scale``, ``dataset``, ``source``.
- ``<out>/dataset.json``, written last: ``config``, ``profile`` and one ``files``
  record per volume (``file``, ``split``, ``patient_id``, ``contrast``,
  ``num_slices``, plus the source file and slices) and ``splits``: per split, where its
  subjects come from (``origin``), how many the dataset offered (``available``) and which
  were converted (``subjects``). The same configuration (dataset,
  options, data root and its data files' names and sizes, seed, profile sizes)
  reuses it without reading the data again.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from mrilib.config import Profile, get_profile
from mrilib.data.datasets import DATASETS, assign_splits, parse_dataset_spec, select_volumes, slug, split_origins
from mrilib.data.formats.base import DataFormatError, SliceSample, VolumeRef, rss_np, stable_seed
from mrilib.data.h5layout import LABEL_SOURCE, ismrmrd_header, write_volume
from mrilib.data.manifest import SPLITS, build_or_load, remove_stale_volumes, split_subjects
from mrilib.data.resample import ifft2c_np
from mrilib.run.cache import canonical, digest
from mrilib.run.io import atomic_path

__all__ = [
    "REAL_DATA_VERSION",
    "real_dataset_config",
    "source_fingerprint",
    "prepare_real_dataset",
    "choose_slices",
    "coil_compress",
    "foreground_mask",
    "estimate_noise_sigma",
    "write_run_volume",
]

REAL_DATA_VERSION = 3  # bump when the conversion changes, so cached runs are rebuilt


def choose_slices(num_slices: int, wanted: int) -> list[int]:
    """``wanted`` slice indices spread evenly over the central half of ``num_slices`` (all if fewer)."""
    if wanted >= num_slices:
        return list(range(num_slices))
    lo, hi = (num_slices - 1) * 0.25, (num_slices - 1) * 0.75
    if int(np.floor(hi)) - int(np.ceil(lo)) + 1 < wanted:
        lo, hi = 0.0, num_slices - 1.0
    idx = np.floor(lo + (hi - lo) * np.arange(wanted) / max(1, wanted - 1) + 0.5).astype(int)
    idx = sorted(set(idx.tolist()))
    extra = (i for i in range(num_slices) if i not in idx)
    while len(idx) < wanted:  # rounding collisions on tiny volumes
        idx = sorted(idx + [next(extra)])
    return idx


def coil_compress(kspace: np.ndarray, num_coils: int) -> np.ndarray:
    """The ``(num_coils, C)`` SVD coil-compression matrix of k-space ``(S, C, H, W)``.

    Rows are the dominant eigenvectors (conjugated) of the coil covariance, so
    ``A @ k`` keeps as much signal energy as ``num_coils`` virtual coils can. Being a
    linear combination of coils, it applies unchanged to sensitivity maps.
    """
    c = kspace.shape[1]
    x = np.moveaxis(kspace, 1, 0).reshape(c, -1)
    cov = x @ x.conj().T
    _, vecs = np.linalg.eigh(cov)
    return vecs[:, ::-1][:, :num_coils].conj().T.astype(np.complex64)


def _apply_coils(a: np.ndarray, x: np.ndarray, coil_axis: int) -> np.ndarray:
    """``a`` ``(V, C)`` applied along ``coil_axis`` of ``x``."""
    return np.moveaxis(np.tensordot(a, np.moveaxis(x, coil_axis, 0), axes=(1, 0)), 0, coil_axis).astype(np.complex64)


def foreground_mask(target: np.ndarray, erode_fraction: float = 0.0) -> np.ndarray:
    """The object's foreground ``(S, H, W)`` uint8: threshold, closing, hole filling, largest component.

    ``erode_fraction`` shrinks each mask by that fraction of its equivalent radius
    (for heads that are not skull-stripped, ~0.12 drops the scalp and skull rim so
    that the mask approximates the brain).
    """
    out = np.zeros(target.shape, np.uint8)
    thr = 0.1 * float(np.percentile(target, 99))
    for i, t in enumerate(target):
        m = ndimage.binary_closing(t > thr, iterations=2)
        m = ndimage.binary_fill_holes(m)
        lab, n = ndimage.label(m)
        if n > 1:
            sizes = ndimage.sum(m, lab, range(1, n + 1))
            m = lab == (1 + int(np.argmax(sizes)))
        steps = int(round(erode_fraction * np.sqrt(m.sum() / np.pi)))
        if steps > 0:
            eroded = ndimage.binary_erosion(m, iterations=steps)
            m = eroded if eroded.any() else m
        out[i] = m
    return out


def estimate_noise_sigma(kspace: np.ndarray, acquired: tuple[int, int]) -> float:
    """Noise sd per complex k-space sample from the outer readout rows (median |k| / sqrt(ln 2)).

    The outermost eighth of readout frequencies holds almost only noise; the
    magnitude of complex Gaussian noise of sd ``σ`` has median ``σ·sqrt(ln 2)``. An
    upper bound where those rows still carry signal.
    """
    h = kspace.shape[-2]
    rows = max(1, h // 8)
    lo, hi = acquired
    edge = np.concatenate([kspace[..., :rows, lo:hi].ravel(), kspace[..., h - rows :, lo:hi].ravel()])
    return float(np.median(np.abs(edge)) / np.sqrt(np.log(2)))


def write_run_volume(
    path: str | os.PathLike,
    kspace: np.ndarray,
    *,
    acquired: tuple[int, int],
    patient_id: str,
    acquisition: str,
    target: np.ndarray | None = None,
    fov_mm: tuple[float, float] = (240.0, 240.0),
    field_strength_t: float = 3.0,
    extras: dict | None = None,
    attrs: dict | None = None,
) -> Path:
    """Write a fastMRI-layout volume (via :func:`~mrilib.data.h5layout.write_volume`), atomically.

    On top of ``write_volume``: the header's phase-encode limits mark only the
    columns ``[lo, hi)`` as acquired (fastMRI's ``padding_left`` / ``padding_right``
    keep the masks off zero-filled lines), and a given ``target`` replaces the RSS
    as ``reconstruction_rss`` (with ``max`` / ``norm`` from it).
    """
    s, c, h, w = kspace.shape
    lo, hi = acquired
    with atomic_path(path) as tmp:
        write_volume(
            tmp, kspace, patient_id=patient_id, acquisition=acquisition, recon_size=(h, w), fov_mm=fov_mm,
            extras=extras, extra_attrs=attrs,
        )
        with h5py.File(tmp, "r+") as f:
            del f["ismrmrd_header"]
            f.create_dataset(
                "ismrmrd_header",
                data=ismrmrd_header((h, w), (h, w), fov_mm, pe_limits=(0, hi - lo - 1, w // 2 - lo), num_coils=c,
                                    field_strength_t=field_strength_t),
            )
            if target is not None:
                target = np.asarray(target, dtype=np.float32)
                if target.shape != (s, h, w):
                    raise ValueError(f"target shape {target.shape} != {(s, h, w)}")
                del f["reconstruction_rss"]
                f.create_dataset("reconstruction_rss", data=target)
                f.attrs["max"] = float(target.max())
                f.attrs["norm"] = float(np.linalg.norm(target))
    return Path(path)


_DATA_SUFFIXES = (".h5", ".mat", ".nii", ".nii.gz", ".npy", ".png", ".json")


def source_fingerprint(source_root: str | os.PathLike) -> str:
    """A cheap identity of a real dataset's *source* folder: a digest of its data files' names and sizes.

    Only stats files (no reading), so checking a cached conversion stays cheap even for
    thousands of volumes; it changes when files are added, removed or resized. (The
    converted volumes of a run are identified by content, :func:`mrilib.run.cache.data_identity`.)
    """
    root = Path(source_root)
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            if name.lower().endswith(_DATA_SUFFIXES) and not name.startswith("."):
                p = Path(dirpath) / name
                entries.append([p.relative_to(root).as_posix(), p.stat().st_size])
    return digest(sorted(entries), size=20)


def real_dataset_config(profile: Profile | str, seed: int, data_root, dataset: str, fingerprint: str = "") -> dict:
    """Everything that determines a converted real dataset's content (its cache key)."""
    p = get_profile(profile)
    name, options = parse_dataset_spec(dataset)
    return canonical(
        dict(
            version=REAL_DATA_VERSION,
            dataset=name,
            options=options,
            data_root=str(Path(data_root).expanduser().resolve()),
            fingerprint=fingerprint,
            seed=int(seed),
            image_size=p.data.image_size,
            max_coils=p.data.num_coils,
            snr=p.data.snr,
            contrasts=list(p.data.contrasts),
            subjects=dict(p.data.subjects),
            slices_per_subject=p.data.slices_per_subject,
        )
    )


def _assemble(samples: list[SliceSample], size: int, num_coils: int | None) -> dict:
    """Fit, coil-compress and stack one volume's slices; reference, masks, scale."""
    fitted = [s.fit(size) for s in samples]
    kspace = np.stack([s.kspace for s in fitted])
    lo = max(s.acquired[0] for s in fitted)
    hi = min(s.acquired[1] for s in fitted)
    if hi <= lo:
        raise DataFormatError(f"{samples[0].metadata.get('file')}: slices disagree on the acquired phase-encode lines")
    a = None
    if num_coils is not None and kspace.shape[1] > num_coils:
        a = coil_compress(kspace, num_coils)
        kspace = _apply_coils(a, kspace, 1)
    refs = []
    for s in fitted:
        if s.target is not None:
            refs.append(s.target)
        elif s.reference_kspace is not None:
            rk = s.reference_kspace if a is None else _apply_coils(a, s.reference_kspace, 1)
            refs.append(rss_np(ifft2c_np(rk)).mean(axis=0))
        else:
            refs.append(None)
    explicit_target = any(r is not None for r in refs)
    averaged = any(s.target is None and s.reference_kspace is not None for s in fitted)
    target = np.stack(
        [r if r is not None else rss_np(ifft2c_np(k)) for r, k in zip(refs, kspace)]
    ).astype(np.float32)
    scale = float(np.percentile(target, 99.5)) or 1.0
    scale = 1.0 / scale
    out = dict(kspace=(kspace * scale).astype(np.complex64), acquired=(lo, hi), scale=scale,
               target=(target * scale) if explicit_target else None, extras={},
               label_source=None if not explicit_target else
               "the mean RSS over the scan's repetitions" if averaged else "the dataset's own reference images")
    if all(s.image is not None for s in fitted):
        out["extras"]["image"] = (np.stack([s.image for s in fitted]) * scale).astype(np.complex64)
    if all(s.sens_maps is not None for s in fitted):
        maps = np.stack([s.sens_maps for s in fitted])
        if a is not None:
            maps = _apply_coils(a, maps, 1)
        same = all(np.array_equal(maps[0], m) for m in maps[1:])
        out["extras"]["sens_maps"] = (maps[0] if same else maps).astype(np.complex64)
    names = set().union(*(s.masks for s in fitted))
    for name in sorted(names):
        if all(name in s.masks for s in fitted):
            out["extras"][name] = np.stack([s.masks[name] for s in fitted]).astype(np.uint8)
    if "brain_mask" not in out["extras"]:
        ref_img = out["target"] if out["target"] is not None else rss_np(ifft2c_np(out["kspace"]))
        brain = samples[0].metadata.get("anatomy") == "brain"
        out["extras"]["brain_mask"] = foreground_mask(ref_img, erode_fraction=0.12 if brain else 0.0)
    sig = [s.metadata.get("noise_sigma") for s in samples]
    if all(v is not None for v in sig):
        out["noise_sigma"] = float(np.mean(sig)) * scale
    else:
        out["noise_sigma"] = estimate_noise_sigma(out["kspace"], (lo, hi))
    return out


def prepare_real_dataset(
    profile: Profile | str,
    out_root: str | os.PathLike,
    seed: int,
    data_root: str | os.PathLike,
    dataset: str,
    progress: bool = True,
) -> dict:
    """Convert (or reuse) a real dataset into ``out_root`` for ``profile``; return the manifest.

    Args:
        profile: profile name or object (matrix size, coils, subjects, slices per subject).
        out_root: the run's data folder (``RunLayout.data``).
        seed: seed of the subject selection and of split carving (and of simulated k-space).
        data_root: the folder holding the dataset.
        dataset: registry name, optionally with options (``"m4raw:average_repetitions=true"``).
        progress: show a tqdm progress bar.

    Raises:
        FileNotFoundError: ``data_root`` does not exist.
        DataFormatError: no volumes, a split without subjects, or a malformed file (named).
    """
    p = get_profile(profile)
    out_root = Path(out_root)
    root = Path(data_root).expanduser().resolve()
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such dataset folder (data_root)")
    name, options = parse_dataset_spec(dataset)
    cls = DATASETS[name]
    if cls.kind == "image":
        options = {"image_size": p.data.image_size, "num_coils": p.data.num_coils, "snr": p.data.snr, "seed": int(seed), **options}
    fmt = cls(**options)
    config = real_dataset_config(p, seed, root, dataset, source_fingerprint(root))
    return build_or_load(out_root, config, lambda: _convert(p, fmt, name, root, out_root, seed, progress))


def _convert(p: Profile, fmt, name: str, root: Path, out_root: Path, seed: int, progress: bool) -> dict:
    """Read, fit and write the volumes of ``p``'s splits; the manifest's ``profile``, ``files`` and ``splits``."""
    cls = type(fmt)
    refs = fmt.discover(root)
    if not refs:
        raise DataFormatError(f"{root}: no {name} volumes found ({cls.title}); see the book's 'Real datasets' page")
    holdout = {s: p.data.subjects[s] for s in ("val", "test", "final")}
    splits = assign_splits(refs, seed, holdout=holdout, train_subjects=p.data.subjects["train"])
    plan: list[tuple[str, VolumeRef]] = []
    for split in SPLITS:
        chosen = select_volumes(splits[split], p.data.subjects[split], stable_seed(seed, "select", split), p.data.contrasts)
        if not chosen:
            raise DataFormatError(
                f"{root}: no {name} subjects left for the {split!r} split "
                f"({len({r.patient_id for r in refs})} subjects in all; a run needs at least one per split)"
            )
        if len(chosen) < p.data.subjects[split]:
            warnings.warn(
                f"{name}: only {len(chosen)} subject(s) for {split!r}, profile {p.name!r} asks for {p.data.subjects[split]}",
                stacklevel=2,
            )
        plan.extend((split, v) for v in chosen)
    num_coils = None
    if cls.kind == "kspace":
        num_coils = min([p.data.num_coils] + [int(v.num_coils) for _, v in plan])

    records = []
    for split, vol in tqdm(plan, desc=f"converting {name} volumes", disable=not progress, unit="volume"):
        idx = choose_slices(vol.num_slices, p.data.slices_per_subject)
        samples = list(fmt.read(vol, idx))
        data = _assemble(samples, p.data.image_size, num_coils)
        meta = samples[0].metadata
        rel = Path(split) / f"{name}-{slug(vol.patient_id)}_{slug(vol.contrast)}.h5"
        sources = [os.path.relpath(f, root) for f in vol.files]
        write_run_volume(
            out_root / rel,
            data["kspace"],
            acquired=data["acquired"],
            patient_id=str(vol.patient_id),
            acquisition=str(meta.get("acquisition") or vol.contrast),
            target=data["target"],
            fov_mm=tuple(meta.get("fov_mm") or (p.data.fov_mm, p.data.fov_mm)),
            field_strength_t=float(meta.get("field_strength_t") or 3.0),
            extras=data["extras"],
            attrs=dict(
                **({LABEL_SOURCE: data["label_source"]} if data["label_source"] else {}),
                noise_sigma=data["noise_sigma"],
                intensity_scale=data["scale"],
                dataset=name,
                source=sources[0],
                source_slices=np.asarray(idx, dtype=np.int64),
            ),
        )
        records.append(
            dict(
                file=str(rel),
                split=split,
                patient_id=str(vol.patient_id),
                contrast=vol.contrast,
                num_slices=len(idx),
                dataset=name,
                source=sources,
                source_slices=idx,
                num_coils=int(data["kspace"].shape[1]),
                acquired=list(data["acquired"]),
                extras=sorted(data["extras"]),
            )
        )
    remove_stale_volumes(out_root, records)
    origins = split_origins(refs)
    summary = {
        s: dict(origin=origins[s], available=len({r.patient_id for r in splits[s]}), subjects=ids)
        for s, ids in split_subjects(records).items()
    }
    return dict(profile=p.name, files=records, splits=summary)
