"""Localization scores of attribution maps against a pixel ground-truth mask (pure functions on arrays).

Maps are UNCLIPPED relevance maps [n, H, W] (see `relevance_variants`: the positive part of the
channel-summed attribution, or its absolute value); masks are bool [n, H, W]. Every score is per map,
NaN where the mask is empty (nothing to localize). Definitions follow Quantus 0.6 (tests assert
equality on tie-free maps), with two documented differences where Quantus lets ties decide:

- `pointing_game`: Quantus counts a hit when ANY pixel tied at the maximum lies in the mask, so a
  constant map always "hits". Here ties are broken uniformly at random in expectation: the score is
  the share of the tied maximal pixels inside the (tolerance-dilated) mask. A unique maximum gives
  exactly Quantus's 0/1; a constant map gives the dilated mask's share of the patch, which is the
  pointing game's chance level (`pointing_chance`; with a 2 px tolerance far above the mask fraction).
- `relevance_mass_accuracy`: an all-zero map (a positive-relevance map with no evidence for the class)
  puts no relevance in the mask: 0, not NaN, so such patches are counted, not dropped.
- `relevance_rank_accuracy`, `top_k_intersection`: pixels tied at the cut-off rank are counted
  fractionally (the expectation over random tie-breaking) instead of by argsort order.

Scores: pointing game (with a tolerance in pixels), relevance mass accuracy and relevance rank
accuracy (Arras et al. 2022, CLEVR-XAI), pixel AUROC (Quantus `AUC`), top-k intersection.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
from scipy.ndimage import binary_dilation
from sklearn.metrics import roc_auc_score

VARIANTS = ("positive", "absolute")


def _check(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(f"maps and masks must both be [n, H, W]; got {maps.shape} and {masks.shape}")
    if not np.isfinite(maps).all():
        raise ValueError("maps contain NaN or inf")
    return maps, masks


def relevance_variants(raw: np.ndarray) -> Dict[str, np.ndarray]:
    """{'positive', 'absolute'} [n, H, W] maps from a raw attribution [n, C, H, W] or [n, H, W].

    positive = max(sum over channels, 0): evidence FOR the target only (evidence against IDC is not
    relevance for IDC); absolute = sum over channels of |attribution| (the book's grey map, unclipped).
    """
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim == 4:
        signed, absolute = raw.sum(axis=1), np.abs(raw).sum(axis=1)
    elif raw.ndim == 3:
        signed, absolute = raw, np.abs(raw)
    else:
        raise ValueError(f"attribution must be [n, C, H, W] or [n, H, W], got shape {raw.shape}")
    return {"positive": np.clip(signed, 0, None), "absolute": absolute}


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """ROC AUC of the map as a pixel classifier of the mask (0.5 = chance); NaN for an empty or full mask."""
    maps, masks = _check(maps, masks)
    out = np.full(len(maps), np.nan)
    for i, (m, g) in enumerate(zip(maps, masks)):
        if 0 < g.sum() < g.size:
            out[i] = roc_auc_score(g.ravel(), m.ravel())
    return out


def _dilated(g: np.ndarray, tolerance: int) -> np.ndarray:
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    return binary_dilation(g, structure=np.ones((3, 3), bool), iterations=tolerance) if tolerance else g


def pointing_game(maps: np.ndarray, masks: np.ndarray, tolerance: int = 0) -> np.ndarray:
    """Share of the map's maximal pixels (the true maximum, ties included) inside the mask grown by
    `tolerance` pixels (8-connected): 1/0 for a unique maximum; NaN where the mask is empty."""
    maps, masks = _check(maps, masks)
    out = np.full(len(maps), np.nan)
    for i, (m, g) in enumerate(zip(maps, masks)):
        if g.any():
            out[i] = _dilated(g, tolerance)[m == m.max()].mean()
    return out


def pointing_chance(masks: np.ndarray, tolerance: int = 0) -> np.ndarray:
    """[n] the pointing game's chance level: the share of the patch inside the mask grown by `tolerance`
    pixels (a maximum placed uniformly at random hits with this probability); NaN where the mask is empty."""
    masks = np.asarray(masks, dtype=bool)
    return np.array([_dilated(g, tolerance).mean() if g.any() else np.nan for g in masks])


def relevance_mass_accuracy(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of the map's total relevance inside the mask (chance = mask fraction); maps must be >= 0.
    0 for an all-zero map (no relevance anywhere, so none in the mask); NaN only where the mask is empty."""
    maps, masks = _check(maps, masks)
    if (maps < 0).any():
        raise ValueError("relevance mass needs non-negative maps; use relevance_variants() first")
    total = maps.sum(axis=(1, 2))
    inside = (maps * masks).sum(axis=(1, 2))
    mass = np.where(total > 0, inside / np.where(total > 0, total, 1.0), 0.0)
    return np.where(masks.any(axis=(1, 2)), mass, np.nan)


def _top_share(maps: np.ndarray, masks: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Expected share of mask pixels among the k most relevant pixels, ties at the cut counted fractionally."""
    n = len(maps)
    flat, gt = maps.reshape(n, -1), masks.reshape(n, -1)
    out = np.full(n, np.nan)
    for i in range(n):
        ki = int(k[i])
        if ki <= 0 or not gt[i].any():
            continue
        v = flat[i]
        cut = np.partition(v, v.size - ki)[v.size - ki]  # the k-th largest value
        above, tied = v > cut, v == cut
        need = ki - above.sum()  # how many of the tied pixels make it into the top k
        hits = gt[i][above].sum() + need * gt[i][tied].mean()
        out[i] = hits / ki
    return out


def relevance_rank_accuracy(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of the K most relevant pixels that lie in the mask, K = the mask's size (chance = mask fraction)."""
    maps, masks = _check(maps, masks)
    return _top_share(maps, masks, masks.reshape(len(masks), -1).sum(axis=1))


def top_k_intersection(maps: np.ndarray, masks: np.ndarray, k: int) -> np.ndarray:
    """Share of the k most relevant pixels that lie in the mask (Quantus TopKIntersection, no concept influence)."""
    maps, masks = _check(maps, masks)
    if not 1 <= k <= maps[0].size:
        raise ValueError(f"k={k} must be in 1..{maps[0].size} (pixels per map)")
    return _top_share(maps, masks, np.full(len(maps), k))


LOCALIZATION_SCORES = ("pointing_game", "relevance_mass", "relevance_rank", "pixel_auroc", "top_k")


def localization_scores(maps: np.ndarray, masks: np.ndarray, tolerance: int, top_k: int) -> Dict[str, np.ndarray]:
    """Every localization score of one set of (non-negative) maps -> {score: [n]}."""
    return {
        "pointing_game": pointing_game(maps, masks, tolerance=tolerance),
        "relevance_mass": relevance_mass_accuracy(maps, masks),
        "relevance_rank": relevance_rank_accuracy(maps, masks),
        "pixel_auroc": pixel_auroc(maps, masks),
        "top_k": top_k_intersection(maps, masks, top_k),
    }
