"""Book-style attribution figures (2x2: patch | map, IDC negative over IDC positive) and an overview grid."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from idc.explain.methods import METHODS
from idc.viz.style import image_axis, save_figure_atomic, save_image_atomic, subplots

CLASS = {0: "IDC Negative", 1: "IDC Positive"}


def shown_map(method: str, gray: np.ndarray, lime_vis=None):
    """What the right-hand panel shows: LIME's boundary image, else the grey map (as the book)."""
    if method == "lime" and lime_vis is not None:
        return {"image": np.clip(lime_vis, 0, 1)}
    return {"image": gray, "cmap": "gray", "vmin": 0, "vmax": 1}


def map_title(method: str, rec) -> str:
    """The map panel's title names the class the map explains (`explained_class`, e.g. the prediction)
    and the model's confidence in it; the patch panel beside it shows the true label."""
    cls = int(rec["explained_class"]) if "explained_class" in rec else int(rec["target"])
    conf = rec["proba"] if cls == 1 else 1 - rec["proba"]
    return f"{METHODS[method].title} (explains: {CLASS[cls]})\nModel Confidence: {100 * conf:.1f}%"


def book_figure(method: str, index: pd.DataFrame, images: np.ndarray, gray: np.ndarray, pair, path: Path, lime_vis=None):
    """The book's 2x2 layout for one method; the map panel says which class was explained."""
    fig, axes = subplots(len(pair), 2, figsize=(10, 5 * len(pair)), squeeze=False)
    for row, i in enumerate(pair):
        rec = index.iloc[i]
        label = CLASS[int(rec["target"])]
        image_axis(axes[row, 0], images[i], f"Patch Image ({label})\nPatient Id: {int(rec['patient_id'])}")
        kw = shown_map(method, gray[i], None if lime_vis is None else lime_vis[i])
        image_axis(axes[row, 1], kw.pop("image"), map_title(method, rec), **kw)
        if "cmap" in kw and np.ptp(gray[i]) == 0:  # say so, rather than show an unexplained black square
            axes[row, 1].text(0.5, 0.5, "constant map:\nno relevance for this class\n(e.g. a CAM that ReLU zeroed)",
                              transform=axes[row, 1].transAxes, ha="center", va="center", color="white", fontsize=11)
    return save_figure_atomic(fig, path)


def overview_grid(methods, index: pd.DataFrame, images: np.ndarray, grays: dict, path: Path, lime_vis=None):
    """Rows: selected patches; columns: the patch, then each method's grey map."""
    n, cols = len(index), 1 + len(methods)
    fig, axes = subplots(n, cols, figsize=(1.6 * cols, 1.7 * n + 0.6), squeeze=False)
    for r in range(n):
        rec = index.iloc[r]
        image_axis(axes[r, 0], images[r], f"{rec['outcome'].upper()} p={rec['proba']:.2f}")
        axes[r, 0].title.set_fontsize(7)
        for c, m in enumerate(methods, start=1):
            kw = shown_map(m, grays[m][r], None if lime_vis is None else lime_vis[r])
            image_axis(axes[r, c], kw.pop("image"), METHODS[m].title if r == 0 else None, **kw)
            axes[r, c].title.set_fontsize(7)
    fig.subplots_adjust(wspace=0.05, hspace=0.3)
    return save_figure_atomic(fig, path, dpi=90)


def patch_png(gray: np.ndarray, path: Path):
    """One grey map as a small PNG (for browsing explain/<method>/)."""
    return save_image_atomic(gray, path, cmap="gray", vmin=0, vmax=1)
