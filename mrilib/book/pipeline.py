"""Run the book: execute every notebook with papermill, then build the HTML book.

Usage (what ``make book`` and ``make html`` call)::

    python -m mrilib.book --profile cpu --seed 0
    python -m mrilib.book --profile cpu --seeds 0 1 2
    python -m mrilib.book --profile smoke --only 01_data 02_varnet
    python -m mrilib.book --profile cpu --data-root /data/m4raw --dataset m4raw
    python -m mrilib.book --html-only

Every ``notebooks/NN_*.ipynb`` is executed in file-name order (the table of contents
plays no part here), from the repository root so that the relative run directory
``runs/<profile>`` resolves there. Papermill injects ``profile``, ``seed``, ``seeds``,
``run_dir`` (the seed's folder ``runs/<profile>/seed-<k>``), ``data_root`` and ``dataset`` into
each notebook's ``parameters`` cell; with several seeds chapters 1-5 run once per seed and
chapters 6 and 7 once over all of them (:func:`execution_plan`).
Executed copies go to ``book/executed/NN_name.ipynb``, written atomically; wall times
to ``book/executed/timings.json``. The first failing notebook stops the run with an
error that names it. Then jupyter-book builds ``_build/html`` with Sphinx warnings
treated as errors.

The run is quiet: one line per chapter (``[2/6] 02_varnet   25.0 s  ok``), with a
per-cell progress bar only on a terminal; kernels talk over IPC (no "running over TCP
without encryption" warning); jupyter-book's own output goes to
``_build/jupyter-book.log`` and only its warnings are printed. Before an executed copy
is moved into place, :mod:`mrilib.book.publish` prepares it for the book: papermill's
injected-parameters cell is tagged ``remove-cell`` (myst-nb leaves it out of the page),
progress-bar updates collapse to their last line, machine paths in outputs become
relative.

All locations can be overridden (``--root``, ``--notebooks-dir``, ``--executed-dir``,
``--build-dir``), so the tests run the whole pipeline in a temporary copy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mrilib.book.kernels import ipc_kernels, kernel_environment
from mrilib.book.publish import finalise_notebook
from mrilib.config import default_run_dir, get_profile
from mrilib.data.datasets import dataset_anatomy, parse_dataset_spec
from mrilib.run.io import write_json
from mrilib.run.layout import RunLockedError, as_layout, seed_folder

__all__ = [
    "NOTEBOOK_PATTERN",
    "NotebookError",
    "BookBuildError",
    "find_notebooks",
    "execute_notebooks",
    "build_book",
    "main",
]

#: Which files of the notebooks directory are chapters: ``01_data.ipynb`` …
NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class NotebookError(RuntimeError):
    """A notebook failed to execute; the message names it and its partial copy."""


class BookBuildError(RuntimeError):
    """jupyter-book failed (or warned, with warnings treated as errors)."""


def find_notebooks(notebooks_dir: str | os.PathLike, only: list[str] | None = None) -> list[Path]:
    """Return the chapter notebooks ``NN_*.ipynb`` of ``notebooks_dir`` in order.

    ``only`` restricts the list; each entry may be a stem (``01_data``), a file name
    (``01_data.ipynb``) or the two-digit number (``01``). An entry that matches no
    notebook raises ``ValueError`` listing the available ones.
    """
    notebooks = sorted(Path(notebooks_dir).glob(NOTEBOOK_PATTERN))
    if only is None:
        return notebooks
    chosen = []
    for want in only:
        want = Path(want).name.removesuffix(".ipynb")
        hits = [nb for nb in notebooks if nb.stem == want or nb.stem.split("_", 1)[0] == want]
        if not hits:
            names = ", ".join(nb.stem for nb in notebooks) or "none"
            raise ValueError(f"no notebook {want!r} in {notebooks_dir} (available: {names})")
        chosen.extend(nb for nb in hits if nb not in chosen)
    return sorted(chosen)


def _load_timings(path: Path, profile: str, seeds: list[int]) -> dict:
    """The timings file's content if it belongs to the same profile and seeds, else a new one."""
    try:
        old = json.loads(path.read_text())
        if old.get("profile") == profile and old.get("seeds", [old.get("seed")]) == seeds:
            return old
    except (OSError, ValueError):
        pass
    return {"profile": profile, "seed": seeds[0], "seeds": seeds, "notebooks": {}}


def _as_seeds(seeds) -> list[int]:
    """``seeds`` (one int or several) as a list of distinct non-negative ints, in the given order."""
    seeds = [int(seeds)] if isinstance(seeds, (int, str)) else [int(s) for s in seeds]
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct integers >= 0, at least one; got {seeds}")
    return seeds


#: The chapters that run once, over every seed's folder (the others run once per seed).
POOLING_CHAPTERS = ("06_evaluation", "07_attack_defence")


def execution_plan(notebooks: list[Path], seeds: list[int]) -> list[tuple[Path, int]]:
    """``(notebook, seed)`` in execution order: every chapter but :data:`POOLING_CHAPTERS` once per seed
    (all chapters of the first seed, then of the next), then the pooling chapters once with the first seed."""
    per_seed = [nb for nb in notebooks if nb.stem not in POOLING_CHAPTERS]
    pooled = [nb for nb in notebooks if nb.stem in POOLING_CHAPTERS]
    return [(nb, s) for s in seeds for nb in per_seed] + [(nb, seeds[0]) for nb in pooled]


def execute_notebooks(
    profile: str,
    seeds: int | list[int] = 0,
    *,
    root: str | os.PathLike = ".",
    notebooks_dir: str | os.PathLike | None = None,
    executed_dir: str | os.PathLike | None = None,
    run_dir: str | None = None,
    data_root: str | None = None,
    dataset: str = "embedded",
    only: list[str] | None = None,
    kernel_name: str = "python3",
    progress: bool | None = None,
) -> dict[str, float]:
    """Execute the chapter notebooks in order with papermill; return their wall times.

    Parameters
    ----------
    profile, seeds
        Injected into every notebook (see :mod:`mrilib.config`): chapters 1-5 run once per seed,
        each in its seed's folder ``<run_dir>/seed-<k>`` with ``seed = k``; chapters 6 and 7 run once, in
        the first seed's folder, with ``seeds`` = all of them (they pool them). One seed is one run.
    root
        Repository (book) root; the kernels run with it as working directory.
    notebooks_dir, executed_dir
        Sources (default ``<root>/notebooks``) and where the executed copies go
        (default ``<root>/book/executed``): the first seed's chapters and chapter 6; the other
        seeds' executed chapters go to their seed folder's ``executed/`` (not published).
    run_dir
        The run folder, default ``runs/<profile>`` for the embedded data and
        ``runs/<profile>-<dataset>`` for a real one (relative to ``root``), so that runs on
        different data never share models or metrics. What every seed shares (the dataset, the
        attacker's networks, the judge) lives there; see :mod:`mrilib.run.layout`.
    data_root, dataset
        A real dataset's location and format name; ``data_root=None`` means the
        embedded (simulated) dataset.
    only
        Execute only these notebooks (see :func:`find_notebooks`).
    kernel_name, progress
        Jupyter kernel, and whether papermill shows a per-cell progress bar (``None``: only
        when stderr is a terminal; the bar disappears when its chapter ends).

    Each executed copy is written to a hidden partial file first and moved into place
    with ``os.replace`` once the notebook succeeded, so ``book/executed/`` never holds
    a half-executed chapter. On failure the partial copy is kept as
    ``NN_name.failed.ipynb`` and :class:`NotebookError` is raised naming the notebook,
    the failing cell and the exception. A successful copy is prepared for the book
    (:func:`mrilib.book.publish.finalise_notebook`) before it is moved into place. One line
    per notebook and seed is printed (name, seed, wall time, ok / failed); wall times (seconds)
    are merged into ``<executed_dir>/timings.json`` after every notebook (``notebooks``: the
    published ones; ``by_seed``: every seed's); a run of every notebook (``only=None``) also
    records them as ``full_run``, which later ``only`` re-runs (whose cached steps take seconds)
    leave untouched.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    seeds = _as_seeds(seeds)
    root = Path(root).resolve()
    notebooks_dir = Path(notebooks_dir) if notebooks_dir else root / "notebooks"
    executed_dir = Path(executed_dir) if executed_dir else root / "book" / "executed"
    executed_dir.mkdir(parents=True, exist_ok=True)
    notebooks = find_notebooks(notebooks_dir, only)
    if not notebooks:
        raise NotebookError(f"no notebooks matching {NOTEBOOK_PATTERN} in {notebooks_dir}")

    run_root = run_dir or default_run_dir(profile, data_root, dataset)
    base = {
        "profile": profile,
        "seeds": seeds,
        "data_root": None if data_root is None else str(data_root),
        "dataset": dataset,
    }
    timings_path = executed_dir / "timings.json"
    timings = _load_timings(timings_path, profile, seeds)
    timings.update(
        dataset=dataset,
        data_root=base["data_root"],
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    )
    timings.setdefault("by_seed", {})
    data = "embedded data" if data_root is None else f"{dataset} data"
    plan = execution_plan(notebooks, seeds)
    print(f"Executing {len(notebooks)} notebook(s): profile {profile}, seed(s) {' '.join(map(str, seeds))}, {data}, "
          f"run directory {run_root}", flush=True)
    if progress is None:
        progress = sys.stderr.isatty()
    width = max(len(nb.stem) for nb in notebooks)
    seconds: dict[str, float] = {}
    ran: list[float] = []
    state_dir = executed_dir / ".widget-state"
    run = as_layout(root / run_root)
    with run.lock(), kernel_environment(state_dir), ipc_kernels() as engine_kwargs:
        stale = run.remove_stale_temporaries(older_than_s=0)  # the lock is ours: no other run is writing
        if stale:
            print(f"removed {len(stale)} temporary file(s) an interrupted run left in {run_root}", flush=True)
        shutil.rmtree(state_dir, ignore_errors=True)
        for i, (nb, seed) in enumerate(plan, 1):
            published = seed == seeds[0]
            seed_dir = f"{run_root}/{seed_folder(seed)}"
            out_dir = executed_dir if published else root / seed_dir / "executed"
            out_dir.mkdir(parents=True, exist_ok=True)
            final = out_dir / nb.name
            partial = out_dir / f".{nb.stem}.partial.ipynb"
            failed = out_dir / f"{nb.stem}.failed.ipynb"
            tag = f" seed {seed}" if len(seeds) > 1 else ""
            label = f"[{i}/{len(plan)}] {nb.stem:<{width}}{tag}"
            bar = {"desc": label, "leave": False, "dynamic_ncols": True} if progress else False
            start = time.perf_counter()
            try:
                pm.execute_notebook(
                    str(nb),
                    str(partial),
                    parameters=dict(base, seed=int(seed), run_dir=seed_dir),
                    kernel_name=kernel_name,
                    cwd=str(root),
                    progress_bar=bar,
                    log_output=False,
                    **engine_kwargs,
                )
            except BaseException as exc:
                elapsed = time.perf_counter() - start
                if partial.exists():
                    os.replace(partial, failed)
                if isinstance(exc, PapermillExecutionError):
                    detail = f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
                elif isinstance(exc, Exception):
                    detail = f"{type(exc).__name__}: {exc}"
                else:  # KeyboardInterrupt, SystemExit: keep the partial copy, re-raise
                    print(f"{label} {elapsed:7.1f} s  interrupted", flush=True)
                    raise
                print(f"{label} {elapsed:7.1f} s  failed", flush=True)
                where = f"; partly executed copy: {failed}" if failed.exists() else ""
                raise NotebookError(
                    f"notebook {nb.stem}{tag} failed after {elapsed:.1f} s ({detail}){where}"
                ) from exc
            elapsed = round(time.perf_counter() - start, 2)
            finalise_notebook(partial, root=root, state_dir=state_dir, data_root=data_root, published_as=final)
            os.replace(partial, final)
            failed.unlink(missing_ok=True)
            ran.append(elapsed)
            timings["by_seed"].setdefault(str(seed), {})[nb.stem] = elapsed
            if published:
                seconds[nb.stem] = elapsed
                timings["notebooks"][nb.stem] = elapsed
            timings["total_seconds"] = round(sum(sum(v.values()) for v in timings["by_seed"].values()), 2)
            write_json(timings_path, timings)
            print(f"{label} {elapsed:7.1f} s  ok", flush=True)
    total = sum(sum(v.values()) for v in timings["by_seed"].values())
    if only is None:  # every notebook in one go: the run a reader should quote (--only re-runs may hit caches)
        timings["full_run"] = dict(notebooks=dict(seconds), total_seconds=round(total, 2),
                                   by_seed={k: dict(v) for k, v in timings["by_seed"].items()},
                                   finished=time.strftime("%Y-%m-%d %H:%M:%S"), machine=timings["machine"])
        write_json(timings_path, timings)
    print(f"Executed {len(ran)} notebook run(s) in {sum(ran):.1f} s", flush=True)
    return seconds


def _jupyter_book_command() -> list[str]:
    """The ``jupyter-book`` executable of this environment (next to the interpreter)."""
    exe = Path(sys.executable).with_name("jupyter-book")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("jupyter-book")
    if found is None:
        raise BookBuildError("jupyter-book is not installed in this environment")
    return [found]


def build_book(
    root: str | os.PathLike = ".",
    *,
    build_dir: str | os.PathLike | None = None,
    warnings_as_errors: bool = True,
    all_pages: bool = True,
    quiet: bool = True,
) -> tuple[Path, list[str]]:
    """Build the HTML book of ``root`` with jupyter-book; return (html dir, warnings).

    The output goes to ``<build_dir>/_build/html`` (``build_dir`` defaults to
    ``root``). Notebooks are not executed (``execute_notebooks: "off"``): the book
    shows the executed copies :func:`execute_notebooks` wrote. With
    ``warnings_as_errors`` the build runs with ``-W --keep-going`` (every warning is
    reported, then the build fails). The warnings are printed at the end and returned;
    a failed build raises :class:`BookBuildError` listing them. ``all_pages`` rebuilds
    every page (``--all``) so that warnings of unchanged pages are reported again.
    jupyter-book's own output goes to ``<build_dir>/_build/jupyter-book.log``; it is also
    streamed to stdout unless ``quiet``.
    """
    root = Path(root).resolve()
    build_dir = Path(build_dir).resolve() if build_dir else root
    cmd = _jupyter_book_command() + ["build", str(root), "--path-output", str(build_dir)]
    if warnings_as_errors:
        cmd += ["-W", "--keep-going"]
    if all_pages:
        cmd += ["--all"]
    log_path = build_dir / "_build" / "jupyter-book.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"Building the HTML book (jupyter-book log: {_shown(log_path)}) …", flush=True)
    env = dict(os.environ, PYDEVD_DISABLE_FILE_VALIDATION="1")
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    warnings, lines = [], []
    assert proc.stdout is not None
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        for line in proc.stdout:
            lines.append(line)
            log.write(_ANSI.sub("", line))
            if "WARNING" in line or "ERROR" in line:
                warnings.append(_ANSI.sub("", line).rstrip())
            if not quiet:
                print(line, end="", flush=True)
    rc = proc.wait()
    elapsed = time.perf_counter() - start
    html = build_dir / "_build" / "html"
    if warnings:
        print(f"\n{len(warnings)} warning(s) in the book build:", *warnings, sep="\n  ")
    if rc != 0 or not (html / "index.html").exists():
        if warnings:
            detail = "warnings/errors (treated as errors):\n  " + "\n  ".join(warnings)
        else:
            detail = "last output:\n" + _ANSI.sub("", "".join(lines[-20:]))
        raise BookBuildError(f"jupyter-book build failed (exit {rc}) after {elapsed:.1f} s; {detail}")
    print(f"Book built in {elapsed:.1f} s: {_shown(html / 'index.html')}", flush=True)
    return html, warnings


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when below it (shorter terminal lines)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m mrilib.book``."""
    p = argparse.ArgumentParser(
        prog="python -m mrilib.book",
        description="Execute the book's notebooks with papermill, then build the HTML book.",
    )
    p.add_argument("--profile", default="cpu", help="run profile: smoke, cpu or gpu (default cpu)")
    p.add_argument("--seed", type=int, default=None, help="one seed (default 0); same as --seeds SEED")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="several seeds: chapters 1-5 run once per seed in runs/<profile>/seed-<k>, chapters 6-7 pool "
                        "them (e.g. --seeds 0 1 2)")
    p.add_argument("--data-root", default=None, help="directory of a real dataset (default: embedded data)")
    p.add_argument("--dataset", default="embedded", help="dataset format name (default embedded)")
    p.add_argument("--run-dir", default=None, help="run directory (default runs/<profile>, or runs/<profile>-<dataset> "
                                                          "with --data-root; relative to --root)")
    p.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="execute only these notebooks, e.g. 01_data 02")
    p.add_argument("--html-only", action="store_true", help="skip execution; only build the HTML book")
    p.add_argument("--no-html", action="store_true", help="only execute the notebooks")
    p.add_argument("--root", default=".", help="repository root holding _config.yml (default: current dir)")
    p.add_argument("--notebooks-dir", default=None, help="default <root>/notebooks")
    p.add_argument("--executed-dir", default=None,
                   help="default <root>/book/executed (the book shows that folder's copies; see _toc.yml)")
    p.add_argument("--build-dir", default=None, help="the book goes to <build-dir>/_build/html (default <root>)")
    p.add_argument("--allow-warnings", action="store_true", help="do not treat Sphinx warnings as errors")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="papermill's per-cell progress bar, --no-progress hides it (default: only when stderr "
                        "is a terminal)")
    p.add_argument("--verbose", action="store_true", help="also stream jupyter-book's output (always in its log)")
    return p


def _check_data_args(data_root: str | None, dataset: str) -> None:
    """Refuse, before anything runs, a dataset without its folder, a folder without its format, an unknown
    format or a folder that does not exist (``ValueError`` saying which)."""
    if data_root is None or not str(data_root).strip():
        if dataset not in ("", "embedded"):
            raise ValueError(f"--dataset {dataset} needs --data-root (the folder holding it); without it the book "
                             "uses the embedded data (e.g. `make book DATASET=m4raw DATA_ROOT=/data/m4raw`)")
        return
    if dataset in ("", "embedded"):
        raise ValueError(f"--data-root {data_root} needs --dataset FORMAT (e.g. m4raw, fastmri, skmtea, cmrxrecon, "
                         "brats)")
    parse_dataset_spec(dataset)  # ValueError naming the known formats
    if not Path(data_root).is_dir():
        raise ValueError(f"--data-root {data_root}: no such folder")


def study_note(dataset: str) -> str | None:
    """A note printed before a run on data that is not brain MRI: the study's lesions are brain lesions."""
    if dataset in ("", "embedded"):
        return None
    anatomy = dataset_anatomy(dataset)
    if anatomy == "brain":
        return None
    what = f"{anatomy} images" if anatomy else "brain and knee images (choose with e.g. fastmri:anatomy=brain)"
    return (f"note: {dataset} holds {what}; chapters 3-6 draw brain lesions (cysts, tumours) inside the imaged "
            "anatomy, so on this data they check the pipeline, not a finding about brain MRI")


def _cli_seeds(args) -> list[int]:
    """The seeds of the command line: ``--seeds``, else ``--seed``, else ``[0]``; ``ValueError`` for both at once."""
    if args.seeds is not None and args.seed is not None and [args.seed] != args.seeds:
        raise ValueError("give --seed or --seeds, not both")
    return _as_seeds(args.seeds if args.seeds is not None else [args.seed or 0])


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status (0 on success).

    Validates the profile and the data arguments (exit status 2), executes the notebooks (unless ``--html-only``), then
    builds the book (unless ``--no-html``). Failures print one clear message naming
    the failing notebook or the build's warnings and return 1.
    """
    args = _parser().parse_args(argv)
    root = Path(args.root).resolve()
    if not (root / "_config.yml").exists():
        print(f"error: {root} has no _config.yml; pass --root REPO_ROOT", file=sys.stderr)
        return 2
    try:
        get_profile(args.profile)
        _cli_seeds(args)
        if not args.html_only:
            _check_data_args(args.data_root, args.dataset)
            note = study_note(args.dataset) if args.data_root else None
            if note:
                print(note, flush=True)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        if not args.html_only:
            execute_notebooks(
                args.profile,
                _cli_seeds(args),
                root=root,
                notebooks_dir=args.notebooks_dir,
                executed_dir=args.executed_dir,
                run_dir=args.run_dir,
                data_root=args.data_root,
                dataset=args.dataset,
                only=args.only,
                progress=args.progress,
            )
        else:
            notebooks_dir = Path(args.notebooks_dir) if args.notebooks_dir else root / "notebooks"
            executed_dir = Path(args.executed_dir) if args.executed_dir else root / "book" / "executed"
            missing = [nb.stem for nb in find_notebooks(notebooks_dir) if not (executed_dir / nb.name).exists()]
            if missing:
                print(
                    f"warning: not executed yet (no copy in {executed_dir}): {', '.join(missing)}; "
                    "run `make book` (without --html-only) first",
                    file=sys.stderr,
                )
        if not args.no_html:
            build_book(root, build_dir=args.build_dir, warnings_as_errors=not args.allow_warnings,
                       quiet=not args.verbose)
    except (NotebookError, BookBuildError, RunLockedError, ValueError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    print(f"Done in {time.perf_counter() - start:.1f} s.")
    return 0

