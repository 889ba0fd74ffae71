"""Faithfulness scores: does removing (or adding back) what a map calls relevant change the model's answer?

- `deletion_curves`: P(target) while the most relevant pixels are progressively replaced by a fill
  image (`fill_images`: the image's mean colour, zero input, or a Gaussian-blurred copy); its
  normalized area (`curve_area`) is the deletion AUC, lower = the map found what the model uses.
- `insertion_curves`: P(target) while the most relevant pixels are progressively copied from the
  image into a start image (`start`: a blurred copy, or the image's mean colour); insertion AUC, higher
  = better. A method whose own baseline is the start (IG from a blur) follows the insertion path by
  construction, so the leaderboard also inserts from the second start.
- `road_scores`: pytorch-grad-cam's ROAD (remove-and-debias) combined score, higher = more faithful.

Pixels of equal relevance are ordered at random (seeded), in all three: a flat or blocky map (a constant
control, LIME superpixels, a positive-relevance map whose lower half is 0) is not favoured or penalised
by the raster order of its ties. ROAD gets the map as its seeded dense ranking (`dense_ranking`):
pytorch-grad-cam thresholds at `np.percentile(map, p)` and never breaks ties, so on a map with half its
pixels at 0 it imputed 100% of the pixels at p = 10, 30 and 50 instead of 90, 70 and 50%.
Maps are [n, H, W]; the model sees normalized NCHW tensors.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from pytorch_grad_cam.metrics.road import NoisyLinearImputer, neighbors_weights
from scipy.ndimage import gaussian_filter
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

from idc.model import predict

DEFAULT_FRACTIONS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))
ROAD_NEIGHBOURS = neighbors_weights  # pytorch-grad-cam's ROAD: the weights of the 8 neighbours of an imputed pixel
ROAD_NOISE = NoisyLinearImputer().noise
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


def dense_ranking(maps: np.ndarray, seed: int = 0) -> np.ndarray:
    """[n, H, W] float in (0, 1]: 1 for each map's most relevant pixel down to 1/(H*W) for its least, ties in
    random (seeded) order, the same order as `relevance_order`. No two pixels tie, so a percentile
    threshold cuts exactly that share of the pixels."""
    n, h, w = np.shape(maps)
    return (1.0 - relevance_order(maps, seed) / (h * w)).reshape(n, h, w)


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


INSERTION_STARTS = ("blur", "mean")


def insertion_curves(model, x, maps, target, fractions=DEFAULT_FRACTIONS, sigma=5.0,
                     batch_size=256, seed=0, start: str = "blur") -> np.ndarray:
    """[n, len(fractions)] P(target) after copying the top fraction of each map's pixels into the start image:
    `blur` (a Gaussian blur, sigma px) or `mean` (the image's mean colour, as deletion's default fill)."""
    if start not in INSERTION_STARTS:
        raise ValueError(f"insertion start must be one of {INSERTION_STARTS}, got {start!r}")
    return _curves(model, x, fill_images(x, start, sigma), maps, target, fractions, batch_size, seed)


def curve_area(fractions: Sequence[float], curves: np.ndarray) -> np.ndarray:
    """Trapezoid area under each curve [n, s], normalized by the fraction range -> [n] in [0, 1]."""
    f = np.asarray(fractions, dtype=np.float64)
    return np.trapezoid(curves, f, axis=1) / (f[-1] - f[0])


def road_system(keep: np.ndarray, img: np.ndarray):
    """pytorch-grad-cam's `NoisyLinearImputer.setup_sparse_system`, assembled at once as a sparse COO matrix:
    (A [m, m], b [m, C]) for the m pixels to impute (`keep` False), each the weighted mean of its 8
    neighbours (the library's `neighbors_weights`). The library's item-by-item `lil_matrix` assignment
    took 60% of ROAD's CPU time; the system is the same (tests/test_localization.py)."""
    h, w = keep.shape
    flat, pixels = keep.reshape(-1), img.reshape(img.shape[0], -1)
    missing = np.flatnonzero(~flat)
    var = np.full(h * w, -1)
    var[missing] = np.arange(len(missing))
    r, c = missing // w, missing % w
    diag, b = np.ones(len(missing)), np.zeros((len(missing), img.shape[0]))
    rows, cols, vals = [np.arange(len(missing))], [np.arange(len(missing))], []
    for (dy, dx), weight in ROAD_NEIGHBOURS:
        rr, cc = r + dy, c + dx
        valid = (rr >= 0) & (cc >= 0) & (rr < h) & (cc < w)
        diag[~valid] -= weight
        ids, nb = np.flatnonzero(valid), (rr * w + cc)[valid]
        known = flat[nb]
        b[ids[known]] -= weight * pixels[:, nb[known]].T
        rows.append(ids[~known])
        cols.append(var[nb[~known]])
        vals.append(np.full(int((~known).sum()), weight))
    vals.insert(0, -diag)
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(missing),) * 2)
    return a.tocsc(), b


def road_impute(img: torch.Tensor, keep: np.ndarray, noise: float = ROAD_NOISE) -> torch.Tensor:
    """The library's noisy linear imputation of the pixels where `keep` is False, for one CHW image: the
    same solution (scipy's spsolve on the same system) and the same draw of noise from torch's RNG."""
    a, b = road_system(keep, img.numpy())
    out = img.reshape(img.shape[0], -1).clone()
    if a.shape[0]:
        res = torch.tensor(spsolve(a, b), dtype=torch.float).reshape(a.shape[0], -1)
        out[:, np.flatnonzero(~keep.reshape(-1))] = res.t() + noise * torch.randn_like(res.t())
    return out.reshape_as(img)


def road_scores(model, x, maps, target, percentiles: Sequence[int] = (10, 30, 50, 70, 90), seed: int = 0,
                batch_size: int = 256) -> np.ndarray:
    """pytorch-grad-cam's ROADCombined per image: (LeRF - MoRF) / 2 on the softmax score, higher = better.

    ROAD imputes removed pixels from their neighbours (plus a little noise, seeded here), so the
    model does not see the sharp holes a constant replacement leaves. The maps go in as their seeded
    dense ranking (ties broken at random, as deletion and insertion do), so percentile p removes p%.
    The library's steps and thresholds (MoRF at p keeps `rank < percentile(rank, p)`, LeRF the same on
    1 - rank; noise drawn LeRF first, percentile by percentile, image by image), with two costs removed:
    the system is assembled at once (`road_system`), and the perturbed images go through the model in
    large batches without the unperturbed score, which cancels in LeRF - MoRF. Tested equal to
    `ROADCombined` on the same ranking.
    """
    model.eval()
    ranks = dense_ranking(maps, seed).astype(np.float32)
    imgs = x.detach().cpu().float()
    perturbed = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for order in (1.0 - ranks, ranks):  # LeRF (keep the most relevant p%), then MoRF (keep the least)
            for p in percentiles:
                for img, r in zip(imgs, order):
                    perturbed.append(road_impute(img, r < np.percentile(r, p)))
    probs = predict(model, torch.stack(perturbed).to(x.device), batch_size=batch_size, desc=None)
    picked = probs[np.arange(len(probs)), np.tile(torch.as_tensor(target).cpu().numpy().astype(int), 2 * len(percentiles))]
    lerf, morf = picked.reshape(2, len(percentiles), len(imgs)).mean(axis=1)
    return (lerf - morf) / 2


def faithfulness_scores(model, x, maps, target, fill="mean", sigma=5.0, road=True, seed=0) -> dict:
    """{deletion, insertion (from a blur), insertion_mean (from the mean colour)[, road]} -> [n] for one set of maps."""
    f = DEFAULT_FRACTIONS
    out = {
        "deletion": curve_area(f, deletion_curves(model, x, maps, target, fill=fill, sigma=sigma, seed=seed)),
        "insertion": curve_area(f, insertion_curves(model, x, maps, target, sigma=sigma, seed=seed)),
        "insertion_mean": curve_area(f, insertion_curves(model, x, maps, target, sigma=sigma, seed=seed, start="mean")),
    }
    if road:
        out["road"] = road_scores(model, x, maps, target, seed=seed)
    return out
