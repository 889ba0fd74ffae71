"""Verdicts with their spread (idc.sanity.verdicts): t-intervals on patient means and the pass/fail rules."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from idc.sanity.verdicts import patient_ci, per_patch_means, summarize_test


def test_ci_is_the_t_interval_of_the_patient_means():
    # two patients: one with 9 patches at 0, one with 1 patch at 1: the patient means 0 and 1 weigh the same
    values = [0.0] * 9 + [1.0]
    groups = ["A"] * 9 + ["B"]
    mean, low, high, k = patient_ci(values, groups)
    lo, hi = stats.t.interval(0.95, 1, loc=0.5, scale=stats.sem([0.0, 1.0]))
    assert (mean, k) == (0.5, 2) and low == pytest.approx(lo) and high == pytest.approx(hi)


def test_one_patient_and_nans():
    mean, low, high, k = patient_ci([0.2, 0.4, np.nan], [1, 1, 1])
    assert mean == pytest.approx(0.3) and np.isnan(low) and np.isnan(high) and k == 1
    assert np.isnan(patient_ci([np.nan], [1])[0])
    one = summarize_test(frame([0.1, 0.2], [7, 7]), "mprt_cascading", 0.5).iloc[0]
    assert one["verdict"] == "too few patients (1 < 5)" and one["n_patients"] == 1


def frame(values, patients, degenerate=0):
    return pd.DataFrame({"method": "m", "patient_id": patients, "value": values, "n_degenerate": degenerate})


def test_below_five_patients_no_verdict_however_clear():
    patients = np.repeat(np.arange(4), 3)  # 4 patients, every similarity 0.1: clearly changed, but too few
    row = summarize_test(frame(np.full(12, 0.1), patients), "mprt_cascading", 0.5).iloc[0]
    assert row["verdict"] == "too few patients (4 < 5)" and row["ci_high"] == pytest.approx(0.1)


def test_similarity_rule_uses_the_upper_end_of_the_ci():
    patients = np.repeat(np.arange(5), 4)
    low = summarize_test(frame(np.full(20, 0.2), patients), "mprt_cascading", 0.5).iloc[0]
    assert low["verdict"] == "pass" and low["ci_high"] == pytest.approx(0.2) and low["n"] == 20
    # mean 0.4 < 0.5, but one patient at 0.9 makes the CI reach above the threshold: fail
    mixed = np.where(patients == 4, 0.9, 0.275)
    row = summarize_test(frame(mixed, patients, degenerate=1), "mprt_independent", 0.5).iloc[0]
    assert row["value"] == pytest.approx(0.4) and row["ci_high"] > 0.5 and row["verdict"] == "fail"
    assert row["n_degenerate"] == 20 and row["n_patients"] == 5


def test_emprt_rule_and_invalid_precondition():
    patients = np.repeat(np.arange(5), 3)
    rise = summarize_test(frame(np.full(15, 0.3), patients), "emprt", 0.5).iloc[0]
    fall = summarize_test(frame(np.full(15, -0.3), patients), "emprt", 0.5).iloc[0]
    assert rise["verdict"] == "pass" and fall["verdict"] == "fail"
    bad = summarize_test(frame(np.full(15, 0.0), patients), "data_randomization", 0.5,
                         invalid="invalid (reached 61.0%)").iloc[0]
    assert bad["verdict"] == "invalid (reached 61.0%)" and bad["value"] == 0.0


def test_per_patch_means_average_over_depths():
    sims = pd.DataFrame({"method": "m", "test": "mprt_cascading", "metric": "spearman_abs",
                         "depth": [1, 2, 1, 2], "patch": [0, 0, 1, 1], "patient_id": [7, 7, 8, 8],
                         "value": [0.2, 0.4, 1.0, 0.0], "degenerate": [False, True, False, False]})
    out = per_patch_means(sims, "mprt_cascading", "spearman_abs")
    assert out["value"].tolist() == pytest.approx([0.3, 0.5]) and out["n_degenerate"].tolist() == [1, 0]
