"""Stain invariance of explanations: input invariance (Kindermans et al. 2019, "The (un)reliability of saliency
methods") with a stain change as the input transformation, in optical-density space.

A patch and a stain-perturbed copy of it (`stain_perturbed`: the training's HED jitter, Tellez et al. 2019,
`idc.data.augment`, drawn per patch from a seeded generator) are explained for the same class; where the
model's prediction barely moved (`stable_pairs`: |P(IDC) after - P(IDC) before| <= a declared bound) the
model treats the two alike, so an explanation of the model should treat them alike too. The score of a
pair (`stain_invariance`) is the Spearman rank correlation of the two maps, the measure the randomization
checks use (`idc.scores.similarity.spearman_similarity`): 1 = the pixels keep their order, 0 = unrelated.

What a rank correlation sees and what it does not: a map drawn from a fixed pattern (it ignores colour)
scores 1; a map that follows the mixture of stains (image darkness, an edge map, gradient x input) is
reordered when haematoxylin and eosin are scaled differently, and scores lower. A map that is a monotone
function of one stain's concentration alone keeps its ranks under any positive scaling and shift of that
stain, so it scores 1 (tests/test_invariance.py): invariance asks whether the explanation changed, not
whether it is made of colour (the darkness control and the randomization checks ask that).

`feature_invariance`: the same rank correlation between the model's own penultimate features of the two
copies, the reference the leaderboard compares each map with (docs/attribution-evaluation.md).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from idc.data.augment import draw_batch, hed_jitter_
from idc.scores.similarity import batch_similarity, spearman_similarity


def uint8_nhwc(images) -> np.ndarray:
    """`images` as an array, or a ValueError unless they are uint8 NHWC RGB patches."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 NHWC images, got {images.dtype} {images.shape}")
    return images


def hed_jittered(images: np.ndarray, hed: np.ndarray) -> np.ndarray:
    """uint8 NHWC copies of `images` with the HED jitter `hed` [n, 2, 3] = (alpha, beta) per patch and stain
    (`idc.data.augment.hed_jitter_`: c -> alpha_c * c + beta_c in optical density), rounded back to uint8."""
    images = uint8_nhwc(images)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    hed_jitter_(x, torch.as_tensor(np.asarray(hed, np.float32)))
    return np.ascontiguousarray(np.rint(x.numpy().transpose(0, 2, 3, 1) * 255.0).clip(0, 255).astype(np.uint8))


def stain_perturbed(images: np.ndarray, scale: float, shift: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """(uint8 NHWC copies of `images` with a per-patch HED jitter, the jitter float32 [n, 2, 3] = (alpha, beta)).

    Each patch's haematoxylin, eosin and DAB concentrations c become alpha_c * c + beta_c with alpha_c ~
    U(1 - scale, 1 + scale), beta_c ~ U(-shift, shift) (natural-log optical density), drawn from
    `numpy.random.default_rng(seed)` in the order of `draw_batch` (the training augmentation's), then
    rounded back to uint8 (`hed_jittered`). Deterministic under `seed`; scale = shift = 0 draws nothing and
    returns the images unchanged."""
    images = uint8_nhwc(images)
    _, hed = draw_batch(np.random.default_rng(seed), len(images), flip=False, hed_scale=float(scale),
                        hed_shift=float(shift))
    if hed is None:  # nothing to jitter: the identity (alpha 1, beta 0) and the patches as they are
        return images.copy(), np.tile(np.array([[1, 1, 1], [0, 0, 0]], np.float32), (len(images), 1, 1))
    return hed_jittered(images, hed), hed


def stable_pairs(p_before: np.ndarray, p_after: np.ndarray, max_change: float) -> np.ndarray:
    """[n] bool: the pairs whose predicted probability moved by at most `max_change` (the model treats the two
    copies alike, so their explanations should agree)."""
    p_before, p_after = np.asarray(p_before, np.float64), np.asarray(p_after, np.float64)
    if p_before.shape != p_after.shape:
        raise ValueError(f"two probability vectors of one shape expected, got {p_before.shape} and {p_after.shape}")
    return np.abs(p_after - p_before) <= float(max_change)


def stain_invariance(maps: np.ndarray, maps_perturbed: np.ndarray) -> np.ndarray:
    """[n] Spearman rank correlation of each map [n, H, W] with its map on the stain-perturbed copy (two
    constant maps: 1, one constant map: 0, the randomization checks' convention)."""
    return batch_similarity(spearman_similarity, maps, maps_perturbed)


def feature_invariance(features: np.ndarray, features_perturbed: np.ndarray) -> np.ndarray:
    """[n] Spearman rank correlation of each patch's feature vector [n, d] with the perturbed copy's."""
    a, b = np.asarray(features, np.float64), np.asarray(features_perturbed, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two [n, d] feature arrays of one shape, got {a.shape} and {b.shape}")
    return batch_similarity(spearman_similarity, a[:, None, :], b[:, None, :])
