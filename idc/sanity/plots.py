"""Figures of the sanity stage: Adebayo-style similarity curves and a randomization example grid (names in
`idc.paths.FIGURES`)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd

from idc.paths import RunPaths
from idc.utils import wrote
from idc.viz.style import image_axis, save_figure_atomic, subplots

METRIC_LABELS = {
    "spearman_abs": "Spearman rank correlation (absolute)",
    "spearman_signed": "Spearman rank correlation (signed)",
    "ssim": "SSIM",
    "hog": "HOG similarity",
}
FIGURE_NAMES = {
    "cascading": "sanity_cascading_randomization",
    "independent": "sanity_independent_randomization",
    "examples": "sanity_randomization_examples",
}


def plot_similarity_curves(
    metrics: pd.DataFrame, test: str, xlabels: Sequence[str], titles: Dict[str, str], threshold: float, title: str
):
    """One panel per measure; x = randomization step (by `depth`), one line per method."""
    data = metrics[metrics["test"] == test]
    fig, axes = subplots(1, len(METRIC_LABELS), figsize=(4.2 * len(METRIC_LABELS), 4), sharey=True)
    depths = sorted(data["depth"].unique())
    for ax, (metric, label) in zip(axes, METRIC_LABELS.items()):
        for method, grp in data[data["metric"] == metric].groupby("method", sort=False):
            grp = grp.sort_values("depth")
            err = np.vstack([grp["value"] - grp["ci_low"], grp["ci_high"] - grp["value"]]).clip(min=0)
            ax.errorbar(grp["depth"], grp["value"], yerr=err, marker="o", capsize=2, label=titles[method])
        if metric == "spearman_abs":
            ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xticks(depths)
        ax.set_xticklabels(xlabels, rotation=45, ha="right")
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(label, fontsize=10)
    axes[0].set_ylabel("similarity to the trained model's map\n(mean, 95% CI over patients)")
    axes[-1].legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_randomization_examples(
    image: np.ndarray, columns: List[Tuple[str, Dict[str, Tuple[np.ndarray, np.ndarray]]]], titles: Dict[str, str]
):
    """Rows = methods, columns = the patch then each randomization step; grey maps of patch 0."""
    methods = list(columns[0][1])
    ncols = len(columns) + 1
    fig, axes = subplots(len(methods), ncols, figsize=(1.6 * ncols, 1.6 * len(methods)), squeeze=False)
    for r, method in enumerate(methods):
        image_axis(axes[r, 0], image)
        axes[r, 0].set_ylabel(titles[method], fontsize=8)
        for c, (label, maps) in enumerate(columns, start=1):
            image_axis(axes[r, c], maps[method][1][0], cmap="gray", vmin=0, vmax=1)
            if r == 0:
                axes[r, c].set_title(label, fontsize=8)
        if r == 0:
            axes[r, 0].set_title("patch", fontsize=8)
    fig.suptitle("Cascading randomization from the top layer, and the random-label model")
    fig.tight_layout()
    return fig


def write_sanity_figures(
    paths: RunPaths, metrics: pd.DataFrame, cascade: Sequence[str], titles, threshold: float, image, example_columns
) -> Dict[str, Path]:
    """Write the three sanity figures under figures/; return {kind: path}."""
    out = {}
    cascading_labels = [("+" if i else "") + b for i, b in enumerate(cascade)]
    figs = {
        "cascading": plot_similarity_curves(
            metrics, "mprt_cascading", cascading_labels, titles, threshold,
            "Cascading model parameter randomization (top layer first)",
        ),
        "independent": plot_similarity_curves(
            metrics, "mprt_independent", list(cascade), titles, threshold, "Independent randomization of one block"
        ),
        "examples": plot_randomization_examples(image, example_columns, titles),
    }
    for kind, fig in figs.items():
        out[kind] = wrote(save_figure_atomic(fig, paths.figure(FIGURE_NAMES[kind])), f"sanity {kind} figure")
    return out
