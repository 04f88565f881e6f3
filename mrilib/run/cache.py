"""One way to identify what a step computed, and one cached step.

Every artefact of a run is stored with its *identity*: the canonical JSON of what it
was computed from (configuration, data, the weights of the models it used). A later
call with the same identity loads the artefact; another identity recomputes it (or,
for trainings, raises: a checkpoint of another configuration is never silently
replaced). Three helpers make identities, and every step uses them:

- :func:`canonical` - what an object reads back as from JSON (tuples become lists);
- :func:`data_identity` - the content of split folders (k-space, target, ``max``);
- :func:`weights_digest` - a model's weights.

:func:`cached_step` is the step itself: ``identity -> load``, or ``compute -> save
atomically -> load``. How an artefact stores its identity is its :class:`Codec`
(:data:`JSON`, :data:`NPZ`, :data:`TORCH`).

Damaged files: a cached artefact that cannot be read (truncated, or a :data:`TORCH` file
whose stored :func:`content_digest` no longer matches) is a cache miss - it is computed
again, with a :class:`CacheWarning` naming the file. Weights stored beside a record
(an unlearnt ``model.pt``) are checked with :func:`read_weights` against the
:func:`weights_digest` the record keeps (:func:`recorded_digest`). A write that fails
raises :class:`mrilib.run.io.ArtefactWriteError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import torch

from mrilib.run.io import atomic_path, is_hidden_or_temporary, read_json, to_jsonable, write_json

__all__ = [
    "canonical",
    "digest",
    "data_identity",
    "volume_digest",
    "weights_digest",
    "content_digest",
    "identity_diff",
    "Codec",
    "JSON",
    "NPZ",
    "TORCH",
    "cached_step",
    "CacheError",
    "CacheWarning",
    "IdentityMismatchError",
    "WEIGHTS_DIGEST",
    "recorded_digest",
    "read_weights",
    "weights_match",
]

#: The key under which a record (a JSON artefact) keeps the :func:`weights_digest` of the weights stored beside it.
WEIGHTS_DIGEST = "weights_digest"

#: The key under which a :data:`TORCH` artefact keeps the :func:`content_digest` of its value.
_CONTENT_DIGEST = "content_digest"


class CacheError(RuntimeError):
    """A cached artefact exists but cannot be read; the message names the file."""


class CacheWarning(UserWarning):
    """A cached artefact was unreadable or damaged and is computed again; the message names the file."""


class IdentityMismatchError(CacheError):
    """A cached artefact was computed from something else, and the step refuses to replace it."""


def canonical(obj):
    """``obj`` as it reads back from JSON: tuples become lists, keys strings, numpy scalars numbers."""
    return json.loads(json.dumps(obj, sort_keys=True, default=to_jsonable))


def digest(obj, size: int = 16) -> str:
    """A hex BLAKE2b digest of ``obj``'s canonical JSON."""
    text = json.dumps(canonical(obj), sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


def weights_digest(model: torch.nn.Module | dict, size: int = 16) -> str:
    """A hex BLAKE2b digest of a model's weights (or of a state dict): names, shapes, dtypes and values."""
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    h = hashlib.blake2b(digest_size=size)
    for k, v in sorted(state.items()):
        h.update(k.encode())
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(v).encode())
    return h.hexdigest()


def content_digest(obj, size: int = 16) -> str:
    """A hex BLAKE2b digest of a nested value as ``torch.save`` stores it: dicts, lists, tuples, tensors
    (shape, dtype, bytes), numpy arrays and scalars (by ``repr``, which round-trips floats exactly)."""
    h = hashlib.blake2b(digest_size=size)

    def feed(v) -> None:
        if isinstance(v, dict):
            h.update(b"{")
            for k, x in sorted(v.items(), key=lambda kv: repr(kv[0])):
                h.update(repr(k).encode() + b":")
                feed(x)
            h.update(b"}")
        elif isinstance(v, (list, tuple)):
            h.update(b"[" if isinstance(v, list) else b"(")
            for x in v:
                feed(x)
                h.update(b",")
            h.update(b"]")
        elif isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(f"T{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(v, np.ndarray):
            a = np.ascontiguousarray(v)
            h.update(f"A{a.shape}{a.dtype}".encode())
            h.update(a.tobytes())
        else:
            h.update(f"{type(v).__name__}:{v!r};".encode())

    feed(obj)
    return h.hexdigest()


_VOLUME_DIGESTS: dict[tuple, str] = {}


def volume_digest(path: str | os.PathLike) -> str:
    """Digest of what a fastMRI-layout volume holds for training: ``kspace``, ``reconstruction_rss``, ``max``.

    Memoised per process by (path, size, modification time).
    """
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VOLUME_DIGESTS:
        h = hashlib.blake2b(digest_size=16)
        try:
            with h5py.File(path, "r") as f:
                for name in ("kspace", "reconstruction_rss"):
                    if name in f:
                        ds = f[name]
                        h.update(f"{name}{ds.shape}{ds.dtype}".encode())
                        for i in range(ds.shape[0]):
                            h.update(np.ascontiguousarray(ds[i]).tobytes())
                h.update(repr(float(f.attrs.get("max", float("nan")))).encode())
        except OSError as exc:
            raise CacheError(f"{path}: cannot read the volume to identify it ({exc})") from exc
        _VOLUME_DIGESTS[key] = h.hexdigest()
    return _VOLUME_DIGESTS[key]


def data_identity(source) -> dict:
    """The identity of a data source.

    For a split folder (or a list of them): the number of volumes and a digest over their
    names and contents (:func:`volume_digest`), so a poisoned copy with the same file names
    has another identity. For a ``torch.utils.data.Dataset``: its ``identity`` attribute
    (which the dataset's author must provide). ``None``: ``{"kind": "none"}``.
    """
    if source is None:
        return {"kind": "none"}
    if isinstance(source, torch.utils.data.Dataset):
        ident = getattr(source, "identity", None)
        if ident is None:
            raise ValueError(f"{type(source).__name__} has no 'identity' attribute: give the dataset one (or pass "
                             "data_id=...) so that an artefact can tell which data it was computed from")
        return canonical({"kind": "dataset", "identity": ident})
    dirs = [Path(source)] if isinstance(source, (str, os.PathLike)) else [Path(s) for s in source]
    h = hashlib.blake2b(digest_size=16)
    n = 0
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"no data folder {d}")
        for f in sorted(d.glob("*.h5")):
            if is_hidden_or_temporary(f):  # what an interrupted write left, not a volume
                continue
            h.update(f.name.encode())
            h.update(volume_digest(f).encode())
            n += 1
    return {"kind": "folders", "volumes": n, "digest": h.hexdigest()}


def identity_diff(stored, wanted, prefix: str = "") -> list[str]:
    """Human-readable differences between a stored and a wanted identity (nested dicts)."""
    out = []
    if isinstance(stored, dict) and isinstance(wanted, dict):
        for k in sorted(set(stored) | set(wanted)):
            if k not in stored:
                out.append(f"{prefix}{k}: missing in the stored artefact, asked {_short(wanted[k])}")
            elif k not in wanted:
                out.append(f"{prefix}{k}: stored {_short(stored[k])}, not in the request")
            else:
                out += identity_diff(stored[k], wanted[k], f"{prefix}{k}.")
    elif stored != wanted:
        out.append(f"{prefix.rstrip('.')}: stored {_short(stored)} != asked {_short(wanted)}")
    return out


def _short(v) -> str:
    s = repr(v)
    return s if len(s) < 80 else s[:77] + "..."


@dataclass(frozen=True)
class Codec:
    """How one kind of artefact is written, read, and where it keeps its identity.

    ``save(value, identity, path)`` writes ``path`` (the caller makes it atomic);
    ``load(path)`` reads it back; ``identity(path)`` returns the stored identity (or ``None``).
    """

    save: Callable[[Any, Any, Path], None]
    load: Callable[[Path], Any]
    identity: Callable[[Path], Any]


def _json_save(value: dict, identity, path: Path) -> None:
    if not isinstance(value, dict):
        raise TypeError(f"a JSON artefact is a dict, got {type(value).__name__}")
    write_json(path, {**value, "identity": identity})


#: A JSON object with an ``"identity"`` key.
JSON = Codec(save=_json_save, load=read_json, identity=lambda p: read_json(p).get("identity"))


def _npz_save(value: dict, identity, path: Path) -> None:
    with open(path, "wb") as fh:
        np.savez_compressed(fh, identity=np.array(json.dumps(identity, sort_keys=True)), **value)


def _npz_load(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k != "identity"}


def _npz_identity(path: Path):
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["identity"])) if "identity" in z.files else None


#: Named numpy arrays (``np.savez_compressed``) with the identity as a JSON string array.
NPZ = Codec(save=_npz_save, load=_npz_load, identity=_npz_identity)


def _torch_save(value: dict, identity, path: Path) -> None:
    entry = {**value, "identity": identity}
    torch.save({**entry, _CONTENT_DIGEST: content_digest(entry)}, path)


def _torch_load(path: Path) -> dict:
    entry = torch.load(path, map_location="cpu", weights_only=True)  # host: cached values are device-free
    if not isinstance(entry, dict):
        raise CacheError(f"{path}: not a cached artefact (a {type(entry).__name__}, not a dict)")
    stored = entry.pop(_CONTENT_DIGEST, None)  # entries written before digests were kept have none
    if stored is not None and content_digest(entry) != stored:
        raise CacheError(f"{path}: content does not match its stored digest (the file was damaged after it was "
                         "written)")
    return entry


#: A ``torch.save``d dict (tensors, numbers, strings, lists) with an ``"identity"`` key and the
#: :func:`content_digest` of both (checked on every load), loaded with ``weights_only=True``.
TORCH = Codec(save=_torch_save, load=_torch_load, identity=lambda p: _torch_load(p).get("identity"))


def recorded_digest(record: str | os.PathLike) -> str | None:
    """The :data:`WEIGHTS_DIGEST` a JSON record keeps for the weights stored beside it; ``None`` when the
    record is missing, unreadable or older than digests (then there is nothing to check)."""
    try:
        value = read_json(record)
    except (OSError, ValueError):
        return None
    return value.get(WEIGHTS_DIGEST) if isinstance(value, dict) else None


def read_weights(path: str | os.PathLike, digest: str | None = None, *, fix: str = "delete it to compute it again"
                 ) -> dict:
    """A state dict saved with ``torch.save``, read with ``weights_only=True`` on CPU and checked.

    Args:
        path: the weights file.
        digest: the :func:`weights_digest` recorded when the weights were written (``None``: nothing to check).
        fix: what the user should do, appended to the error.

    Raises:
        CacheError: naming ``path`` and ``fix`` when the file is missing, unreadable (truncated), not a
            state dict, or its weights do not match ``digest`` (a damaged file).
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # host: callers move it
    except Exception as exc:  # noqa: BLE001 - any failure to read means a missing or damaged file
        raise CacheError(f"{path}: cannot read the weights ({type(exc).__name__}: {exc}); {fix}") from None
    if not isinstance(state, dict):
        raise CacheError(f"{path}: not a state dict (a {type(state).__name__}); {fix}")
    if digest is not None and weights_digest(state) != digest:
        raise CacheError(f"{path}: the weights do not match the digest recorded when they were written "
                         f"({digest}): the file was damaged; {fix}")
    return state


def weights_match(path: str | os.PathLike, digest: str | None = None) -> bool:
    """Whether the weights at ``path`` exist, read, and match ``digest`` (see :func:`read_weights`).

    A file that exists but fails the check gives ``False`` with a :class:`CacheWarning` naming it,
    so a cached step recomputes it.
    """
    path = Path(path)
    if not path.is_file():
        return False
    try:
        read_weights(path, digest)
    except CacheError as exc:
        warnings.warn(f"{exc}; computing it again", CacheWarning, stacklevel=2)
        return False
    return True


def cached_step(path: str | os.PathLike, identity, compute: Callable[[], Any], codec: Codec = JSON, *,
                on_mismatch: str = "recompute", reuse: bool = True) -> Any:
    """Load the artefact at ``path`` if it was computed from ``identity``; else compute, save, load.

    Args:
        path: the artefact's file.
        identity: what the artefact is computed from (made :func:`canonical`).
        compute: ``() -> value``, called only when the artefact must be (re)made.
        codec: how the artefact is stored (:data:`JSON`, :data:`NPZ`, :data:`TORCH`).
        on_mismatch: ``"recompute"`` replaces an artefact of another identity; ``"raise"``
            raises :class:`IdentityMismatchError` listing the differences.
        reuse: ``False`` always recomputes.

    The value is written atomically (a temporary file, then a rename), so an interrupted
    step leaves the old artefact or none; the returned value is what :meth:`Codec.load`
    reads back, so a first run and a cached run return the same thing. An artefact that
    exists but cannot be read (truncated, damaged: a :data:`TORCH` digest that does not
    match) is a miss: it is computed again, with a :class:`CacheWarning` naming the file,
    whatever ``on_mismatch`` says (nothing in it can be kept). A failed write raises
    :class:`mrilib.run.io.ArtefactWriteError` naming the file; a value that cannot be read
    back right after it was written raises :class:`CacheError` naming it.
    """
    if on_mismatch not in ("recompute", "raise"):
        raise ValueError(f"on_mismatch must be 'recompute' or 'raise', got {on_mismatch!r}")
    path = Path(path)
    identity = canonical(identity)
    if reuse and path.is_file():
        readable = True
        try:
            stored = codec.identity(path)
            if stored == identity:
                return codec.load(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a miss, reported with its name
            readable = False
            warnings.warn(f"{path}: the cached artefact cannot be read ({type(exc).__name__}: {exc}); "
                          "computing it again", CacheWarning, stacklevel=2)
        if readable and on_mismatch == "raise":
            diff = "\n  ".join(identity_diff(stored, identity)) or "(no stored identity)"
            raise IdentityMismatchError(f"{path} was computed from something else:\n  {diff}\n"
                                        f"delete {path} to recompute it")
    value = compute()
    with atomic_path(path) as tmp:
        codec.save(value, identity, tmp)
    try:
        return codec.load(path)
    except Exception as exc:  # noqa: BLE001 - reported with the file's name
        raise CacheError(f"{path}: cannot read back the artefact just written ({type(exc).__name__}: {exc}); "
                         "check the disk, delete the file and run again") from exc
