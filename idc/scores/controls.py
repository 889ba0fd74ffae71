"""Control maps: what a localization or faithfulness score gives without looking at the model.

A method's score means something about the model only where it beats these rows:
- `uniform_random_maps`: i.i.d. uniform noise (chance);
- `edge_maps`: |x - blur(x)| summed over channels, a model-free edge detector (nuclei have edges);
- `darkness_maps`: 1 - mean intensity (nuclei are dark, so darkness alone localizes them).
- `blurred_darkness_maps`: darkness blurred to the scale of a nucleus (a dark-blob finder), a control only
  where the data set has a label map (IDC vs decoy nuclei, generator v7): unblurred darkness cannot tell
  IDC nuclei from decoys, but large, crowded nuclei keep their darkness under the blur.
The last control, each method's maps from the fully randomized model (`idc.scores.randomization`), is
computed by the leaderboard stage with the method itself (`idc.leaderboard`).
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

EDGE_SIGMA = 1.0  # pixels: the scale of a nucleus boundary at 50 x 50
BLOB_SIGMA = 2.0  # pixels: the scale of a nucleus (the blur at which darkness best finds v7's IDC nuclei)


def uniform_random_maps(shape: Sequence[int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(tuple(shape))


def edge_maps(images: np.ndarray, sigma: float = EDGE_SIGMA) -> np.ndarray:
    """[n, H, W] sum over channels of |x - gaussian(x)| for uint8 NHWC images (scaled to [0, 1])."""
    x = np.asarray(images, dtype=np.float64) / 255.0
    return np.abs(x - gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="reflect")).sum(axis=-1)


def darkness_maps(images: np.ndarray) -> np.ndarray:
    """[n, H, W] 1 - mean over channels of the uint8 NHWC image / 255."""
    return 1.0 - np.asarray(images, dtype=np.float64).mean(axis=-1) / 255.0


def blurred_darkness_maps(images: np.ndarray, sigma: float = BLOB_SIGMA) -> np.ndarray:
    """[n, H, W] the darkness map blurred by a Gaussian of `sigma` px: a model-free "dark blob" finder
    (large and crowded nuclei keep their darkness under the blur, small scattered ones lose it). A control
    row where the data set has a label map (`model_free_controls(..., label_map=True)`)."""
    return gaussian_filter(darkness_maps(images), sigma=(0, sigma, sigma), mode="reflect")


BLURRED_DARKNESS_TITLE = "control: image darkness blurred (sigma 2 px)"

CONTROL_TITLES = {
    "random": "control: uniform random map",
    "edges": "control: edge map |x - blur(x)|",
    "darkness": "control: image darkness",
}


def control_titles(label_map: bool = False) -> list:
    """The model-free control rows: the three, and with a label map darkness blurred to a nucleus."""
    return list(CONTROL_TITLES.values()) + ([BLURRED_DARKNESS_TITLE] if label_map else [])


def model_free_controls(images: np.ndarray, seed: int, label_map: bool = False) -> Dict[str, np.ndarray]:
    """{title: [n, H, W] non-negative map} of the model-free controls (`control_titles(label_map)`)."""
    n, h, w = np.shape(images)[:3]
    maps = {
        CONTROL_TITLES["random"]: uniform_random_maps((n, h, w), seed),
        CONTROL_TITLES["edges"]: edge_maps(images),
        CONTROL_TITLES["darkness"]: darkness_maps(images),
    }
    if label_map:
        maps[BLURRED_DARKNESS_TITLE] = blurred_darkness_maps(images)
    return maps
