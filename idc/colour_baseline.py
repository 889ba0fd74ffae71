"""A colour-statistics control: logistic regression on eight per-patch colour numbers.

On real data it says how much the CNN adds over colour alone; on the synthetic set it checks that the
set has no colour shortcut (the label should live in nuclear morphology only). Pure functions on
arrays (uint8 patches [N, H, W, 3], labels, patient ids); the same code runs on every data set.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from idc.metrics import binary_scores, ranking_scores

FEATURES = ("mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "near_white", "dark")
NAME = "Colour statistics (logistic regression)"
WHITE = 200  # near-white: every channel >= this (background, fat, lumen, cracks)
DARK = 100  # dark: mean of the channels < this (dense haematoxylin)


def colour_features(images: np.ndarray, batch: int = 4096) -> np.ndarray:
    """float64 [N, 8]: mean and std of R, G, B (0-1), fraction of near-white and of dark pixels."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 patches [N, H, W, 3], got shape {images.shape}")
    out = np.empty((len(images), len(FEATURES)), np.float64)
    for s in range(0, len(images), batch):  # bounded memory on memory-mapped caches
        x = np.asarray(images[s:s + batch], np.float32).reshape(min(batch, len(images) - s), -1, 3)
        out[s:s + len(x), 0:3] = x.mean(1) / 255
        out[s:s + len(x), 3:6] = x.std(1) / 255
        out[s:s + len(x), 6] = (x.min(2) >= WHITE).mean(1)
        out[s:s + len(x), 7] = (x.mean(2) < DARK).mean(1)
    return out


def colour_model():
    """Standardized features -> L2 logistic regression (sklearn defaults otherwise)."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def fit_score(x_train, y_train, x_test, y_test) -> tuple[np.ndarray, dict]:
    """(P(IDC) on the test rows, scores): fit on train, predict at 0.5, rank by probability."""
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    if len(np.unique(y_train)) < 2:
        raise ValueError("the colour baseline needs both classes in the training split")
    proba = colour_model().fit(x_train, y_train).predict_proba(x_test)[:, 1]
    return proba, {**binary_scores(y_test, (proba >= 0.5).astype(int)), **ranking_scores(y_test, proba)}


def grouped_cv_auc(x, y, groups, folds: int = 5) -> dict:
    """ROC-AUC of out-of-fold probabilities, folds grouped by patient (no patient in two folds)."""
    x, y, groups = np.asarray(x), np.asarray(y), np.asarray(groups)
    proba = np.empty(len(y))
    for train, test in GroupKFold(n_splits=folds).split(x, y, groups):
        proba[test] = colour_model().fit(x[train], y[train]).predict_proba(x[test])[:, 1]
    per_fold = [ranking_scores(y[t], proba[t])["roc_auc"] for _, t in GroupKFold(n_splits=folds).split(x, y, groups)]
    return {**ranking_scores(y, proba), "fold_roc_auc": per_fold, "folds": folds}
