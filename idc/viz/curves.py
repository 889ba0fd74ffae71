"""Training and evaluation curves in the book's layout (Fig 5.8-5.10)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve

from idc.utils import wrote
from idc.viz.style import save_figure_atomic, subplots

LINE_COLORS = {"train": "#0a3dff", "validation": "#ff7c00", "test": "#1ac938"}


def loss_curve_epoch(history: pd.DataFrame, path: Path) -> Path:
    fig, ax = subplots(figsize=(7, 4.5))
    epoch = history["epoch"] + 1
    for col, label in (("train_loss", "train"), ("val_loss", "validation"), ("test_loss", "test")):
        if col in history:
            ax.plot(epoch, history[col], label=label, color=LINE_COLORS[label])
    ax.set(title="Loss Curve by Epoch", xlabel="Epoch", ylabel="Loss")
    ax.legend(frameon=True)
    return wrote(save_figure_atomic(fig, path), "loss by epoch")


def loss_curve_step(steps: pd.DataFrame, path: Path) -> Path:
    """The running mean loss within each epoch against the batch count of each split, as the book draws it.

    `steps` is model/history_steps.csv (split, epoch, step, loss, running_loss).
    """
    fig, ax = subplots(figsize=(7, 4.5))
    for split, label in (("train", "train"), ("val", "validation"), ("test", "test")):
        part = steps[steps["split"] == split]
        if len(part):
            ax.plot(part["step"], part["running_loss"], label=label, color=LINE_COLORS[label])
    ax.set(title="Loss Curve by Step", xlabel="Step", ylabel="Loss")
    ax.legend(loc="best", frameon=True)
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
    ax.legend(loc="best", frameon=True)
    return wrote(save_figure_atomic(fig, path), "precision-recall curve")
