"""Stitch patches back into the tissue slide by their (x, y) top-left coordinates, vectorized.

Kept apart from the landscape stage so that prepare_data (EDA figures), landscape and the synthetic
generator's checks share one implementation without importing a stage.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from idc.data.dataset import load_rgb

PATCH = 50  # the Kaggle grid: patches every 50 px
MAX_CANVAS_SIDE = 2048  # px; a larger slide is drawn downsampled (matplotlib turns a 2048^2 image into 130 MB of floats)


def fit_tiles(images, patch: int, fill, widths=None, heights=None) -> tuple:
    """Every tile in one patch x patch cell of the grid, as ([n, patch, patch, C], widths, heights).

    `images` is a list of [h_i, w_i, C] tiles or an array [n, h, w, C] (then `widths`/`heights` say how
    much of each is tissue). Tiles larger than the cell are cropped to their top-left patch x patch (the
    next patch of the grid covers the rest of that tissue); smaller ones (slide edges) keep their pixels
    and the rest of the cell is `fill`.
    """
    if isinstance(images, np.ndarray):
        tiles = images
        h = np.full(len(tiles), tiles.shape[1]) if heights is None else np.asarray(heights, dtype=np.int64)
        w = np.full(len(tiles), tiles.shape[2]) if widths is None else np.asarray(widths, dtype=np.int64)
        tiles = tiles[:, :patch, :patch]
        if tiles.shape[1:3] != (patch, patch):  # smaller than the cell: pad
            out = np.full((len(tiles), patch, patch, tiles.shape[3]), fill, dtype=tiles.dtype)
            out[:, :tiles.shape[1], :tiles.shape[2]] = tiles
            tiles = out
    else:
        listed = list(images)
        h = np.array([t.shape[0] for t in listed])
        w = np.array([t.shape[1] for t in listed])
        tiles = np.full((len(listed), patch, patch, listed[0].shape[2]), fill, dtype=listed[0].dtype)
        for i, t in enumerate(listed):
            t = t[:patch, :patch]
            tiles[i, :t.shape[0], :t.shape[1]] = t
    h, w = np.minimum(h, patch), np.minimum(w, patch)
    if (h < patch).any() or (w < patch).any():  # blank the part of a cell that is not this patch's tissue
        rr = np.arange(patch)
        keep = (rr[None, :, None] < h[:, None, None]) & (rr[None, None, :] < w[:, None, None])
        tiles = np.where(keep[..., None], tiles, np.asarray(fill, dtype=tiles.dtype))
    return tiles, w, h


def stitch_patches(images, xs, ys, widths=None, heights=None, fill=255, patch: int | None = None,
                   max_side: int = MAX_CANVAS_SIDE) -> np.ndarray:
    """[H, W, C] canvas (dtype of `images`) with every patch pasted at (x, y); `fill` where there is none.

    `images`: an array [n, s, s, C] (`widths`/`heights`: edge patches whose top-left w x h pixels are
    tissue) or a list of tiles of their own sizes (see `original_tiles`); `patch` is the grid step
    (default: s for an array, 50 for a list); see `fit_tiles` for smaller and larger tiles. A slide
    whose canvas would exceed `max_side` pixels on a side is drawn downsampled to fit: memory stays
    bounded whatever the coordinates. Calls with the same coordinates give canvases of the same shape.
    """
    if patch is None:
        patch = images.shape[1] if isinstance(images, np.ndarray) else PATCH
    images, _, _ = fit_tiles(images, patch, fill, widths, heights)
    s = patch
    xs = np.asarray(xs, dtype=np.int64)
    ys = np.asarray(ys, dtype=np.int64)
    oy, ox = int(ys.min() % s), int(xs.min() % s)
    rows, cols = (ys - oy) // s, (xs - ox) // s
    on_grid = np.all((ys - oy) % s == 0) and np.all((xs - ox) % s == 0)
    H, W = (oy + (rows.max() + 1) * s, ox + (cols.max() + 1) * s) if on_grid else (ys.max() + s, xs.max() + s)
    if max(H, W) > max_side:
        return _stitch_downsampled(images, xs, ys, max_side / max(H, W), fill)
    canvas = np.full((H, W, images.shape[3]), fill, dtype=images.dtype)
    if on_grid:
        # Patches on one grid (the Kaggle case): view the canvas as blocks and paste all at once.
        blocks = canvas[oy:, ox:].reshape(rows.max() + 1, s, cols.max() + 1, s, -1)
        blocks[rows, :, cols, :] = images
    else:  # off-grid coordinates: paste one by one (later patches win where they overlap)
        for img, x, y in zip(images, xs, ys):
            canvas[y:y + s, x:x + s] = img
    return canvas


def _stitch_downsampled(tiles: np.ndarray, xs, ys, scale: float, fill) -> np.ndarray:
    """The canvas scaled by `scale` < 1: each tile sampled (nearest pixel) to ceil(s * scale) px, so that
    neighbours touch or overlap by one pixel (no gaps), and pasted at its scaled position."""
    s = tiles.shape[1]
    c = max(1, int(np.ceil(s * scale)))
    idx = np.minimum((np.arange(c) * s / c).astype(np.int64), s - 1)
    small = tiles[:, idx][:, :, idx]
    px, py = (xs * scale).astype(np.int64), (ys * scale).astype(np.int64)
    canvas = np.full((py.max() + c, px.max() + c, tiles.shape[3]), fill, dtype=tiles.dtype)
    for img, x, y in zip(small, px, py):
        canvas[y:y + c, x:x + c] = img
    return canvas


def original_tiles(sub, images, root=None, size: int = 50) -> list:
    """One uint8 tile per row of `sub` (patches.csv rows; `images` = their packed-cache rows): patches of
    the standard size from the cache, edge patches at their original size read from `root` (the cache
    holds them stretched to size x size, as the transforms see them), shrunk back when the file is gone."""
    tiles = list(np.asarray(images))
    w = sub["width"].to_numpy() if "width" in sub else np.full(len(sub), size)
    h = sub["height"].to_numpy() if "height" in sub else np.full(len(sub), size)
    for i in np.flatnonzero((w != size) | (h != size)):
        path = None if root is None else Path(root) / sub["image_id"].iloc[i]
        if path is not None and path.exists():
            tiles[i] = np.asarray(load_rgb(path))
        else:
            tiles[i] = np.asarray(Image.fromarray(tiles[i]).resize((int(w[i]), int(h[i])), Image.BILINEAR))
    return tiles


def grid_values(values, xs, ys, patch: int = 50) -> np.ndarray:
    """float [rows, cols] with one value per patch on the slide grid (NaN where there is no patch)."""
    xs = np.asarray(xs, dtype=np.int64)
    ys = np.asarray(ys, dtype=np.int64)
    cols, rows = xs // patch, ys // patch
    grid = np.full((rows.max() + 1, cols.max() + 1), np.nan)
    grid[rows, cols] = np.asarray(values, dtype=float)
    return grid


def tint(canvas: np.ndarray, mask: np.ndarray, color=(255, 0, 0), alpha: float = 0.45) -> np.ndarray:
    """Blend `color` into the canvas where `mask` [H, W] is true."""
    out = canvas.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, dtype=np.float32)
    return out.round().clip(0, 255).astype(np.uint8)


def stitch_labels(labels, xs, ys, widths=None, heights=None, patch: int = PATCH,
                  max_side: int = MAX_CANVAS_SIDE) -> np.ndarray:
    """bool [H, W]: True under the patches whose label is true (same canvas as stitch_patches)."""
    return stitch_values(np.asarray(labels, dtype=np.uint8), xs, ys, widths, heights, 0, patch, max_side).astype(bool)


def stitch_values(values, xs, ys, widths=None, heights=None, fill=np.nan, patch: int = PATCH,
                  max_side: int = MAX_CANVAS_SIDE) -> np.ndarray:
    """[H, W]: each patch's value over its pixels (same canvas as stitch_patches), `fill` elsewhere."""
    values = np.asarray(values)
    tiles = np.broadcast_to(values[:, None, None, None], (len(values), patch, patch, 1))
    return stitch_patches(tiles, xs, ys, widths, heights, fill=fill, patch=patch, max_side=max_side)[..., 0]


def tissue_and_idc(sub, tiles, patch: int = PATCH):
    """(stitched tissue, the same with IDC-positive patches tinted red) for one patient's rows `sub`
    (x, y, target, optional width/height) and their `tiles` (see `original_tiles`)."""
    xy = (sub["x"].to_numpy(), sub["y"].to_numpy())
    sizes = {"widths": sub["width"].to_numpy(), "heights": sub["height"].to_numpy()} if "width" in sub else {}
    canvas = stitch_patches(tiles, *xy, patch=patch)
    return canvas, tint(canvas, stitch_labels(sub["target"].to_numpy(), *xy, **sizes, patch=patch))

