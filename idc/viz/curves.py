"""Training and evaluation curves in the book's layout (Fig 5.8-5.10)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve

from idc.utils import save_figure_atomic, wrote
from idc.viz.style import subplots

LINE_COLORS = {"train": "#0a3dff", "validation": "#ff7c00", "test": "#1ac938"}


def loss_curve_epoch(history: pd.DataFrame, path: Path) -> Path:
    fig, ax = subplots(figsize=(7, 4.5))
    epoch = history["epoch"] + 1
    for col, label in (("train_loss", "train"), ("val_loss", "validation"), ("test_loss", "test")):
        if col in history:
            ax.plot(epoch, history[col], label=label, color=LINE_COLORS[label])
    ax.set(title="Loss Curve by Epoch", xlabel="Epoch", ylabel="Loss")
    ax.legend()
    return wrote(save_figure_atomic(fig, path), "loss by epoch")


def loss_curve_step(steps: pd.DataFrame, path: Path, window: int = 20) -> Path:
    fig, ax = subplots(figsize=(7, 4.5))
    ax.plot(steps["step"], steps["loss"], color=LINE_COLORS["train"], alpha=0.35, label="train (per step)")
    smooth = steps["loss"].rolling(window, min_periods=1).mean()
    ax.plot(steps["step"], smooth, color=LINE_COLORS["train"], label=f"train ({window}-step mean)")
    ax.set(title="Loss Curve by Step", xlabel="Step", ylabel="Loss")
    ax.legend()
    return wrote(save_figure_atomic(fig, path), "loss by step")


def pr_curve(y, proba, path: Path) -> Path:
    """PR curves of the CNN (from P(IDC)) and of the always-positive baseline, with average precision."""
    y = np.asarray(y)
    fig, ax = subplots(figsize=(8, 5))
    for label, scores, color in (("Resnet18", np.asarray(proba), "#0a3dff"),
                                 ("Baseline", np.ones(len(y)), "#ff7c00")):
        precision, recall, _ = precision_recall_curve(y, scores)
        ap = average_precision_score(y, scores)
        ax.plot(recall, precision, color=color, label=f"{label} (Average Precision: {100 * ap:.0f}%)")
    ax.set(xlabel="Recall", ylabel="Precision")
    ax.legend(loc="upper right")
    return wrote(save_figure_atomic(fig, path), "precision-recall curve")
