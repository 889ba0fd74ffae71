"""Render one synthetic H&E tissue slide: stain densities -> RGB by Beer-Lambert absorption.

The slide is built so that the *only* thing that separates IDC tissue from benign tissue is the
morphology of the IDC nuclei (the pixels `nuclei_idc` marks):

- the layout of the tissue (stroma, fat lobules, cracks, and the cellular "nests" where epithelial
  cells or lymphocytes sit) is drawn from fields that do not know where the IDC region is, so fat,
  lumen, cracks and cellularity are equally frequent inside and outside it;
- outside the IDC region a nest is a benign look-alike: a normal duct (lumen ringed by small nuclei),
  crowded benign epithelium (small, round, uniform nuclei) or a lymphocyte cluster (small, dense);
- inside it, the same nests hold IDC nuclei: larger, pleomorphic (random size, ragged outline),
  vesicular (pale chromatin, dark membrane, a nucleolus), in solid sheets with cribriform spaces of
  the same total area as the benign lumina (loss of duct architecture, same share of white);
- the IDC nuclei's stain amount is rescaled per slide so that IDC nests carry the same mean
  haematoxylin as benign nests ("more purple" is no cue); one stain (per patient) for the whole slide.

`difficulty` in [0, 1] sets how far IDC nuclei are from benign ones (1: the same shape and texture,
i.e. no signal). Everything is a whole-slide array operation, so a 1,500 x 1,500 px slide renders in
about a second.
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
# Nest types in Slide.nests (0 = no nest: stroma, fat, background).
NEST_TYPES = {1: "duct", 2: "crowded", 3: "lymphocytes", 4: "idc"}
# Layout constants, chosen by measurement (docs/data.md, generator v6): the label must be readable from
# the nuclei, so most patches of the IDC region must hold IDC nests and the annotation must follow the
# region closely. NEST_SHARE: share of the non-fat tissue in nests (per slide, uniform in the range);
# NEST_CLUSTERING: weight of the slide-scale field that clusters nests (0 = spread evenly); FAT_SHARE:
# share of the tissue in fat lobules; ANNOTATION_WOBBLE: how far the hand-drawn outline strays from
# the true region (labels at region borders are uncertain, as in the real set).
NEST_SHARE = (0.45, 0.6)
NEST_CLUSTERING = 0.2
FAT_SHARE = (0.04, 0.14)
ANNOTATION_WOBBLE = 0.1
IDC_NEST = 4


@dataclass
class Slide:
    rgb: np.ndarray  # uint8 [H, W, 3]
    tissue: np.ndarray  # bool [H, W]
    region: np.ndarray  # bool [H, W]: IDC region (where tumour cells are)
    annotation: np.ndarray  # bool [H, W]: the pathologist's coarse outline of it (patch labels come from this)
    nuclei_idc: np.ndarray  # bool [H, W]: IDC nuclei = exactly the pixels where h_idc > 0 (the evidence)
    h_idc: np.ndarray  # float32 [H, W]: haematoxylin density the IDC nuclei add (0 elsewhere)
    nests: np.ndarray  # uint8 [H, W]: NEST_TYPES id per pixel (benign look-alikes and IDC nests)


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


def nuclei(rng, zone, density, sigma, amp, jitter) -> tuple[np.ndarray, np.ndarray]:
    """(bool nuclei, bool centres): impulses at random points of `zone`, each with a random amplitude
    in `amp` (so a random size), blurred by `sigma` and cut at 0.5 after a multiplicative outline noise
    of strength `jitter` (ragged outlines); clipped to the zone."""
    shape = zone.shape
    centres = (rng.random(shape) < density) & zone
    field = np.zeros(shape, np.float32)
    field[centres] = rng.uniform(amp[0], amp[1], int(centres.sum()))
    field = ndi.gaussian_filter(field, sigma, mode="constant") * np.float32(2 * np.pi * sigma**2)
    if jitter:
        field *= 1 + jitter * smooth_noise(rng, shape, 0.7)
    return (field > 0.5) & zone, centres


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


def idc_morphology(difficulty: float) -> dict:
    """How IDC nuclei are drawn; at difficulty 1 exactly like crowded benign nuclei."""
    e = 1.0 - float(np.clip(difficulty, 0.0, 1.0))  # how different they are
    return {
        "sigma": 0.85 + 0.45 * e,  # size
        "amp": (1.3, 1.7 + 2.8 * e),  # pleomorphism: spread of sizes
        "jitter": 0.12 + 0.4 * e,  # ragged outline
        "interior": 1.0 - 0.55 * e,  # vesicular: pale chromatin ...
        "rim": 1.0 + 0.8 * e,  # ... dark nuclear membrane ...
        "nucleolus": 1.0 + 1.3 * e,  # ... and a dark nucleolus
        "texture": 0.15 + 0.3 * e,  # coarse, uneven chromatin
        # Large nuclei keep their contrast through the optics' blur where small ones lose it; covering a
        # bit more of the nest with (by the mass rescaling) paler nuclei keeps the patch's colour
        # spread and dark share equal to benign nests'.
        "coverage": 1.0 + 0.12 * e,
    }


def idc_nuclei(rng, zone, nest, difficulty, nuclear_share):
    """(h_idc, nuclei_idc): IDC nuclei in `zone`, as many as cover `nuclear_share` of the IDC nests
    (the benign nests' share), drawn vesicular: pale interior, dark rim, a nucleolus, coarse texture."""
    m = idc_morphology(difficulty)
    nuclear_share = min(nuclear_share * m["coverage"], 0.9)
    density = 0.05
    for _ in range(2):  # one correction of the density so the nuclear area share matches
        state = rng.bit_generator.state
        mask, centres = nuclei(rng, zone, density, m["sigma"], m["amp"], m["jitter"])
        share = mask[nest].mean() if nest.any() else nuclear_share
        if share <= 0 or abs(share / max(nuclear_share, 1e-6) - 1) < 0.05:
            break
        density *= float(np.clip(np.log1p(-min(nuclear_share, 0.95)) / np.log1p(-min(share, 0.95)), 0.3, 3.0))
        rng.bit_generator.state = state
    rim = mask & ~ndi.binary_erosion(mask)
    h = np.where(rim, m["rim"], m["interior"]).astype(np.float32)
    h[centres] = m["nucleolus"]
    h *= 1 + m["texture"] * rng.standard_normal(mask.shape, dtype=np.float32).clip(-2, 2)
    return np.maximum(h, 1e-3) * mask, mask


def match_histogram(h, mask, reference) -> np.ndarray:
    """Monotone remap of h[mask] onto the value distribution of `reference` (ranks kept: the rim stays
    darker than the interior), so IDC nuclei carry the same haematoxylin per pixel as benign ones."""
    out = np.zeros_like(h)
    if not mask.any():
        return out
    values = h[mask]
    if len(reference) == 0:
        out[mask] = values
        return out
    ref = np.sort(reference)
    mapped = np.empty_like(values)
    mapped[np.argsort(values, kind="stable")] = ref[((np.arange(len(values)) + 0.5) * len(ref) / len(values)).astype(np.int64)]
    out[mask] = np.maximum(mapped, 1e-3)
    return out


def layout(rng, shape, tissue, region):
    """Nests, lumina and fat, drawn without looking at `region` (only the nest *type* does)."""
    fat_zone = quantile_mask(smooth_noise(rng, shape, 45, coarse=5), tissue, rng.uniform(*FAT_SHARE))
    fat = fat_zone & ~adipocyte_walls(rng, shape, spacing=rng.uniform(7, 11))
    cellular = tissue & ~fat_zone
    # Nests ~10-20 px across; how many varies smoothly over the slide (cellularity), not with the region.
    nest_field = smooth_noise(rng, shape, 4.0) + NEST_CLUSTERING * smooth_noise(rng, shape, 40, coarse=5)
    nest = quantile_mask(nest_field, cellular, rng.uniform(*NEST_SHARE))
    labels, n = ndi.label(nest)
    kind = rng.choice([1, 2, 3], size=n + 1, p=[0.45, 0.3, 0.25]).astype(np.uint8)
    kind[0] = 0
    nests = kind[labels]
    nests[nest & region] = IDC_NEST
    # Normal ducts: a lumen in the middle of the nest. IDC nests: cribriform spaces of the same share.
    depth = ndi.distance_transform_edt(nest).astype(np.float32)
    deepest = np.zeros(n + 1, np.float32)  # per-nest maximum depth; np.maximum.at is ~100x ndi.maximum here
    inside = labels > 0
    np.maximum.at(deepest, labels[inside], depth[inside])
    lumen = (nests == 1) & (depth > np.maximum(1.8, 0.5 * deepest[labels]))
    benign = (nests > 0) & (nests < IDC_NEST)
    share = lumen.sum() / max(benign.sum(), 1)
    idc = nests == IDC_NEST
    spaces = quantile_mask(smooth_noise(rng, shape, 1.3) + 0.25 * depth, idc, share)
    return fat, fat_zone, nests, lumen | spaces


def render_slide(rng, rows: int, cols: int, idc_fraction: float, difficulty: float = 0.5,
                 patch: int = 50, origin: int = 1) -> Slide:
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
    annotation = quantile_mask(region_field + ANNOTATION_WOBBLE * smooth_noise(rng, shape, 35, coarse=5), tissue, idc_fraction)
    fat, fat_zone, nests, spaces = layout(rng, shape, tissue, region)
    # Eosin: collagen fibres with white cracks between bundles (everywhere in the stroma).
    fib = fibres(rng, shape)
    eosin = 0.8 + 0.45 * fib + 0.15 * smooth_noise(rng, shape, 25, coarse=4)
    stroma = tissue & ~fat_zone & (nests == 0)
    cracks = (fib < -1.6) & stroma
    empty = ~tissue | fat | spaces | cracks
    # Nuclei (haematoxylin). Benign populations, then the IDC nuclei in the IDC nests.
    h = np.zeros(shape, np.float32)
    for zone, density, sigma, amp, od in (
        (stroma, 0.006, 0.8, (1.0, 1.4), 0.35),  # fibroblasts
        ((nests == 1) & ~spaces, 0.08, 0.8, (1.3, 1.7), 0.9),  # duct epithelium
        ((nests == 2), 0.07, 0.8, (1.3, 1.7), 0.9),  # crowded benign epithelium
        ((nests == 3), 0.09, 0.75, (1.4, 1.8), 1.1),  # lymphocytes: small, dense
    ):
        mask, _ = nuclei(rng, zone & ~empty, density, sigma, amp, jitter=0.12)
        h += od * mask
    benign = (nests > 0) & (nests < IDC_NEST)
    h_idc, nuclei_idc = idc_nuclei(rng, (nests == IDC_NEST) & ~empty, nests == IDC_NEST, difficulty,
                                   nuclear_share=(h[benign] > 0).mean() if benign.any() else 0.3)
    h *= 1 + 0.15 * rng.standard_normal(shape, dtype=np.float32).clip(-2, 2)  # benign: fine, even chromatin
    h_idc = match_histogram(h_idc, nuclei_idc, h[benign & (h > 0)])
    if nuclei_idc.any() and benign.any():  # and the same haematoxylin mass per nest area
        h_idc *= np.float32(np.clip(h[benign].mean() / h_idc[nests == IDC_NEST].mean(), 0.6, 1.3))
    h += h_idc
    # Background: stroma's faint haematoxylin; cytoplasm of the nests (pale purple, less eosin).
    in_nest = nests > 0
    h += 0.22 * tissue * (1 + 0.4 * smooth_noise(rng, shape, 2))
    h += 0.18 * in_nest
    e = np.clip(eosin, 0, None) * (1 - 0.4 * in_nest)
    h[empty] = 0.0
    e[empty] = 0.03
    rgb = stain(rng, h, e)
    return Slide(rgb=rgb, tissue=tissue, region=region, annotation=annotation, nuclei_idc=nuclei_idc,
                 h_idc=h_idc, nests=nests)


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
