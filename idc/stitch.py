"""Stitch patches back into the tissue slide by their (x, y) top-left coordinates, vectorized.

Kept apart from the landscape stage so that prepare_data (EDA figures), landscape and the synthetic
generator's checks share one implementation without importing a stage.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def canvas_shape(xs, ys, widths, heights) -> tuple[int, int]:
    xs, ys = np.asarray(xs), np.asarray(ys)
    return int((ys + np.asarray(heights)).max()), int((xs + np.asarray(widths)).max())


def stitch_patches(images, xs, ys, widths=None, heights=None, fill: int = 255) -> np.ndarray:
    """uint8 [H, W, 3] canvas with every patch pasted at (x, y); `fill` where there is no patch.

    `images` is either an array [n, s, s, C], where `widths`/`heights` (edge patches smaller than s x s)
    paste only the top-left w x h pixels of a patch, or a list of arrays [h_i, w_i, C] of their own
    sizes (see `original_tiles`: edge patches as read from disk, the others from the packed cache).
    """
    if not isinstance(images, np.ndarray):
        images, widths, heights = _pad_tiles(list(images), fill)
    images = np.asarray(images)
    n, s = images.shape[0], images.shape[1]
    xs = np.asarray(xs, dtype=np.int64)
    ys = np.asarray(ys, dtype=np.int64)
    w = np.full(n, s) if widths is None else np.asarray(widths, dtype=np.int64)
    h = np.full(n, s) if heights is None else np.asarray(heights, dtype=np.int64)
    if widths is not None or heights is not None:  # blank the part of a resized edge patch that is not tissue
        rr = np.arange(s)
        keep = (rr[None, :, None] < h[:, None, None]) & (rr[None, None, :] < w[:, None, None])
        images = np.where(keep[..., None], images, np.asarray(fill, dtype=images.dtype))
    oy, ox = int(ys.min() % s), int(xs.min() % s)
    rows, cols = (ys - oy) // s, (xs - ox) // s
    on_grid = np.all((ys - oy) % s == 0) and np.all((xs - ox) % s == 0)
    H, W = (oy + (rows.max() + 1) * s, ox + (cols.max() + 1) * s) if on_grid else (ys.max() + s, xs.max() + s)
    canvas = np.full((H, W, images.shape[3]), fill, dtype=images.dtype)
    if on_grid:
        # Patches on one grid (the Kaggle case): view the canvas as blocks and paste all at once.
        blocks = canvas[oy:, ox:].reshape(rows.max() + 1, s, cols.max() + 1, s, -1)
        blocks[rows, :, cols, :] = images
    else:  # off-grid coordinates: paste one by one (later patches win where they overlap)
        for img, x, y in zip(images, xs, ys):
            canvas[y:y + s, x:x + s] = img
    return canvas


def _pad_tiles(tiles: list, fill) -> tuple:
    """A list of [h, w, C] tiles as one [n, s, s, C] array (s = the largest side) plus their sizes."""
    heights = np.array([t.shape[0] for t in tiles])
    widths = np.array([t.shape[1] for t in tiles])
    s = int(max(heights.max(), widths.max()))
    out = np.full((len(tiles), s, s, tiles[0].shape[2]), fill, dtype=tiles[0].dtype)
    full = (heights == s) & (widths == s)
    if full.any():
        out[full] = np.stack([t for t, f in zip(tiles, full) if f])
    for i in np.flatnonzero(~full):
        out[i, :heights[i], :widths[i]] = tiles[i]
    return out, widths, heights


def original_tiles(sub, images, root=None, size: int = 50) -> list:
    """One uint8 tile per row of `sub` (patches.csv rows; `images` = their packed-cache rows): patches of
    the standard size from the cache, edge patches at their original size read from `root` (the cache
    holds them stretched to size x size, as the transforms see them), shrunk back when the file is gone."""
    from PIL import Image

    from idc.data.dataset import load_rgb

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


def stitch_labels(labels, xs, ys, widths=None, heights=None, patch: int = 50) -> np.ndarray:
    """bool [H, W]: True under the patches whose label is true (same canvas as stitch_patches)."""
    labels = np.asarray(labels, dtype=np.uint8)
    tiles = np.broadcast_to(labels[:, None, None, None], (len(labels), patch, patch, 1))
    return stitch_patches(tiles, xs, ys, widths, heights, fill=0)[..., 0].astype(bool)


def tissue_and_idc(sub, tiles):
    """(stitched tissue, the same with IDC-positive patches tinted red) for one patient's rows `sub`
    (x, y, target, optional width/height) and their `tiles` (see `original_tiles`)."""
    xy = (sub["x"].to_numpy(), sub["y"].to_numpy())
    sizes = {"widths": sub["width"].to_numpy(), "heights": sub["height"].to_numpy()} if "width" in sub else {}
    canvas = stitch_patches(tiles, *xy)
    return canvas, tint(canvas, stitch_labels(sub["target"].to_numpy(), *xy, **sizes))

