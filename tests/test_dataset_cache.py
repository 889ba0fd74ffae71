"""Packed cache == the book's PatchDataset tensors; the packed loader's order, flips and sharding."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from idc.data.cache import PackedLoader, load_or_build_cache
from idc.data.dataset import normalize_batch
from idc.data.dataset import PatchDataset, eval_transform, train_transform
from idc.data.index import index_patches
from tests.helpers.kaggle import kaggle_tree


def varied_tree(root):
    rng = np.random.default_rng(0)
    kaggle_tree(root, patients=(10, 11), per_class=2)
    for k, (size, mode) in enumerate([((41, 50), "RGB"), ((50, 35), "RGB"), ((50, 50), "L"), ((50, 50), "RGBA")]):
        p = root / "10" / "0" / f"10_idx5_x{1001 + 50 * k}_y1_class0.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image = __import__("PIL.Image", fromlist=["Image"])
        arr = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
        Image.fromarray(arr, "RGBA").convert(mode).save(p)
    return root


def test_cache_is_bit_identical_to_patch_dataset(tmp_path):
    root = varied_tree(tmp_path / "set")
    df = index_patches(root)
    images = load_or_build_cache(df, root, tmp_path / "cache")
    assert images.shape == (len(df), 50, 50, 3) and images.dtype == np.uint8
    ds = PatchDataset(df, root, eval_transform())
    expected = torch.stack([ds[i][0] for i in range(len(ds))])
    got = normalize_batch(np.asarray(images))
    assert got.dtype == torch.float32 and torch.equal(got, expected)


def test_cache_is_reused_and_keyed_by_index(tmp_path):
    root = kaggle_tree(tmp_path / "set")
    df = index_patches(root)
    load_or_build_cache(df, root, tmp_path / "cache")
    first = list((tmp_path / "cache").glob("*.npy"))
    mtime = first[0].stat().st_mtime_ns
    load_or_build_cache(df, root, tmp_path / "cache")
    assert first[0].stat().st_mtime_ns == mtime
    load_or_build_cache(df.iloc[:-1], root, tmp_path / "cache")
    assert list((tmp_path / "cache").glob("*.npy")) != first  # another index, another file
    assert not list((tmp_path / "cache").glob(".*tmp*"))


def make_loader(n=10, **kw):
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 50, 50, 3), np.uint8)
    images[:, 0, 0, :] = 255  # a marker in the top-left corner shows flips
    return PackedLoader(images, np.arange(n) % 2, np.arange(n), batch_size=4, **kw)


def ids_of(x):  # recover image index from the constant pixel value
    return ((x[:, 0, 25, 25] * 0.5 + 0.5) * 255).round().long().tolist()


def test_loader_order_is_seeded_per_epoch():
    a, b = make_loader(shuffle=True, seed=3), make_loader(shuffle=True, seed=3)
    first = [i for x, _ in a for i in ids_of(x)]
    assert first == [i for x, _ in b for i in ids_of(x)] and sorted(first) == list(range(10))
    a.set_epoch(1)
    assert [i for x, _ in a for i in ids_of(x)] != first


def test_loader_flips_move_the_marker_and_match_torch_flip():
    loader = make_loader(flip=True, seed=0)
    corners = []
    for x, _ in loader:
        marked = x[:, 0] > 0.99  # [n, H, W]
        for m in marked:
            r, c = [int(v[0]) for v in torch.nonzero(m, as_tuple=True)]
            assert (r, c) in {(0, 0), (0, 49), (49, 0), (49, 49)}
            corners.append((r, c))
    assert len(set(corners)) > 1


def test_loader_ranks_get_disjoint_equal_shares():
    shares = []
    for rank in range(3):
        loader = make_loader(n=10, shuffle=True, seed=1, rank=rank, world_size=3)
        shares.append([i for x, _ in loader for i in ids_of(x)])
    assert all(len(s) == 4 for s in shares)  # ceil(10 / 3), padded
    assert set(sum(shares, [])) == set(range(10))


def test_weighted_sampling_balances_classes():
    n = 400
    images = np.zeros((n, 50, 50, 3), np.uint8)
    targets = (np.arange(n) < 40).astype(int)  # 10% positives
    w = np.where(targets == 1, 9.0, 1.0)
    loader = PackedLoader(images, targets, np.arange(n), 50, sample_weights=w, seed=0)
    ys = torch.cat([y for _, y in loader]).numpy()
    assert 0.4 < ys.mean() < 0.6


def test_train_transform_flips_only():
    t = train_transform()
    assert any(type(s).__name__ == "RandomHorizontalFlip" for s in t.transforms)
    assert not any("Flip" in type(s).__name__ for s in eval_transform().transforms)


def test_cpu_and_accelerator_flip_paths_agree():
    from idc.data.cache import _flip_, _flipped_nchw
    from idc.data.dataset import normalize_inplace

    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (8, 50, 50, 3), dtype=np.uint8)
    h, v = rng.random(8) < 0.5, rng.random(8) < 0.5
    fused = torch.from_numpy(normalize_inplace(_flipped_nchw(batch, h, v)))  # the CPU path
    flipped = normalize_batch(_flip_(batch.copy(), h, v))  # the uint8 path used before a device copy
    assert torch.equal(fused, flipped)
    expected = normalize_batch(batch)
    expected = torch.where(torch.from_numpy(h)[:, None, None, None], expected.flip(3), expected)
    expected = torch.where(torch.from_numpy(v)[:, None, None, None], expected.flip(2), expected)
    assert torch.equal(fused, expected)


def test_package_exports_the_data_api():
    import idc.data as data
    from idc.data import cache, dataset, index, split

    assert data.PatchDataset is dataset.PatchDataset and data.PackedLoader is cache.PackedLoader
    assert data.index_patches is index.index_patches and data.split_patients is split.split_patients
    with pytest.raises(AttributeError):
        data.no_such_name


def test_16_bit_greyscale_is_scaled_not_clipped_to_white(tmp_path):
    """Issue 14.5: PIL's convert('RGB') clips 16-bit samples at 255, so the cache held an all-white patch."""
    from PIL import Image

    root = kaggle_tree(tmp_path / "set", patients=(10,), per_class=1)
    grey = (np.arange(2500, dtype=np.uint32).reshape(50, 50) * 26).astype(np.uint16)  # 0 .. 64974
    path = root / "10" / "0" / "10_idx5_x501_y1_class0.png"
    Image.fromarray(grey).save(path)
    df = index_patches(root)
    images = load_or_build_cache(df, root, tmp_path / "cache")
    row = int(np.flatnonzero(df["image_id"] == "10/0/10_idx5_x501_y1_class0.png")[0])
    expected = np.round(grey.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert np.array_equal(images[row][..., 0], expected) and np.array_equal(images[row][..., 2], expected)
    assert images[row].min() == 0 and images[row].max() == 253  # a ramp, not a white patch
    ds = PatchDataset(df, root, eval_transform())
    assert torch.equal(normalize_batch(np.asarray(images[row:row + 1]))[0], ds[row][0])
