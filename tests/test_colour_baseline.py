"""Colour-statistics control: known-answer features, fit/score, patient-grouped CV, and the same
computation (packed cache pixels) on the real sample and on the synthetic set."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from idc.colour_baseline import FEATURES, NAME, colour_features, fit_score, grouped_cv_auc
from tests.helpers import SHARED_SAMPLE, compose_cfg, requires_sample


def test_features_known_answers():
    imgs = np.zeros((3, 4, 4, 3), np.uint8)
    imgs[0] = 230  # background white
    imgs[1] = (50, 60, 70)  # dark haematoxylin
    imgs[2, :2] = 255
    imgs[2, 2:] = (200, 100, 150)  # half white, half pink
    f = dict(zip(FEATURES, colour_features(imgs, batch=2).T))
    np.testing.assert_allclose(f["mean_r"], [230 / 255, 50 / 255, (255 + 200) / 2 / 255])
    np.testing.assert_allclose(f["std_g"], [0, 0, 77.5 / 255], atol=1e-6)
    np.testing.assert_allclose(f["near_white"], [1, 0, 0.5])
    np.testing.assert_allclose(f["dark"], [0, 1, 0])


def test_features_reject_wrong_shapes():
    with pytest.raises(ValueError, match="N, H, W, 3"):
        colour_features(np.zeros((4, 4, 3), np.uint8))


def test_fit_score_separable_and_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = rng.normal(size=(400, 8))
    _, noise = fit_score(x[:200], y[:200], x[200:], y[200:])
    assert 0.35 < noise["roc_auc"] < 0.65
    x[:, 0] += 8 * y
    proba, sep = fit_score(x[:200], y[:200], x[200:], y[200:])
    assert sep["roc_auc"] > 0.99 and sep["f1"] > 0.95 and proba.shape == (200,)
    for k in ("precision", "recall", "f1", "roc_auc", "average_precision"):
        assert k in sep


def test_grouped_cv_does_not_learn_patient_identity():
    """Labels constant per patient, features = a patient fingerprint: only leakage could score."""
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(20), 30)
    y = np.repeat(rng.permutation([0, 1] * 10), 30)
    x = np.repeat(rng.normal(size=(20, 8)), 30, axis=0) + 0.01 * rng.normal(size=(600, 8))
    assert grouped_cv_auc(x, y, groups)["roc_auc"] < 0.75
    x[:, 0] += 3 * y  # a real colour difference is found across patients
    out = grouped_cv_auc(x, y, groups)
    assert out["roc_auc"] > 0.9 and len(out["fold_roc_auc"]) == 5


@requires_sample
def test_same_computation_on_the_real_sample(tmp_path):
    """data=kaggle unchanged: features come from the packed cache (the pixels the CNN sees, edge
    patches stretched), exactly as for the synthetic set."""
    from idc import prepare_data
    from idc.data.cache import decode_patch
    from idc.evaluate import colour_baseline_metrics
    from idc.paths import RunPaths

    cfg = compose_cfg(tmp_path, "data=kaggle", f"data.root={SHARED_SAMPLE}", "data.masks_dir=null",
                      "data.eda_figures=false")
    df = prepare_data.run(cfg)
    out = colour_baseline_metrics(cfg, "test")
    assert 0 <= out["roc_auc"] <= 1 and out["features"] == list(FEATURES)
    edge = df.index[(df["width"] != 50) | (df["height"] != 50)][:2].tolist() + [0]
    direct = colour_features(np.stack([decode_patch(SHARED_SAMPLE / df.loc[i, "image_id"]) for i in edge]))
    from idc.data.cache import load_or_build_cache

    cached = colour_features(load_or_build_cache(df, cfg.data.root, RunPaths.from_cfg(cfg).cache_dir)[edge])
    np.testing.assert_allclose(direct, cached)


def test_evaluate_reports_the_colour_row(tiny_evaluated):
    metrics = json.loads((tiny_evaluated / "eval" / "metrics.json").read_text())
    c = metrics["colour_baseline"]
    assert {"precision", "recall", "f1", "roc_auc", "average_precision"} <= set(c) and c["fit_on"] == "train"
    assert metrics["table_5_1"][-1]["model"] == NAME
    md = (tiny_evaluated / "eval" / "table_5_1.md").read_text()
    assert NAME in md and "ROC-AUC" in md
    patches = pd.read_csv(tiny_evaluated / "data" / "patches.csv")
    assert c["n_train"] == int((patches["split"] == "train").sum())
