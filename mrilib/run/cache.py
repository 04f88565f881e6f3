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
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import torch

from mrilib.run.io import atomic_path, read_json, to_jsonable, write_json

__all__ = [
    "canonical",
    "digest",
    "data_identity",
    "volume_digest",
    "weights_digest",
    "identity_diff",
    "Codec",
    "JSON",
    "NPZ",
    "TORCH",
    "cached_step",
    "CacheError",
    "IdentityMismatchError",
]


class CacheError(RuntimeError):
    """A cached artefact exists but cannot be read; the message names the file."""


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
    torch.save({**value, "identity": identity}, path)


def _torch_load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


#: A ``torch.save``d dict (tensors, numbers, strings, lists) with an ``"identity"`` key, loaded with
#: ``weights_only=True``.
TORCH = Codec(save=_torch_save, load=_torch_load, identity=lambda p: _torch_load(p).get("identity"))


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
    exists but cannot be read raises :class:`CacheError` naming the file.
    """
    if on_mismatch not in ("recompute", "raise"):
        raise ValueError(f"on_mismatch must be 'recompute' or 'raise', got {on_mismatch!r}")
    path = Path(path)
    identity = canonical(identity)
    if reuse and path.is_file():
        try:
            stored = codec.identity(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is reported with its name
            raise CacheError(f"{path}: cannot read the cached artefact ({type(exc).__name__}: {exc}); "
                             "delete it to recompute") from exc
        if stored == identity:
            return codec.load(path)
        if on_mismatch == "raise":
            diff = "\n  ".join(identity_diff(stored, identity)) or "(no stored identity)"
            raise IdentityMismatchError(f"{path} was computed from something else:\n  {diff}\n"
                                        f"delete {path} to recompute it")
    value = compute()
    with atomic_path(path) as tmp:
        codec.save(value, identity, tmp)
    return codec.load(path)
