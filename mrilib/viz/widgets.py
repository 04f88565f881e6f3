"""ipywidgets browsers that keep working in the static HTML book.

The browsers pre-render their images and switch between them with widgets linked in
the browser (``jslink``), so they need no running kernel: the published page, with
the widget state embedded in the executed notebook, is as interactive as JupyterLab.

When the notebooks run in batch (``mrilib.book.pipeline``), :func:`publish` also writes
the widgets' state to the folder named by ``MRILIB_WIDGET_STATE_DIR``; the pipeline
embeds it in the executed notebook's metadata, where jupyter-book finds it.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
from ipywidgets.embed import embed_data

__all__ = ["png_image", "image_stack", "slice_coil_browser", "comparison_browser", "publish", "STATE_DIR_ENV"]

STATE_DIR_ENV = "MRILIB_WIDGET_STATE_DIR"


def png_image(img: np.ndarray, cmap: str = "gray", vmin: float | None = None, vmax: float | None = None,
              width: int = 256) -> W.Image:
    """A PNG ``ipywidgets.Image`` of a 2-D array (shown ``width`` pixels wide)."""
    buf = io.BytesIO()
    plt.imsave(buf, np.asarray(img, dtype=float), cmap=cmap, vmin=vmin, vmax=vmax, format="png")
    return W.Image(value=buf.getvalue(), format="png", width=width)


def image_stack(images: list[W.Widget], selector: W.Widget, trait: str = "value") -> W.Stack:
    """A ``Stack`` showing ``images[selector.<trait>]``, linked in the browser."""
    stack = W.Stack(images, selected_index=0)
    W.jslink((selector, trait), (stack, "selected_index"))
    return stack


def slice_coil_browser(target: np.ndarray, coil_images: np.ndarray, kspace: np.ndarray,
                       max_slices: int = 8, max_coils: int = 4, width: int = 256) -> W.VBox:
    """Browse a volume: slice slider, coil slider, and a view (target | coil image | k-space).

    Args:
        target: RSS images ``(S, H, W)``.
        coil_images: complex coil images ``(S, C, H, W)``.
        kspace: complex k-space ``(S, C, H, W)``.
        max_slices, max_coils: caps on what is pre-rendered (keeps the page small).
    """
    s_n = min(len(target), max_slices)
    c_n = min(coil_images.shape[1], max_coils)
    slice_slider = W.IntSlider(0, 0, s_n - 1, description="slice")
    coil_slider = W.IntSlider(0, 0, c_n - 1, description="coil")
    view = W.ToggleButtons(options=["target (RSS)", "coil image |x_c|", "k-space log|k_c|"], description="view")
    vmax = float(np.percentile(target[:s_n], 99.5))
    cmax = float(np.percentile(np.abs(coil_images[:s_n, :c_n]), 99.5))
    logk = np.log10(np.abs(kspace[:s_n, :c_n]) + 1e-9)
    klo, khi = float(np.percentile(logk, 5)), float(logk.max())

    def per_coil(s, render):
        return image_stack([render(s, c) for c in range(c_n)], coil_slider)

    views = [
        image_stack([png_image(target[s], vmin=0, vmax=vmax, width=width) for s in range(s_n)], slice_slider),
        image_stack([per_coil(s, lambda s, c: png_image(np.abs(coil_images[s, c]), vmin=0, vmax=cmax, width=width))
                     for s in range(s_n)], slice_slider),
        image_stack([per_coil(s, lambda s, c: png_image(logk[s, c], cmap="magma", vmin=klo, vmax=khi, width=width))
                     for s in range(s_n)], slice_slider),
    ]
    return W.VBox([view, slice_slider, coil_slider, image_stack(views, view, "index")])


def publish(widget: W.Widget) -> W.Widget:
    """Return ``widget`` for display, saving the widget state for the static book.

    In batch runs (``MRILIB_WIDGET_STATE_DIR`` set by the pipeline) the state of all
    live widgets is written there as JSON; interactively this only returns ``widget``.
    """
    out_dir = os.environ.get(STATE_DIR_ENV)
    if out_dir:
        state = embed_data(views=[widget])["manager_state"]["state"]
        path = Path(out_dir) / f"{uuid.uuid4().hex}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state))
    return widget


def comparison_browser(panels: dict, titles: list[str] | None = None, max_slices: int = 6, width: int = 220) -> W.VBox:
    """Browse models × slices × views (reconstruction | error | null-space map), all in the browser.

    Args:
        panels: ``{model: {"recon": (N,h,w), "error": (N,h,w), "nullspace": (N,h,w)}}``
            (:func:`mrilib.evaluate.tables.qualitative_panels`).
        titles: a caption per slice.
    """
    models = list(panels)
    views = [v for v in ("recon", "error", "nullspace") if v in panels[models[0]]]
    n = min(len(panels[models[0]][views[0]]), max_slices)
    model_sel = W.Dropdown(options=models, description="model")
    slice_sel = W.IntSlider(0, 0, n - 1, description="slice")
    view_sel = W.ToggleButtons(options=["reconstruction", "|error|", "null-space map"][: len(views)], description="view")
    ranges = {v: float(np.percentile(np.concatenate([panels[m][v][:n].ravel() for m in models]), 99.5)) or 1.0
              for v in views}
    cmaps = {"recon": "gray", "error": "inferno", "nullspace": "magma"}

    def views_of(m, s):
        return image_stack([png_image(panels[m][v][s], cmap=cmaps[v], vmin=0, vmax=ranges[v], width=width)
                            for v in views], view_sel, "index")

    per_model = [image_stack([views_of(m, s) for s in range(n)], slice_sel) for m in models]
    caption = W.HTML("<br>".join(f"slice {i}: {t}" for i, t in enumerate((titles or [])[:n])))
    return W.VBox([W.HBox([model_sel, slice_sel]), view_sel, image_stack(per_model, model_sel, "index"), caption])
