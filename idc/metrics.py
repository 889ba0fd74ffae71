"""Pure metric functions on label arrays (scikit-learn underneath); no files, no config."""
from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from idc.markdown import markdown_table


def always_positive_baseline(y) -> np.ndarray:
    """The book's baseline: predict IDC-positive for every patch."""
    return np.ones(len(np.asarray(y)), dtype=np.int64)


def binary_scores(y, pred) -> dict:
    """precision / recall / F1 of the positive class, accuracy and balanced accuracy."""
    y, pred = np.asarray(y), np.asarray(pred)
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average="binary", pos_label=1, zero_division=0)
    return {
        "precision": float(p),
        "recall": float(r),
        "f1": float(f),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)) if len(np.unique(y)) > 1 else float("nan"),
    }


def ranking_scores(y, proba) -> dict:
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return {"roc_auc": float("nan"), "average_precision": float("nan")}
    return {
        "roc_auc": float(skm.roc_auc_score(y, proba)),
        "average_precision": float(skm.average_precision_score(y, proba)),
    }


def table_5_1(y, pred) -> list[dict]:
    """Rows of the book's Table 5.1 in percent: baseline, CNN, and the CNN's deltas to the baseline."""
    base = binary_scores(y, always_positive_baseline(y))
    cnn = binary_scores(y, pred)
    keys = ("precision", "recall", "f1")
    return [
        {"model": "Baseline (always IDC-positive)", **{k: 100 * base[k] for k in keys}},
        {"model": "CNN (ResNet-18)", **{k: 100 * cnn[k] for k in keys},
         **{f"{k}_delta": 100 * (cnn[k] - base[k]) for k in keys}},
    ]


def table_5_1_markdown(rows: list[dict]) -> str:
    body = []
    for row in rows:
        cells = []
        for k in ("precision", "recall", "f1"):
            cell = f"{row[k]:.1f}"
            if f"{k}_delta" in row:
                cell += f" ({row[f'{k}_delta']:+.1f})"
            cells.append(cell)
        body.append([row["model"], *cells])
    return markdown_table(["", "Precision (%)", "Recall (%)", "F1 (%)"], body) + "\n"
