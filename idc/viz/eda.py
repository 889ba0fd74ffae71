"""EDA figures of the book (5.2-5.5, 5.12), from the patches table and the packed cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from idc.paths import RunPaths
from idc.stitch import PATCH, original_tiles, tissue_and_idc
from idc.utils import wrote
from idc.viz.style import CLASS_COLORS, CLASS_NAMES, image_axis, save_figure_atomic, subplots

SPLIT_TITLES = {"train": "Training Set", "val": "Validation Set", "test": "Test Set"}


def target_pc(df: pd.DataFrame, path: Path) -> Path:
    pct = df["target"].value_counts(normalize=True).reindex([0, 1], fill_value=0) * 100
    fig, ax = subplots(figsize=(6, 4))
    ax.bar([0, 1], pct.to_numpy(), color=CLASS_COLORS, tick_label=CLASS_NAMES)
    ax.set_ylabel("% of Patches")
    ax.set_ylim(0, max(80, pct.max() + 5))
    return wrote(save_figure_atomic(fig, path), "class distribution")


def sample_grid(images: np.ndarray, rows: np.ndarray, path: Path, n: int = 4) -> Path:
    side = int(np.ceil(np.sqrt(n)))
    fig, axes = subplots(side, side, figsize=(2.5 * side, 2.5 * side))
    for ax, row in zip(np.ravel(axes), rows[:n]):
        image_axis(ax, images[row])
    for ax in np.ravel(axes)[len(rows[:n]):]:
        ax.axis("off")
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return wrote(save_figure_atomic(fig, path), "patch samples")


def patient_patch_dist(df: pd.DataFrame, path: Path) -> Path:
    per = df.groupby("patient_id")["target"].agg(["size", "mean"])
    fig, (a, b) = subplots(1, 2, figsize=(14, 5))
    a.hist(per["size"], bins=20, color="blue", alpha=0.4, edgecolor="white")
    a.set(title="Distribution of Patches per Patient or Tissue Sample", xlabel="Number of patches", ylabel="Frequency")
    b.hist(per["mean"] * 100, bins=20, color="red", alpha=0.4, edgecolor="white")
    b.set(title="Percentage of a Tissue covered by IDC", xlabel="% of patches with IDC", ylabel="Frequency")
    return wrote(save_figure_atomic(fig, path), "patches and IDC per patient")


def split_targets(df: pd.DataFrame, path: Path) -> Path:
    fig, axes = subplots(1, 3, figsize=(16, 4.5))
    for ax, (split, title) in zip(axes, SPLIT_TITLES.items()):
        p = df.loc[df["split"] == split, "target"].value_counts(normalize=True).reindex([0, 1], fill_value=0)
        ax.bar([0, 1], p.to_numpy(), color=CLASS_COLORS, tick_label=["0", "1"])
        ax.set(title=title, xlabel="target", ylabel="Proportion of patches", ylim=(0, 0.8 if p.max() <= 0.8 else 1))
    return wrote(save_figure_atomic(fig, path), "target distribution per split")


def patient_tissue(df: pd.DataFrame, images: np.ndarray, pid: int, root=None, patch: int = PATCH):
    """(stitched tissue, same with IDC-positive patches tinted red) for one patient."""
    sub = df[df["patient_id"] == pid]
    return tissue_and_idc(sub, original_tiles(sub, images[sub.index.to_numpy()], root, patch), patch)


def patient_tissue_slices(df: pd.DataFrame, images: np.ndarray, path: Path, n: int = 4, seed: int = 0,
                          root=None, patch: int = PATCH) -> Path:
    """Book Fig 5.5 layout (2x2 patients), drawn as the stitched tissue with IDC patches tinted red."""
    pids = df["patient_id"].drop_duplicates()
    pids = pids.sample(min(n, len(pids)), random_state=seed).to_numpy()
    ncols = min(2, len(pids))
    nrows = -(-len(pids) // ncols)
    fig, axes = subplots(nrows, ncols, figsize=(5 * ncols, 5 * nrows), squeeze=False)
    for ax, pid in zip(np.ravel(axes), pids):
        _, tinted = patient_tissue(df, images, int(pid), root, patch)
        ax.imshow(tinted)  # axes in slide pixels, as the book's scatter of patch coordinates
        ax.grid(False)
        ax.set_title(f"Patient ID: {pid}")
    for ax in np.ravel(axes)[len(pids):]:
        ax.axis("off")
    return wrote(save_figure_atomic(fig, path), "stitched tissue, IDC in red")


def write_eda_figures(df: pd.DataFrame, images: np.ndarray, paths: RunPaths, seed: int = 0,
                      root=None, patch: int = PATCH) -> list[Path]:
    """The six EDA figures (`paths.figure`: names from the registry); `root` (the data root) gives edge
    patches their original pixels."""
    rng = np.random.default_rng(seed)
    pos = rng.permutation(np.flatnonzero(df["target"].to_numpy() == 1))
    neg = rng.permutation(np.flatnonzero(df["target"].to_numpy() == 0))
    return [
        target_pc(df, paths.figure("chapter_05_target_pc")),
        sample_grid(images, pos, paths.figure("chapter_05_idc_positive_samples")),
        sample_grid(images, neg, paths.figure("chapter_05_idc_negative_samples")),
        patient_tissue_slices(df, images, paths.figure("chapter_05_patient_tissue_slice"), seed=seed, root=root,
                              patch=patch),
        patient_patch_dist(df, paths.figure("chapter_05_patient_patch_dist")),
        split_targets(df, paths.figure("chapter_05_train_val_test_splits")),
    ]
