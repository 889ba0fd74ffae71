"""Nucleus-level scores (idc.scores.nuclei) on hand-built maps with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from idc.scores.nuclei import (evidence_verification, idc_area_share, nuclear_auroc, nuclear_mass,
                               nucleus_rank_correlation, nucleus_relevance)


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
    assert np.isnan(nucleus_rank_correlation(np.ones(4), drops))  # a constant map ranks nothing
    assert np.isnan(nucleus_rank_correlation(np.array([1.0, 2]), drops[:2]))  # too few nuclei


def test_evidence_verification_verified_and_invalid():
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(6), 10)
    p = 0.9 + 0.05 * rng.random(60)
    relies = evidence_verification(p, p - 0.5, p - 0.01, patients, p_tissue=p - 0.02, n_boot=200)
    assert relies.verified and relies.drop_idc.mean == pytest.approx(0.5) and relies.drop_tissue.mean == pytest.approx(0.02)
    assert relies.difference.ci_low > 0.4 and relies.reason().startswith("verified")
    ignores = evidence_verification(p, p - 0.1 * rng.random(60), p - 0.1 * rng.random(60), patients, n_boot=200)
    assert not ignores.verified and "does not rely on the marked evidence" in ignores.reason()
    # decoys read as evidence against IDC: removing them raises P(IDC), the difference is large, but
    # removing the IDC nuclei does not lower P(IDC): not verified; a real drop with swaying decoys is
    # verified and says so
    against = evidence_verification(p - 0.3, p - 0.3, p, patients, n_boot=200)
    assert against.difference.ci_low > 0.2 and not against.verified
    swayed = evidence_verification(p - 0.3, p - 0.5, p, patients, n_boot=200)
    assert swayed.verified and swayed.reason().endswith("(removing them raises P(IDC) by 0.30)")
    one = evidence_verification(p[:10], p[:10] - 0.5, p[:10], patients[:10], n_boot=50)
    assert not one.verified and "too few patients" in one.reason()
