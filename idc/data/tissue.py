"""Render one synthetic H&E tissue slide: stain densities -> RGB by Beer-Lambert absorption.

Everything is a whole-slide array operation (Gaussian-filtered noise fields, blurred nucleus impulses),
so a 2,000 x 2,000 px slide renders in about a second. The picture follows breast histology at the
Kaggle patches' scale (a 50 px patch is ~ 0.1 mm): pink eosin stroma with fibre texture, white fat
and lumen holes, normal ducts ringed by small nuclei, lymphocyte clusters (small dense nuclei: the
honest confounder), and IDC regions packed with larger, darker, irregular nuclei.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

# Optical-density stain vectors (R, G, B) for haematoxylin and eosin, roughly as in colour-deconvolution
# literature; each patient perturbs them (stain variation between labs and batches).
HEMATOXYLIN = np.array([0.65, 0.70, 0.29])
EOSIN = np.array([0.10, 0.95, 0.40])
RESIDUAL = np.array([0.27, 0.57, 0.78])


@dataclass
class Slide:
    rgb: np.ndarray  # uint8 [H, W, 3]
    tissue: np.ndarray  # bool [H, W]
    region: np.ndarray  # bool [H, W]: IDC region (where tumour cells are)
    annotation: np.ndarray  # bool [H, W]: the pathologist's coarse outline of it (patch labels come from this)
    nuclei_idc: np.ndarray  # bool [H, W]: IDC nuclei (pixel ground truth)


def smooth_noise(rng, shape, sigma, coarse: int = 1) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian-filtered noise; `coarse` > 1 renders small and upsamples."""
    small = (max(2, shape[0] // coarse), max(2, shape[1] // coarse))
    f = ndi.gaussian_filter(rng.standard_normal(small, dtype=np.float32), sigma / coarse, mode="wrap")
    if coarse > 1:
        f = ndi.zoom(f, (shape[0] / small[0], shape[1] / small[1]), order=1)[: shape[0], : shape[1]]
    f -= f.mean()
    return f / (f.std() + 1e-8)


def quantile_mask(field, within, fraction) -> np.ndarray:
    """Pixels of `within` whose field value is in the top `fraction` (so areas hit a target share)."""
    if fraction <= 0 or not within.any():
        return np.zeros_like(within)
    thr = np.quantile(field[within], 1 - min(fraction, 1.0))
    return within & (field >= thr)


def blobs(rng, shape, centers_mask, density, radius, jitter=0.35) -> np.ndarray:
    """A field of blurred dots ("nuclei") at random points of `centers_mask` (per-pixel `density`)."""
    pts = (rng.random(shape) < density) & centers_mask
    field = ndi.gaussian_filter(pts.astype(np.float32), radius, mode="constant") * (2 * np.pi * radius**2)
    if jitter:  # irregular outlines: the threshold below cuts a noisy field
        field *= 1 + jitter * rng.standard_normal(shape, dtype=np.float32)
    return field


def adipocyte_walls(rng, shape, spacing: float) -> np.ndarray:
    """bool: thin walls between Voronoi cells of random seeds ~`spacing` px apart."""
    seeds = rng.random(shape) < 1.0 / spacing**2
    _, (iy, ix) = ndi.distance_transform_edt(~seeds, return_indices=True)
    label = iy * shape[1] + ix
    walls = np.zeros(shape, bool)
    walls[:-1] |= label[:-1] != label[1:]
    walls[:, :-1] |= label[:, :-1] != label[:, 1:]
    return ndi.binary_dilation(walls, iterations=1)


def fibres(rng, shape) -> np.ndarray:
    """Unit-variance fibre texture: noise smoothed along two directions, blended by a smooth field."""
    a = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), (0.5, 2.2))
    b = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), (2.2, 0.5))
    w = 1 / (1 + np.exp(-2.5 * smooth_noise(rng, shape, 60, coarse=10)))
    f = w * a / (a.std() + 1e-8) + (1 - w) * b / (b.std() + 1e-8)
    return f / (f.std() + 1e-8)


def ducts(rng, shape, tissue, n, r_lo=6, r_hi=16):
    """Normal ducts: a lumen (white) ringed by a band where small nuclei sit."""
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    lumen = np.zeros(shape, bool)
    ring = np.zeros(shape, bool)
    ty, tx = np.nonzero(tissue)
    if len(ty) == 0:
        return lumen, ring
    for i in rng.integers(0, len(ty), n):
        r = rng.uniform(r_lo, r_hi)
        cy, cx = ty[i], tx[i]
        y0, y1, x0, x1 = max(0, cy - 2 * int(r)), cy + 2 * int(r), max(0, cx - 2 * int(r)), cx + 2 * int(r)
        d = np.sqrt((yy[y0:y1] - cy) ** 2 / rng.uniform(0.6, 1.4) + (xx[:, x0:x1] - cx) ** 2)
        lumen[y0:y1, x0:x1] |= d < r * 0.55
        ring[y0:y1, x0:x1] |= (d >= r * 0.55) & (d < r)
    return lumen, ring


def render_slide(rng, rows: int, cols: int, idc_fraction: float, patch: int = 50, origin: int = 1) -> Slide:
    """A slide covering a rows x cols patch grid (plus the 1 px origin of the Kaggle grid)."""
    shape = (origin + rows * patch, origin + cols * patch)
    # Tissue outline: a large smooth blob with a ragged edge, plus a few holes (tears, big fat lobules).
    yy, xx = np.ogrid[0: shape[0], 0: shape[1]]
    cy, cx = shape[0] * rng.uniform(0.4, 0.6), shape[1] * rng.uniform(0.4, 0.6)
    radial = np.sqrt(((yy - cy) / (shape[0] / 2)) ** 2 + ((xx - cx) / (shape[1] / 2)) ** 2)
    outline = 1.05 - radial + 0.35 * smooth_noise(rng, shape, 120, coarse=10) + 0.08 * smooth_noise(rng, shape, 20, coarse=5)
    tissue = outline > 0.15
    # IDC region: low-frequency blobs inside the tissue, sized to the patient's IDC share.
    region_field = smooth_noise(rng, shape, rng.uniform(60, 140), coarse=10) + 0.15 * smooth_noise(rng, shape, 15, coarse=5)
    region = quantile_mask(region_field, tissue, idc_fraction)
    # Annotations are drawn by hand at low magnification: a smoothed, wobbly version of the true region,
    # so patch labels near borders are honestly uncertain (as in the real set's labels).
    annotation = quantile_mask(region_field + 0.45 * smooth_noise(rng, shape, 35, coarse=5), tissue, idc_fraction)
    # Fat: lobules of adipocytes, white polygonal cells with thin eosin walls (Voronoi cells of seeds).
    fat_zone = quantile_mask(smooth_noise(rng, shape, 80, coarse=10), tissue & ~region, rng.uniform(0.08, 0.3))
    fat = fat_zone & ~adipocyte_walls(rng, shape, spacing=rng.uniform(7, 11))
    lumen, ring = ducts(rng, shape, tissue & ~region & ~fat_zone, n=max(3, rows * cols // 25))
    # Eosin: collagen fibres (fine anisotropic noise; two orientations blended by a smooth field) with
    # white cracks between bundles.
    fib = fibres(rng, shape)
    eosin = 0.8 + 0.45 * fib + 0.15 * smooth_noise(rng, shape, 25, coarse=4)
    cracks = (fib < -1.6) & ~region
    # Nuclei (haematoxylin), three populations plus the tumour cells' purple cytoplasm.
    stromal = blobs(rng, shape, tissue & ~fat_zone & ~lumen, 0.006, 0.8) > 0.5
    duct_n = blobs(rng, shape, ring, 0.12, 0.9) > 0.5
    lymph_zone = quantile_mask(smooth_noise(rng, shape, 30, coarse=5), tissue & ~region & ~fat_zone, rng.uniform(0.02, 0.12))
    lymph = blobs(rng, shape, lymph_zone, 0.09, 0.85, jitter=0.2) > 0.5
    # Tumour cellularity varies within a region (solid sheets to single infiltrating cells in stroma);
    # low-grade patients have fewer, smaller, paler nuclei: the hard patches.
    grade = rng.uniform(0.35, 1.0)
    cellularity = np.clip(0.55 + 0.45 * smooth_noise(rng, shape, 20, coarse=5), 0.1, 1.0)
    idc_field = blobs(rng, shape, region & ~lumen & (rng.random(shape) < cellularity),
                      0.05 + 0.05 * grade, 0.75 + 0.35 * grade, jitter=0.45)
    nuclei_idc = (idc_field > 0.55) & region
    h_density = (0.35 * stromal + 0.75 * duct_n + 1.0 * lymph + (0.65 + 0.35 * grade) * nuclei_idc).astype(np.float32)
    h_density *= 1 + 0.3 * rng.standard_normal(shape, dtype=np.float32)  # chromatin texture
    h_density += 0.22 * tissue * (1 + 0.4 * smooth_noise(rng, shape, 2))  # background haematoxylin of stroma
    h_density += 0.25 * region * cellularity * (1 + 0.5 * smooth_noise(rng, shape, 2))  # tumour cytoplasm
    e_density = np.clip(eosin, 0, None) * (1 - 0.35 * region * cellularity)
    empty = ~tissue | fat | lumen | cracks
    h_density[empty] = 0.0
    e_density[empty] = 0.03
    rgb = stain(rng, h_density, e_density)
    return Slide(rgb=rgb, tissue=tissue, region=region, annotation=annotation, nuclei_idc=nuclei_idc)


def stain(rng, h_density, e_density) -> np.ndarray:
    """Beer-Lambert: RGB = I0 * exp(-(H * h + E * e)) with patient-specific stain vectors and strengths."""
    h_vec = (HEMATOXYLIN * rng.uniform(0.85, 1.15, 3)).astype(np.float32)
    e_vec = (EOSIN * rng.uniform(0.85, 1.15, 3)).astype(np.float32)
    h_amt, e_amt = rng.uniform(0.9, 1.3), rng.uniform(0.45, 0.7)
    od = (h_amt * h_density)[..., None] * h_vec + (e_amt * e_density)[..., None] * e_vec
    od += (0.03 * RESIDUAL * rng.random()).astype(np.float32)
    rgb = np.float32(245.0) * np.exp(-od)
    rgb = ndi.gaussian_filter(rgb, (0.6, 0.6, 0))  # optics
    rgb += np.float32(6.0) * rng.standard_normal(rgb.shape, dtype=np.float32)  # sensor noise: real patches are grainy
    return np.clip(rgb, 0, 255).astype(np.uint8)
