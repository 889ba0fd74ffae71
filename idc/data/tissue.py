"""Render one synthetic H&E tissue slide: stain densities -> RGB by Beer-Lambert absorption.

The slide is built so that the *only* thing that separates IDC tissue from benign tissue is the
morphology of the IDC nuclei (the pixels `labels == 1` marks), and so that darkness and edges do not
find them (generator v7):

- the layout of the tissue (stroma, fat lobules, cracks, and the cellular "nests" where epithelial
  cells or lymphocytes sit) is drawn from fields that do not know where the IDC region is, so fat,
  lumen, cracks and cellularity are equally frequent inside and outside it;
- outside the IDC region a nest is a benign look-alike: a normal duct (lumen ringed by oval nuclei) or
  crowded benign epithelium (oval, uniform nuclei), one of the two per connected nest network; pockets
  of bounded size (the nest pixels of ~32 px Voronoi cells, drawn region-blind, so in both classes) are
  lymphoid aggregates (small, dense; these stay in the IDC region too) or hypocellular (only the decoys
  that fall into them), so that a nest without benign nuclei is no cue for IDC and a patch whose IDC
  nuclei are removed looks like one the model was trained on (generator revisions v7v, v8b);
- inside it, the same nests hold IDC nuclei: larger, pleomorphic (random size, ragged outline),
  vesicular (pale chromatin, dark membrane, a nucleolus); each nest keeps the architecture of the
  benign nest it replaces (a duct's lumen, or none), so only the nuclei tell IDC from benign (the
  cribriform spaces of generator v7a-v7n were a cue outside the nuclei);
- decoy nuclei in both classes alike (idc.data.cells): lymphocytes, entrapped benign epithelial nuclei,
  stromal nuclei and the lymphoid aggregates, as dark after the optics' blur as the IDC nuclei;
- the IDC nuclei's stain amount is rescaled per slide so that IDC nests carry the same mean
  haematoxylin as benign nests ("more purple" is no cue); one stain (per patient) for the whole slide,
  drawn around a `StainProtocol` (a site's stain vectors, intensities, glass colour and blur; the default
  protocol is the generator's own, and a site's protocol changes only the stain: the same random draws).

Every slide is also rendered without its nuclei (`rgb_free`: the same tissue, stain and sensor noise,
what lies under each nucleus), for counterfactuals that remove nuclei (idc.data.counterfactual).
`difficulty` in [0, 1] sets how far IDC nuclei are from benign ones (1: the same shape and texture,
i.e. no signal). Everything is a whole-slide array operation, so a 1,500 x 1,500 px slide renders in
about two seconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from scipy import ndimage as ndi

from idc.data.cells import (CLUSTER, CROWDED, DUCT, EPITHELIAL_SIGMA, IDC, LYMPHOCYTE_SIGMA, OPTICS_SIGMA, NucleusLayer, Population, assemble,
                            chromatin, decoy_populations, idc_nuclei, match_decoys, match_histogram, nuclei)
from idc.data.fields import quantile_mask, smooth_noise

# Optical-density stain vectors (R, G, B) for haematoxylin and eosin, roughly as in colour-deconvolution
# literature; each patient perturbs them (stain variation between labs and batches).
HEMATOXYLIN = np.array([0.65, 0.70, 0.29])
EOSIN = np.array([0.10, 0.95, 0.40])
RESIDUAL = np.array([0.27, 0.57, 0.78])
# Nest types in Slide.nests (0 = no nest: stroma, fat, background).
NEST_TYPES = {1: "duct", 2: "crowded", 3: "lymphocytes", 4: "idc", 5: "hypocellular"}
# Each connected nest network is a duct (DUCT_SHARE) or crowded benign epithelium; in the IDC region its
# epithelium becomes IDC (IDC_NEST). At the nests' density the networks percolate (the largest holds a third
# to two thirds of a slide's nest area), so lymphoid aggregates and hypocellular nests (cytoplasm holding
# only the decoys that fall into it) are not drawn per network but as pockets: the nest pixels of Voronoi
# cells ~POCKET px across, each drawn without looking at the region (so in both classes), lymphoid or
# hypocellular with the POCKET_KINDS probabilities. Chosen by measurement (docs/data.md, "Issue 22, sixth
# session"): per-network kinds let one draw decide most of a patient's nests.
DUCT_SHARE = 0.45 / (0.45 + 0.342)  # v7v's duct : crowded ratio, kept exactly: the measured sets are its draws
POCKET = 32
POCKET_KINDS = (0.054, 0.05)
LYMPHOID_NEST = 3
HYPOCELLULAR_NEST = 5
EPITHELIAL_NESTS = (1, 2)
# Layout constants, chosen by measurement (docs/data.md, generator v6): the label must be readable from
# the nuclei, so most patches of the IDC region must hold IDC nests and the annotation must follow the
# region closely. NEST_SHARE: share of the non-fat tissue in nests (per slide, uniform in the range);
# NEST_CLUSTERING: weight of the slide-scale field that clusters nests (0 = spread evenly); FAT_SHARE:
# share of the tissue in fat lobules; ANNOTATION_WOBBLE: how far the hand-drawn outline strays from
# the true region (labels at region borders are uncertain, as in the real set). NEST_SHARE was 45-60%
# up to revision v8b; at 55-70% (v10c) a positive patch holds more IDC nests and less stroma, and the model
# reads the IDC nuclei more and the (mostly stromal) lymphocytes less (docs/data.md, "Issue 22, eighth session").
NEST_SHARE = (0.55, 0.7)
NEST_CLUSTERING = 0.2
FAT_SHARE = (0.04, 0.14)
ANNOTATION_WOBBLE = 0.1
IDC_NEST = 4
# Spread (log scale) of the smooth field that modulates the lymphocytes' and stromal nuclei's density (inflammation), the
# same in both classes. Wide, so that patches range from almost no lymphocytes to dense infiltrates:
# a model must then be invariant to how many there are, and a counterfactual that removes them stays
# in the training distribution (docs/data.md, "How v7 was tuned").
INFLAMMATION_SPREAD = 1.6


@dataclass(frozen=True)
class StainProtocol:
    """How one site stains and scans (a site-shift cohort's `data.sites` entry): the H and E optical-density
    vectors around which each patient's are drawn, multipliers of each patient's stain amounts, the light
    through empty glass per channel (grey levels) and the optics' blur (px). The defaults are the generator's."""

    hematoxylin: Tuple[float, float, float] = tuple(HEMATOXYLIN)
    eosin: Tuple[float, float, float] = tuple(EOSIN)
    h_intensity: float = 1.0
    e_intensity: float = 1.0
    background: Tuple[float, float, float] = (245.0, 245.0, 245.0)
    blur: float = OPTICS_SIGMA


@dataclass
class Slide:
    rgb: np.ndarray  # uint8 [H, W, 3]
    rgb_free: np.ndarray  # uint8 [H, W, 3]: the same slide without nuclei (same stain and noise)
    tissue: np.ndarray  # bool [H, W]
    region: np.ndarray  # bool [H, W]: IDC region (where tumour cells are)
    annotation: np.ndarray  # bool [H, W]: the pathologist's coarse outline of it (patch labels come from this)
    nuclei: NucleusLayer  # haematoxylin, label map, nucleus id per pixel, kind per nucleus
    nests: np.ndarray  # uint8 [H, W]: NEST_TYPES id per pixel (benign look-alikes and IDC nests)

    @property
    def nuclei_idc(self) -> np.ndarray:
        """bool [H, W]: IDC nuclei = exactly the pixels where IDC-nucleus stain was put (the evidence)."""
        return self.nuclei.labels == 1


def voronoi_cells(rng, shape, spacing: float) -> np.ndarray:
    """int [H, W]: the Voronoi cell of random seeds ~`spacing` px apart that each pixel lies in, numbered
    0..n-1 in the seeds' raster order."""
    seeds = rng.random(shape) < 1.0 / spacing**2
    _, (iy, ix) = ndi.distance_transform_edt(~seeds, return_indices=True)
    return (np.cumsum(seeds.ravel()) - 1).reshape(shape)[iy, ix]


def adipocyte_walls(rng, shape, spacing: float) -> np.ndarray:
    """bool: thin walls between Voronoi cells of random seeds ~`spacing` px apart."""
    label = voronoi_cells(rng, shape, spacing)
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


def layout(rng, shape, tissue, region):
    """Nests, lumina and fat, drawn without looking at `region` (only the nest *type* does)."""
    fat_zone = quantile_mask(smooth_noise(rng, shape, 45, coarse=5), tissue, rng.uniform(*FAT_SHARE))
    fat = fat_zone & ~adipocyte_walls(rng, shape, spacing=rng.uniform(7, 11))
    cellular = tissue & ~fat_zone
    # Nests ~10-20 px across; how many varies smoothly over the slide (cellularity), not with the region.
    nest_field = smooth_noise(rng, shape, 4.0) + NEST_CLUSTERING * smooth_noise(rng, shape, 40, coarse=5)
    nest = quantile_mask(nest_field, cellular, rng.uniform(*NEST_SHARE))
    labels, n = ndi.label(nest)
    kind = np.where(rng.random(n + 1) < DUCT_SHARE, 1, 2).astype(np.uint8)
    kind[0] = 0
    nests = kind[labels]
    cell = voronoi_cells(rng, shape, POCKET)
    p_lymphoid, p_hypocellular = POCKET_KINDS
    pocket = rng.choice(np.array([0, LYMPHOID_NEST, HYPOCELLULAR_NEST], np.uint8), size=int(cell.max()) + 1,
                        p=[1 - p_lymphoid - p_hypocellular, p_lymphoid, p_hypocellular])[cell]
    in_pocket = nest & (pocket > 0)
    nests[in_pocket] = pocket[in_pocket]
    # Normal ducts: a lumen in the middle of the nest. A nest of the IDC region keeps the architecture of
    # the benign nest it replaces (a duct's lumen, or none): only its nuclei tell it apart.
    depth = ndi.distance_transform_edt(nest).astype(np.float32)
    deepest = np.zeros(n + 1, np.float32)  # per-nest maximum depth; np.maximum.at is ~100x ndi.maximum here
    inside = labels > 0
    np.maximum.at(deepest, labels[inside], depth[inside])
    lumen = (nests == 1) & (depth > np.maximum(1.8, 0.5 * deepest[labels]))
    nests[nest & region & np.isin(nests, EPITHELIAL_NESTS)] = IDC_NEST  # aggregates and hypocellular nests stay
    return fat, fat_zone, nests, lumen


def draw_nuclei(rng, tissue, nests, stroma, empty, difficulty) -> NucleusLayer:
    """Decoys first (region-blind), then the benign nests' nuclei and the IDC nuclei in what is left."""
    ok = ~empty
    inflammation = np.exp(INFLAMMATION_SPREAD * smooth_noise(rng, tissue.shape, 30, coarse=5))
    inflammation /= inflammation[tissue].mean() if tissue.any() else 1.0
    outline = smooth_noise(rng, tissue.shape, 0.7)  # one outline-noise field for all (non-overlapping) nuclei
    decoys = decoy_populations(rng, tissue & ok, (nests > 0) & ok, stroma & ok, inflammation, outline)
    free = ok & ~ndi.binary_dilation(np.logical_or.reduce([p.mask for p in decoys]))
    # The nests' own nuclei cover the same share of a nest as without decoys (as in generator v6).
    crowding = 1 / max(float(free[(nests > 0) & ok].mean()) if ((nests > 0) & ok).any() else 1.0, 0.5)
    main = []
    for kind, zone, density, sigma, amp, od in (
        (DUCT, nests == 1, 0.08, EPITHELIAL_SIGMA, (1.3, 1.7), 0.9),  # duct epithelium (the lumen is in `empty`)
        (CROWDED, nests == 2, 0.07, EPITHELIAL_SIGMA, (1.3, 1.7), 0.9),  # crowded benign epithelium
        (CLUSTER, nests == LYMPHOID_NEST, 0.12, LYMPHOCYTE_SIGMA, (1.5, 1.9), 1.1),  # lymphoid aggregates: small, dense
    ):
        mask, centres = nuclei(rng, zone & free, density * crowding, sigma, amp, 0.12, outline)
        main.append(Population(kind, mask, centres, chromatin(rng, mask, od)))
    epithelial = np.isin(nests, EPITHELIAL_NESTS)
    benign_nuclei = main[0].mask | main[1].mask
    benign_h = main[0].h + main[1].h
    h_idc, idc_mask, centres = idc_nuclei(rng, (nests == IDC_NEST) & free, nests == IDC_NEST, difficulty,
                                          nuclear_share=benign_nuclei[epithelial].mean() if epithelial.any() else 0.3,
                                          outline=outline)
    h_idc = match_histogram(h_idc, idc_mask, benign_h[benign_nuclei])
    if idc_mask.any() and epithelial.any():  # and the same haematoxylin mass per nest area
        h_idc *= np.float32(np.clip(benign_h[epithelial].mean() / h_idc[nests == IDC_NEST].mean(), 0.6, 1.3))
    idc = Population(IDC, idc_mask, centres, h_idc)
    match_decoys([*decoys, main[2]], idc, fallback=benign_h[benign_nuclei])
    return assemble([idc, *main, *decoys])


def render_slide(rng, rows: int, cols: int, idc_fraction: float, difficulty: float = 0.5,
                 patch: int = 50, origin: int = 1, protocol: Optional[StainProtocol] = None) -> Slide:
    """A slide covering a rows x cols patch grid (plus the 1 px origin of the Kaggle grid), stained and
    scanned by `protocol` (None: the generator's default)."""
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
    layer = draw_nuclei(rng, tissue, nests, stroma, empty, difficulty)
    # Background: stroma's faint haematoxylin; cytoplasm of the nests (pale purple, less eosin).
    in_nest = nests > 0
    under = 0.22 * tissue * (1 + 0.4 * smooth_noise(rng, shape, 2)) + 0.18 * in_nest  # what lies under a nucleus
    e = np.clip(eosin, 0, None) * (1 - 0.4 * in_nest)
    under[empty] = 0.0
    e[empty] = 0.03
    rgb, rgb_free = stain(rng, under + layer.h, e, h_under=under, protocol=protocol)
    return Slide(rgb=rgb, rgb_free=rgb_free, tissue=tissue, region=region, annotation=annotation,
                 nuclei=layer, nests=nests)


def stain(rng, h_density, e_density, h_under=None, protocol: Optional[StainProtocol] = None):
    """Beer-Lambert: RGB = I0 * exp(-(H * h + E * e)) with patient-specific stain vectors and strengths,
    then the optics' blur and sensor noise -> uint8 [H, W, 3]. The patient's vectors and amounts are drawn
    around the site's `protocol` (None: the default), which also sets I0 per channel and the blur; the
    random draws are the same for every protocol, so a site changes the stain and nothing else.

    With `h_under` (the haematoxylin without the nuclei, equal to `h_density` outside them) also the
    nucleus-free image, with the same stain, eosin and noise: (rgb, rgb_free). The blur is linear, so
    the free image is the blurred image plus the blurred change at the nuclear pixels; it equals `rgb`
    bit for bit beyond the blur's reach (2 px) of a nucleus."""
    p = protocol or StainProtocol()
    h_vec = (np.asarray(p.hematoxylin, np.float64) * rng.uniform(0.85, 1.15, 3)).astype(np.float32)
    e_vec = (np.asarray(p.eosin, np.float64) * rng.uniform(0.85, 1.15, 3)).astype(np.float32)
    h_amt, e_amt = rng.uniform(0.9, 1.3) * p.h_intensity, rng.uniform(0.45, 0.7) * p.e_intensity
    od = (h_amt * h_density)[..., None] * h_vec + (e_amt * e_density)[..., None] * e_vec
    od += (0.03 * RESIDUAL * rng.random()).astype(np.float32)
    light = np.asarray(p.background, np.float32) * np.exp(-od)
    rgb = ndi.gaussian_filter(light, (p.blur, p.blur, 0))  # optics
    noise = np.float32(6.0) * rng.standard_normal(rgb.shape, dtype=np.float32)  # sensor noise: real patches are grainy
    out = np.clip(rgb + noise, 0, 255).astype(np.uint8)
    if h_under is None:
        return out
    change = h_under != h_density
    delta = np.zeros_like(light)
    delta[change] = light[change] * (np.exp((h_amt * (h_density - h_under))[change][:, None] * h_vec) - 1)
    free = rgb + ndi.gaussian_filter(delta, (p.blur, p.blur, 0))
    return out, np.clip(free + noise, 0, 255).astype(np.uint8)
