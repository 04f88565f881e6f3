"""Dataset integrity: does every label agree with its own k-space?

In the fastMRI multi-coil layout a volume's label ``reconstruction_rss`` is, by
construction, the root-sum-of-squares over coils of the centred orthonormal inverse 2-D
FFT of the file's fully sampled ``kspace`` (``(slices, coils, H, W)`` complex),
centre-cropped to the label's shape (so a readout-oversampled ``640 × 368`` k-space has
``320 × 320`` labels). A label that was edited after the fact - a pasted lesion, a
poisoned training target - no longer agrees with its measurement, and it disagrees
exactly where it was edited. This check needs nothing but ``kspace`` and
``reconstruction_rss`` (no coil maps, no brain mask, no header).

The score of a slice (:func:`label_score`) is

    ``max |G_σ * (label − crop(RSS(IFFT(kspace))))| / max |label|``

with ``G_σ`` an optional Gaussian low-pass of ``σ`` pixels. It is scale-free (a share of
the label's maximum). This is the very measure chapter 5 reports as ``peak`` and finds
its regions with (:func:`mrilib.unlearn.regions.scan_disagreement` and
:func:`mrilib.unlearn.regions.label_disagreement` are built on :func:`residual` and
:func:`disagreement_map` below); chapter 5 calls it with ``σ = 2``, whose low-pass turns
a poison's trigger stripes and pixel noise into a compact region.

The audit's default is :data:`DEFAULT_SIGMA` = 0, the raw maximum: since
``|G_σ * d| ≤ max |d|`` pointwise, ``σ = 0`` scores every edit at least as high as any
low-pass does, and a low-pass mostly hides pixel-level edits - the smoke run's
ε-bounded adversarial poison (no trigger) scores 0.04 at ``σ = 0`` but 1.1e-3 at ``σ = 2``,
a single pixel raised by 2.5 % of the maximum 0.025 against 1e-3.

:data:`DEFAULT_THRESHOLD` = ``1e-3`` separates the two regimes by orders of magnitude: a
label computed from its k-space in another precision or by another FFT implementation
departs by float rounding (measured ≤ 2e-7 at ``σ = 0``, ≤ 4e-8 at ``σ = 2``; exactly 0
for labels written by :func:`mrilib.data.h5layout.write_volume`), while an edit worth
the name scores ≥ 1e-2 (the smoke run's poisoned labels 0.04-0.46; a blob of 2.5 pixels'
radius at 10 % of the maximum 0.1). ``1e-3`` leaves over three decades of margin above
rounding (even a label stored in float16, ~5e-4, passes) and flags any pixel moved by
more than 0.1 % of the maximum.

- :func:`label_score`: the score of one slice;
- :func:`audit_folder`: every slice of every ``.h5`` volume of a folder, as an
  :class:`AuditResult` (a table of scores, the flagged slices, one error line per file
  that could not be checked); ``python -m mrilib.audit`` is its command line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from mrilib.data.h5layout import LABEL_SOURCE, rss_target
from mrilib.run.io import is_hidden_or_temporary, write_json
from mrilib.run.progress import progress

__all__ = ["DEFAULT_SIGMA", "DEFAULT_THRESHOLD", "KSPACE", "LABEL", "AuditError", "AuditResult", "audit_folder",
           "disagreement_map", "label_score", "low_pass", "measured_label", "relative", "residual", "volume_paths"]

#: Width in pixels of the Gaussian low-pass applied to ``label − RSS`` before scoring: none (the most
#: sensitive score; chapter 5's region finder passes 2).
DEFAULT_SIGMA = 0.0
#: Score above which a slice is flagged: float rounding stays below ~1e-6, edited labels reach ≥ 1e-2.
DEFAULT_THRESHOLD = 1e-3
#: The datasets the check reads: the fully sampled multi-coil k-space and its label.
KSPACE, LABEL = "kspace", "reconstruction_rss"

_COLUMNS = ["file", "slice", "score", "flagged"]


class AuditError(ValueError):
    """A volume or slice that cannot be checked (missing dataset, shapes that cannot match, bad argument)."""


# ----------------------------------------------------------------------------- the measure of one slice


def measured_label(kspace: np.ndarray, shape) -> np.ndarray:
    """The label the fastMRI layout stores for fully sampled ``kspace`` (``(coils, H, W)``): the RSS of
    its centred inverse FFT, centre-cropped to ``shape``. Raises :class:`AuditError` when ``shape``
    is larger than the k-space's image."""
    try:
        return rss_target(kspace, tuple(shape))
    except ValueError as err:  # the label is larger than its k-space image
        raise AuditError(f"label of shape {tuple(shape)}: {err}") from None


def low_pass(image: np.ndarray, sigma: float) -> np.ndarray:
    """``G_sigma * image`` in float64 (a Gaussian of ``sigma`` pixels; 0 leaves it as it is)."""
    if sigma < 0:
        raise AuditError(f"sigma must be ≥ 0, got {sigma}")
    return gaussian_filter(np.asarray(image, np.float64), sigma)


def residual(kspace: np.ndarray, label: np.ndarray, sigma: float = DEFAULT_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """``(measured, G_sigma * (label - measured))``: the RSS image of the slice's own k-space
    (:func:`measured_label`) and the low-pass, signed label-minus-measurement, ``(h, w)`` each.

    Args:
        kspace: ``(coils, H, W)`` complex, fully sampled (one slice of the file's ``kspace``).
        label: ``(h, w)`` label (``reconstruction_rss``), ``h ≤ H`` and ``w ≤ W``.
        sigma: low-pass width in pixels (≥ 0).
    """
    if kspace.ndim != 3 or label.ndim != 2:
        raise AuditError(f"expected kspace (coils, H, W) and label (h, w), got {kspace.shape} and {label.shape}")
    measured = measured_label(kspace, label.shape)
    return measured, low_pass(label - measured, sigma)


def relative(diff: np.ndarray, label: np.ndarray) -> np.ndarray:
    """``|diff|`` as a share of the label's maximum (scale-free)."""
    return np.abs(diff) / max(float(np.abs(label).max()), 1e-30)


def disagreement_map(kspace: np.ndarray, label: np.ndarray, sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """``|G_sigma * (label - RSS(IFFT(kspace)))|`` relative to the label's maximum, ``(h, w)``:
    ~0 everywhere for a label that is the RSS of its k-space, large where the label was edited."""
    return relative(residual(kspace, label, sigma)[1], label)


def label_score(kspace: np.ndarray, label: np.ndarray, sigma: float = DEFAULT_SIGMA) -> float:
    """How far a slice's label departs from the RSS of its own k-space: the maximum of
    :func:`disagreement_map`, a share of the label's maximum.

    0 (up to float rounding, ≤ 2e-7) for a label that is the RSS of its k-space; ≥ 1e-2 for a
    label with a visible edit. NaN when either array holds NaN. See the module docstring.
    """
    return float(disagreement_map(kspace, label, sigma).max())


# ----------------------------------------------------------------------------- a folder of volumes


def volume_paths(data_dir: str | os.PathLike) -> list[Path]:
    """The ``.h5`` files directly under ``data_dir``, sorted, without hidden and temporary ones
    (:func:`mrilib.run.io.is_hidden_or_temporary`). Raises ``FileNotFoundError`` when there are none
    (naming the subfolders that hold some, e.g. fastMRI's ``multicoil_train``)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"no .h5 volumes in {data_dir}: no such folder")
    files = sorted(p for p in data_dir.glob("*.h5") if p.is_file() and not is_hidden_or_temporary(p))
    if not files:
        holders = sorted({p.parent.name for p in data_dir.glob("*/*.h5") if not is_hidden_or_temporary(p)})
        hint = f" (its subfolders {', '.join(holders)} hold some: audit each of them)" if holders else ""
        raise FileNotFoundError(f"no .h5 volumes in {data_dir}{hint}")
    return files


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _open_pair(f: h5py.File) -> tuple[h5py.Dataset, h5py.Dataset]:
    """The file's k-space and labels, checked for shapes that can match (:class:`AuditError` otherwise)."""
    missing = [name for name in (KSPACE, LABEL) if not isinstance(f.get(name), h5py.Dataset)]
    if missing:
        raise AuditError(f"no {' and no '.join(repr(m) for m in missing)} dataset (found: {sorted(f.keys())})")
    k, y = f[KSPACE], f[LABEL]
    if k.ndim != 4 or k.dtype.kind != "c":
        raise AuditError(f"'{KSPACE}' must be complex (slices, coils, H, W), got {k.dtype} of shape {k.shape}")
    if y.ndim != 3:
        raise AuditError(f"'{LABEL}' must be (slices, h, w), got shape {y.shape}")
    if y.shape[0] != k.shape[0]:
        raise AuditError(f"'{LABEL}' has {y.shape[0]} slices, '{KSPACE}' has {k.shape[0]}")
    if y.shape[1] > k.shape[2] or y.shape[2] > k.shape[3]:
        raise AuditError(f"labels {y.shape[1:]} larger than the k-space's images {k.shape[2:]}: shapes cannot match")
    return k, y


def _score_file(path: Path, sigma: float, all_labels: bool = False) -> tuple[list[tuple[int, float]], list[str]]:
    """``([(slice, score), …], [error, …])`` of one volume: a file-level problem gives no scores
    and one error; an unreadable or non-finite slice gives an error for that slice only."""
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        return [], [f"not a readable HDF5 file ({_one_line(err)})"]
    scores, errors = [], []
    with f:
        source = f.attrs.get(LABEL_SOURCE)
        if source is not None and not all_labels:  # e.g. M4RAW's repetition-averaged references: another reference is needed
            return [], [f"cannot audit: its labels are {source}, not the RSS of its k-space "
                        f"(attribute {LABEL_SOURCE!r})"]
        try:
            k, y = _open_pair(f)
        except AuditError as err:
            return [], [_one_line(err)]
        for s in range(y.shape[0]):
            try:
                score = label_score(k[s], y[s], sigma)
            except (OSError, AuditError) as err:
                errors.append(f"slice {s}: {_one_line(err)}")
                continue
            if not np.isfinite(score):
                errors.append(f"slice {s}: NaN or Inf in its k-space or label")
                continue
            scores.append((s, score))
    return scores, errors


@dataclass
class AuditResult:
    """What :func:`audit_folder` found.

    Attributes:
        data_dir: the folder checked.
        threshold: the score above which a slice is flagged.
        sigma: the low-pass width of the score, in pixels.
        files: how many volumes the folder holds (hidden and temporary files excluded).
        slices: one row per checked slice: ``file`` (name relative to ``data_dir``), ``slice``,
            ``score`` (:func:`label_score`), ``flagged`` (``score > threshold``).
        errors: one ``{"file", "error"}`` per problem (a file or a slice that could not be checked).
    """

    data_dir: Path
    threshold: float
    sigma: float
    files: int
    slices: pd.DataFrame
    errors: list[dict] = field(default_factory=list)

    @property
    def flagged(self) -> pd.DataFrame:
        """The rows of the flagged slices, highest score first."""
        return self.slices[self.slices["flagged"]].sort_values("score", ascending=False)

    @property
    def checked(self) -> bool:
        """Whether at least one slice could be checked."""
        return len(self.slices) > 0

    def summary(self) -> dict:
        """Counts and extremes: files found and checked, slices checked and flagged, the largest score
        and the largest score below the threshold (``None`` when there is none)."""
        clean = self.slices["score"][~self.slices["flagged"]]
        return dict(
            data_dir=str(self.data_dir), threshold=float(self.threshold), sigma=float(self.sigma),
            files=int(self.files), files_checked=int(self.slices["file"].nunique()),
            slices_checked=len(self.slices), slices_flagged=int(self.slices["flagged"].sum()),
            max_score=float(self.slices["score"].max()) if self.checked else None,
            max_unflagged=float(clean.max()) if len(clean) else None,
        )

    def to_json(self) -> dict:
        """``{"slices": [{"file", "slice", "score", "flagged"}, …], "errors": [{"file", "error"}, …], **summary}``."""
        rows = [dict(file=str(r.file), slice=int(r.slice), score=float(r.score), flagged=bool(r.flagged))
                for r in self.slices.itertuples(index=False)]
        return dict(self.summary(), slices=rows, errors=[dict(e) for e in self.errors])

    @classmethod
    def from_json(cls, obj: dict) -> AuditResult:
        """The result :meth:`to_json` describes (e.g. read back with :func:`mrilib.run.io.read_json`)."""
        slices = pd.DataFrame(obj["slices"], columns=_COLUMNS).astype({"slice": int, "score": float, "flagged": bool})
        return cls(Path(obj["data_dir"]), obj["threshold"], obj["sigma"], obj["files"], slices, list(obj["errors"]))

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_json` to ``path`` atomically (:func:`mrilib.run.io.write_json`)."""
        return write_json(path, self.to_json())

    def report(self) -> str:
        """A few lines for a terminal: what was checked, the largest scores, every flagged slice."""
        s = self.summary()
        if not self.checked:
            return f"{self.data_dir}: no slice could be checked ({len(self.errors)} errors in {self.files} files)"
        lines = [f"{self.data_dir}: {s['slices_checked']} slices of {s['files_checked']}/{s['files']} files checked, "
                 f"{s['slices_flagged']} flagged (score > {self.threshold:g}; sigma {self.sigma:g} px)",
                 f"largest score {s['max_score']:.3g}"
                 + ("" if s["max_unflagged"] is None else f", largest unflagged {s['max_unflagged']:.3g}")]
        lines += [f"  FLAGGED {r.file} slice {r.slice}: {r.score:.3g}" for r in self.flagged.itertuples(index=False)]
        if self.errors:
            lines.append(f"{len(self.errors)} problem(s) left slices unchecked (see the error lines)")
        return "\n".join(lines)


def audit_folder(data_dir: str | os.PathLike, threshold: float = DEFAULT_THRESHOLD, sigma: float = DEFAULT_SIGMA,
                 leave: bool = True, all_labels: bool = False) -> AuditResult:
    """Score every slice of every ``.h5`` volume directly under ``data_dir`` (:func:`label_score`).

    Args:
        data_dir: a folder of fastMRI-layout volumes (e.g. ``multicoil_train``); hidden and
            temporary files are skipped (:func:`volume_paths`).
        threshold: a slice is flagged when its score exceeds this (> 0; default
            :data:`DEFAULT_THRESHOLD`).
        sigma: the score's low-pass width in pixels (≥ 0).
        leave: keep the progress bar after it finishes (``False`` for a nested bar).
        all_labels: also score the volumes whose labels say they are not the RSS of their k-space
            (attribute :data:`~mrilib.data.h5layout.LABEL_SOURCE`; by default each is one "cannot audit"
            error), e.g. to show how far such labels depart from their measurement.

    A file without ``kspace`` or ``reconstruction_rss``, an unreadable file, or shapes that
    cannot match give one entry in ``errors`` naming the file, and the others are still
    checked. Raises ``FileNotFoundError`` when the folder holds no volume, :class:`AuditError`
    for a bad ``threshold`` or ``sigma``.
    """
    if not threshold > 0:
        raise AuditError(f"threshold must be > 0, got {threshold}")
    if not sigma >= 0:
        raise AuditError(f"sigma must be ≥ 0, got {sigma}")
    data_dir = Path(data_dir)
    files = volume_paths(data_dir)
    rows, errors = [], []
    for path in progress(files, desc="label vs k-space", unit="file", leave=leave):
        name = path.relative_to(data_dir).as_posix()
        scores, problems = _score_file(path, sigma, all_labels)
        rows += [(name, s, score, score > threshold) for s, score in scores]
        errors += [dict(file=name, error=p) for p in problems]
    slices = pd.DataFrame(rows, columns=_COLUMNS).astype({"slice": int, "score": float, "flagged": bool})
    return AuditResult(data_dir, float(threshold), float(sigma), len(files), slices, errors)
