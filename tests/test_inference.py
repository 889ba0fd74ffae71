"""Verdicts with a known error rate (idc.scores.inference): the seeded null simulation of issue 23, Holm,
rank intervals and Krippendorff's alpha, each with a known answer."""
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy import stats

from idc.scores.calibration import batch_patient_means, false_positive_rate, null_samples
from idc.scores.inference import (MIN_PATIENTS, holm, paired_t, rank_intervals, ranking_agreement, t_interval,
                                  too_few)
from tests.helpers import REPO

REPS = 20000  # a rate of 2.5% has a Monte-Carlo sd of 0.11% at 20,000 replicates (vectorized: well under 1 s)


def default_patients() -> int:
    """Patients in the default evaluation cohort (configs/data/synthetic.yaml)."""
    return int(OmegaConf.load(REPO / "configs" / "data" / "synthetic.yaml").cohort.patients)


def test_t_interval_is_the_one_sample_t_test_of_the_patient_means():
    rng = np.random.default_rng(1)
    values, clusters = rng.normal(0.3, 1.0, 40), np.repeat(np.arange(8), 5)
    means = np.array([values[clusters == k].mean() for k in range(8)])
    est = t_interval(values, clusters)
    assert est.mean == pytest.approx(means.mean()) and (est.n, est.n_clusters) == (40, 8)
    lo, hi = stats.t.interval(0.95, 7, loc=means.mean(), scale=stats.sem(means))
    assert (est.ci_low, est.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert est.p_greater == pytest.approx(stats.ttest_1samp(means, 0.0, alternative="greater").pvalue)
    assert paired_t(values, np.zeros(40), clusters) == est
    one = t_interval([1.0, np.nan, 2.0], [3, 3, 3])
    assert one.mean == 1.5 and np.isnan(one.ci_low) and one.n == 2 and one.n_clusters == 1


@pytest.mark.parametrize("side", ["beats", "pass"])
def test_verdicts_are_calibrated_at_the_default_cohort_and_at_10_patients(side):
    """Under the null (true difference 0; true similarity at the 0.5 threshold), 128 patches over patients of
    unequal size: the false "beats" (CI low > 0) and false "pass" (CI high < 0.5) rates are <= 3% at nominal
    2.5%, for the default cohort and for 10 patients (the sMPRT patients)."""
    for k in (default_patients(), 10):
        assert k >= MIN_PATIENTS
        rate = false_positive_rate("t", k, reps=REPS, seed=23, side=side)
        assert rate <= 0.03, (side, k, rate)


def test_the_simulation_catches_the_old_percentile_bootstrap():
    """The same simulation flags the interval the verdicts used before: 9-10% false "beats" at 5 patients."""
    assert false_positive_rate("bootstrap", 5, reps=300, seed=23) > 0.05


def test_null_samples_have_unequal_patients_and_the_batch_path_is_t_interval():
    values, clusters = null_samples(np.random.default_rng(0), 5, reps=3)
    sizes = np.bincount(clusters[0])
    assert values.shape == (3, 128) and len(sizes) == 5 and sizes.min() >= 1 and sizes.max() > 2 * sizes.min()
    means = batch_patient_means(values, clusters, 5)
    for r in range(3):  # the vectorized simulation computes exactly what the stages' t_interval computes
        est = t_interval(values[r], clusters[r])
        np.testing.assert_allclose([est.mean, est.ci_low, est.ci_high], [means[r].mean(), *stats.t.interval(
            0.95, 4, loc=means[r].mean(), scale=stats.sem(means[r]))])
    assert too_few(4) == "too few patients (4 < 5)"


def test_holm_known_answer():
    # sorted: 0.005 <= .05/4, 0.01 <= .05/3, 0.03 > .05/2: stop; 0.04 is not rejected although <= .05
    np.testing.assert_array_equal(holm([0.01, 0.04, 0.03, 0.005], 0.05), [True, False, False, True])
    np.testing.assert_array_equal(holm([0.001, np.nan], 0.05), [True, False])  # NaN: never rejected, counted
    assert not holm([0.03, np.nan], 0.05).any()  # 0.03 > 0.05 / 2
    assert holm([], 0.05).shape == (0,)


def test_rank_intervals_and_agreement_known_answers():
    # every patient orders the sources A > B > C, with patient-to-patient shifts: a perfect agreement
    shift = np.arange(6)[:, None] * 0.1
    table = pd.DataFrame(np.array([[3.0, 2.0, 1.0]]) + shift, columns=["A", "B", "C"])
    r = rank_intervals(table, higher_is_better=True, n_boot=200, seed=0)
    assert r["rank"].tolist() == [1, 2, 3] and r["rank_low"].tolist() == [1, 2, 3] and r["rank_high"].tolist() == [1, 2, 3]
    assert rank_intervals(table, higher_is_better=False, n_boot=50)["rank"].tolist() == [3, 2, 1]
    assert ranking_agreement(table) == pytest.approx(1.0)
    # patients that disagree: half rank A first, half C first: no better than chance
    flipped = table.copy()
    flipped.iloc[::2] = flipped.iloc[::2, ::-1].to_numpy()
    assert ranking_agreement(flipped) < 0.1
    wide = rank_intervals(flipped, n_boot=500, seed=0)
    assert wide.at["A", "rank_low"] < wide.at["A", "rank_high"]
    assert np.isnan(ranking_agreement(table.iloc[:1]))  # one patient: nothing to agree with
