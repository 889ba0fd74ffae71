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


def test_tiles_of_their_own_size_keep_their_original_pixels(tmp_path):
    import pandas as pd
    from PIL import Image

    from idc.stitch import original_tiles

    imgs, xs, ys = grid_patches(1, 3)
    edge = imgs[2][:35, :41].copy()  # an edge patch: 41 wide, 35 high on disk
    path = tmp_path / "7" / "0" / "edge.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(edge).save(path)
    stretched = np.asarray(Image.fromarray(edge).resize((50, 50)))  # what the cache holds for it
    sub = pd.DataFrame({"image_id": ["a", "b", "7/0/edge.png"], "width": [50, 50, 41], "height": [50, 50, 35]})
    cache_rows = np.stack([imgs[0], imgs[1], stretched])
    tiles = original_tiles(sub, cache_rows, tmp_path)
    assert np.array_equal(tiles[2], edge) and np.array_equal(tiles[0], imgs[0])
    canvas = stitch_patches(tiles, xs, ys)
    assert np.array_equal(canvas[1:36, 101:142], edge)
    assert (canvas[36:51, 101:151] == 255).all() and (canvas[1:36, 142:151] == 255).all()
    assert np.array_equal(canvas[1:51, 51:101], imgs[1])
    gone = original_tiles(sub, cache_rows, tmp_path / "moved")  # files gone: the cache row, shrunk back
    assert gone[2].shape == (35, 41, 3)


def test_stitching_a_2400_patch_patient_is_vectorized():
    import time

    rng = np.random.default_rng(1)
    cells = rng.choice(60 * 60, 2400, replace=False)
    xs, ys = 1 + 50 * (cells % 60), 1 + 50 * (cells // 60)
    imgs = rng.integers(0, 255, (2400, 50, 50, 3), dtype=np.uint8)
    tic = time.perf_counter()
    canvas = stitch_patches(imgs, xs, ys, max_side=4096)  # full size (the 2048 px default draws it at 2/3)
    elapsed = time.perf_counter() - tic
    k = 1234
    assert np.array_equal(canvas[ys[k]:ys[k] + 50, xs[k]:xs[k] + 50], imgs[k])
    assert (canvas == 255).all(axis=2).sum() >= (3600 - 2400) * 2500  # empty cells stay background
    assert elapsed < 1.0  # generous: the block paste takes tens of ms; a per-pixel loop would take minutes
    small = stitch_patches(imgs, xs, ys)  # the default bound: downsampled, one loop over the patches
    assert max(small.shape[:2]) <= 2048 + 50


def test_a_huge_slide_is_drawn_downsampled_within_bounded_memory():
    """Issue 14.1: x = y = 90000 asked for a 90k x 90k x 3 canvas (24 GB); now at most max_side a side."""
    import tracemalloc

    from idc.stitch import MAX_CANVAS_SIDE

    imgs, xs, ys = grid_patches(2, 2)
    xs, ys = np.append(xs, 90001), np.append(ys, 90001)
    imgs = np.concatenate([imgs, imgs[:1]])
    tracemalloc.start()
    try:
        canvas = stitch_patches(imgs, xs, ys)
        mask = stitch_labels(np.array([1, 0, 0, 0, 1]), xs, ys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert max(canvas.shape[:2]) <= MAX_CANVAS_SIDE + 50 and canvas.shape[:2] == mask.shape
    assert peak < 200e6, peak
    scale = MAX_CANVAS_SIDE / 90051
    c = int(np.ceil(50 * scale))  # each patch drawn c x c at its scaled position
    y, x = int(90001 * scale), int(90001 * scale)
    assert mask[y:y + c, x:x + c].all() and not mask[int(51 * scale) + 1, int(51 * scale) + 1]
    assert (canvas[y:y + c, x:x + c] != 255).any()
    small = stitch_patches(imgs[:4], xs[:4] - 1, ys[:4] - 1, max_side=50)  # a neat case: exactly half size
    assert small.shape == (50, 50, 3) and np.array_equal(small[25:, 25:], imgs[3][::2, ::2])
