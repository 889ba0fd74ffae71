"""From per-patch scores to verdicts with their spread: patient-clustered bootstrap CIs and the rules.

Pure functions on arrays and DataFrames (scikit-learn style). The rules, as stated in Table 5.2 and
docs/sanity.md:
- similarity tests (`mprt_cascading`, `mprt_independent`, `smprt`, `data_randomization`): the value is
  the mean per-patch similarity (Spearman of absolute maps); **pass** when the upper end of its 95% CI
  is below `sanity.threshold` (the map changed, and not by luck of the patients drawn), else fail;
- `emprt`: the value is the mean relative rise in the map's entropy, H(random) / H(trained) - 1;
  **pass** when the lower end of its 95% CI is above 0 (the map became more complex), else fail;
- `data_randomization` is **invalid** (never pass/fail) when the random-label model did not memorize
  its labels (see idc.sanity.memorization);
- any test is **invalid** when its patches come from fewer than 2 patients: no spread can be estimated,
  so the CI is NaN and no verdict is given.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import pandas as pd

from idc.scores.bootstrap import cluster_bootstrap

RANDOMIZATION_COLUMNS = ["method", "test", "value", "ci_low", "ci_high", "n", "n_degenerate", "verdict"]


def cluster_bootstrap_ci(values, groups, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Tuple[float, float, float]:
    """(mean, low, high) of `idc.scores.bootstrap.cluster_bootstrap` (patients resampled; NaN values
    left out; with fewer than two patients the CI is NaN)."""
    est = cluster_bootstrap(values, groups, n_boot=int(n_boot), level=level, seed=seed)
    return float(est.mean), float(est.ci_low), float(est.ci_high)


def similarity_verdict(ci_high: float, threshold: float) -> str:
    """Pass = the map changed: the whole CI of the similarity lies below the threshold."""
    return "pass" if ci_high < threshold else "fail"


def emprt_verdict(ci_low: float) -> str:
    """Pass = the map's complexity rose under full randomization: the whole CI lies above 0."""
    return "pass" if ci_low > 0 else "fail"


def summarize_test(per_patch: pd.DataFrame, test: str, threshold: float, n_boot: int, seed: int,
                   invalid: str | None = None) -> pd.DataFrame:
    """One verdict row per method from per-patch rows (method, patient_id, value, n_degenerate).

    `value` holds one number per patch (already averaged over depths where the test has several);
    `n_degenerate` the constant maps that went into it. `invalid` (e.g. "invalid (reached 61.2%)")
    replaces the verdict when the test's precondition failed."""
    rows = []
    for method, g in per_patch.groupby("method", sort=False):
        mean, low, high = cluster_bootstrap_ci(g["value"], g["patient_id"], n_boot, seed)
        if invalid is not None:
            verdict = invalid
        elif not np.isnan(mean) and np.isnan(low):
            verdict = "invalid (1 patient: no CI)"
        elif np.isnan(mean):
            verdict = "fail"  # no usable patch: nothing shows the map changed
        elif test == "emprt":
            verdict = emprt_verdict(low)
        else:
            verdict = similarity_verdict(high, threshold)
        rows.append(dict(method=method, test=test, value=mean, ci_low=low, ci_high=high,
                         n=int(g["value"].notna().sum()), n_degenerate=int(g["n_degenerate"].sum()), verdict=verdict))
    return pd.DataFrame(rows, columns=RANDOMIZATION_COLUMNS)


def per_patch_means(sims: pd.DataFrame, test: str, metric: str, depths=None) -> pd.DataFrame:
    """Per (method, patch): the mean of `metric` over the test's depths, and its degenerate-map count."""
    s = sims[(sims["test"] == test) & (sims["metric"] == metric)]
    if depths is not None:
        s = s[s["depth"].isin(list(depths))]
    return (s.groupby(["method", "patch", "patient_id"], sort=False)
             .agg(value=("value", "mean"), n_degenerate=("degenerate", "sum")).reset_index())
