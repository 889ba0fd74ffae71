"""From per-patch scores to verdicts with their spread: 95% t-intervals on the patient means and the rules.

Pure functions on arrays and DataFrames (scikit-learn style). The rules, as stated in Table 5.2 and
docs/sanity.md:
- similarity tests (`mprt_cascading`, `mprt_independent`, `smprt`, `data_randomization`): the value is
  the mean per-patch similarity (Spearman of absolute maps); **pass** when the upper end of its 95% CI
  is below `sanity.threshold` (the map changed, and not by luck of the patients drawn), else fail;
- `emprt`: the value is the mean relative rise in the map's entropy, H(random) / H(trained) - 1;
  **pass** when the lower end of its 95% CI is above 0 (the map became more complex), else fail;
- `data_randomization` (random-label vs trained model) and `data_randomization_recipe` (random-label vs the
  recipe control, the same recipe on the true labels) are **invalid** (never pass/fail) when the
  random-label model did not memorize its labels (see idc.sanity.memorization);
- any test whose patches come from fewer than `idc.scores.inference.MIN_PATIENTS` patients reads **too few
  patients** (never pass/fail): below that the interval is not shown to be calibrated.
The CI is `idc.scores.inference.t_interval` (k - 1 df on the patient means), so "pass" is wrong at most
~2.5% of the time when the true similarity is at the threshold (tests/test_inference.py).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import pandas as pd

from idc.scores.inference import enough_patients, t_interval, too_few

RANDOMIZATION_COLUMNS = ["method", "test", "value", "ci_low", "ci_high", "n", "n_patients", "n_degenerate", "verdict"]


def patient_ci(values, groups) -> Tuple[float, float, float, int]:
    """(mean of the patient means, low, high, patients) of `idc.scores.inference.t_interval` (NaN values
    left out; with fewer than two patients the CI is NaN)."""
    est = t_interval(np.asarray(values, np.float64), np.asarray(groups))
    return float(est.mean), float(est.ci_low), float(est.ci_high), int(est.n_clusters)


def similarity_verdict(ci_high: float, threshold: float) -> str:
    """Pass = the map changed: the whole CI of the similarity lies below the threshold."""
    return "pass" if ci_high < threshold else "fail"


def emprt_verdict(ci_low: float) -> str:
    """Pass = the map's complexity rose under full randomization: the whole CI lies above 0."""
    return "pass" if ci_low > 0 else "fail"


def summarize_test(per_patch: pd.DataFrame, test: str, threshold: float, invalid: str | None = None) -> pd.DataFrame:
    """One verdict row per method from per-patch rows (method, patient_id, value, n_degenerate).

    `value` holds one number per patch (already averaged over depths where the test has several);
    `n_degenerate` the constant maps that went into it. `invalid` (e.g. "invalid (reached 61.2%)")
    replaces the verdict when the test's precondition failed."""
    rows = []
    for method, g in per_patch.groupby("method", sort=False):
        mean, low, high, k = patient_ci(g["value"], g["patient_id"])
        if invalid is not None:
            verdict = invalid
        elif np.isnan(mean):
            verdict = "fail"  # no usable patch: nothing shows the map changed
        elif not enough_patients(k):
            verdict = too_few(k)
        elif test == "emprt":
            verdict = emprt_verdict(low)
        else:
            verdict = similarity_verdict(high, threshold)
        rows.append(dict(method=method, test=test, value=mean, ci_low=low, ci_high=high, n=int(g["value"].notna().sum()),
                         n_patients=k, n_degenerate=int(g["n_degenerate"].sum()), verdict=verdict))
    return pd.DataFrame(rows, columns=RANDOMIZATION_COLUMNS)


def per_patch_means(sims: pd.DataFrame, test: str, metric: str, depths=None) -> pd.DataFrame:
    """Per (method, patch): the mean of `metric` over the test's depths, and its degenerate-map count."""
    s = sims[(sims["test"] == test) & (sims["metric"] == metric)]
    if depths is not None:
        s = s[s["depth"].isin(list(depths))]
    return (s.groupby(["method", "patch", "patient_id"], sort=False)
             .agg(value=("value", "mean"), n_degenerate=("degenerate", "sum")).reset_index())
