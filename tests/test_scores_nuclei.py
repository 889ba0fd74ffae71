"""Nucleus-level scores (idc.scores.nuclei) on hand-built maps with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from idc.scores.nuclei import (EVIDENCE_INVALID, evidence_verification, idc_area_share, nuclear_auroc, nuclear_mass,
                               nucleus_rank_correlation, nucleus_rank_scores, nucleus_relevance)


def label_map():
    """One 4 x 4 patch: 3 IDC pixels (1), 2 decoy pixels (2), the rest background."""
    lab = np.zeros((4, 4), np.uint8)
    lab[0, :3] = 1
    lab[3, 2:] = 2
    return lab


def test_nuclear_auroc_known_answers():
    lab = label_map()
    idc_only = (lab == 1).astype(float) + 5 * (lab == 0)  # background is ignored, however bright
    dark = np.ones((4, 4))  # equally dark nuclei: chance
    inverted = (lab == 2).astype(float)
    half = np.zeros((4, 4))
    half[0, :3], half[3, 2:] = [0.2, 0.6, 0.9], 0.5  # one IDC pixel of three below both decoy pixels: 4/6 pairs
    got = nuclear_auroc(np.stack([idc_only, dark, inverted, half]), np.stack([lab] * 4))
    np.testing.assert_allclose(got, [1.0, 0.5, 0.0, 2 / 3])
    no_decoy = np.where(lab == 2, 0, lab)
    assert np.isnan(nuclear_auroc(dark[None], no_decoy[None])[0])


def test_nuclear_mass_and_its_chance_level():
    lab = label_map()
    maps = np.stack([(lab == 1) * 2.0, np.ones((4, 4)), (lab > 0) * 1.0 + (lab == 2) * 2.0, np.zeros((4, 4))])
    got = nuclear_mass(maps, np.stack([lab] * 4))
    np.testing.assert_allclose(got[:3], [1.0, 3 / 5, 3 / 9])
    assert np.isnan(got[3])  # no relevance on nuclei
    np.testing.assert_allclose(idc_area_share(lab[None]), [3 / 5])
    with pytest.raises(ValueError, match="non-negative"):
        nuclear_mass(-maps, np.stack([lab] * 4))


def test_nucleus_relevance_sums_per_nucleus():
    ids = np.array([[0, 5, 5], [2, 2, 0], [9, 0, 5]])
    m = np.arange(9.0).reshape(3, 3)
    np.testing.assert_allclose(nucleus_relevance(m, ids, [5, 2, 7, 9]), [1 + 2 + 8, 3 + 4, 0, 6])
    assert nucleus_relevance(m, ids, []).shape == (0,)


def test_nucleus_rank_correlation_known_answers():
    drops = np.array([0.5, 0.1, 0.3, -0.2])
    assert nucleus_rank_correlation(np.array([9.0, 2, 4, 0]), drops) == pytest.approx(1.0)
    assert nucleus_rank_correlation(np.array([0.0, 9, 4, 10]), drops) == pytest.approx(-1.0)
    assert nucleus_rank_correlation(np.zeros(4), drops) == 0.0  # a constant map ranks nothing: random ties
    assert np.isnan(nucleus_rank_correlation(np.arange(4.0), np.ones(4)))  # constant drops: nothing to agree with
    assert np.isnan(nucleus_rank_correlation(np.array([1.0, 2]), drops[:2]))  # too few nuclei


def test_nucleus_rank_scores_per_patch():
    ids = np.zeros((3, 2, 3), np.int32)
    ids[:, 0], ids[:, 1, :2] = [1, 2, 3], 4  # nuclei 1, 2, 3 one pixel each, nucleus 4 two pixels
    maps = np.zeros((3, 2, 3))
    maps[0, 0], maps[0, 1, :2] = [4.0, 3.0, 2.0], 0.5  # per nucleus 4, 3, 2, 1: the drops' order
    maps[1, 0] = [1.0, 2.0, 3.0]  # per nucleus 1, 2, 3, 0 (nucleus 4 gets nothing)
    drops = [(np.array([1, 2, 3, 4]), np.array([0.4, 0.3, 0.2, 0.1]))] * 2 + [None]
    got = nucleus_rank_scores(maps, ids, drops)
    np.testing.assert_allclose(got[:2], [1.0, 0.2])  # ranks (2, 3, 4, 1) vs (4, 3, 2, 1): sum d^2 = 8, 1 - 48 / 60
    assert np.isnan(got[2])  # drops not measured on this patch
    with pytest.raises(ValueError, match="must agree"):
        nucleus_rank_scores(maps, ids, drops[:2])


def test_evidence_verification_verified_and_invalid():
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(6), 10)
    p = 0.9 + 0.05 * rng.random(60)
    relies = evidence_verification(p, p - 0.5, p - 0.01, patients, p_tissue=p - 0.02)
    assert relies.verified and relies.drop_idc.mean == pytest.approx(0.5) and relies.drop_tissue.mean == pytest.approx(0.02)
    assert relies.difference.ci_low > 0.4 and relies.reason().startswith("verified")
    ignores = evidence_verification(p, p - 0.1 * rng.random(60), p - 0.1 * rng.random(60), patients)
    assert not ignores.verified and "does not rely on the marked evidence" in ignores.reason()
    assert relies.localization_verdict() is None and ignores.localization_verdict() == EVIDENCE_INVALID
    # decoys read as evidence against IDC: removing them raises P(IDC), the difference is large, but
    # removing the IDC nuclei does not lower P(IDC): not verified; a real drop with swaying decoys is
    # verified and says so
    against = evidence_verification(p - 0.3, p - 0.3, p, patients)
    assert against.difference.ci_low > 0.2 and not against.verified
    swayed = evidence_verification(p - 0.3, p - 0.5, p, patients)
    assert swayed.verified and swayed.reason().endswith("(removing them raises P(IDC) by 0.30)")
    one = evidence_verification(p[:10], p[:10] - 0.5, p[:10], patients[:10])
    assert not one.verified and one.reason().startswith("too few patients (1 < 5)")
    assert one.localization_verdict() == "too few patients (1 < 5) to verify the evidence"
    # v7o's default model: removing the IDC nuclei lowers P(IDC) (0.11) by more than removing the decoys, but
    # no more than pasting the same pixels onto non-nuclear tissue (0.14): a paste of that size, not the
    # nuclei, moves the model, so the evidence is not verified (and the reason names the tissue control)
    noise = 0.02 * rng.standard_normal(60)
    paste = evidence_verification(p, p - 0.11 + noise, p + 0.17, patients, p_tissue=p - 0.14)
    assert paste.difference.ci_low > 0 and paste.drop_idc.ci_low > 0 and paste.beyond_tissue.ci_high < 0
    assert not paste.verified and "equal area of non-nuclear tissue is replaced: -0.03" in paste.reason()
    assert relies.beyond_tissue.ci_low > 0.4 and ignores.beyond_tissue is None


def test_evidence_verification_is_a_t_interval_on_patient_means():
    """Known answer: 5 patients (2 and 1 patches), IDC drops 0.3..0.7 per patient: mean 0.5, sd 0.158, t_4 2.776 ->
    [0.304, 0.696]; decoys dropped half as much: the difference has the same interval halved. With 4 patients no
    verdict at all, however large the drop; NaN patches (no counterfactual) are left out."""
    patients = np.array([0, 0, 1, 2, 2, 3, 4, 4, 4])
    drop = np.array([0.3, 0.3, 0.4, 0.5, 0.5, 0.6, 0.7, 0.7, 0.7])
    p = np.full(9, 0.9)
    v = evidence_verification(p, p - drop, p - drop / 2, patients, p_tissue=p)
    half = 2.7764451 * np.std([0.3, 0.4, 0.5, 0.6, 0.7], ddof=1) / np.sqrt(5)
    assert (v.drop_idc.mean, v.drop_idc.n, v.drop_idc.n_clusters) == (pytest.approx(0.5), 9, 5)
    np.testing.assert_allclose([v.drop_idc.ci_low, v.drop_idc.ci_high], [0.5 - half, 0.5 + half], atol=1e-6)
    np.testing.assert_allclose([v.difference.ci_low, v.drop_tissue.mean], [0.25 - half / 2, 0.0], atol=1e-6)
    assert v.verified
    few = evidence_verification(p, p - drop, p, np.minimum(patients, 3), p_tissue=p)
    assert few.drop_idc.ci_low > 0.1 and not few.verified and few.localization_verdict().startswith("too few patients (4 < 5)")
    gaps = evidence_verification(p, np.where(patients == 4, np.nan, p - drop), p, patients)
    assert (gaps.difference.n, gaps.difference.n_clusters) == (6, 4) and not gaps.verified
