"""Stitching patches back into the slide by their (x, y) coordinates."""
from __future__ import annotations

import numpy as np

from idc.stitch import grid_values, stitch_labels, stitch_patches, tint


def grid_patches(rows=3, cols=4, seed=0):
    rng = np.random.default_rng(seed)
    n = rows * cols
    imgs = rng.integers(0, 255, (n, 50, 50, 3), dtype=np.uint8)
    g = np.arange(n)
    return imgs, 1 + 50 * (g % cols), 1 + 50 * (g // cols)


def test_each_patch_lands_at_its_coordinates():
    imgs, xs, ys = grid_patches()
    keep = np.array([0, 3, 5, 11])  # a sparse slide: missing patches stay background
    canvas = stitch_patches(imgs[keep], xs[keep], ys[keep])
    assert canvas.shape == (ys.max() + 50, xs.max() + 50, 3)
    for i in keep:
        assert np.array_equal(canvas[ys[i]:ys[i] + 50, xs[i]:xs[i] + 50], imgs[i])
    assert (canvas[ys[1]:ys[1] + 50, xs[1]:xs[1] + 50] == 255).all()
    assert (canvas[0] == 255).all() and (canvas[:, 0] == 255).all()  # the 1 px origin of the Kaggle grid


def test_edge_patches_paste_only_their_pixels():
    imgs, xs, ys = grid_patches(1, 2)
    canvas = stitch_patches(imgs, xs, ys, widths=[50, 41], heights=[35, 50])
    assert np.array_equal(canvas[1:36, 1:51], imgs[0][:35])
    assert (canvas[36:51, 1:51] == 255).all() and (canvas[1:51, 92:101] == 255).all()


def test_off_grid_coordinates_fall_back_to_pasting():
    imgs, _, _ = grid_patches(1, 2)
    canvas = stitch_patches(imgs, [0, 30], [0, 7])
    assert np.array_equal(canvas[7:57, 30:80], imgs[1])


def test_labels_grid_values_and_tint():
    _, xs, ys = grid_patches()
    labels = np.arange(len(xs)) % 2
    mask = stitch_labels(labels, xs, ys)
    assert mask[ys[1] + 10, xs[1] + 10] and not mask[ys[0] + 10, xs[0] + 10]
    grid = grid_values(np.arange(len(xs)) / 10, xs, ys)
    assert grid.shape == (3, 4) and grid[2, 3] == 1.1
    canvas = np.full((4, 4, 3), 200, np.uint8)
    m = np.zeros((4, 4), bool)
    m[0, 0] = True
    out = tint(canvas, m)
    assert out[0, 0, 0] > 200 and out[0, 0, 1] < 200 and (out[1:, 1:] == 200).all()
