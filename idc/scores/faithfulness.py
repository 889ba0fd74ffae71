"""Faithfulness scores: does removing (or adding back) what a map calls relevant change the model's answer?

- `deletion_curves`: P(target) while the most relevant pixels are progressively replaced by a fill
  image (`fill_images`: the image's mean colour, zero input, or a Gaussian-blurred copy); its
  normalized area (`curve_area`) is the deletion AUC, lower = the map found what the model uses.
- `insertion_curves`: P(target) while the most relevant pixels are progressively copied from the
  image into a blurred copy of it; insertion AUC, higher = better.
- `road_scores`: pytorch-grad-cam's ROAD (remove-and-debias) combined score, higher = more faithful.

Pixels of equal relevance are ordered at random (seeded), so a flat or blocky map (a constant
control, LIME superpixels) is not favoured or penalised by the raster order of its ties.
Maps are [n, H, W]; the model sees normalized NCHW tensors.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from pytorch_grad_cam.metrics.road import ROADCombined
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from scipy.ndimage import gaussian_filter

from idc.model import predict

DEFAULT_FRACTIONS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))
FILLS = ("mean", "zero", "blur")


def blurred(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A per-channel Gaussian-blurred copy of a normalized NCHW batch."""
    arr = x.detach().cpu().numpy()
    return torch.from_numpy(gaussian_filter(arr, sigma=(0, 0, sigma, sigma), mode="reflect")).to(x.device, x.dtype)


def fill_images(x: torch.Tensor, kind: str = "mean", sigma: float = 5.0) -> torch.Tensor:
    """What deleted pixels become: 'mean' = the image's mean colour (per channel), 'zero' = 0 in the
    model's input space (mid grey after Normalize(0.5, 0.5)), 'blur' = a Gaussian-blurred copy (keeps
    the local colour, so stain-colour evidence is only partly removed)."""
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "blur":
        return blurred(x, sigma)
    raise ValueError(f"fill must be one of {FILLS}, got {kind!r}")


def relevance_order(maps: np.ndarray, seed: int = 0) -> np.ndarray:
    """[n, H*W] rank of each pixel, 0 = most relevant; ties in random (seeded) order."""
    maps = np.asarray(maps, dtype=np.float64)
    n = len(maps)
    flat = maps.reshape(n, -1)
    jitter = np.random.default_rng(seed).random(flat.shape)
    order = np.lexsort((jitter, -flat), axis=1)  # primary key: relevance (descending); then the jitter
    rank = np.empty_like(order)
    rank[np.arange(n)[:, None], order] = np.arange(flat.shape[1])[None, :]
    return rank


def top_fraction_masks(maps: np.ndarray, fractions: Sequence[float], seed: int = 0) -> np.ndarray:
    """bool [n, len(fractions), H, W]: True on the top `fraction` most relevant pixels of each map."""
    n, h, w = np.shape(maps)
    rank = relevance_order(maps, seed)
    counts = np.round(np.asarray(fractions) * h * w).astype(int)
    return (rank[:, None, :] < counts[None, :, None]).reshape(n, len(counts), h, w)


def _curves(model, chosen_from: torch.Tensor, rest_from: torch.Tensor, maps, target, fractions, batch_size, seed):
    """P(target) on images that take the top-fraction pixels from `chosen_from` and the rest from `rest_from`."""
    model.eval()
    n, steps = chosen_from.shape[0], len(fractions)
    chosen = torch.from_numpy(top_fraction_masks(maps, fractions, seed)).to(chosen_from.device)
    flat_idx = np.arange(n * steps)
    probs = np.empty(n * steps, dtype=np.float64)
    for start in range(0, n * steps, batch_size):
        idx = flat_idx[start : start + batch_size]
        img, step = idx // steps, idx % steps
        c = chosen[img, step].unsqueeze(1).to(chosen_from.dtype)  # [b, 1, H, W]
        batch = chosen_from[img] * c + rest_from[img] * (1 - c)
        p = predict(model, batch, batch_size=len(idx), desc=None)  # the one batched inference function
        probs[idx] = p[np.arange(len(idx)), torch.as_tensor(target).cpu().numpy()[img]]
    return probs.reshape(n, steps)


def deletion_curves(model, x, maps, target, fractions=DEFAULT_FRACTIONS, fill="mean", sigma=5.0,
                    batch_size=256, seed=0) -> np.ndarray:
    """[n, len(fractions)] P(target) after replacing the top fraction of each map's pixels by the fill."""
    return _curves(model, fill_images(x, fill, sigma), x, maps, target, fractions, batch_size, seed)


def insertion_curves(model, x, maps, target, fractions=DEFAULT_FRACTIONS, sigma=5.0,
                     batch_size=256, seed=0) -> np.ndarray:
    """[n, len(fractions)] P(target) after copying the top fraction of each map's pixels into a blurred image."""
    return _curves(model, x, blurred(x, sigma), maps, target, fractions, batch_size, seed)


def curve_area(fractions: Sequence[float], curves: np.ndarray) -> np.ndarray:
    """Trapezoid area under each curve [n, s], normalized by the fraction range -> [n] in [0, 1]."""
    f = np.asarray(fractions, dtype=np.float64)
    return np.trapezoid(curves, f, axis=1) / (f[-1] - f[0])


def road_scores(model, x, maps, target, percentiles: Sequence[int] = (10, 30, 50, 70, 90), seed: int = 0) -> np.ndarray:
    """pytorch-grad-cam's ROADCombined per image: (LeRF - MoRF) / 2 on the softmax score, higher = better.

    ROAD imputes removed pixels from their neighbours (plus a little noise, seeded here), so the
    model does not see the sharp holes a constant replacement leaves.
    """
    model.eval()
    targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in target]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        scores = ROADCombined(percentiles=list(percentiles))(x, np.asarray(maps, np.float32), targets, model)
    return np.asarray(scores, dtype=np.float64).reshape(-1)


def faithfulness_scores(model, x, maps, target, fill="mean", sigma=5.0, road=True, seed=0) -> dict:
    """{deletion, insertion[, road]} -> [n] for one set of maps."""
    out = {
        "deletion": curve_area(DEFAULT_FRACTIONS, deletion_curves(model, x, maps, target, fill=fill, sigma=sigma, seed=seed)),
        "insertion": curve_area(DEFAULT_FRACTIONS, insertion_curves(model, x, maps, target, sigma=sigma, seed=seed)),
    }
    if road:
        out["road"] = road_scores(model, x, maps, target, seed=seed)
    return out
