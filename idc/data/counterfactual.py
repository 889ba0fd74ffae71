"""Counterfactual patches of the synthetic set: the same patch with chosen nuclei removed.

The generator renders every slide twice, with and without its nuclei (same tissue, stain and sensor
noise; idc.data.tissue.stain), and stores the difference in the sidecar (`free_delta`). Removing a
nucleus pastes the nucleus-free pixels over its *footprint*: the pixels within the optics' blur reach
(`REACH` px, Chebyshev) of the nucleus that lie nearer to it than to any other nucleus. Footprints
partition the pixels the nuclei touch, and away from them the two renderings are equal bit for bit,
so removing nothing gives the patch PNG back exactly, removing one nucleus changes only its footprint,
and removing all gives the nucleus-free rendering. (Where two nuclei are within 2 px, the pixels
between them are split by nearness: removing one leaves the other's blur halo partly cut.)

Everything is done in the PNG's own pixels (h x w, smaller than 50 x 50 for edge patches);
`model_view` stretches a result to what the model sees (the cache's Resize), and `counterfactual_
probabilities` / `nucleus_drops` score counterfactuals with a model through `idc.model.predict`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from idc.data.cells import REACH, footprints
from idc.data.dataset import resize_transform
from idc.data.synthetic import PATCH, load_masks

TRUTH_KEYS = ("labels", "nucleus_id", "nucleus_kind", "free_delta", "tissue")


@dataclass
class PatchTruth:
    """One patch in its PNG's pixels [h, w]: the image, its nucleus-free rendering and who is where."""
    image: np.ndarray  # uint8 [h, w, 3]: the PNG
    free: np.ndarray  # uint8 [h, w, 3]: the same patch rendered without nuclei
    labels: np.ndarray  # uint8 [h, w]: 0 background, 1 IDC nucleus, 2 decoy nucleus
    ids: np.ndarray  # int32 [h, w]: nucleus id (0 = none)
    footprint: np.ndarray  # int32 [h, w]: the nucleus whose removal repaints the pixel (0 = none)
    kinds: dict  # nucleus id -> cells.KINDS id, for every nucleus with a footprint in the patch
    tissue: np.ndarray  # bool [h, w]

    def nuclei(self, kinds=None) -> np.ndarray:
        """Sorted ids of the nuclei whose footprint reaches the patch: all, or those of the `kinds`
        (cells.KINDS ids, e.g. `(IDC,)` or `DECOY_KINDS`)."""
        ids = np.array(sorted(self.kinds), np.int64)
        if kinds is None:
            return ids
        return np.array([i for i in ids if self.kinds[i] in tuple(kinds)], np.int64)


def patch_truth(sidecar: dict, image: np.ndarray, x: int, y: int) -> PatchTruth:
    """The ground truth of the patch at (x, y) whose PNG pixels are `image` [h, w, 3], from a sidecar
    loaded with (at least) `TRUTH_KEYS`. Footprints are computed on the patch plus a `REACH` margin, so
    a nucleus just outside the patch whose blur reaches in counts as one of its nuclei."""
    h, w = image.shape[:2]
    ids = sidecar["nucleus_id"]
    if ids[y:y + h, x:x + w].shape != (h, w):
        raise ValueError(f"patch ({x}, {y}) of {h}x{w} px lies outside the sidecar's {ids.shape} slide")
    y0, x0 = max(y - REACH, 0), max(x - REACH, 0)
    window = footprints(ids[y0:y + h + REACH, x0:x + w + REACH])
    foot = window[y - y0:y - y0 + h, x - x0:x - x0 + w]
    present = np.unique(foot[foot > 0])
    return PatchTruth(
        image=np.asarray(image, np.uint8),
        free=np.asarray(image, np.uint8) + sidecar["free_delta"][y:y + h, x:x + w],
        labels=sidecar["labels"][y:y + h, x:x + w], ids=ids[y:y + h, x:x + w].astype(np.int32), footprint=foot,
        kinds={int(i): int(sidecar["nucleus_kind"][i]) for i in present},
        tissue=sidecar["tissue"][y:y + h, x:x + w])


def remove_nuclei(truth: PatchTruth, remove) -> np.ndarray:
    """uint8 [h, w, 3]: the patch with the nuclei `remove` (ids) taken out (nucleus-free pixels over
    their footprints); every other pixel is the PNG's."""
    out = truth.image.copy()
    where = np.isin(truth.footprint, np.asarray(list(remove), np.int64))
    out[where] = truth.free[where]
    return out


def replace_tissue(truth: PatchTruth, remove, rng, tries: int = 40, piece: int = 3) -> tuple[np.ndarray, int]:
    """(image, pixels replaced): the control for `remove_nuclei(truth, remove)`. The same pasted pixels
    (the nucleus-free tissue under each removed nucleus's footprint) are put onto non-nuclear tissue
    instead: each footprint shifted to a random place where it covers only tissue pixels that belong to
    no nucleus (a neighbour's blur halo may be covered) and no earlier paste; a footprint that fits
    nowhere in `tries` draws is cut into `piece` x `piece` px pieces placed the same way. About an equal
    area of non-nuclear tissue is replaced and no nucleus is removed (the area placed is returned)."""
    out = truth.image.copy()
    spot = truth.tissue & (truth.ids == 0)
    placed = 0
    for i in remove:
        ys, xs = np.nonzero(truth.footprint == i)
        if not len(ys):
            continue
        whole = _paste(out, spot, truth.free[ys, xs], ys, xs, rng, tries)
        if whole:
            placed += whole
            continue
        cell = (ys // piece) * (truth.image.shape[1] // piece + 1) + xs // piece
        for c in np.unique(cell):
            sel = cell == c
            placed += _paste(out, spot, truth.free[ys[sel], xs[sel]], ys[sel], xs[sel], rng, tries)
    return out, placed


def _paste(out, spot, pixels, ys, xs, rng, tries) -> int:
    """Paste `pixels` (shape given by ys, xs) at a random shift onto `spot` pixels only; marks them used."""
    ys, xs = ys - ys.min(), xs - xs.min()
    h, w = spot.shape
    for _ in range(tries):
        dy, dx = rng.integers(0, h - ys.max()), rng.integers(0, w - xs.max())
        if spot[ys + dy, xs + dx].all():
            out[ys + dy, xs + dx] = pixels
            spot[ys + dy, xs + dx] = False
            return len(ys)
    return 0


def model_view(image: np.ndarray, size: int = PATCH) -> np.ndarray:
    """uint8 [size, size, 3]: what the model sees of a PNG-sized image (the cache's Resize)."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(resize_transform(size)(Image.fromarray(image)), np.uint8)


def load_truths(patches: pd.DataFrame, root, masks_dir) -> list[PatchTruth]:
    """PatchTruth of each row (`image_id`, `patient_id`, `x`, `y`) from the PNGs under `root` and the
    sidecars under `masks_dir` (one sidecar read per patient)."""
    sidecars: dict[int, dict] = {}
    out = []
    for row in patches.itertuples(index=False):
        pid = int(row.patient_id)
        if pid not in sidecars:
            sidecars[pid] = load_masks(masks_dir, pid, keys=TRUTH_KEYS)
        with Image.open(Path(root) / row.image_id) as im:
            image = np.asarray(im.convert("RGB"), np.uint8)
        out.append(patch_truth(sidecars[pid], image, int(row.x), int(row.y)))
    return out
