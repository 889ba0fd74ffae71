"""Known answers for localization and faithfulness scores, and equality with Quantus 0.6 on the same arrays."""
import numpy as np
import pytest
import torch

from idc.scores import faithfulness as faith
from idc.scores import localization as loc
from tests.helpers.models import RegionModel


def square_mask(n=2, size=20, r0=5, c0=5, side=10):
    m = np.zeros((n, size, size), bool)
    m[:, r0 : r0 + side, c0 : c0 + side] = True
    return m


def test_relevance_variants_split_evidence_for_and_against():
    raw = np.zeros((1, 3, 2, 2))
    raw[0, :, 0, 0] = [1.0, 1.0, -0.5]  # net evidence for: 1.5
    raw[0, :, 0, 1] = [-1.0, -1.0, 0.0]  # net evidence against
    v = loc.relevance_variants(raw)
    np.testing.assert_allclose(v["positive"][0], [[1.5, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(v["absolute"][0], [[2.5, 2.0], [0.0, 0.0]])
    np.testing.assert_allclose(loc.relevance_variants(-np.ones((1, 2, 2)))["positive"], 0.0)


def test_pixel_auroc_perfect_inverted_and_undefined():
    masks = square_mask()
    np.testing.assert_allclose(loc.pixel_auroc(masks.astype(float), masks), 1.0)
    np.testing.assert_allclose(loc.pixel_auroc((~masks).astype(float), masks), 0.0)
    assert np.isnan(loc.pixel_auroc(masks.astype(float), np.zeros_like(masks))).all()


def test_pointing_game_finds_the_true_maximum_not_the_first_clipped_tie():
    masks = square_mask(n=1)
    maps = np.full((1, 20, 20), 0.9)  # 30 pixels would tie at 1.0 after a 99th-percentile clip ...
    maps[0, 0, :] = 0.99  # ... and the top-left one would win; the true maximum is inside the mask
    maps[0, 9, 9] = 1.0
    assert loc.pointing_game(maps, masks)[0] == 1.0


def test_pointing_game_tolerance_and_ties():
    masks = square_mask(n=1)  # rows/cols 5..14
    maps = np.zeros((1, 20, 20))
    maps[0, 16, 16] = 1.0  # two pixels diagonally off the square
    assert loc.pointing_game(maps, masks)[0] == 0.0
    assert loc.pointing_game(maps, masks, tolerance=1)[0] == 0.0
    assert loc.pointing_game(maps, masks, tolerance=2)[0] == 1.0
    maps[0, 7, 7] = 1.0  # now tied: one of the two maxima is inside -> expected hit 1/2
    assert loc.pointing_game(maps, masks)[0] == 0.5
    # a constant map points nowhere in particular: chance = mask fraction, or the dilated mask's share
    assert loc.pointing_game(np.ones((1, 20, 20)), masks)[0] == pytest.approx(100 / 400)
    assert loc.pointing_chance(masks[:1])[0] == pytest.approx(100 / 400)
    assert loc.pointing_game(np.ones((1, 20, 20)), masks, tolerance=2)[0] == pytest.approx(14 * 14 / 400)
    assert loc.pointing_chance(masks[:1], tolerance=2)[0] == pytest.approx(14 * 14 / 400)
    with pytest.raises(ValueError):
        loc.pointing_game(maps, masks, tolerance=-1)


def test_relevance_mass_and_rank_known_answers():
    masks = square_mask()
    np.testing.assert_allclose(loc.relevance_mass_accuracy(masks.astype(float), masks), 1.0)
    np.testing.assert_allclose(loc.relevance_mass_accuracy(np.ones(masks.shape), masks), 100 / 400)
    # an empty map puts no relevance in the mask: 0 and counted (it was NaN and dropped); an empty mask: NaN
    np.testing.assert_array_equal(loc.relevance_mass_accuracy(np.zeros(masks.shape), masks), 0.0)
    assert np.isnan(loc.relevance_mass_accuracy(np.ones(masks.shape), np.zeros(masks.shape, bool))).all()
    with pytest.raises(ValueError, match="non-negative"):
        loc.relevance_mass_accuracy(-np.ones(masks.shape), masks)
    half = np.zeros(masks.shape)
    half[:, 5:10, 5:15] = 1.0  # half of the mask, nothing outside
    half[:, 0, :] = 0.5  # 20 weaker pixels outside
    np.testing.assert_allclose(loc.relevance_mass_accuracy(half, masks), 50 / 60)
    # rank accuracy: K = 100; the top 50 are inside, then 20 outside at 0.5, then 30 zeros (330 tied, 50 inside)
    np.testing.assert_allclose(loc.relevance_rank_accuracy(half, masks), (50 + 30 * 50 / 330) / 100)
    np.testing.assert_allclose(loc.relevance_rank_accuracy(np.ones(masks.shape), masks), 100 / 400)


def test_top_k_intersection_known_answers():
    masks = square_mask(n=1)
    maps = masks.astype(float)
    assert loc.top_k_intersection(maps, masks, k=100)[0] == 1.0
    assert loc.top_k_intersection(maps, masks, k=200)[0] == 0.5
    with pytest.raises(ValueError, match="k="):
        loc.top_k_intersection(maps, masks, k=0)


def test_every_score_equals_quantus_on_tie_free_maps():
    import quantus  # the dev extra installs it
    rng = np.random.default_rng(0)
    n, size = 6, 12
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        r, c = rng.integers(0, 6, 2)
        masks[i, r : r + 4 + i % 3, c : c + 5] = True
    maps = rng.random((n, size, size)) + 0.8 * masks  # continuous: no ties
    a, s = maps[:, None], masks[:, None].astype(float)
    x, y = np.zeros((n, 1, size, size)), np.zeros(n, int)
    kw = dict(abs=False, normalise=False, disable_warnings=True)

    def q(metric):
        return np.asarray(metric(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s), dtype=float)

    np.testing.assert_allclose(loc.pointing_game(maps, masks), q(quantus.PointingGame(**kw)))
    np.testing.assert_allclose(loc.relevance_mass_accuracy(maps, masks), q(quantus.RelevanceMassAccuracy(**kw)))
    np.testing.assert_allclose(loc.relevance_rank_accuracy(maps, masks), q(quantus.RelevanceRankAccuracy(**kw)))
    np.testing.assert_allclose(loc.pixel_auroc(maps, masks), q(quantus.AUC(**kw)))
    np.testing.assert_allclose(loc.top_k_intersection(maps, masks, k=20), q(quantus.TopKIntersection(k=20, **kw)))


def test_localization_scores_reports_every_score():
    masks = square_mask()
    out = loc.localization_scores(masks.astype(float), masks, tolerance=1, top_k=10)
    assert set(out) == set(loc.LOCALIZATION_SCORES)
    assert all(v.shape == (2,) and np.allclose(v, 1.0) for v in out.values())


# ---------------------------------------------------------------- faithfulness
def test_relevance_order_ties_are_random_not_raster():
    flat = np.zeros((1, 10, 10))
    d = faith.top_fraction_masks(flat, [0.0, 0.1, 1.0], seed=0)
    assert d.shape == (1, 3, 10, 10) and d[0, 0].sum() == 0 and d[0, 2].all() and d[0, 1].sum() == 10
    assert not d[0, 1, 0].all()  # not simply the first row
    ramp = np.arange(16, dtype=float).reshape(1, 4, 4)
    np.testing.assert_array_equal(faith.top_fraction_masks(ramp, [0.25])[0, 0].ravel(), np.arange(16) >= 12)


def corner_model():
    """P(class 1) rises with the intensity of the top-left 5x5 corner of a 20x20 input (logit +-3.75 when the
    corner is 1 / -1): the shared toy model with its region in that corner."""
    return RegionModel(region=(slice(0, 5), slice(0, 5)), size=20, offset=3.75, scale=1.0)


@pytest.mark.parametrize("fill", faith.FILLS)
def test_deletion_and_insertion_reward_the_map_on_the_evidence(fill):
    x = -torch.ones(2, 3, 20, 20)
    x[:, :, :5, :5] = 1.0
    target = torch.ones(2, dtype=torch.long)
    good = np.zeros((2, 20, 20))
    good[:, :5, :5] = 1.0
    bad = 1.0 - good
    model = corner_model()
    curves = faith.deletion_curves(model, x, good, target, fill=fill, batch_size=7)
    assert curves.shape == (2, len(faith.DEFAULT_FRACTIONS))
    intact = torch.softmax(model(x), 1)[0, 1].item()  # nothing deleted yet: the model's P on the patch
    assert 0.99 < intact and curves[0, 0] == pytest.approx(intact, rel=1e-5)
    area = lambda c: faith.curve_area(faith.DEFAULT_FRACTIONS, c)  # noqa: E731
    assert (area(curves) < area(faith.deletion_curves(model, x, bad, target, fill=fill)) - 0.2).all()
    ins_good = area(faith.insertion_curves(model, x, good, target, sigma=3.0))
    ins_bad = area(faith.insertion_curves(model, x, bad, target, sigma=3.0))
    assert (ins_good > ins_bad + 0.2).all()


def test_curve_area_and_fills():
    np.testing.assert_allclose(faith.curve_area([0, 0.5, 1], np.ones((3, 3))), 1.0)
    x = torch.randn(2, 3, 10, 10)
    assert torch.allclose(faith.fill_images(x, "mean")[:, :, 3, 4], x.mean(dim=(2, 3)))
    assert faith.fill_images(x, "zero").abs().sum() == 0
    assert faith.fill_images(x, "blur").std() < x.std()
    with pytest.raises(ValueError, match="fill"):
        faith.fill_images(x, "zeros")


def test_faithfulness_scores_report_every_score():
    x = torch.randn(2, 3, 20, 20)
    out = faith.faithfulness_scores(corner_model(), x, square_mask().astype(float), torch.ones(2, dtype=torch.long))
    assert set(out) == {"deletion", "insertion", "insertion_mean", "road"}
    assert all(v.shape == (2,) and np.isfinite(v).all() for v in out.values())


def test_insertion_from_the_mean_colour_is_a_second_start():
    x = -torch.ones(2, 3, 20, 20)
    x[:, :, :5, :5] = 1.0
    good = np.zeros((2, 20, 20))
    good[:, :5, :5] = 1.0
    target, model = torch.ones(2, dtype=torch.long), corner_model()
    start = faith.insertion_curves(model, x, good, target, start="mean")[:, 0]  # nothing inserted yet
    mean_image = faith.fill_images(x, "mean")
    np.testing.assert_allclose(start, torch.softmax(model(mean_image), 1)[:, 1].detach().numpy(), rtol=1e-5)
    blur = faith.insertion_curves(model, x, good, target, sigma=3.0)[:, 0]
    assert not np.allclose(start, blur)
    with pytest.raises(ValueError, match="insertion start"):
        faith.insertion_curves(model, x, good, target, start="zero")


def test_road_on_a_map_half_tied_at_zero_scores_like_its_dense_ranking():
    """A positive-relevance map is 0 on about half its pixels. pytorch-grad-cam thresholds at
    np.percentile(map, p) and keeps `map < threshold`: with half the pixels tied at 0 it keeps nothing at
    p = 10 and 30, i.e. imputes 100% where it should impute 90 / 70% (and its least-relevant-first half
    fares alike). Ours ranks the ties at random first."""
    tied = np.random.default_rng(0).random((2, 20, 20)) + 0.1
    tied[:, 10:] = 0.0  # the lower half: no evidence, all tied at 0
    dense = faith.dense_ranking(tied, seed=3)
    assert len(np.unique(dense[0])) == 400 and (dense[:, :10] > dense[:, 10:].max()).all()  # order kept, ties split
    for p in (10, 30, 50, 70, 90):  # the share ROAD keeps at percentile p is exactly p%
        assert (dense[0] < np.percentile(dense[0], p)).mean() == pytest.approx(p / 100, abs=1 / 400)
        assert (tied[0] < np.percentile(tied[0], p)).mean() == (0.0 if p < 50 else pytest.approx(p / 100, abs=1 / 400))
    x = -torch.ones(2, 3, 20, 20)
    x[:, :, 10:15, :5] = 1.0  # the evidence lies in the tied half: imputing all of it is what the old ROAD did
    model, target = RegionModel(region=(slice(10, 15), slice(0, 5)), size=20, offset=3.75, scale=1.0), torch.ones(2)
    ours = faith.road_scores(model, x, tied, target, seed=3)
    np.testing.assert_allclose(ours, faith.road_scores(model, x, dense, target, seed=3), rtol=1e-6)
    raw, library = (_road_combined(model, x, m.astype(np.float32), seed=3) for m in (tied, dense))
    assert np.abs(ours - raw).min() > 0.02, (ours, raw)
    # our assembled system and batched model calls are the library's ROADCombined on the same ranking,
    # noise included (the seeded draw moves the scores by ~1e-3, far above the tolerance)
    np.testing.assert_allclose(ours, library, atol=2e-6)


def _road_combined(model, x, cams, seed):
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ROADCombined(percentiles=[10, 30, 50, 70, 90])(x, cams, [ClassifierOutputSoftmaxTarget(1)] * len(x), model)


def test_road_system_is_the_library_sparse_system():
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer, neighbors_weights

    rng = np.random.default_rng(1)
    keep, img = rng.random((7, 9)) < 0.4, rng.random((3, 7, 9))
    keep[0, :] = False  # border pixels to impute: their missing neighbours reduce the diagonal
    a, b = faith.road_system(keep, img)
    ref_a, ref_b = NoisyLinearImputer.setup_sparse_system(keep.astype(np.float32), img, neighbors_weights)
    np.testing.assert_allclose(a.toarray(), ref_a.toarray(), atol=1e-12)
    np.testing.assert_allclose(b, ref_b, atol=1e-12)
