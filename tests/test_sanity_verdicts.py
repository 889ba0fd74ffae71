"""Verdicts with their spread (idc.sanity.verdicts): patient-clustered bootstrap and the pass/fail rules."""
import numpy as np
import pandas as pd
import pytest

from idc.sanity.verdicts import cluster_bootstrap_ci, per_patch_means, summarize_test


def test_bootstrap_resamples_patients_not_patches():
    # two patients: one with 9 patches at 0, one with 1 patch at 1. Resampling patients gives
    # resamples of {A, A}, {A, B}, {B, B}: means 0, 0.1, 1 -> the CI reaches 1.
    values = [0.0] * 9 + [1.0]
    groups = ["A"] * 9 + ["B"]
    mean, low, high = cluster_bootstrap_ci(values, groups, n_boot=2000, seed=0)
    assert mean == pytest.approx(0.1) and low == pytest.approx(0.0) and high == pytest.approx(1.0)
    assert cluster_bootstrap_ci(values, groups, 2000, 0) == (mean, low, high)  # seeded


def test_bootstrap_one_patient_and_nans():
    mean, low, high = cluster_bootstrap_ci([0.2, 0.4, np.nan], [1, 1, 1], n_boot=100)
    assert mean == pytest.approx(0.3) and np.isnan(low) and np.isnan(high)
    assert all(np.isnan(cluster_bootstrap_ci([np.nan], [1])))
    one = summarize_test(frame([0.1, 0.2], [7, 7]), "mprt_cascading", 0.5, 100, 0).iloc[0]
    assert one["verdict"] == "invalid (1 patient: no CI)"  # no spread, no verdict


def frame(values, patients, degenerate=0):
    return pd.DataFrame({"method": "m", "patient_id": patients, "value": values, "n_degenerate": degenerate})


def test_similarity_rule_uses_the_upper_end_of_the_ci():
    patients = np.repeat(np.arange(5), 4)
    low = summarize_test(frame(np.full(20, 0.2), patients), "mprt_cascading", 0.5, 500, 0).iloc[0]
    assert low["verdict"] == "pass" and low["ci_high"] == pytest.approx(0.2) and low["n"] == 20
    # mean 0.4 < 0.5, but one patient at 0.9 makes the CI reach above the threshold: fail
    mixed = np.where(patients == 4, 0.9, 0.275)
    row = summarize_test(frame(mixed, patients, degenerate=1), "mprt_independent", 0.5, 2000, 0).iloc[0]
    assert row["value"] == pytest.approx(0.4) and row["ci_high"] > 0.5 and row["verdict"] == "fail"
    assert row["n_degenerate"] == 20


def test_emprt_rule_and_invalid_precondition():
    patients = np.repeat(np.arange(4), 3)
    rise = summarize_test(frame(np.full(12, 0.3), patients), "emprt", 0.5, 200, 0).iloc[0]
    fall = summarize_test(frame(np.full(12, -0.3), patients), "emprt", 0.5, 200, 0).iloc[0]
    assert rise["verdict"] == "pass" and fall["verdict"] == "fail"
    bad = summarize_test(frame(np.full(12, 0.0), patients), "data_randomization", 0.5, 200, 0,
                         invalid="invalid (reached 61.0%)").iloc[0]
    assert bad["verdict"] == "invalid (reached 61.0%)" and bad["value"] == 0.0


def test_per_patch_means_average_over_depths():
    sims = pd.DataFrame({"method": "m", "test": "mprt_cascading", "metric": "spearman_abs",
                         "depth": [1, 2, 1, 2], "patch": [0, 0, 1, 1], "patient_id": [7, 7, 8, 8],
                         "value": [0.2, 0.4, 1.0, 0.0], "degenerate": [False, True, False, False]})
    out = per_patch_means(sims, "mprt_cascading", "spearman_abs")
    assert out["value"].tolist() == pytest.approx([0.3, 0.5]) and out["n_degenerate"].tolist() == [1, 0]
