"""How the book's notebook kernels are started: their environment and their sockets.

- :func:`kernel_environment`: the variables the kernels inherit (the inline matplotlib backend,
  plain-text progress bars, where widget state is saved for the static book);
- :func:`ipc_kernels`: kernels on IPC sockets in a private directory, so ipykernel does not warn about
  unencrypted TCP on every start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from mrilib.run.progress import BATCH_ENV
from mrilib.viz.widgets import STATE_DIR_ENV

__all__ = ["INLINE_BACKEND", "kernel_environment", "ipc_kernels"]

#: matplotlib backend the kernels must use so that figures land in the notebooks.
#: ``make`` exports ``MPLBACKEND=Agg`` for scripts; ipykernel keeps an inherited value,
#: which would silently drop every ``plt.show()`` figure from the executed notebooks.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"

@contextlib.contextmanager
def kernel_environment(widget_state_dir: Path):
    """Temporarily set the environment variables the notebook kernels inherit.

    Besides the inline matplotlib backend, ``MRILIB_BATCH`` makes progress bars plain
    text (see :mod:`mrilib.run.progress`) and ``MRILIB_WIDGET_STATE_DIR`` tells
    :func:`mrilib.viz.widgets.publish` where to save widget state for the static book.
    """
    wanted = {"MPLBACKEND": INLINE_BACKEND, BATCH_ENV: "1", STATE_DIR_ENV: str(widget_state_dir)}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def ipc_kernels():
    """papermill keyword arguments that start kernels on IPC sockets in a private directory.

    Over TCP, ipykernel warns on every start that the channel is unencrypted; IPC (Unix
    sockets) needs no network and no warning. The sockets go to a fresh temporary
    directory (relative ones would land in the kernel's working directory, the repository).
    On Windows, which has no IPC transport in ZeroMQ, the default TCP is kept.
    """
    if os.name == "nt":
        yield {}
        return
    from traitlets.config import Config

    base = tempfile.gettempdir()
    if len(base) > 60 and os.path.isdir("/tmp"):  # a Unix socket path has at most ~100 characters
        base = "/tmp"
    sockets = tempfile.mkdtemp(prefix="mrilib-kernel-", dir=base)
    try:
        yield {"config": Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(sockets, "k")}})}
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
