"""Random fields the synthetic slides are drawn from (shared by idc.data.tissue and idc.data.cells)."""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage as ndi


def smooth_noise(rng, shape, sigma, coarse: int = 1) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian-filtered noise; `coarse` > 1 renders small and upsamples."""
    small = (max(2, shape[0] // coarse), max(2, shape[1] // coarse))
    f = ndi.gaussian_filter(rng.standard_normal(small, dtype=np.float32), sigma / coarse, mode="wrap")
    if coarse > 1:  # bilinear upsampling (PIL: about twice as fast as ndi.zoom here)
        f = np.array(Image.fromarray(f, mode="F").resize((shape[1], shape[0]), Image.BILINEAR))
    f -= f.mean()
    return f / (f.std() + 1e-8)


def quantile_mask(field, within, fraction) -> np.ndarray:
    """Pixels of `within` whose field value is in the top `fraction` (so areas hit a target share)."""
    if fraction <= 0 or not within.any():
        return np.zeros_like(within)
    thr = np.quantile(field[within], 1 - min(fraction, 1.0))
    return within & (field >= thr)
