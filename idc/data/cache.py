"""Packed patch cache: every patch decoded once into a memory-mapped uint8 array [N, 50, 50, 3].

Rows follow the patches table. Pixels are produced by the same PIL Resize as the book's transforms,
and `idc.data.dataset.normalize_batch` does the same float arithmetic as ToTensor + Normalize(0.5, 0.5),
so a batch from the cache is bit-identical to the PatchDataset tensors (tests/test_dataset_cache.py).
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np
import pandas as pd
import torch

from idc.data.augment import draw_batch, flip_normalize
from idc.data.dataset import load_rgb, normalize_batch, normalize_inplace, resize_transform
from idc.data.index import threaded_map
from idc.errors import DataError, IntegrityError
from idc.integrity import open_npy
from idc.utils import atomic_path, vouch_output

log = logging.getLogger("idc")
CACHE_VERSION = 1


def cache_key(df: pd.DataFrame, images_dir, size: int, stain: str = "") -> str:
    """Hash of the index, the image folder, the patch size, the stain normalizer's key (method and fitted
    reference: another `data.stain_normalize` or reference is another cache file) and, for a generated set,
    its `manifest.json` beside the folder: a set regenerated with other parameters has the same file names
    and sizes but other pixels, and must not be read from the old cache."""
    extra = f"{stain}|" if stain else ""  # the un-normalized cache keeps its file name
    manifest = Path(images_dir).parent / "manifest.json"
    if manifest.is_file():
        extra += hashlib.sha256(manifest.read_bytes()).hexdigest() + "|"
    h = hashlib.sha256(f"v{CACHE_VERSION}|{Path(images_dir).resolve()}|{size}|{extra}".encode())
    cols = [c for c in ("image_id", "width", "height") if c in df.columns]
    h.update(pd.util.hash_pandas_object(df[cols], index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def decode_patch(path, size: int = 50) -> np.ndarray:
    """uint8 [size, size, 3]: RGB conversion and the book's Resize((size, size)) on the PIL image."""
    return np.asarray(resize_transform(size)(load_rgb(path)), dtype=np.uint8)


def _try_decode(path, size: int, stain=None):
    """(uint8 patch or None when it cannot be decoded, stain status or None)."""
    try:
        img = decode_patch(path, size)
    except Exception:  # PIL raises OSError, SyntaxError, ValueError ... for broken files
        return None, None
    return (img, None) if stain is None else stain.normalize(img)


def load_or_build_cache(df: pd.DataFrame, images_dir, cache_dir, size: int = 50, workers: int = 8,
                        producer: bool = False, stain=None) -> np.ndarray:
    """Memory-mapped uint8 array aligned with `df`, built (atomically) on first use.

    `stain`: an idc.data.stain.StainNormalizer applied to every patch as it is packed (its key is part of
    the file name; its `counts` get how many patches it normalized or left as they are), or None.
    A damaged cache file (cut, foreign) is one line naming it; `producer=True` (make data, which owns the
    cache) rebuilds it instead, vouches for it in the stage record and deletes the caches of older indexes.
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / f"patches-{cache_key(df, images_dir, size, stain.key() if stain else '')}.npy"
    shape = (len(df), size, size, 3)
    if path.exists():
        try:
            arr = open_npy(path, shape, fix="delete it (the next stage rebuilds it) or run `make data` (same overrides)")
        except IntegrityError as err:
            if not producer:
                raise
            log.warning("%s: rebuilding it", str(err).split(";")[0])
        else:
            log.info("read packed cache %s (%d patches)", path, len(df))
            return _vouched(arr, path, producer)
    images_dir = Path(images_dir)
    with atomic_path(path, suffix=".tmp.npy", size_hint=int(np.prod(shape)) + 128) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        reserve(tmp)  # a full disk fails here, with one line, not with a SIGBUS while the pages are filled
        paths = [images_dir / i for i in df["image_id"]]
        failed = []
        if stain is not None:
            stain.counts.clear()  # this build's counts
        desc = "pack patches" if stain is None else f"pack patches ({stain.method})"
        for i, (img, status) in enumerate(threaded_map(lambda p: _try_decode(p, size, stain), paths, workers, desc, 256)):
            if img is None:
                failed.append(str(paths[i]))
            else:
                arr[i] = img
                if stain is not None:
                    stain.counts[status] += 1
        arr.flush()
        del arr
        if failed:  # the header check of the index let them through: corrupt pixel data inside the file
            raise DataError(
                f"{len(failed)} patch(es) have an intact header but cannot be decoded, e.g. {failed[:5]}; "
                "delete or replace them and re-run `make data`"
            )
    if producer:  # one cache per run dir: drop those of older indexes (a reader never deletes one)
        for stale in cache_dir.glob("patches-*.npy"):
            if stale != path:
                stale.unlink()
    log.info("wrote packed cache %s (%d patches, %.1f MB)", path, len(df), path.stat().st_size / 1e6)
    if stain is not None:
        stain.log_counts(str(path))
    return _vouched(np.load(path, mmap_mode="r"), path, producer)


def _vouched(arr: np.ndarray, path: Path, producer: bool) -> np.ndarray:
    if producer:
        vouch_output(path)  # make data's record keeps its digest: a cut cache makes `make data` rebuild it
    return arr


def reserve(path: Path) -> None:
    """Allocate a sparse file's blocks now (posix_fallocate): ENOSPC here, not a SIGBUS from a memory map."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            # file systems without fallocate (EOPNOTSUPP, EINVAL): the pages are allocated as they are written


def identical_patches(images: np.ndarray, image_ids, examples: int = 5) -> dict:
    """Patches whose pixels (as the model sees them: the packed cache) equal another patch's: counted for
    summary.json, kept. {'files': patches with a twin, 'groups': sets of identical patches, 'examples'}."""
    groups: dict = {}
    for start in range(0, len(images), 4096):  # the cache is memory-mapped: read it in slices
        block = np.ascontiguousarray(images[start:start + 4096])
        for i, row in enumerate(block.reshape(len(block), -1)):
            groups.setdefault(hashlib.blake2b(row.tobytes(), digest_size=16).digest(), []).append(start + i)
    twins = [g for g in groups.values() if len(g) > 1]
    ids = np.asarray(image_ids)
    return {"files": sum(len(g) for g in twins), "groups": len(twins),
            "examples": [[str(ids[i]) for i in g[:3]] for g in twins[:examples]]}


def _flip_(batch: np.ndarray, hflip: np.ndarray, vflip: np.ndarray) -> np.ndarray:
    """Flip the chosen images of a uint8 NHWC batch in place (W is axis 2, H is axis 1)."""
    batch[hflip] = batch[hflip, :, ::-1]
    batch[vflip] = batch[vflip, ::-1]
    return batch


def _flipped_nchw(batch: np.ndarray, hflip: np.ndarray, vflip: np.ndarray) -> np.ndarray:
    """float32 NCHW copy of a uint8 NHWC batch with per-image flips: one strided copy per image does
    the flip, the channel move and the cast in a single pass."""
    n, h, w, c = batch.shape
    out = np.empty((n, c, h, w), dtype=np.float32)
    for i in range(n):
        out[i] = batch[i, ::-1 if vflip[i] else 1, ::-1 if hflip[i] else 1].transpose(2, 0, 1)
    return out


class PackedLoader:
    """Batches of (normalized images, targets) from the packed cache.

    The order (shuffle or weighted sampling with replacement), the per-image flips and the HED jitter
    (`hed=(scale, shift)`, idc.data.augment; off at (0, 0)) are drawn from a generator seeded by
    (seed, epoch), so a run is reproducible and a resumed epoch repeats exactly.
    With `world_size > 1` each rank gets a disjoint, equal-length share (padded like DistributedSampler).
    """

    def __init__(self, images: np.ndarray, targets, indices, batch_size: int, shuffle: bool = False,
                 flip: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = False,
                 device=None, sample_weights=None, hed: Tuple[float, float] = (0.0, 0.0)):
        self.images = images
        self.targets = np.asarray(targets, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.shuffle, self.flip, self.seed = shuffle, flip, int(seed)
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.sample_weights = None if sample_weights is None else np.asarray(sample_weights, dtype=np.float64)
        self.hed_scale, self.hed_shift = (float(v) for v in hed)
        if self.hed_scale < 0 or self.hed_shift < 0 or self.hed_scale >= 1:
            raise ValueError(f"HED jitter (scale, shift) = {tuple(hed)}: need 0 <= scale < 1 and shift >= 0")
        self.epoch = 0

    def draw(self, rng: np.random.Generator, n: int):
        """This batch's (flips, hed) draws (idc.data.augment.draw_batch), the same in every loader."""
        return draw_batch(rng, n, self.flip, self.hed_scale, self.hed_shift)

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
        accelerated = self.device.type != "cpu"
        pin = self.device.type == "cuda"
        for start in range(0, len(order), self.batch_size):
            sel = order[start:start + self.batch_size]
            if self.drop_last and len(sel) < self.batch_size:
                break
            rows = self.indices[sel]
            batch = self.images[rows]  # fancy indexing copies: flips below never touch the cache
            y = torch.from_numpy(self.targets[rows])
            flips, hed = self.draw(rng, len(rows))
            if flips is None and hed is None:
                yield normalize_batch(batch, device=self.device), y.to(self.device, non_blocking=True)
                continue
            if hed is not None:  # stain jitter: the device loader's tensor ops, on this loader's device
                x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
                as_tensor = (lambda a: None if a is None else torch.from_numpy(a).to(self.device))
                yield flip_normalize(x, as_tensor(flips), hed=as_tensor(hed)), y.to(self.device, non_blocking=True)
                continue
            hflip, vflip = flips[:, 0], flips[:, 1]
            if not accelerated:
                yield torch.from_numpy(normalize_inplace(_flipped_nchw(batch, hflip, vflip))), y
                continue
            x = torch.from_numpy(_flip_(np.asarray(batch), hflip, vflip))
            if pin:
                x, y = x.pin_memory(), y.pin_memory()
            yield normalize_batch(x, device=self.device), y.to(self.device, non_blocking=True)
