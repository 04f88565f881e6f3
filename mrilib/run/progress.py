"""Progress bars that suit where the code runs.

Interactively (JupyterLab, a terminal) this is ``tqdm.auto``: a widget bar in a
notebook. In batch runs of the book (``MRILIB_BATCH`` set by ``mrilib.book.pipeline``),
widget bars would leave state-less widgets in the published HTML, so a plain text
bar is used instead, updated at most every few seconds; nested bars (``leave=False``)
are hidden there.
"""

from __future__ import annotations

import os

__all__ = ["progress", "BATCH_ENV"]

BATCH_ENV = "MRILIB_BATCH"


def progress(iterable=None, **kwargs):
    """A tqdm progress bar over ``iterable`` (same arguments as ``tqdm``)."""
    if os.environ.get(BATCH_ENV):
        from tqdm.std import tqdm

        if kwargs.get("leave") is False:  # nested bars would fill the published page
            kwargs["disable"] = True
        kwargs.setdefault("mininterval", 5.0)
        kwargs.setdefault("ascii", True)
    else:
        from tqdm.auto import tqdm
    return tqdm(iterable, **kwargs)
