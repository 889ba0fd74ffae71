"""Evaluation: predictions, Table 5.1 against the always-positive baseline, metrics, figures."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from idc.metrics import always_positive_baseline, binary_scores, table_5_1, table_5_1_markdown


def test_always_positive_baseline_scores():
    y = np.array([1, 0, 0, 0, 1, 0, 0])
    s = binary_scores(y, always_positive_baseline(y))
    assert s["recall"] == 1.0 and np.isclose(s["precision"], 2 / 7)
    assert np.isclose(s["f1"], 2 * (2 / 7) / (1 + 2 / 7))


def test_table_5_1_deltas_match_the_book_format():
    y = np.array([1, 1, 0, 0, 0, 0, 0, 1])
    pred = np.array([1, 0, 0, 0, 1, 0, 0, 1])
    rows = table_5_1(y, pred)
    assert np.isclose(rows[1]["recall_delta"], rows[1]["recall"] - 100.0)
    md = table_5_1_markdown(rows)
    assert "| Baseline (always IDC-positive) | 37.5 | 100.0 | 54.5 |" in md
    assert "(-33.3)" in md


def test_evaluate_stage_outputs(tiny_evaluated):
    pred = pd.read_csv(tiny_evaluated / "eval" / "predictions.csv")
    assert list(pred.columns) == ["image_id", "patient_id", "x", "y", "target", "proba", "pred"]
    patches = pd.read_csv(tiny_evaluated / "data" / "patches.csv")
    assert pred["image_id"].tolist() == patches.loc[patches["split"] == "test", "image_id"].tolist()
    assert ((pred["proba"] >= 0.5).astype(int) == pred["pred"]).all()
    metrics = json.loads((tiny_evaluated / "eval" / "metrics.json").read_text())
    assert {"precision", "recall", "f1", "roc_auc", "average_precision", "balanced_accuracy", "confusion_matrix"} <= set(metrics["cnn"])
    assert metrics["baseline"]["recall"] == 1.0
    cm = np.array(metrics["cnn"]["confusion_matrix"])
    assert cm.sum() == metrics["n"] == len(pred) and cm[1].sum() == metrics["positives"] == pred["target"].sum()
    assert metrics["cnn"]["f1"] == pytest.approx(metrics["table_5_1"][1]["f1"] / 100)
    assert 0 <= metrics["cnn"]["average_precision_of_predictions"] <= 1
    assert "Baseline (always IDC-positive)" in (tiny_evaluated / "eval" / "table_5_1.md").read_text()
    for name in ("chapter_05_pr_curve", "chapter_05_loss_curve_epoch", "chapter_05_loss_curve_step"):
        assert (tiny_evaluated / "figures" / f"{name}.png").stat().st_size > 5000
