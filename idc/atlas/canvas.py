"""A patient's attribution maps on its tissue canvas, at full resolution: canvas pixel (r, c) = slide pixel
(r, c), the canvas of the stitched tissue (`idc.stitch.original_tiles` + `stitch_patches`). The display
scale, colours and the ground-truth outline are here too, shared by the atlas figures and the viewer's
landscape layers.

What is shown: the evidence for the explained class (`atlas.target`, IDC by default), i.e. the positive
part of each map (Grad-CAM is non-negative; integrated gradients are summed over the colour channels with
their sign), smoothed within each patch by a Gaussian of `atlas.display_sigma` px (pixel-level maps such as
IG are speckle at slide zoom; 2 px keeps nuclei apart), divided by one scale per method for all the
atlas's patients (the 99th percentile of the positive values), so that a patient with little evidence looks
pale next to one with much. The stored maps (atlas/patients/<pid>/maps.npz) are the raw ones.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

from idc.stitch import PATCH, stitch_patches
from idc.viz.style import colormap

FULL_RES_MAX_SIDE = 8192  # px; a larger slide (beyond any real one) is drawn downsampled even at "full" resolution
PERCENTILE = 99.0
LAYER_ALPHA = 0.85  # opacity of the strongest evidence; weak evidence lets the tissue show
SCALE_SAMPLES = 20_000_000  # at most this many pixels enter the percentile (a fixed stride: deterministic)
OUTLINE_RGB = (0, 200, 0)


def planar(raw: np.ndarray) -> np.ndarray:
    """float32 [n, H, W]: a method's raw maps with their colour channels summed (sign kept)."""
    raw = np.asarray(raw, dtype=np.float32)
    return raw.sum(axis=1) if raw.ndim == 4 else raw


def evidence(maps: np.ndarray, sigma: float) -> np.ndarray:
    """float32 [n, H, W]: the positive part of each map, Gaussian-smoothed within the patch (sigma px; 0: none)."""
    pos = np.maximum(np.asarray(maps, dtype=np.float32), 0)
    if sigma <= 0 or not len(pos):
        return pos
    return ndimage.gaussian_filter(pos, sigma=(0, sigma, sigma), mode="nearest").astype(np.float32)


def map_tiles(maps: np.ndarray, widths=None, heights=None):
    """Map tiles for `stitch_patches`: the [n, s, s] maps as [n, s, s, 1], and where a patch is smaller
    (slide edge; the model saw it stretched to s x s) its map resized back to its true size, as
    `original_tiles` does with its pixels. Returns an array, or a list when some tile is smaller."""
    maps = np.asarray(maps, dtype=np.float32)
    s = maps.shape[-1]
    w = np.full(len(maps), s) if widths is None else np.asarray(widths)
    h = np.full(len(maps), s) if heights is None else np.asarray(heights)
    edge = np.flatnonzero((w != s) | (h != s))
    if not len(edge):
        return maps[..., None]
    tiles = list(maps[..., None])
    for i in edge:
        small = Image.fromarray(maps[i]).resize((int(w[i]), int(h[i])), Image.BILINEAR)
        tiles[i] = np.asarray(small, dtype=np.float32)[..., None]
    return tiles


def sizes(sub):
    return (sub["width"].to_numpy(), sub["height"].to_numpy()) if "width" in sub else (None, None)


def stitch_map(maps: np.ndarray, sub, max_side: int = FULL_RES_MAX_SIDE) -> np.ndarray:
    """float32 [H, W]: the maps of the patches `sub` (rows with x, y, width, height) at their place, NaN
    where there is no patch; downsampled only when a side exceeds `max_side`."""
    tiles = map_tiles(maps, *sizes(sub))
    canvas = stitch_patches(tiles, sub["x"].to_numpy(), sub["y"].to_numpy(), fill=np.nan, patch=PATCH,
                            max_side=max_side)
    return canvas[..., 0]


def canvas_shape(sub, patch: int = PATCH) -> tuple:
    """(H, W) of the full-resolution canvas of the patches `sub`."""
    return int(sub["y"].max()) + patch, int(sub["x"].max()) + patch


def display_scale(maps, samples: int = SCALE_SAMPLES) -> float:
    """The 99th percentile of the positive values of all `maps` (a list of arrays, e.g. one per patient),
    from at most `samples` pixels taken at a fixed stride; 1.0 when nothing is positive."""
    total = sum(int(np.asarray(m).size) for m in maps)
    stride = max(1, -(-total // samples))
    picked = [np.asarray(m, dtype=np.float32).ravel()[::stride] for m in maps]
    values = np.concatenate(picked) if picked else np.zeros(0, np.float32)
    values = values[values > 0]
    scale = float(np.percentile(values, PERCENTILE)) if len(values) else 0.0
    return scale if scale > 0 else 1.0


def display(canvas: np.ndarray, scale: float) -> np.ndarray:
    """The evidence in [0, 1] (positive part / scale, clipped); NaN where there is no patch."""
    return np.clip(canvas / scale, 0, 1)


def lut(name: str = "jet") -> np.ndarray:
    """uint8 [256, 3]: a colour map sampled at 256 levels (cheap on a 12-megapixel canvas)."""
    return (colormap(name)(np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


def rgba_layer(disp: np.ndarray, max_alpha: float = LAYER_ALPHA, cmap: str = "jet") -> np.ndarray:
    """uint8 [H, W, 4]: each pixel's evidence through `cmap`, opacity max_alpha x evidence (transparent
    outside the tissue), so the tissue shows where the evidence is weak."""
    level = np.nan_to_num(disp, nan=0.0)
    idx = (level * 255).round().astype(np.uint8)
    out = np.empty((*disp.shape, 4), np.uint8)
    out[..., :3] = lut(cmap)[idx]
    out[..., 3] = np.where(np.isnan(disp), 0, (max_alpha * level * 255).round()).astype(np.uint8)
    return out


def layer_png(disp: np.ndarray, max_alpha: float = LAYER_ALPHA, cmap: str = "jet") -> bytes:
    """The same layer as `rgba_layer`, as a palette PNG (one byte per pixel: 256 colours, each with its
    opacity), several times smaller than RGBA for a full-resolution slide."""
    idx = (np.nan_to_num(disp, nan=0.0) * 255).round().astype(np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette(lut(cmap).ravel().tolist())
    alphas = bytes(int(round(max_alpha * i)) for i in range(256))  # index 0 (no evidence, no tissue): clear
    buf = io.BytesIO()
    img.save(buf, format="PNG", transparency=alphas, optimize=True)
    return buf.getvalue()


def blend(tissue: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """The RGBA `layer` over the uint8 RGB `tissue` (same height and width)."""
    a = layer[..., 3:4].astype(np.float32) / 255.0
    return ((1 - a) * tissue.astype(np.float32) + a * layer[..., :3].astype(np.float32)).round().astype(np.uint8)


def fit_mask(mask: np.ndarray, shape) -> np.ndarray:
    """A slide-coordinate bool mask cropped or padded to a canvas of `shape` (H, W)."""
    out = np.zeros(shape, dtype=bool)
    crop = np.asarray(mask, dtype=bool)[: shape[0], : shape[1]]
    out[: crop.shape[0], : crop.shape[1]] = crop
    return out


def resample_mask(mask: np.ndarray, shape) -> np.ndarray:
    """Nearest-pixel resampling of a bool mask to `shape` (for downsampled figure canvases)."""
    rows = np.minimum((np.arange(shape[0]) * mask.shape[0] / shape[0]).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum((np.arange(shape[1]) * mask.shape[1] / shape[1]).astype(np.int64), mask.shape[1] - 1)
    return mask[rows][:, cols]


def outline(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """bool: the pixels of `mask` within `width` px of its border."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, iterations=width, border_value=1)
