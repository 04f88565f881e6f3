"""Publishing an executed notebook: what the book shows of a papermill run.

:func:`finalise_notebook` rewrites an executed copy before :mod:`mrilib.book.pipeline`
moves it into ``book/executed/``:

- the widget state the kernels saved goes into the notebook metadata, where jupyter-book
  (myst-nb) finds it (:func:`embed_widget_state`);
- papermill's ``injected-parameters`` cell is tagged ``remove-cell``, so the page shows
  the chapter's own ``parameters`` cell only (:func:`hide_injected_parameters`);
- adjacent stream outputs are merged and carriage returns applied, so a text progress bar
  shows its last line, not one line per update (:func:`coalesce_streams`);
- machine paths in outputs (the repository, the Python environment, the home directory,
  a real dataset's folder) become relative paths or stand-ins (:func:`scrub_paths`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from pathlib import Path

__all__ = [
    "INJECTED_TAG",
    "REMOVE_TAG",
    "coalesce_streams",
    "embed_widget_state",
    "finalise_notebook",
    "hide_injected_parameters",
    "path_replacements",
    "scrub_paths",
]

#: Tag papermill gives the cell it injects, and the myst-nb tag that leaves a cell out of the page.
INJECTED_TAG = "injected-parameters"
REMOVE_TAG = "remove-cell"

#: Output MIME types that hold base64 data, never text worth scrubbing.
_BINARY_MIME = ("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf")


def _embed_widget_state(nb, state_dir: Path) -> int:
    """Move the widget state files of ``state_dir`` into the metadata of the notebook ``nb``."""
    state: dict = {}
    for f in sorted(state_dir.glob("*.json")):
        state.update(json.loads(f.read_text()))
        f.unlink()
    if not state:
        return 0
    nb.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {"version_major": 2, "version_minor": 0, "state": state}
    }
    return len(state)


def embed_widget_state(notebook: Path, state_dir: Path) -> int:
    """Move the widget state files of ``state_dir`` into ``notebook``'s metadata.

    jupyter-book (myst-nb) renders widget views from the notebook-level metadata
    ``widgets`` -> ``application/vnd.jupyter.widget-state+json``, which papermill does
    not write. Returns the number of widget models embedded.
    """
    import nbformat  # here, not at the top: importing it (jsonschema) takes seconds

    nb = nbformat.read(notebook, as_version=4)
    n = _embed_widget_state(nb, Path(state_dir))
    if n:
        nbformat.write(nb, notebook)
    return n


def hide_injected_parameters(nb, tag: str = REMOVE_TAG) -> int:
    """Tag papermill's ``injected-parameters`` cell(s) of ``nb`` with ``tag`` (in place).

    myst-nb leaves ``remove-cell`` cells out of the page: the reader sees the chapter's own
    ``parameters`` cell, not papermill's machine-generated override. Returns the number of
    cells tagged now (0 when there is none or it is tagged already).
    """
    n = 0
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if INJECTED_TAG in tags and tag not in tags:
            cell.metadata["tags"] = [*tags, tag]
            n += 1
    return n


def path_replacements(root: str | os.PathLike, data_root: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """The machine paths :func:`scrub_paths` replaces, longest first, with their stand-ins.

    - the book root and the repository the imported ``mrilib`` comes from: removed, so
      ``/home/me/mri/runs/cpu`` reads ``runs/cpu`` (the run's own relative path) and a
      warning from ``/home/me/mri/mrilib/viz/unlearn.py`` reads ``mrilib/viz/unlearn.py``;
    - a real dataset's ``data_root``: ``<data_root>``;
    - the Python environment outside those (``sys.prefix``, ``sys.base_prefix``):
      ``<python>``; the home directory: ``~``.
    """
    repo = Path(__file__).resolve().parents[2]
    pairs: dict[str, str] = {}
    for path, stand_in in (
        (Path.home(), "~"),
        (sys.base_prefix, "<python>"),
        (sys.prefix, "<python>"),
        (data_root, "<data_root>"),
        (repo, ""),
        (root, ""),
    ):
        if path is None:
            continue
        for variant in {os.path.abspath(path), os.path.realpath(path)}:
            if len(Path(variant).parts) > 1:  # never the file-system root itself
                pairs[variant] = stand_in
    return sorted(pairs.items(), key=lambda kv: len(kv[0]), reverse=True)


def _path_pattern(replacements: list[tuple[str, str]]) -> tuple[re.Pattern, dict[str, str]]:
    """One regex matching any of the paths as a whole path component (``/a/b`` not in ``/a/bc``)."""
    alternatives = "|".join(re.escape(path) for path, _ in replacements)
    return re.compile(rf"(?:{alternatives})(?![\w.\-])(/)?"), dict(replacements)


def _scrub_text(text: str, pattern: re.Pattern, stand_ins: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        path = m.group(0).removesuffix("/") if m.group(1) else m.group(0)
        stand_in = stand_ins[path]
        if stand_in == "":  # the root itself: "root/x" -> "x", "root" -> "."
            return "" if m.group(1) else "."
        return stand_in + (m.group(1) or "")

    return pattern.sub(sub, text)


def _scrub_value(value, pattern: re.Pattern, stand_ins: dict[str, str]):
    """``value`` (a str, or lists/dicts of them) with every machine path replaced."""
    if isinstance(value, str):
        return _scrub_text(value, pattern, stand_ins)
    if isinstance(value, list):
        return [_scrub_value(v, pattern, stand_ins) for v in value]
    if isinstance(value, dict):
        for k in value:
            value[k] = _scrub_value(value[k], pattern, stand_ins)
        return value
    return value


def scrub_paths(nb, replacements: list[tuple[str, str]]) -> int:
    """Replace machine paths in the outputs of ``nb`` (in place); return how many outputs changed.

    ``replacements`` is a list of ``(absolute path, stand-in)`` as :func:`path_replacements`
    returns; a stand-in ``""`` makes paths below it relative (``root/runs/x`` -> ``runs/x``,
    ``root`` alone -> ``.``). Text outputs (streams, errors, every text MIME type of rich
    outputs, SVG) and the embedded widget state are scrubbed; images and cell sources are not.
    """
    if not replacements:
        return 0
    pattern, stand_ins = _path_pattern(replacements)
    changed = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            before = json.dumps(out, sort_keys=True)
            for key in ("text", "evalue", "traceback"):
                if key in out:
                    out[key] = _scrub_value(out[key], pattern, stand_ins)
            for mime, value in out.get("data", {}).items():
                if not mime.startswith(_BINARY_MIME):
                    out["data"][mime] = _scrub_value(value, pattern, stand_ins)
            changed += json.dumps(out, sort_keys=True) != before
    if "widgets" in nb.metadata:
        _scrub_value(nb.metadata["widgets"], pattern, stand_ins)
    return changed


_CARRIAGE_RETURN = re.compile(r"[^\n]*\r(?!\n)")


def coalesce_streams(nb) -> int:
    """Merge adjacent stream outputs of the same name and apply carriage returns (in place).

    What a notebook front end shows: a text progress bar, written as one output per update
    (``\r0 %``, ``\r50 %``, ``\r100 %``), becomes its final line instead of one line per
    update on the page. Outputs are never reordered. Returns the number of outputs removed.
    """
    removed = 0
    for cell in nb.cells:
        outputs = cell.get("outputs")
        if not outputs:
            continue
        merged = []
        for out in outputs:
            prev = merged[-1] if merged else None
            if (out.get("output_type") == "stream" and prev is not None and prev.get("output_type") == "stream"
                    and prev.get("name") == out.get("name")):
                prev["text"] += out["text"]
                removed += 1
            else:
                merged.append(out)
        for out in merged:
            if out.get("output_type") == "stream" and "\r" in out["text"]:
                out["text"] = _CARRIAGE_RETURN.sub("", out["text"])
        cell["outputs"] = merged
    return removed


def finalise_notebook(
    path: str | os.PathLike,
    *,
    root: str | os.PathLike,
    state_dir: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    published_as: str | os.PathLike | None = None,
) -> None:
    """Prepare the executed notebook at ``path`` for the book (rewritten in place).

    Embeds the widget state of ``state_dir`` (:func:`embed_widget_state`), hides papermill's
    injected-parameters cell (:func:`hide_injected_parameters`), merges the stream updates of
    text progress bars (:func:`coalesce_streams`), makes machine paths in the outputs
    relative (:func:`scrub_paths` with :func:`path_replacements`) and records
    papermill's input and output paths relative to ``root`` (``published_as`` is the final
    location, since ``path`` is the hidden partial copy).
    """
    import nbformat

    path, root = Path(path), Path(root)
    nb = nbformat.read(path, as_version=4)
    if state_dir is not None:
        _embed_widget_state(nb, Path(state_dir))
    hide_injected_parameters(nb)
    coalesce_streams(nb)
    scrub_paths(nb, path_replacements(root, data_root))
    meta = nb.metadata.get("papermill")
    if meta is not None:
        final = Path(published_as) if published_as is not None else path
        for key, value in (("input_path", meta.get("input_path")), ("output_path", str(final))):
            if value:
                with contextlib.suppress(ValueError):
                    value = os.path.relpath(Path(value).resolve(), root.resolve())
                meta[key] = value
    nbformat.write(nb, path)
