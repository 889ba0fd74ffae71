"""Stain invariance of explanations (`idc.scores.invariance`): known answers on hand-built two-stain images, the
seeded perturbation and the pair filter, and the leaderboard's flag on hand-built per-patch scores."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage.color import rgb_from_hed

from idc.data.augment import draw_batch
from idc.errors import ConfigError
from idc.leaderboard import stage
from idc.leaderboard.invariance import StainPairs, stain_facts, stain_scores
from idc.leaderboard.verdicts import stain_flags
from idc.scores.controls import darkness_maps
from idc.scores.invariance import (feature_invariance, hed_jittered, stable_pairs, stain_invariance,
                                   stain_perturbed)
from tests.helpers import compose_cfg


def two_stain_patches(n: int = 3, size: int = 20, seed: int = 0):
    """(uint8 NHWC patches, haematoxylin concentrations [n, H, W]): each pixel holds haematoxylin or eosin alone,
    at amounts whose darkness interleaves, so the darkness order between the two kinds of pixel is the balance
    of the stains."""
    rng = np.random.default_rng(seed)
    is_h = rng.random((n, size, size)) < 0.5
    amount = rng.uniform(0.5, 0.7, (n, size, size))
    conc = np.zeros((n, size, size, 3))
    conc[..., 0] = np.where(is_h, amount, 0.0)
    conc[..., 1] = np.where(is_h, 0.0, amount * 1.75)  # eosin darkens less per unit: equal darkness ranges
    rgb = np.exp(-(conc @ rgb_from_hed))
    return np.rint(rgb * 255).clip(0, 255).astype(np.uint8), conc[..., 0]


MORE_H_LESS_E = np.array([[1.2, 0.8, 1.0], [0.0, 0.0, 0.0]], np.float32)  # haematoxylin x 1.2, eosin x 0.8


def test_a_map_that_ignores_colour_scores_one_and_one_that_copies_it_scores_lower():
    patches, conc_h = two_stain_patches()
    jittered = hed_jittered(patches, np.tile(MORE_H_LESS_E, (len(patches), 1, 1)))
    assert np.abs(jittered.astype(int) - patches).mean() > 5  # the stain did change
    pattern = np.random.default_rng(1).random((len(patches), 20, 20))  # a "method" blind to colour: a fixed map
    np.testing.assert_allclose(stain_invariance(pattern, pattern.copy()), 1.0, atol=1e-12)
    flat = np.zeros((len(patches), 20, 20))
    np.testing.assert_array_equal(stain_invariance(flat, flat), 1.0)  # an empty map stays empty: unchanged
    # a "method" that copies the colour (image darkness): haematoxylin pixels darken, eosin pixels pale
    copies = stain_invariance(darkness_maps(patches), darkness_maps(jittered))
    assert (copies < 0.8).all() and (copies > 0.2).all(), copies
    # ... and a random map drawn afresh on the copy: unrelated, about 0
    rng = np.random.default_rng(2)
    assert np.abs(stain_invariance(rng.random(pattern.shape), rng.random(pattern.shape))).max() < 0.2
    # a rank measure's blind spot (docs): a monotone function of one stain's concentration keeps its ranks
    np.testing.assert_allclose(stain_invariance(conc_h, 1.2 * conc_h + 0.05), 1.0)


def test_the_perturbation_is_seeded_draws_like_training_and_leaves_the_rest_alone():
    patches, _ = two_stain_patches(n=4)
    a, hed_a = stain_perturbed(patches, 0.05, 0.05, seed=3)
    b, hed_b = stain_perturbed(patches, 0.05, 0.05, seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(hed_a, hed_b)
    _, expected = draw_batch(np.random.default_rng(3), 4, flip=False, hed_scale=0.05, hed_shift=0.05)
    np.testing.assert_array_equal(hed_a, expected)  # the training augmentation's draws, in its order
    assert a.dtype == np.uint8 and a.shape == patches.shape and not np.array_equal(a, patches)
    assert not np.array_equal(stain_perturbed(patches, 0.05, 0.05, seed=4)[0], a)
    same, hed = stain_perturbed(patches, 0.0, 0.0, seed=3)  # strength 0: the patches as they are
    np.testing.assert_array_equal(same, patches)
    np.testing.assert_array_equal(hed[:, 0], 1.0)
    with pytest.raises(ValueError, match="uint8 NHWC"):
        stain_perturbed(patches.astype(np.float32), 0.05, 0.05, seed=3)


def test_pairs_whose_prediction_moved_are_dropped_and_features_compare_by_rank():
    keep = stable_pairs([0.9, 0.9, 0.5, 0.2], [0.89, 0.7, 0.54, 0.2], 0.05)
    assert keep.tolist() == [True, False, True, True]
    feats = np.random.default_rng(0).random((3, 16))
    np.testing.assert_allclose(feature_invariance(feats, 2 * feats + 1), 1.0)  # ranks kept
    np.testing.assert_allclose(feature_invariance(feats, -feats), -1.0)


def flag_frame(k_patients: int) -> pd.DataFrame:
    """Per-patch invariance of a method as stable as the model's features ("Steady"), one clearly below them
    ("Follows"), and a control, on k patients x 3 patches (one pair dropped: NaN)."""
    rng = np.random.default_rng(0)
    pid = np.repeat(np.arange(k_patients), 3)
    feats = 0.99 + rng.normal(0, 0.002, len(pid))
    rows = []
    for name, kind, inv in (("Steady", "method", feats + rng.normal(0, 0.002, len(pid))),
                            ("Follows", "method", 0.7 + rng.normal(0, 0.05, len(pid))),
                            ("control: image darkness", "control", np.full(len(pid), 0.99))):
        inv = inv.copy()
        inv[0] = np.nan  # a pair whose prediction moved: not scored
        rows.append(pd.DataFrame(dict(method=name, kind=kind, image_id=np.arange(len(pid)), patient_id=pid,
                                      stain_invariance=inv, feature_invariance=feats)))
    return pd.concat(rows, ignore_index=True)


def test_the_flag_compares_each_map_with_the_models_features_holm_corrected():
    flags = stain_flags(flag_frame(8), ["Steady", "Follows"])
    assert flags["Steady"].startswith("no (") and flags["Follows"].startswith("yes (-0.29 [")
    assert set(stain_flags(flag_frame(4), ["Steady", "Follows"]).values()) == {"too few patients (4 < 5)"}
    assert stain_flags(flag_frame(8).drop(columns="stain_invariance"), ["Steady"]) == {}  # not measured


def test_each_pair_is_mapped_with_the_same_seed_in_the_same_positions():
    """A "method" whose map is its own seeded noise (a stochastic method on a copy it cannot tell apart): the
    copy gets the same seed, so the noise does not count (1); a control's random map is redrawn (seed + 1: about
    0); a dropped pair is NaN; where the k patches are not whole batches of the n, their first maps are recomputed."""
    patches, _ = two_stain_patches(n=3)

    def noise(images, seed):  # numpy fills in order: the first k maps of n are the k maps
        return {"positive": np.random.default_rng(seed).random(np.shape(images)[:3])}

    pairs = StainPairs(originals=patches[:2], images=patches[:2].copy(), keep=np.array([True, False]),
                       delta_p=np.array([0.01, 0.2]), features=np.array([0.99, 0.5]), aligned=True)
    maps = noise(patches, 7)
    method = stain_scores("method", maps, pairs, noise, seed=7)["positive"]
    np.testing.assert_allclose(method[0], 1.0)
    np.testing.assert_array_equal(np.isnan(method), [False, True, True])
    assert abs(stain_scores("control", maps, pairs, noise, seed=7)["positive"][0]) < 0.2
    unaligned = StainPairs(**{**pairs.__dict__, "aligned": False})
    other = {"positive": np.zeros_like(maps["positive"])}  # not the k patches' own first maps: recomputed
    np.testing.assert_allclose(stain_scores("method", other, unaligned, noise, seed=7)["positive"][0], 1.0)
    facts = stain_facts(pairs, 3)
    np.testing.assert_array_equal(facts["stain_delta_p"][:2], [0.01, 0.2])
    assert np.isnan(facts["stain_delta_p"][2]) and facts["feature_invariance"][0] == 0.99
    assert np.isnan(facts["feature_invariance"][1:]).all()  # the dropped pair's features do not enter the flag


@pytest.mark.parametrize("bad", ["leaderboard.stain_scale=-0.1", "leaderboard.stain_max_change=1.5",
                                 "leaderboard.stain_patches=-1"])
def test_stain_settings_out_of_range_fail_before_any_work(tmp_path, bad):
    with pytest.raises(ConfigError, match="leaderboard.stain_scale, stain_shift and stain_patches"):
        stage.run(compose_cfg(tmp_path, bad))  # no run dir, no model: nothing was read
