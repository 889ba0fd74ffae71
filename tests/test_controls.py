"""Control maps and the patient-clustered bootstrap: known answers."""
import numpy as np
import pytest

from idc.scores import controls
from idc.scores.bootstrap import cluster_bootstrap
from idc.scores.localization import pixel_auroc


def test_bootstrap_recovers_a_known_spread_between_patients():
    # 400 patients, each with 5 identical patches whose value is the patient's N(0, 1) draw:
    # the mean over patches has standard error 1 / sqrt(400) = 0.05, so the 95% CI is about +-0.098.
    rng = np.random.default_rng(1)
    k, per = 400, 5
    patient_values = rng.normal(0.0, 1.0, k)
    values = np.repeat(patient_values, per)
    clusters = np.repeat(np.arange(k), per)
    est = cluster_bootstrap(values, clusters, n_boot=2000, seed=0)
    assert est.mean == pytest.approx(patient_values.mean())
    assert est.n == k * per and est.n_clusters == k
    half_width = (est.ci_high - est.ci_low) / 2
    assert half_width == pytest.approx(1.96 * patient_values.std() / np.sqrt(k), rel=0.1)
    # resampling patches as if independent would claim sqrt(5) x more precision: clustering matters
    naive = cluster_bootstrap(values, np.arange(k * per), n_boot=2000, seed=0)
    assert (naive.ci_high - naive.ci_low) < 0.6 * (est.ci_high - est.ci_low)


def test_bootstrap_drops_nan_and_needs_two_patients():
    est = cluster_bootstrap([1.0, np.nan, 3.0], [7, 7, 7])
    assert est.mean == 2.0 and est.n == 2 and np.isnan(est.ci_low) and np.isnan(est.ci_high)
    assert np.isnan(cluster_bootstrap([np.nan], [1]).mean)
    with pytest.raises(ValueError):
        cluster_bootstrap([1.0, 2.0], [1])


def test_model_free_controls_know_nothing_of_the_mask_but_darkness_and_edges_see_nuclei():
    images = np.full((4, 20, 20, 3), 230, np.uint8)
    images[:, 8:12, 8:12] = 40  # a dark "nucleus"
    masks = np.zeros((4, 20, 20), bool)
    masks[:, 8:12, 8:12] = True
    maps = controls.model_free_controls(images, seed=0)
    assert set(maps) == set(controls.CONTROL_TITLES.values())
    assert all(m.shape == (4, 20, 20) and (m >= 0).all() for m in maps.values())
    np.testing.assert_allclose(pixel_auroc(maps[controls.CONTROL_TITLES["darkness"]], masks), 1.0)
    edges = maps[controls.CONTROL_TITLES["edges"]]
    assert edges[0, 8, 8] > 1.0 and edges[0, 0, 0] < 1e-9  # flat background has no edges
    assert abs(pixel_auroc(controls.uniform_random_maps((200, 20, 20), seed=0), np.repeat(masks[:1], 200, 0)).mean() - 0.5) < 0.02


def test_blurred_darkness_favours_large_nuclei_over_small_ones_equally_dark():
    from idc.scores.nuclei import nuclear_auroc

    images = np.full((1, 30, 30, 3), 230, np.uint8)
    images[0, 4:12, 4:12] = 40  # a large nucleus (label 1) ...
    images[0, 20, 20] = images[0, 24, 6] = 40  # ... and two one-pixel ones, as dark (label 2)
    labels = np.zeros((1, 30, 30), np.uint8)
    labels[0, 4:12, 4:12] = 1
    labels[0, 20, 20] = labels[0, 24, 6] = 2
    dark = controls.darkness_maps(images)
    assert nuclear_auroc(dark, labels)[0] == 0.5  # equally dark: darkness cannot tell them apart
    assert nuclear_auroc(controls.blurred_darkness_maps(images), labels)[0] == 1.0  # the blur can
    flat = controls.blurred_darkness_maps(np.full((1, 9, 9, 3), 100, np.uint8))
    np.testing.assert_allclose(flat, 1 - 100 / 255)
