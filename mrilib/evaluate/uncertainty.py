"""The uncertainty of every headline number: mean [95 % CI], and "not distinguishable" where intervals overlap.

The book's standard: a number without its uncertainty is not a result. Two sources of variation are reported:

- **within a seed**, the test subjects: a *subject-level* (cluster) bootstrap (:func:`subject_bootstrap`). The
  slices of one subject are correlated, so subjects, not slices, are drawn with replacement; resampling slices
  would pretend to have as many independent measurements as slices and give intervals that are too narrow.
  Every model of a seed is scored on the same slices and resampled with the *same* draw, so a statistic that
  compares models (the share healed, a gap) is paired.
- **across seeds**, the training: a Student-t interval over the per-seed values (:func:`across_seeds`).

:func:`headline_rows` turns one seed's per-slice frames into the rows of the headline CSV
(``method, metric, seed, value, ci_low, ci_high, n_subjects, note``), :func:`pool_seeds` adds the pooled rows
(``seed = "all"``), and :func:`compare` / :func:`ranked` read them for the findings text.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from mrilib.run.io import atomic_path

__all__ = ["Interval", "MeanStatistic", "subject_bootstrap", "mean_of", "healed_of", "gap_of", "across_seeds",
           "headline_rows", "pool_seeds", "interval_of", "interval_or_nan", "compare", "ranked", "write_headline", "read_headline",
           "HEADLINE_COLUMNS", "METRICS", "ALL_SEEDS"]

#: the columns of the headline CSV, in order
HEADLINE_COLUMNS = ("method", "metric", "seed", "value", "ci_low", "ci_high", "n_subjects", "note")
#: the per-slice metrics :func:`headline_rows` reports by default (columns of the per-slice frames)
METRICS = ("ssim", "psnr", "nmse", "effect", "success")
#: the seed label of the pooled rows
ALL_SEEDS = "all"

Frames = Mapping[str, pd.DataFrame]


@dataclass(frozen=True)
class Interval:
    """A value with its confidence interval ``[low, high]``; ``n`` = subjects (or seeds, for a pooled interval).

    NaN bounds mean the interval is unknown (one subject, one seed, too few finite bootstrap replicates).
    """

    value: float
    low: float
    high: float
    n: int

    @property
    def known(self) -> bool:
        """Whether both bounds are finite."""
        return math.isfinite(self.low) and math.isfinite(self.high)

    def overlaps(self, other: Interval) -> bool:
        """Whether the closed intervals share a point; an unknown interval overlaps everything."""
        if not (self.known and other.known):
            return True
        return self.low <= other.high and other.low <= self.high

    def format(self, digits: int = 4) -> str:
        """``"value [low, high]"`` with ``digits`` decimals, e.g. ``"0.8615 [0.8502, 0.8711]"``."""
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def text(self, digits: int = 4) -> str:
        """:meth:`format` when the interval is known, the value alone when it is not, ``"n/a"`` without a value."""
        if not math.isfinite(self.value):
            return "n/a"
        return self.format(digits) if self.known else f"{self.value:.{digits}f}"

    def __str__(self) -> str:
        return self.format()


# --------------------------------------------------------------------------------------------- statistics


def _column_mean(frame: pd.DataFrame, column: str) -> float:
    values = frame[column].to_numpy(dtype=float)
    finite = np.isfinite(values)
    return float(values[finite].sum() / finite.sum()) if finite.any() else math.nan


def _identity(x):
    return x


def _difference(a, b):
    return a - b


def _healed(p, m, o):
    p, m, o = (np.asarray(x, dtype=float) for x in (p, m, o))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p - o != 0, (p - m) / (p - o), np.nan)


@dataclass(frozen=True)
class MeanStatistic:
    """A statistic of column means: ``combine(mean_1, mean_2, ...)``, mean ``i`` = mean of ``terms[i]``.

    A term is ``(model, column)``: the mean of that column of ``frames[model]`` over its slices, NaN ignored.
    ``combine`` must work elementwise on numpy arrays: :func:`subject_bootstrap` evaluates it on all replicates
    at once from per-subject sums and counts, which is what makes it fast. Call it on frames like any statistic.
    """

    terms: tuple[tuple[str, str], ...]
    combine: Callable

    def __call__(self, frames: Frames) -> float:
        return float(self.combine(*(_column_mean(frames[m], c) for m, c in self.terms)))


def mean_of(model: str, column: str) -> MeanStatistic:
    """The mean of ``column`` over the slices of ``model`` (NaN slices ignored)."""
    return MeanStatistic(((model, column),), _identity)


def gap_of(poisoned: str = "poisoned", oracle: str = "oracle", column: str = "effect") -> MeanStatistic:
    """``mean_poisoned - mean_oracle`` of ``column``: what there is to heal."""
    return MeanStatistic(((poisoned, column), (oracle, column)), _difference)


def healed_of(model: str, poisoned: str = "poisoned", oracle: str = "oracle", column: str = "effect") -> MeanStatistic:
    """The share of the poisoned-oracle gap ``model`` removes: ``(mean_p - mean_m) / (mean_p - mean_o)``.

    0 for the poisoned model, 1 for the oracle (exactly, in every paired replicate); NaN when the gap is 0.
    """
    return MeanStatistic(((poisoned, column), (model, column), (oracle, column)), _healed)


# ---------------------------------------------------------------------------------------------- bootstrap


def _subject_codes(frames: Frames) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The sorted subjects of all frames, and each frame's rows as indices into them."""
    labels = {k: np.asarray(f["subject"], dtype=str) for k, f in frames.items()}
    subjects = np.unique(np.concatenate(list(labels.values()))) if labels else np.array([], dtype=str)
    return subjects, {k: np.searchsorted(subjects, v) for k, v in labels.items()}


def _multiplicities(draws: np.ndarray) -> np.ndarray:
    """How often each subject is drawn in each replicate: ``(n_boot, n_subjects)`` from ``(n_boot, n_subjects)``."""
    n_boot, n = draws.shape
    flat = (draws + n * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(float)


def _replicates_of_means(frames: Frames, statistic: MeanStatistic, codes: dict[str, np.ndarray],
                         n_subjects: int, draws: np.ndarray) -> np.ndarray:
    weights = _multiplicities(draws)
    means = []
    for model, column in statistic.terms:
        values = frames[model][column].to_numpy(dtype=float)
        finite = np.isfinite(values)
        sums = np.bincount(codes[model], weights=np.where(finite, values, 0.0), minlength=n_subjects)
        counts = np.bincount(codes[model], weights=finite.astype(float), minlength=n_subjects)
        with np.errstate(divide="ignore", invalid="ignore"):
            means.append((weights @ sums) / (weights @ counts))
    return np.asarray(statistic.combine(*means), dtype=float)


class _Resampled(Mapping):
    """The frames of one bootstrap replicate, each built from the drawn subjects' rows when first read."""

    def __init__(self, frames: Frames, rows: dict[str, list[np.ndarray]], draw: np.ndarray):
        self._frames, self._rows, self._draw, self._built = frames, rows, draw, {}

    def __getitem__(self, key: str) -> pd.DataFrame:
        if key not in self._built:
            index = np.concatenate([self._rows[key][s] for s in self._draw])
            self._built[key] = self._frames[key].take(index).reset_index(drop=True)
        return self._built[key]

    def __iter__(self):
        return iter(self._frames)

    def __len__(self) -> int:
        return len(self._frames)


def _replicates_generic(frames: Frames, statistic: Callable, codes: dict[str, np.ndarray],
                        n_subjects: int, draws: np.ndarray) -> np.ndarray:
    rows = {k: [np.flatnonzero(c == s) for s in range(n_subjects)] for k, c in codes.items()}
    return np.array([statistic(_Resampled(frames, rows, draw)) for draw in draws], dtype=float)


def subject_bootstrap(frames: Frames, statistic: Callable[[Frames], float], n_boot: int = 2000,
                      level: float = 0.95, seed: int = 0) -> Interval:
    """``statistic`` on ``frames`` with its subject-level (cluster) percentile bootstrap interval.

    Each replicate draws as many subjects as there are, with replacement, and rebuilds every frame from the
    drawn subjects' rows (a subject drawn twice counts twice); the same draw serves every frame, so statistics
    comparing models are paired. The interval is the ``level`` percentile interval of the finite replicates;
    its bounds are NaN when fewer than half the replicates are finite, or with fewer than two subjects.
    ``value`` is always ``statistic(frames)``. The subjects are those of the frames the statistic reads (every
    frame, for a generic callable): the same set for models scored on the same slices. The draws come from ``numpy.random.default_rng(seed)``: the same
    seed gives the same interval. A :class:`MeanStatistic` (e.g. :func:`mean_of`, :func:`healed_of`) is
    evaluated on all replicates at once; any other callable is called once per replicate.
    """
    value = float(statistic(frames))
    fast = isinstance(statistic, MeanStatistic)
    subjects, codes = _subject_codes({m: frames[m] for m, _ in statistic.terms} if fast else frames)
    n = len(subjects)
    if n < 2:
        return Interval(value, math.nan, math.nan, n)
    draws = np.random.default_rng(seed).integers(n, size=(n_boot, n))
    replicate = _replicates_of_means if fast else _replicates_generic
    values = replicate(frames, statistic, codes, n, draws)
    values = values[np.isfinite(values)]
    if len(values) < n_boot / 2:
        return Interval(value, math.nan, math.nan, n)
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return Interval(value, float(low), float(high), n)


def across_seeds(values: Sequence[float], level: float = 0.95) -> Interval:
    """The mean over seeds with its Student-t ``level`` interval (NaNs dropped; n = seeds left).

    ``mean ± t_{(1+level)/2, n-1} · sd / sqrt(n)`` with the sample sd; NaN bounds with fewer than two seeds.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf((1 + level) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


# ------------------------------------------------------------------------------------------ headline rows


def _row(method: str, metric: str, seed, interval: Interval, note: str = "") -> dict:
    return dict(method=method, metric=metric, seed=str(seed), value=interval.value, ci_low=interval.low,
                ci_high=interval.high, n_subjects=interval.n, note=note)


def headline_rows(frames: Frames, seed, costs: Mapping[str, float] | None = None, poisoned: str = "poisoned",
                  oracle: str = "oracle", metrics: Sequence[str] = METRICS, n_boot: int = 2000,
                  level: float = 0.95, boot_seed: int = 0) -> pd.DataFrame:
    """One seed's headline rows: every model of ``frames`` × ``metrics``, ``healed`` and ``time``.

    ``frames`` maps a model to its per-slice frame (columns ``subject`` and the metrics; all models scored on
    the same slices). Each metric is the slice mean with its subject-bootstrap interval (:func:`subject_bootstrap`,
    the same draws for every model, from ``boot_seed``). ``healed`` (:func:`healed_of`, on ``effect``) is reported
    only when the poisoned-oracle effect gap's own interval lies above 0; otherwise its value and interval are NaN
    and ``note`` says why. ``time`` rows (one per method in ``costs``: training time relative to the oracle's)
    are single measurements: no interval, note ``"one measurement per seed"``. Columns: :data:`HEADLINE_COLUMNS`.
    """
    n_subjects = len(_subject_codes(frames)[0])
    boot = dict(n_boot=n_boot, level=level, seed=boot_seed)
    rows = [_row(model, metric, seed, subject_bootstrap(frames, mean_of(model, metric), **boot))
            for model in frames for metric in metrics]
    if poisoned in frames and oracle in frames:
        gap = subject_bootstrap(frames, gap_of(poisoned, oracle), **boot)
        heals = gap.low > 0
        why = f"n/a: {poisoned}-{oracle} effect gap {gap} " + ("is within its uncertainty" if gap.known
                                                               else "has no interval")
    else:
        heals, why = False, f"n/a: needs the {poisoned!r} and {oracle!r} models"
    nan = Interval(math.nan, math.nan, math.nan, n_subjects)
    for model in frames:
        healed = subject_bootstrap(frames, healed_of(model, poisoned, oracle), **boot) if heals else nan
        rows.append(_row(model, "healed", seed, healed, "" if heals else why))
    for model, cost in (costs or {}).items():
        rows.append(_row(model, "time", seed, Interval(float(cost), math.nan, math.nan, n_subjects),
                         "one measurement per seed"))
    return pd.DataFrame(rows, columns=list(HEADLINE_COLUMNS))


def pool_seeds(rows: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """The per-seed ``rows`` followed by one pooled row (``seed = "all"``) per (method, metric).

    The pooled value is the mean over the seeds with a finite value, its interval :func:`across_seeds`'s (NaN
    with one seed), ``n_subjects`` the per-seed count. A metric with no finite value in any seed stays NaN
    with the seeds' notes joined; one finite in only some seeds says so in its note. Existing ``"all"`` rows
    are replaced, so pooling twice changes nothing.
    """
    rows = rows.assign(seed=rows["seed"].astype(str))
    rows = rows[rows["seed"] != ALL_SEEDS].reset_index(drop=True)
    pooled = []
    for (method, metric), group in rows.groupby(["method", "metric"], sort=False):
        interval = across_seeds(group["value"])
        interval = Interval(interval.value, interval.low, interval.high, int(group["n_subjects"].max()))
        seeds, finite = len(group), int(np.isfinite(group["value"].to_numpy(dtype=float)).sum())
        if finite == 0:
            note = "; ".join(dict.fromkeys(n for n in group["note"].fillna("").astype(str) if n))
        elif finite < seeds:
            note = f"mean over {finite} of {seeds} seeds"
        else:
            note = "one seed: no across-seed interval" if seeds == 1 else ""
        pooled.append(_row(method, metric, ALL_SEEDS, interval, note))
    return pd.concat([rows, pd.DataFrame(pooled, columns=list(HEADLINE_COLUMNS))], ignore_index=True)


# -------------------------------------------------------------------------------------------------- reading


def interval_of(rows: pd.DataFrame, method: str, metric: str, seed=ALL_SEEDS) -> Interval:
    """The :class:`Interval` of one headline row; ``KeyError`` naming the row when it is missing."""
    hit = rows[(rows["method"] == method) & (rows["metric"] == metric) & (rows["seed"].astype(str) == str(seed))]
    if hit.empty:
        raise KeyError(f"no headline row for method {method!r}, metric {metric!r}, seed {seed!r}")
    r = hit.iloc[0]
    return Interval(float(r["value"]), float(r["ci_low"]), float(r["ci_high"]), int(r["n_subjects"]))


def interval_or_nan(rows: pd.DataFrame, method: str, metric: str, seed=ALL_SEEDS) -> Interval:
    """:func:`interval_of`, or an all-NaN interval (``n = 0``) when the row is missing."""
    try:
        return interval_of(rows, method, metric, seed)
    except KeyError:
        return Interval(math.nan, math.nan, math.nan, 0)


def compare(rows: pd.DataFrame, metric: str, a: str, b: str, seed=ALL_SEEDS) -> str:
    """``"<a> higher than <b>"``, ``"<a> lower than <b>"`` or ``"not distinguishable"``.

    Not distinguishable when the two intervals overlap or either is unknown (NaN bounds).
    """
    ia, ib = interval_of(rows, a, metric, seed), interval_of(rows, b, metric, seed)
    if ia.overlaps(ib):
        return "not distinguishable"
    return f"{a} {'higher' if ia.value > ib.value else 'lower'} than {b}"


def ranked(rows: pd.DataFrame, metric: str, seed=ALL_SEEDS, higher_is_better: bool = True) -> list[list[str]]:
    """The methods with a value for ``metric`` in tiers, best tier first.

    Rule: the best remaining method and every remaining method whose interval overlaps the best's form a tier
    (best first, then by value); repeat on the rest. Methods with an unknown interval overlap everything, so they
    join the first tier. Tiers are not transitive: a method may overlap a tier member but not its best, and then
    starts a later tier. Methods without a finite value are left out.
    """
    hit = rows[(rows["metric"] == metric) & (rows["seed"].astype(str) == str(seed))]
    intervals = {m: interval_of(hit, m, metric, seed) for m in dict.fromkeys(hit["method"])}
    order = sorted((m for m, i in intervals.items() if math.isfinite(i.value)),
                   key=lambda m: -intervals[m].value if higher_is_better else intervals[m].value)
    tiers = []
    while order:
        best = intervals[order[0]]
        tiers.append([m for m in order if intervals[m].overlaps(best)])
        order = [m for m in order if m not in tiers[-1]]
    return tiers


def write_headline(rows: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the headline rows to a CSV at ``path`` atomically and return the path (columns that name what the rows
    are about, e.g. chapter 7's ``attack``, first; then :data:`HEADLINE_COLUMNS`)."""
    extra = [c for c in rows.columns if c not in HEADLINE_COLUMNS]
    with atomic_path(path) as tmp:
        rows.loc[:, extra + list(HEADLINE_COLUMNS)].to_csv(tmp, index=False)
    return Path(path)


def read_headline(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV of :func:`write_headline` (``seed`` as a string, empty notes as ``""``)."""
    return pd.read_csv(path, dtype={"seed": str, "note": str}).fillna({"note": ""})
