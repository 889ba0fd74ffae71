"""Figures of the leaderboard stage: the forest plot of every score (`chapter_05_method_leaderboard`)
and the localization examples (`sanity_localization_examples`), both in `idc.paths.OPTIONAL_FIGURES`."""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import pandas as pd

from idc.leaderboard.board import BOARD_SCORES, SCORE_TITLES, SHORTCUT
from idc.viz.style import subplots


def plot_leaderboard(table: pd.DataFrame, order: List[str], variant: str):
    """Forest plot: one panel per score, one row per source (methods in colour, controls grey), mean and 95% CI."""
    tab = table[table["variant"] == variant].set_index("method")
    cols = [c for c in BOARD_SCORES + SHORTCUT if c in tab and tab[c].notna().any()]
    fig, axes = subplots(1, len(cols), figsize=(2.3 * len(cols) + 2, 0.28 * len(order) + 1.5), sharey=True,
                         squeeze=False)
    y = np.arange(len(order))[::-1]
    colours = {"method": "tab:blue", "randomized": "tab:orange", "control": "grey"}
    for ax, c in zip(axes[0], cols):
        for yi, name in zip(y, order):
            m, lo, hi = tab.at[name, c], tab.at[name, f"{c}_ci_low"], tab.at[name, f"{c}_ci_high"]
            if np.isfinite(m):
                err = [[m - lo], [hi - m]] if np.isfinite(lo) and np.isfinite(hi) else None
                ax.errorbar(m, yi, xerr=err, fmt="o", ms=3, capsize=2, color=colours[tab.at[name, "kind"]])
        ax.set_title(SCORE_TITLES[c], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_yticks(y)
    axes[0, 0].set_yticklabels(order, fontsize=7)
    fig.suptitle("Attribution methods vs control rows (blue: methods, orange: randomized model, grey: model-free); "
                 "mean and patient-clustered 95% CI", fontsize=9)
    fig.tight_layout()
    return fig


def plot_localization_examples(images: np.ndarray, masks, grays: Dict[str, np.ndarray], n: int = 6):
    """Rows = the patches then each method's grey map; the IDC-nuclei mask outlined in red (`masks` None:
    a set without pixel ground truth, no outline)."""
    n = min(n, len(images))
    rows = [("patch", None)] + list(grays.items())
    fig, axes = subplots(len(rows), n, figsize=(1.5 * n, 1.5 * len(rows)), squeeze=False)
    for r, (name, maps) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            if maps is None:
                ax.imshow(images[c])
            else:
                ax.imshow(maps[c], cmap="gray", vmin=0, vmax=1)
            if masks is not None:
                ax.contour(masks[c], levels=[0.5], colors="red", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        axes[r, 0].set_ylabel(name, fontsize=7)
    fig.suptitle("Saliency of IDC-positive patches vs the IDC-nuclei ground truth (red)" if masks is not None
                 else "Saliency of IDC-positive patches (no pixel ground truth in this data set)")
    fig.tight_layout()
    return fig
