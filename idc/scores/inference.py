"""Intervals, tests and rank reliability for per-patch scores clustered by patient (pure functions).

Patches of one patient share slide, stain and tumour, so they are not independent: the unit of
inference is the patient. Every interval here is a **t-interval on the patient means with k - 1
degrees of freedom** (k patients): each patient's patches are averaged first, and the k means are
treated as a sample. The estimate is the mean of the patient means (every patient weighs the same,
whatever its number of patches). A one-sided test at 2.5% ("the lower end of the 95% CI is above 0")
is the one-sample t-test of those means.

Why not the percentile cluster bootstrap used before (`idc.scores.bootstrap`): with few patients it
is far too narrow. Under a true difference of zero its "CI low > 0" is wrong 25% of the time with 2
patients, 13% with 3, 9-10% with 5 and 4% with 20 instead of 2.5%; the t-interval stays at 2-3% from 2
patients on (`idc.scores.calibration`, the table in docs/attribution-evaluation.md, and the seeded
simulation test in tests/test_inference.py).

Below `MIN_PATIENTS` patients no verdict is given ("too few patients"): the t-interval's calibration
then rests entirely on the patient means being normal, which nothing can check with so few (and its
t quantile, 12.7 at 2 patients, leaves no power either).

Multiplicity: `holm` (Holm 1979), step-down family-wise error control under any dependence.
Rank reliability: `rank_intervals` (each source's rank with a patient-bootstrap interval) and
`ranking_agreement` (Krippendorff's alpha of the per-patient rankings, as Gevaert et al. 2024).
"""
from __future__ import annotations

import warnings
from typing import NamedTuple, Tuple

import krippendorff
import numpy as np
import pandas as pd
from scipy.special import stdtr, stdtrit  # Student t cdf and quantile (scipy.stats.t without its overhead)

MIN_PATIENTS = 5  # fewer patients: "too few patients", never yes / no / pass / fail
LEVEL = 0.95  # two-sided level of every CI; a verdict reads one end of it: a one-sided test at 2.5%
ALPHA = (1 - LEVEL) / 2


class Estimate(NamedTuple):
    mean: float  # mean of the patient means
    ci_low: float
    ci_high: float
    n: int  # patches with a finite value
    n_clusters: int  # patients with a finite value
    p_greater: float = float("nan")  # one-sided p-value of "mean <= null" (t-test on the patient means)


def patient_means(values, clusters) -> Tuple[np.ndarray, np.ndarray, int]:
    """(patient ids, mean per patient, patches used) over the finite values, patients in sorted order."""
    values = np.asarray(values, dtype=np.float64)
    clusters = np.asarray(clusters)
    if values.shape != clusters.shape or values.ndim != 1:
        raise ValueError(f"values and clusters must be 1-d and of equal length; got {values.shape}, {clusters.shape}")
    ok = np.isfinite(values)
    ids, inverse = np.unique(clusters[ok], return_inverse=True)
    means = np.bincount(inverse, weights=values[ok], minlength=len(ids)) / np.bincount(inverse, minlength=len(ids))
    return ids, means, int(ok.sum())


def t_bounds(means: np.ndarray, level: float = LEVEL, null: float = 0.0):
    """The t-interval of each row of patient means [r, k] (k >= 2, finite): (mean, low, high, one-sided p of
    mean <= `null`), each [r]. Rows whose means are all equal get a zero-width CI (p 0 above `null`, else 1).
    `t_interval` and the calibration simulation (`idc.scores.calibration`) both use this."""
    means = np.atleast_2d(np.asarray(means, dtype=np.float64))
    k = means.shape[1]
    mean = means.mean(axis=1)
    se = means.std(axis=1, ddof=1) / np.sqrt(k)
    half = stdtrit(k - 1, 0.5 + level / 2) * se
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(se > 0, stdtr(k - 1, -(mean - null) / np.where(se > 0, se, 1.0)), np.where(mean > null, 0.0, 1.0))
    return mean, mean - half, mean + half, p


def t_interval(values, clusters, level: float = LEVEL, null: float = 0.0) -> Estimate:
    """Mean of the patient means with its t-interval (k - 1 df) and the one-sided p-value of mean <= `null`.

    NaN values (score undefined for that patch) are dropped first. One patient: the mean, no CI, no p.
    Patient means that are all equal: a zero-width CI at that value (p = 0 when it is above `null`)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    _, means, n = patient_means(values, clusters)
    k = len(means)
    if k == 0:
        return Estimate(np.nan, np.nan, np.nan, 0, 0)
    if k < 2:
        return Estimate(float(means.mean()), np.nan, np.nan, n, k)
    mean, low, high, p = (float(v[0]) for v in t_bounds(means[None], level, null))
    return Estimate(mean, low, high, n, k, p)


def paired_t(a, b, clusters, **kw) -> Estimate:
    """`t_interval` of the per-patch differences a - b (e.g. a method minus a control on the same patches)."""
    return t_interval(np.asarray(a, np.float64) - np.asarray(b, np.float64), clusters, **kw)


def enough_patients(n_clusters: int, min_patients: int = MIN_PATIENTS) -> bool:
    return int(n_clusters) >= int(min_patients)


def too_few(n_clusters: int) -> str:
    return f"too few patients ({int(n_clusters)} < {MIN_PATIENTS})"


def holm(pvalues, alpha: float = ALPHA) -> np.ndarray:
    """Holm's step-down procedure: bool [m], True where the hypothesis is rejected at family-wise error
    `alpha`. A NaN p-value (no test possible) is never rejected and still counts in m (conservative)."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    reject = np.zeros(m, dtype=bool)
    filled = np.where(np.isfinite(p), p, np.inf)
    for i, j in enumerate(np.argsort(filled, kind="stable")):
        if filled[j] > alpha / (m - i):
            break
        reject[j] = True
    return reject


def patient_table(per_patch: pd.DataFrame, score: str, source: str = "method", cluster: str = "patient_id") -> pd.DataFrame:
    """[patients x sources] mean of `score` per patient and source (NaN where a patient has no finite value)."""
    return per_patch.pivot_table(index=cluster, columns=source, values=score, aggfunc="mean", sort=False)


def _ranks(means: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Rank 1 = best along the last axis; ties share their mean rank; NaN stays NaN."""
    frame = pd.DataFrame(np.atleast_2d(means))
    return frame.rank(axis=1, ascending=not higher_is_better, method="average").to_numpy()


def rank_intervals(table: pd.DataFrame, higher_is_better: bool = True, n_boot: int = 1000, seed: int = 0,
                   level: float = LEVEL) -> pd.DataFrame:
    """Each source's (column's) rank by its mean over patients (rows), with a percentile interval from
    resampling patients with replacement (`n_boot` replicates). Columns: rank, rank_low, rank_high."""
    values = table.to_numpy(dtype=np.float64)
    k = len(values)
    rank = _ranks(np.nanmean(values, axis=0), higher_is_better)[0] if k else np.full(values.shape[1], np.nan)
    low = high = np.full(values.shape[1], np.nan)
    if k >= 2:
        draws = np.random.default_rng(seed).integers(0, k, size=(n_boot, k))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a source without values in a replicate: NaN rank
            boot = _ranks(np.nanmean(values[draws], axis=1), higher_is_better)
        tail = 100 * (1 - level) / 2
        low, high = np.nanpercentile(boot, [tail, 100 - tail], axis=0)
    return pd.DataFrame({"rank": rank, "rank_low": low, "rank_high": high}, index=table.columns)


def ranking_agreement(table: pd.DataFrame, higher_is_better: bool = True) -> float:
    """Krippendorff's alpha (ordinal) of the patients' rankings of the sources: each patient (row) ranks
    the sources (columns) by its own mean score; 1 = every patient ranks them alike, 0 = no more
    agreement than chance. NaN with fewer than two patients or sources, or when nothing varies."""
    if table.shape[0] < 2 or table.shape[1] < 2:
        return float("nan")
    ranks = _ranks(table.to_numpy(dtype=np.float64), higher_is_better)
    if len(np.unique(ranks[np.isfinite(ranks)])) < 2:
        return float("nan")  # every value the same: krippendorff cannot define a disagreement
    return float(krippendorff.alpha(reliability_data=ranks, level_of_measurement="ordinal"))
