"""Localization and faithfulness scores of saliency maps against a pixel ground-truth mask.

Pure functions on arrays (`score_maps` also queries the model through the faithfulness scores):
- `pixel_auroc`: ROC AUC of the map as a pixel classifier of the mask (0.5 = chance).
- `pointing_game`: is the map's maximum inside the mask (dilated by `tolerance` pixels)?
- `energy_inside`: share of the map's total (non-negative) mass that falls inside the mask.
Faithfulness (deletion, ROAD) lives in `idc.sanity.faithfulness`; `score_maps` combines both.
Maps are [n, H, W] (non-negative grey maps, e.g. `idc.explain.to_grayscale`), masks bool [n, H, W].
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch
from scipy.ndimage import binary_dilation
from sklearn.metrics import roc_auc_score

from idc.sanity.faithfulness import DEFAULT_FRACTIONS, curve_area, deletion_curves, road_scores


def _check(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(f"maps and masks must both be [n, H, W]; got {maps.shape} and {masks.shape}")
    return maps, masks


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per-map ROC AUC of map values against mask pixels; NaN where the mask is empty or full."""
    maps, masks = _check(maps, masks)
    out = np.full(len(maps), np.nan)
    for i, (m, g) in enumerate(zip(maps, masks)):
        if 0 < g.sum() < g.size:
            out[i] = roc_auc_score(g.ravel(), m.ravel())
    return out


def pointing_game(maps: np.ndarray, masks: np.ndarray, tolerance: int = 0) -> np.ndarray:
    """Per-map hit (1.0) / miss (0.0): the maximum lies inside the mask grown by `tolerance` pixels.

    A constant map points nowhere and counts as a miss; NaN where the mask is empty.
    """
    maps, masks = _check(maps, masks)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    out = np.full(len(maps), np.nan)
    for i, (m, g) in enumerate(zip(maps, masks)):
        if not g.any():
            continue
        if tolerance:
            g = binary_dilation(g, structure=np.ones((3, 3), bool), iterations=tolerance)
        if np.ptp(m) == 0:
            out[i] = 0.0
            continue
        r, c = np.unravel_index(np.argmax(m), m.shape)
        out[i] = float(g[r, c])
    return out


def energy_inside(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per-map fraction of sum(map) inside the mask (maps clipped at 0); NaN for an all-zero map."""
    maps, masks = _check(maps, masks)
    maps = np.clip(maps, 0, None)
    total = maps.sum(axis=(1, 2))
    inside = (maps * masks).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)


def random_maps(shape: Sequence[int], seed: int) -> np.ndarray:
    """Uniform noise maps: the chance baseline every method should beat."""
    return np.random.default_rng(seed).random(tuple(shape))


def score_maps(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: np.ndarray,
    masks: np.ndarray,
    tolerance: int = 0,
    baseline: str = "blur",
    road: bool = True,
    seed: int = 0,
) -> Dict[str, np.ndarray]:
    """Every localization and faithfulness score of one method's maps -> {score: [n]}."""
    curves = deletion_curves(model, x, maps, target, baseline=baseline)
    scores = {
        "pixel_auroc": pixel_auroc(maps, masks),
        "pointing_game": pointing_game(maps, masks, tolerance=tolerance),
        "energy_inside": energy_inside(maps, masks),
        "deletion_auc": curve_area(DEFAULT_FRACTIONS, curves),
    }
    if road:
        scores["road"] = road_scores(model, x, maps, target, seed=seed)
    return scores
