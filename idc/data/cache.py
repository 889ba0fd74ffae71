"""Packed patch cache: every patch decoded once into a memory-mapped uint8 array [N, 50, 50, 3].

Rows follow the patches table. Pixels are produced by the same PIL Resize as the book's transforms,
and `normalize_batch` does the same float arithmetic as ToTensor + Normalize(0.5, 0.5), so a batch
from the cache is bit-identical to the PatchDataset tensors (tests/test_dataset_cache.py).
"""
from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from idc.data.dataset import load_rgb, resize_transform
from idc.utils import atomic_path

log = logging.getLogger("idc")
CACHE_VERSION = 1


def cache_key(df: pd.DataFrame, images_dir, size: int) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|{Path(images_dir).resolve()}|{size}|".encode())
    cols = [c for c in ("image_id", "width", "height") if c in df.columns]
    h.update(pd.util.hash_pandas_object(df[cols], index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def decode_patch(path, size: int = 50) -> np.ndarray:
    """uint8 [size, size, 3]: RGB conversion and the book's Resize((size, size)) on the PIL image."""
    return np.asarray(resize_transform(size)(load_rgb(path)), dtype=np.uint8)


def load_or_build_cache(df: pd.DataFrame, images_dir, cache_dir, size: int = 50, workers: int = 8) -> np.ndarray:
    """Memory-mapped uint8 array aligned with `df`, built (atomically) on first use."""
    cache_dir = Path(cache_dir)
    path = cache_dir / f"patches-{cache_key(df, images_dir, size)}.npy"
    if path.exists():
        log.info("read packed cache %s (%d patches)", path, len(df))
        return np.load(path, mmap_mode="r")
    images_dir = Path(images_dir)
    with atomic_path(path, suffix=".tmp.npy") as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(df), size, size, 3))
        paths = [images_dir / i for i in df["image_id"]]
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            decoded = pool.map(lambda p: decode_patch(p, size), paths, chunksize=256)
            for i, img in enumerate(tqdm(decoded, total=len(paths), desc="pack patches", unit="img")):
                arr[i] = img
        arr.flush()
        del arr
    for stale in cache_dir.glob("patches-*.npy"):  # one cache per run dir: drop those of older indexes
        if stale != path:
            stale.unlink()
    log.info("wrote packed cache %s (%d patches, %.1f MB)", path, len(df), path.stat().st_size / 1e6)
    return np.load(path, mmap_mode="r")


def normalize_batch(images, device=None) -> torch.Tensor:
    """uint8 NHWC (numpy or tensor) -> float32 NCHW, as ToTensor + Normalize(0.5, 0.5) per image."""
    t = torch.from_numpy(np.require(images, requirements=["C", "W"])) if isinstance(images, np.ndarray) else images
    if device is not None:
        t = t.to(device, non_blocking=True)
    # contiguous NCHW: a permuted (channels-last strided) batch sends CPU convolutions down a slower path
    return t.permute(0, 3, 1, 2).contiguous().float().div(255).sub(0.5).div(0.5)


class PackedLoader:
    """Batches of (normalized images, targets) from the packed cache.

    The order (shuffle or weighted sampling with replacement) and the per-image flips are drawn from
    a generator seeded by (seed, epoch), so a run is reproducible and a resumed epoch repeats exactly.
    With `world_size > 1` each rank gets a disjoint, equal-length share (padded like DistributedSampler).
    """

    def __init__(self, images: np.ndarray, targets, indices, batch_size: int, shuffle: bool = False,
                 flip: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = False,
                 device=None, sample_weights=None):
        self.images = images
        self.targets = np.asarray(targets, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.shuffle, self.flip, self.seed = shuffle, flip, int(seed)
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.sample_weights = None if sample_weights is None else np.asarray(sample_weights, dtype=np.float64)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _per_rank(self) -> int:
        return -(-len(self.indices) // self.world_size)

    def __len__(self) -> int:
        n = self._per_rank()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self, rng: np.random.Generator) -> np.ndarray:
        n = len(self.indices)
        if self.sample_weights is not None:
            p = self.sample_weights / self.sample_weights.sum()
            order = rng.choice(n, size=n, replace=True, p=p)
        elif self.shuffle:
            order = rng.permutation(n)
        else:
            order = np.arange(n)
        total = self._per_rank() * self.world_size
        if total > n:  # pad by wrapping around so that every rank gets the same number of batches
            order = np.concatenate([order, order[: total - n]])
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = self._order(rng)
        pin = self.device.type == "cuda"
        for start in range(0, len(order), self.batch_size):
            sel = order[start:start + self.batch_size]
            if self.drop_last and len(sel) < self.batch_size:
                break
            rows = self.indices[sel]
            batch = torch.from_numpy(np.ascontiguousarray(self.images[rows]))
            if self.flip:  # flip uint8 NHWC before normalizing: W is dim 2, H is dim 1
                hflip = torch.from_numpy(rng.random(len(rows)) < 0.5)
                vflip = torch.from_numpy(rng.random(len(rows)) < 0.5)
                batch = torch.where(hflip[:, None, None, None], batch.flip(2), batch)
                batch = torch.where(vflip[:, None, None, None], batch.flip(1), batch)
            y = torch.from_numpy(self.targets[rows])
            if pin:
                batch, y = batch.pin_memory(), y.pin_memory()
            yield normalize_batch(batch, device=self.device), y.to(self.device, non_blocking=True)
