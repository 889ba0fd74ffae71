"""Similarity between two saliency maps, as in Adebayo et al. 2018 ("Sanity Checks for Saliency Maps").

Pure functions on arrays (scikit-learn style). Each `*_similarity(a, b)` compares two maps of the
same shape [H, W] and returns a float in [-1, 1] (1 = identical up to what the measure ignores);
`batch_similarity` averages one measure over a stack of map pairs [n, H, W].

Which map each measure sees (see docs/sanity.md):
- Spearman (absolute): rank correlation of the channel-summed |attribution| (`absolute_map`).
- Spearman (signed): rank correlation of the channel-summed attribution (`signed_map`); for maps
  that are non-negative by construction (Grad-CAM) it equals the absolute one.
- SSIM and HOG: computed on the displayed grey map in [0, 1] (`idc.explain.to_grayscale`), since
  they measure visual structure.

Degenerate maps: a constant map has no ranks or gradients, so correlation is undefined. We return
1.0 when both maps are constant (nothing distinguishes them) and 0.0 when only one is (no relation),
instead of NaN, so that a randomized model whose map collapses to zero counts as "changed".
"""
from __future__ import annotations

from typing import Callable, Dict

import numpy as np
from scipy.stats import entropy, spearmanr
from skimage.feature import hog
from skimage.metrics import structural_similarity

METRICS = ("spearman_abs", "spearman_signed", "ssim", "hog")


def absolute_map(raw: np.ndarray) -> np.ndarray:
    """[n, 3, H, W] or [n, H, W] raw attribution -> [n, H, W] sum of |attribution| over channels."""
    raw = np.asarray(raw, dtype=np.float64)
    return np.abs(raw).sum(axis=1) if raw.ndim == 4 else np.abs(raw)


def signed_map(raw: np.ndarray) -> np.ndarray:
    """[n, 3, H, W] or [n, H, W] raw attribution -> [n, H, W] signed sum over channels."""
    raw = np.asarray(raw, dtype=np.float64)
    return raw.sum(axis=1) if raw.ndim == 4 else raw


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two maps of the same shape [H, W], got {a.shape} and {b.shape}")
    return a, b


def _degenerate(a: np.ndarray, b: np.ndarray) -> float | None:
    """The convention for constant inputs (see module docstring), or None if both vary."""
    const_a = bool(np.ptp(a) == 0)
    const_b = bool(np.ptp(b) == 0)
    if const_a and const_b:
        return 1.0
    if const_a or const_b:
        return 0.0
    return None


def spearman_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of the pixels of two maps."""
    a, b = _check_pair(a, b)
    fallback = _degenerate(a, b)
    if fallback is not None:
        return fallback
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def ssim_similarity(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Structural similarity of two grey maps whose values lie in a range of width `data_range`."""
    a, b = _check_pair(a, b)
    return float(structural_similarity(a, b, data_range=data_range))


def hog_features(a: np.ndarray, pixels_per_cell: int = 5) -> np.ndarray:
    """Histogram-of-oriented-gradients vector of one map (9 orientations, 2x2-cell blocks)."""
    return hog(
        np.asarray(a, dtype=np.float64),
        orientations=9,
        pixels_per_cell=(pixels_per_cell, pixels_per_cell),
        cells_per_block=(2, 2),
        feature_vector=True,
    )


def pearson(u: np.ndarray, v: np.ndarray) -> float:
    """Pearson correlation of two vectors, with the constant-input convention of this module."""
    u = np.asarray(u, dtype=np.float64).ravel()
    v = np.asarray(v, dtype=np.float64).ravel()
    fallback = _degenerate(u, v)
    if fallback is not None:
        return fallback
    return float(np.corrcoef(u, v)[0, 1])


def hog_similarity(a: np.ndarray, b: np.ndarray, pixels_per_cell: int = 5) -> float:
    """Pearson correlation of the HOG vectors of two maps."""
    a, b = _check_pair(a, b)
    if min(a.shape) < 2 * pixels_per_cell:
        raise ValueError(f"pixels_per_cell={pixels_per_cell} is too large for a {a.shape} map (need 2 cells)")
    return pearson(hog_features(a, pixels_per_cell), hog_features(b, pixels_per_cell))


def batch_similarity(fn: Callable[[np.ndarray, np.ndarray], float], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Apply a pairwise measure to each pair of a stack of maps [n, H, W] -> [n]."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"expected two stacks [n, H, W] of the same shape, got {a.shape} and {b.shape}")
    return np.array([fn(x, y) for x, y in zip(a, b)], dtype=np.float64)


def map_similarities(
    raw_a: np.ndarray,
    raw_b: np.ndarray,
    gray_a: np.ndarray,
    gray_b: np.ndarray,
    hog_pixels_per_cell: int = 5,
) -> Dict[str, np.ndarray]:
    """All four Adebayo measures per patch between the maps of two models -> {metric: [n]}."""
    return {
        "spearman_abs": batch_similarity(spearman_similarity, absolute_map(raw_a), absolute_map(raw_b)),
        "spearman_signed": batch_similarity(spearman_similarity, signed_map(raw_a), signed_map(raw_b)),
        "ssim": batch_similarity(ssim_similarity, gray_a, gray_b),
        "hog": batch_similarity(
            lambda x, y: hog_similarity(x, y, pixels_per_cell=hog_pixels_per_cell), gray_a, gray_b
        ),
    }


def constant_maps(raw: np.ndarray) -> np.ndarray:
    """[n] bool: maps whose absolute value is the same everywhere (no ranks, no structure)."""
    a = absolute_map(raw)
    return np.ptp(a.reshape(len(a), -1), axis=1) == 0


def map_entropy(raw: np.ndarray, n_bins: int = 100) -> np.ndarray:
    """[n] discrete entropy (nats) of each absolute map's histogram over `n_bins` equal bins between its
    minimum and maximum: the complexity measure of Efficient MPRT (Hedström et al. 2023). A constant
    map has entropy 0."""
    a = absolute_map(raw)
    out = np.zeros(len(a))
    for i, m in enumerate(a):
        if np.ptp(m) > 0:
            out[i] = entropy(np.histogram(m, bins=n_bins)[0])
    return out


def entropy_rise(raw_trained: np.ndarray, raw_random: np.ndarray, n_bins: int = 100) -> np.ndarray:
    """[n] eMPRT score per patch: H(random map) / H(trained map) - 1 (NaN where the trained map is
    constant, so its entropy is 0 and the ratio undefined)."""
    h0, h1 = map_entropy(raw_trained, n_bins), map_entropy(raw_random, n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(h0 > 0, h1 / np.where(h0 > 0, h0, 1.0) - 1.0, np.nan)
