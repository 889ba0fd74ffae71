"""One look for every figure, and the one place that imports matplotlib: the book's white-grid style,
its blue/orange class colours, `subplots`, colour maps and the atomic figure writer."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: stages write PNGs, they never open windows
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import colormaps  # noqa: E402

from idc.utils import atomic_path  # noqa: E402

CLASS_COLORS = ("#2150e0", "#e07e21")  # IDC negative (blue), IDC positive (orange), as the book's bars
CLASS_NAMES = ("IDC -", "IDC +")


def book_style() -> None:
    plt.style.use("seaborn-v0_8-whitegrid")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 120, "axes.titlesize": 12, "axes.edgecolor": "#cccccc"})


def subplots(*args, **kwargs):
    book_style()
    return plt.subplots(*args, **kwargs)


def image_axis(ax, image, title: str | None = None, **kwargs):
    ax.imshow(image, **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if title:
        ax.set_title(title)
    return ax


def colormap(name: str):
    """A matplotlib colour map by name (e.g. "jet": the book's overlay colours)."""
    return colormaps[name]


def colorbar(fig, ax, cmap: str, vmin: float, vmax: float, label: str):
    """A colour bar for `cmap` over [vmin, vmax] beside `ax` (for images drawn already coloured, e.g. blended)."""
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(vmin, vmax), cmap=colormaps[cmap])
    return fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.04, label=label)


def save_figure_atomic(fig, path: str | os.PathLike, dpi: int = 100, **kwargs) -> Path:
    """Save a matplotlib figure via a temp file and close it."""
    path = Path(path)
    with atomic_path(path, suffix=".tmp" + path.suffix) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", **kwargs)
    plt.close(fig)
    return path


def save_image_atomic(image, path: str | os.PathLike, **kwargs) -> Path:
    """One array as a PNG of its own pixels (`plt.imsave`: e.g. cmap="gray", vmin=0, vmax=1)."""
    path = Path(path)
    with atomic_path(path, suffix=".tmp" + path.suffix) as tmp:
        plt.imsave(tmp, image, **kwargs)
    return path


def close_all() -> None:
    plt.close("all")
