"""One look for every figure: the book's white-grid style, its blue/orange class colours."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: stages write PNGs, they never open windows
import matplotlib.pyplot as plt  # noqa: E402

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
