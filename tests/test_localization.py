"""Known answers for localization and faithfulness scores (idc.sanity.localization)."""
import numpy as np
import pytest
import torch
from torch import nn

from idc.sanity import faithfulness as faith
from idc.sanity import localization as loc


def square_mask(n=2, size=20, r0=5, c0=5, side=10):
    m = np.zeros((n, size, size), bool)
    m[:, r0 : r0 + side, c0 : c0 + side] = True
    return m


def test_pixel_auroc_perfect_inverted_and_undefined():
    masks = square_mask()
    np.testing.assert_allclose(loc.pixel_auroc(masks.astype(float), masks), 1.0)
    np.testing.assert_allclose(loc.pixel_auroc((~masks).astype(float), masks), 0.0)
    empty = np.zeros_like(masks)
    assert np.isnan(loc.pixel_auroc(masks.astype(float), empty)).all()


def test_pointing_game_with_tolerance():
    masks = square_mask(n=1)
    maps = np.zeros((1, 20, 20))
    maps[0, 16, 16] = 1.0  # two pixels right/below the square (rows/cols 5..14)
    assert loc.pointing_game(maps, masks)[0] == 0.0
    assert loc.pointing_game(maps, masks, tolerance=1)[0] == 0.0
    assert loc.pointing_game(maps, masks, tolerance=2)[0] == 1.0
    maps[0, 7, 7] = 2.0
    assert loc.pointing_game(maps, masks)[0] == 1.0
    assert loc.pointing_game(np.ones((1, 20, 20)), masks)[0] == 0.0  # constant map points nowhere
    with pytest.raises(ValueError):
        loc.pointing_game(maps, masks, tolerance=-1)


def test_energy_inside():
    masks = square_mask()
    np.testing.assert_allclose(loc.energy_inside(masks.astype(float), masks), 1.0)
    np.testing.assert_allclose(loc.energy_inside(np.ones(masks.shape), masks), 100 / 400)
    assert np.isnan(loc.energy_inside(np.zeros(masks.shape), masks)).all()


def test_random_maps_are_chance_level():
    masks = square_mask(n=50)
    maps = loc.random_maps(masks.shape, seed=0)
    assert abs(np.nanmean(loc.pixel_auroc(maps, masks)) - 0.5) < 0.05


def test_deletion_masks_delete_most_relevant_first():
    maps = np.arange(16, dtype=float).reshape(1, 4, 4)
    d = faith.deletion_masks(maps, [0.0, 0.25, 1.0])
    assert d.shape == (1, 3, 4, 4)
    assert d[0, 0].sum() == 0 and d[0, 2].all()
    np.testing.assert_array_equal(d[0, 1].ravel(), np.arange(16) >= 12)


class RegionModel(nn.Module):
    """P(class 1) rises with the mean intensity of the top-left 5x5 corner."""

    def forward(self, x):
        score = 4 * x[:, :, :5, :5].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(score), score], dim=1)


def test_deletion_auc_rewards_the_map_on_the_evidence():
    x = -torch.ones(2, 3, 20, 20)
    x[:, :, :5, :5] = 1.0
    target = torch.ones(2, dtype=torch.long)
    good = np.zeros((2, 20, 20))
    good[:, :5, :5] = 1.0
    bad = 1.0 - good
    model = RegionModel()
    curves = faith.deletion_curves(model, x, good, target, baseline="mean", batch_size=7)
    assert curves.shape == (2, len(faith.DEFAULT_FRACTIONS))
    assert curves[0, 0] == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item(), rel=1e-5)
    auc_good = faith.curve_area(faith.DEFAULT_FRACTIONS, curves)
    auc_bad = faith.curve_area(faith.DEFAULT_FRACTIONS, faith.deletion_curves(model, x, bad, target, baseline="mean"))
    assert (auc_good < auc_bad - 0.2).all()


def test_curve_area_and_baselines():
    np.testing.assert_allclose(faith.curve_area([0, 0.5, 1], np.ones((3, 3))), 1.0)
    x = torch.randn(2, 3, 10, 10)
    assert torch.allclose(faith.baseline_images(x, "mean")[:, :, 3, 4], x.mean(dim=(2, 3)))
    assert faith.baseline_images(x, "blur").std() < x.std()
    with pytest.raises(ValueError, match="baseline"):
        faith.baseline_images(x, "zeros")


def test_score_maps_reports_every_score():
    x = torch.randn(2, 3, 20, 20)
    masks = square_mask()
    out = loc.score_maps(RegionModel(), x, torch.ones(2, dtype=torch.long), masks.astype(float), masks, road=True)
    assert set(out) == {"pixel_auroc", "pointing_game", "energy_inside", "deletion_auc", "road"}
    assert all(v.shape == (2,) for v in out.values())
