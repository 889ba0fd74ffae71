"""Nuclei of the synthetic slides: where they sit, how they are drawn, which nucleus each pixel belongs to.

Three groups of nuclei are drawn (generator v7):

- *decoys*, drawn first and without looking at the IDC region, so they are equally frequent in both
  classes: small round lymphocytes (mostly in the stroma, some in the nests), a few entrapped benign
  epithelial nuclei in every nest, and stromal nuclei; the lymphoid aggregates (nest type 3) are
  decoys too (they stay in the IDC region). Every decoy kind's haematoxylin is remapped (ranks kept)
  onto the IDC nuclei's per-pixel distribution of the slide, with a gain per kind that makes its
  median darkness *after the optics' blur* (what the blur leaves of a small nucleus) equal the IDC
  nuclei's, so darkness does not tell them apart (edges favour the decoys: they are smaller);
- the benign epithelial nests' own nuclei (duct and crowded epithelium): oval, unlike both the round
  decoys and the IDC nuclei, so that the decoys carry no information about the label;
- the IDC nuclei in the IDC nests: larger, pleomorphic, ragged and vesicular, covering the benign
  nests' nuclear share, with the benign nuclei's per-pixel haematoxylin and nest mass.

Every nucleus gets an id (pixels go to the nearest impulse of their population) and a kind
(`KINDS`); `labels` 1 marks IDC nuclei, 2 every other nucleus (the decoys of the label map).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from idc.data.fields import smooth_noise

# Nucleus kinds (per nucleus id): the IDC nuclei, the decoys drawn alike in both classes (2-4 and the
# lymphoid aggregates, 7), and the benign epithelial nests' own nuclei (5, 6). Label map: 1 = IDC
# nucleus, 2 = any other nucleus (a decoy).
KINDS = {1: "idc", 2: "lymphocyte", 3: "entrapped_epithelial", 4: "stromal",
         5: "duct_epithelial", 6: "crowded_epithelial", 7: "lymphoid_aggregate"}
IDC, LYMPHOCYTE, ENTRAPPED, STROMAL, DUCT, CROWDED, CLUSTER = range(1, 8)
DECOY_KINDS = (LYMPHOCYTE, ENTRAPPED, STROMAL, CLUSTER)
BENIGN_KINDS = (DUCT, CROWDED)  # the benign epithelial nests' own nuclei: evidence against IDC
LABELS = {0: "background", 1: "idc_nucleus", 2: "decoy_nucleus"}
# Decoys (chosen by measurement, docs/data.md, generator v7): impulse densities per pixel of their zone.
# They make 30-50% of the nuclear area of an IDC-positive patch (the IDC nests hold the rest).
LYMPHOCYTE_DENSITY = (0.02, 0.003)  # in the stroma and in the nests, modulated by a smooth field (inflammation)
ENTRAPPED_DENSITY = 0.013  # oval benign epithelial nuclei in every nest: IDC nests hold them too, so a nest
# without them is no cue (at 0.004 removing the decoys raised P(IDC) by 0.12-0.13: docs/data.md, v7j/v7k)
LYMPHOCYTE_SIGMA = 0.7  # lymphocytes are small, round and dense
EPITHELIAL_SIGMA = (1.35, 0.65)  # benign epithelial nuclei: oval (major, minor), unlike the round decoys and IDC
STROMAL_DENSITY = 0.008  # fibroblasts in the stroma (mean; modulated by the inflammation field like the lymphocytes)
CHROMATIN = 0.3  # per-pixel spread of plain nuclei's haematoxylin (coarse chromatin: edges inside nuclei)
REACH = 2  # px: how far the optics' blur spreads a nucleus (scipy's Gaussian radius int(4 * 0.6 + 0.5))
OPTICS_SIGMA = 0.6  # the blur of tissue.stain, in pixels: decoy darkness is matched after it


def nuclei(rng, zone, density, sigma, amp, jitter, outline=None) -> tuple[np.ndarray, np.ndarray]:
    """(bool nuclei, bool centres): impulses at random points of `zone` (`density` may be an array),
    each with a random amplitude in `amp` (so a random size), blurred by `sigma` and cut at 0.5 after a
    multiplicative outline noise of strength `jitter` (ragged outlines); clipped to the zone.
    `sigma` = (major, minor) draws ovals instead, half of them lying along x, half along y.
    `outline`: the unit outline-noise field (populations in disjoint zones may share one: it is the
    costliest part of a whole-slide draw); None draws a new one."""
    shape = zone.shape
    centres = (rng.random(shape) < density) & zone
    impulses = np.zeros(shape, np.float32)
    impulses[centres] = rng.uniform(amp[0], amp[1], int(centres.sum()))
    if np.ndim(sigma):  # ovals: two orientations, each a separable anisotropic Gaussian
        major, minor = sigma
        across = rng.random(shape) < 0.5
        blob = sum(ndi.gaussian_filter(np.where(across == flip, impulses, 0), (minor, major)[::1 - 2 * flip],
                                       mode="constant") for flip in (0, 1)) * np.float32(2 * np.pi * major * minor)
    else:
        blob = ndi.gaussian_filter(impulses, sigma, mode="constant") * np.float32(2 * np.pi * sigma**2)
    if jitter:
        blob *= 1 + jitter * (smooth_noise(rng, shape, 0.7) if outline is None else outline)
    return (blob > 0.5) & zone, centres


def chromatin(rng, mask, od) -> np.ndarray:
    """float32 haematoxylin of plain (non-vesicular) nuclei: `od` with a fine, even chromatin texture."""
    h = np.zeros(mask.shape, np.float32)
    h[mask] = od * (1 + CHROMATIN * rng.standard_normal(int(mask.sum()), dtype=np.float32).clip(-2, 2))
    return h


def idc_morphology(difficulty: float) -> dict:
    """How IDC nuclei are drawn; at difficulty 1 small, round and plain (like the round decoys)."""
    e = 1.0 - float(np.clip(difficulty, 0.0, 1.0))  # how different they are
    return {
        "sigma": 0.85 + 1.15 * e,  # size
        "amp": (1.3, 1.7 + 2.8 * e),  # pleomorphism: spread of sizes
        "jitter": 0.12 + 0.4 * e,  # ragged outline
        "interior": 1.0 - 0.55 * e,  # vesicular: pale chromatin ...
        "rim": 1.0 + 0.8 * e,  # ... dark nuclear membrane ...
        "nucleolus": 1.0 + 1.3 * e,  # ... and a dark nucleolus
        "texture": 0.15 + 0.3 * e,  # coarse, uneven chromatin
        # Share of the nest the IDC nuclei cover, relative to the benign nuclei's. With the mass equalized,
        # fewer (so darker) IDC nuclear pixels keep the share of dark pixels equal within slides: at 1.0
        # the vesicular IDC nuclei (pale interior) left positive patches 0.39 SD short of dark pixels
        # and the colour control at CV ROC-AUC 0.63; 0.9 gives 0.51 (docs/data.md, v7m and v7n).
        "coverage": 1.0 - 0.1 * e,
    }


def idc_nuclei(rng, zone, nest, difficulty, nuclear_share, outline=None):
    """(h_idc, nuclei_idc, centres): IDC nuclei in `zone`, as many as cover `nuclear_share` of the IDC
    nests (the benign nests' share), drawn vesicular: pale interior, dark rim, a nucleolus, coarse texture."""
    m = idc_morphology(difficulty)
    nuclear_share = min(nuclear_share * m["coverage"], 0.9)
    density = 0.05
    for _ in range(2):  # one correction of the density so the nuclear area share matches
        state = rng.bit_generator.state
        mask, centres = nuclei(rng, zone, density, m["sigma"], m["amp"], m["jitter"], outline)
        share = mask[nest].mean() if nest.any() else nuclear_share
        if share <= 0 or abs(share / max(nuclear_share, 1e-6) - 1) < 0.05:
            break
        density *= float(np.clip(np.log1p(-min(nuclear_share, 0.95)) / np.log1p(-min(share, 0.95)), 0.3, 3.0))
        rng.bit_generator.state = state
    rim = mask & ~ndi.binary_erosion(mask)
    h = np.where(rim, m["rim"], m["interior"]).astype(np.float32)
    h[centres] = m["nucleolus"]
    h *= 1 + m["texture"] * rng.standard_normal(mask.shape, dtype=np.float32).clip(-2, 2)
    return np.maximum(h, 1e-3) * mask, mask, centres


def match_histogram(h, mask, reference) -> np.ndarray:
    """Monotone remap of h[mask] onto the value distribution of `reference` (ranks kept: the rim stays
    darker than the interior), so one population carries another's haematoxylin per pixel."""
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


def blurred_median(h, mask) -> float:
    """Median over `mask` of h after the optics' blur: the darkness a population keeps in the image."""
    return float(np.median(ndi.gaussian_filter(h, OPTICS_SIGMA)[mask])) if mask.any() else 0.0


@dataclass
class Population:
    kind: int
    mask: np.ndarray  # bool [H, W]
    centres: np.ndarray  # bool [H, W]: one impulse per nucleus (its pixels go to the nearest impulse)
    h: np.ndarray  # float32 [H, W] haematoxylin density (0 outside the mask)


@dataclass
class NucleusLayer:
    """All nuclei of a slide: haematoxylin, label map, nucleus id per pixel, kind per id."""
    h: np.ndarray  # float32 [H, W]
    ids: np.ndarray  # int32 [H, W]: 0 = no nucleus
    kinds: np.ndarray  # uint8 [n + 1]: KINDS id of nucleus i (0 for i = 0)
    labels: np.ndarray = field(init=False)  # uint8 [H, W]: LABELS

    def __post_init__(self):
        k = self.kinds[self.ids]
        self.labels = np.where(k == IDC, 1, np.where(k > 0, 2, 0)).astype(np.uint8)


def assemble(populations: list[Population]) -> NucleusLayer:
    """Stack the populations (they do not overlap) into one layer; each pixel of a population's mask
    gets the id of the nearest impulse of that population."""
    shape = populations[0].mask.shape
    h = np.zeros(shape, np.float32)
    ids = np.zeros(shape, np.int32)
    kinds = [np.zeros(1, np.uint8)]
    start = 1
    for p in populations:
        py, px = np.nonzero(p.mask)
        cy, cx = np.nonzero(p.centres)
        h[py, px] = p.h[py, px]
        if len(cy) and len(py):
            _, nearest = cKDTree(np.column_stack([cy, cx])).query(np.column_stack([py, px]))
            ids[py, px] = start + nearest.astype(np.int32)
        kinds.append(np.full(len(cy), p.kind, np.uint8))
        start += len(cy)
    return NucleusLayer(h=h, ids=ids, kinds=np.concatenate(kinds))


def decoy_populations(rng, tissue_zone, nest_zone, stroma_zone, inflammation, outline) -> list[Population]:
    """Lymphocytes, entrapped benign epithelial nuclei and stromal fibroblasts, drawn without looking
    at the IDC region (their stain is set later by `match_decoys`)."""
    out, taken = [], np.zeros_like(tissue_zone)
    for kind, zone, density, sigma, amp in (
        (LYMPHOCYTE, tissue_zone, np.where(nest_zone, LYMPHOCYTE_DENSITY[1], LYMPHOCYTE_DENSITY[0]) * inflammation,
         LYMPHOCYTE_SIGMA, (1.5, 1.9)),
        (ENTRAPPED, nest_zone, ENTRAPPED_DENSITY, EPITHELIAL_SIGMA, (1.3, 1.7)),
        (STROMAL, stroma_zone, STROMAL_DENSITY * inflammation, 0.8, (1.1, 1.5)),
    ):
        mask, centres = nuclei(rng, zone & ~ndi.binary_dilation(taken), density, sigma, amp, 0.12, outline)
        out.append(Population(kind, mask, centres, chromatin(rng, mask, 1.0)))
        taken |= mask
    return out


def match_decoys(decoys: list[Population], idc: Population, fallback: np.ndarray) -> None:
    """In place: each decoy kind gets the IDC nuclei's per-pixel haematoxylin distribution (ranks kept),
    scaled so its median darkness after the optics' blur equals the IDC nuclei's."""
    reference = idc.h[idc.mask] if idc.mask.any() else fallback
    target = blurred_median(idc.h, idc.mask) if idc.mask.any() else float(np.median(fallback)) if len(fallback) else 1.0
    for p in decoys:
        p.h = match_histogram(p.h, p.mask, reference)
        have = blurred_median(p.h, p.mask)
        if have > 0:
            p.h *= np.float32(np.clip(target / have, 0.5, 3.0))


def footprints(ids: np.ndarray, reach: int = REACH) -> np.ndarray:
    """int32: for each pixel within `reach` (Chebyshev) of a nucleus, the id of the nearest nucleus pixel's
    nucleus (0 elsewhere); ids [H, W] int, 0 = no nucleus."""
    if not ids.any():
        return np.zeros(ids.shape, np.int32)
    dist, (iy, ix) = ndi.distance_transform_cdt(ids == 0, metric="chessboard", return_indices=True)
    return np.where(dist <= reach, ids[iy, ix], 0).astype(np.int32)
