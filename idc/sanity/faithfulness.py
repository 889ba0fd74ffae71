"""Faithfulness scores: does removing what a map calls relevant change the model's answer?

- `deletion_curves`: P(target) while the most relevant pixels are progressively replaced by a
  baseline image (a Gaussian-blurred copy, or the per-image channel mean); `curve_area` gives the
  normalized area under it (lower = the map found the pixels the model relies on).
- `road_scores`: pytorch-grad-cam's ROAD (remove-and-debias) combined score, higher = more faithful.
Maps are [n, H, W] grey maps.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from idc.model import predict

DEFAULT_FRACTIONS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))


def baseline_images(x: torch.Tensor, kind: str = "blur", sigma: float = 5.0) -> torch.Tensor:
    """What deleted pixels are replaced with: a Gaussian-blurred copy (per channel) or the image mean."""
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if kind == "blur":
        arr = x.detach().cpu().numpy()
        blurred = gaussian_filter(arr, sigma=(0, 0, sigma, sigma), mode="reflect")
        return torch.from_numpy(blurred).to(x.device, x.dtype)
    raise ValueError(f"baseline must be 'blur' or 'mean', got {kind!r}")


def deletion_masks(maps: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """bool [n, len(fractions), H, W]: True where a pixel is deleted at each fraction (most relevant first).

    Ties are broken by a stable sort on pixel order, so a constant map deletes pixels row by row.
    """
    maps = np.asarray(maps, dtype=np.float64)
    n, h, w = maps.shape
    order = np.argsort(-maps.reshape(n, -1), axis=1, kind="stable")
    rank = np.empty_like(order)
    rank[np.arange(n)[:, None], order] = np.arange(h * w)[None, :]
    counts = np.round(np.asarray(fractions) * h * w).astype(int)
    return (rank[:, None, :] < counts[None, :, None]).reshape(n, len(counts), h, w)


@torch.no_grad()
def deletion_curves(
    model: torch.nn.Module,
    x: torch.Tensor,
    maps: np.ndarray,
    target: torch.Tensor,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    baseline: str = "blur",
    batch_size: int = 256,
) -> np.ndarray:
    """[n, len(fractions)] softmax P(target) after deleting the top fraction of pixels of each map."""
    model.eval()
    n = x.shape[0]
    steps = len(fractions)
    base = baseline_images(x, baseline)
    keep = torch.from_numpy(~deletion_masks(maps, fractions)).to(x.device)  # [n, s, H, W]
    flat_idx = np.arange(n * steps)
    probs = np.empty(n * steps, dtype=np.float64)
    for start in range(0, n * steps, batch_size):
        idx = flat_idx[start : start + batch_size]
        img, step = idx // steps, idx % steps
        k = keep[img, step].unsqueeze(1).to(x.dtype)  # [b, 1, H, W]
        batch = x[img] * k + base[img] * (1 - k)
        p = predict(model, batch, batch_size=len(idx), desc=None)  # the one batched inference function
        probs[idx] = p[np.arange(len(idx)), target[img].cpu().numpy()]
    return probs.reshape(n, steps)


def curve_area(fractions: Sequence[float], curves: np.ndarray) -> np.ndarray:
    """Trapezoid area under each curve [n, s], normalized by the fraction range -> [n] in [0, 1]."""
    f = np.asarray(fractions, dtype=np.float64)
    return np.trapezoid(curves, f, axis=1) / (f[-1] - f[0])


def road_scores(
    model: torch.nn.Module,
    x: torch.Tensor,
    maps: np.ndarray,
    target: torch.Tensor,
    percentiles: Sequence[int] = (10, 30, 50, 70, 90),
    seed: int = 0,
) -> np.ndarray:
    """pytorch-grad-cam's ROADCombined per image: (LeRF - MoRF) / 2 on the softmax score, higher = better.

    ROAD imputes removed pixels from their neighbours (plus a little noise, seeded here), so the
    model does not see the sharp holes a constant replacement leaves.
    """
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model.eval()
    targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in target]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        scores = ROADCombined(percentiles=list(percentiles))(x, np.asarray(maps, np.float32), targets, model)
    return np.asarray(scores, dtype=np.float64).reshape(-1)
