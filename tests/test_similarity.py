"""Known answers for the Adebayo similarity measures (idc.scores.similarity)."""
import numpy as np
import pytest

from idc.scores import similarity as sim


@pytest.fixture
def smooth_map():
    yy, xx = np.mgrid[0:50, 0:50]
    return np.exp(-((yy - 20.0) ** 2 + (xx - 30.0) ** 2) / 60.0) + 0.3 * np.sin(xx / 4.0) ** 2


def test_identical_maps_score_one_on_every_measure(smooth_map):
    assert sim.spearman_similarity(smooth_map, smooth_map) == pytest.approx(1.0)
    assert sim.ssim_similarity(smooth_map, smooth_map) == pytest.approx(1.0)
    assert sim.hog_similarity(smooth_map, smooth_map) == pytest.approx(1.0)


def test_reversed_ranking_is_minus_one_and_ssim_negative(smooth_map):
    inverted = smooth_map.max() - smooth_map
    assert sim.spearman_similarity(smooth_map, inverted) == pytest.approx(-1.0)
    assert sim.ssim_similarity(smooth_map / smooth_map.max(), inverted / smooth_map.max()) < 0
    # HOG uses unsigned orientations: inverting contrast keeps the edge structure.
    assert sim.hog_similarity(smooth_map, inverted) == pytest.approx(1.0)


def test_spearman_ignores_monotone_rescaling_but_ssim_does_not(smooth_map):
    assert sim.spearman_similarity(smooth_map, np.exp(3 * smooth_map)) == pytest.approx(1.0)
    scaled = smooth_map / smooth_map.max()
    assert sim.ssim_similarity(scaled, scaled**4) < 0.99


def test_independent_noise_is_near_zero():
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 50, 50))
    assert abs(sim.spearman_similarity(a, b)) < 0.1
    assert abs(sim.hog_similarity(a, b)) < 0.2
    assert abs(sim.ssim_similarity(a, b)) < 0.1


def test_constant_map_conventions(smooth_map):
    zero = np.zeros((50, 50))
    assert sim.spearman_similarity(zero, zero) == 1.0
    assert sim.spearman_similarity(zero, smooth_map) == 0.0
    assert sim.hog_similarity(zero, smooth_map) == 0.0
    assert sim.pearson(np.ones(4), np.ones(4)) == 1.0


def test_absolute_and_signed_maps_differ_for_sign_flips():
    rng = np.random.default_rng(1)
    raw = rng.normal(size=(3, 3, 50, 50))
    gray = np.zeros((3, 50, 50)) + rng.random((3, 50, 50))
    out = sim.map_similarities(raw, -raw, gray, gray, hog_pixels_per_cell=5)
    assert set(out) == set(sim.METRICS)
    np.testing.assert_allclose(out["spearman_abs"], 1.0)
    np.testing.assert_allclose(out["spearman_signed"], -1.0)
    np.testing.assert_allclose(out["ssim"], 1.0)
    assert out["hog"].shape == (3,)


def test_channel_reduction_shapes():
    raw = np.arange(2 * 3 * 4 * 4, dtype=float).reshape(2, 3, 4, 4) - 40
    assert sim.absolute_map(raw).shape == (2, 4, 4)
    np.testing.assert_allclose(sim.signed_map(raw), raw.sum(axis=1))
    np.testing.assert_allclose(sim.absolute_map(raw[:, 0]), np.abs(raw[:, 0]))


def test_bad_shapes_and_cell_size_raise(smooth_map):
    with pytest.raises(ValueError, match="same shape"):
        sim.spearman_similarity(smooth_map, smooth_map[:10])
    with pytest.raises(ValueError, match="too large"):
        sim.hog_similarity(smooth_map, smooth_map, pixels_per_cell=30)
    with pytest.raises(ValueError, match="stacks"):
        sim.batch_similarity(sim.spearman_similarity, smooth_map, smooth_map)
