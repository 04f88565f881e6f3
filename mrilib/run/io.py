"""Atomic writes and small file helpers.

Every artefact of the book (HDF5 volumes, JSON manifests, checkpoints) is written to
a temporary file beside its destination and renamed into place, so an interrupted
run never leaves a half-written file that a later run would trust. A write that fails
(a full disk, no permission) raises :class:`ArtefactWriteError` naming the file; a run
killed mid-write leaves a hidden temporary ``.<name>.<random>.tmp``, which readers skip
(:func:`is_hidden_or_temporary`) and the book removes at its next start
(:meth:`mrilib.run.layout.RunLayout.remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["atomic_path", "write_json", "read_json", "to_jsonable", "is_hidden_or_temporary", "ArtefactWriteError",
           "TEMP_SUFFIX"]

#: The suffix of :func:`atomic_path`'s temporary files (whose names also start with ``"."``).
TEMP_SUFFIX = ".tmp"

#: Messages of the errors ``torch.save`` raises when a write fails (e.g. a full disk).
_TORCH_WRITE_FAILURES = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")

#: ``errno`` values of a failed write (full disk or quota, read-only file system, permissions, I/O error).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}


class ArtefactWriteError(OSError):
    """An artefact could not be written (full disk, permissions); the message names the file and the fix."""


def is_hidden_or_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path``'s name is hidden (starts with ``"."``) or temporary (ends with ``".tmp"``).

    Such files are never artefacts: they are what an interrupted :func:`atomic_path` leaves,
    or a file system's own (``.DS_Store``, ``._name.h5``), and readers of data folders skip them.
    """
    name = Path(path).name
    return name.startswith(".") or name.endswith(TEMP_SUFFIX)


def _write_failure(path: Path, err: BaseException) -> ArtefactWriteError:
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free there"
    except OSError:
        free = "free space unknown"
    msg = (f"{path}: could not be written ({type(err).__name__}: {err}; {free}); the previous version, if any, "
           "is unchanged. Free disk space (or fix the folder's permissions) and run again")
    code = getattr(err, "errno", None)
    return ArtefactWriteError(code, msg) if code else ArtefactWriteError(msg)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary file is removed if the block raises, so ``path`` either keeps its
    old content or gets the complete new one. An ``OSError`` in the block (or a
    ``torch.save`` write failure) is re-raised as :class:`ArtefactWriteError` naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as err:
        raise _write_failure(path, err) from err
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give artefacts the usual permissions
    tmp = Path(tmp)
    try:
        try:
            yield tmp
            os.replace(tmp, path)
        except ArtefactWriteError:
            raise
        except OSError as err:
            if err.errno not in _WRITE_ERRNOS:
                raise
            raise _write_failure(path, err) from err
        except RuntimeError as err:
            if any(m in str(err) for m in _TORCH_WRITE_FAILURES):
                raise _write_failure(path, err) from err
            raise
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=to_jsonable))
    return Path(path)


def read_json(path: str | os.PathLike):
    """Read a JSON file written by :func:`write_json`."""
    return json.loads(Path(path).read_text())


def to_jsonable(obj):
    """The JSON form of numpy scalars/arrays and paths (``json.dumps``'s ``default``)."""

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
