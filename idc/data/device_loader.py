"""Device-resident batches: the packed uint8 cache lives on the accelerator; per batch only an index moves.

`DeviceLoader` is a drop-in for `PackedLoader` (same constructor, `set_epoch`, `len`, rank sharding and
weighted sampling): it draws the epoch's order and flips from the same generator, seeded by
(seed, epoch), in the same sequence, so it yields the same batches with the same flips. On CPU the
tensors are bit-identical to PackedLoader's (tests/test_device_loader.py); on a GPU the arithmetic is
the same IEEE float32 ops, so they are too, up to the layout (channels_last when asked).

Where the data go:
- resident: the loader's rows (e.g. the 166k training patches, 1.25 GB as uint8) are gathered once
  from the memory-mapped cache and copied to the device in one go; an epoch then uploads only its
  order and flip masks (a few hundred kB), and each batch is a slice of them plus a device gather.
- streamed, when those rows exceed `memory_budget` bytes: each epoch visits its order in chunks of
  whole batches (`chunk_bytes`); a background thread gathers the next chunk from the memory map into
  pinned memory while the current one is used, and its copy runs on a side CUDA stream.
Flips and normalization are batched tensor ops on the device: torch.where over flipped views (no
host sync), then (x / 255 - 0.5) / 0.5 in float32, as ToTensor + Normalize(0.5, 0.5).
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Optional, Tuple

import numpy as np
import torch

from idc.data.cache import PackedLoader
from idc.errors import ConfigError

log = logging.getLogger("idc")

DEFAULT_CHUNK_BYTES = 256 << 20
CPU_MEMORY_BUDGET = 4 << 30  # on CPU "resident" means a private RAM copy of the rows
CUDA_FREE_SHARE = 0.5  # by default the resident cache may take half of the free GPU memory


def epoch_plan(loader: PackedLoader, rng: np.random.Generator) -> Tuple[np.ndarray, list, Optional[np.ndarray]]:
    """(positions into loader.indices in batch order, batch bounds, flips bool [n, 2] or None).

    The draws follow PackedLoader.__iter__ exactly: the order first, then per batch `rng.random(n)` for
    the horizontal and then the vertical flips; with drop_last a short last batch draws nothing.
    """
    order = loader._order(rng)
    bounds, flips = [], []
    for start in range(0, len(order), loader.batch_size):
        stop = min(start + loader.batch_size, len(order))
        if loader.drop_last and stop - start < loader.batch_size:
            break
        bounds.append((start, stop))
        if loader.flip:
            h = rng.random(stop - start) < 0.5
            v = rng.random(stop - start) < 0.5
            flips.append(np.stack([h, v], axis=1))
    used = bounds[-1][1] if bounds else 0
    if not loader.flip:
        return order[:used], bounds, None
    return order[:used], bounds, np.concatenate(flips) if flips else np.zeros((0, 2), bool)


def flip_normalize(x: torch.Tensor, flips: Optional[torch.Tensor], channels_last: bool = False) -> torch.Tensor:
    """uint8 NHWC batch on its device -> float32 NCHW (x / 255 - 0.5) / 0.5, with per-image flips.

    `flips` is bool [n, 2] (horizontal, vertical). torch.where over flipped views keeps every step a
    batched kernel with no data-dependent shapes (a boolean index would sync with the host).
    """
    if flips is not None:
        x = torch.where(flips[:, 0, None, None, None], x.flip(2), x)
        x = torch.where(flips[:, 1, None, None, None], x.flip(1), x)
    n, h, w, c = x.shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((n, c, h, w), dtype=torch.float32, device=x.device).contiguous(memory_format=fmt)
    out.copy_(x.permute(0, 3, 1, 2))
    return out.div_(255).sub_(0.5).div_(0.5)


def default_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FREE_SHARE)
    return CPU_MEMORY_BUDGET


class DeviceLoader(PackedLoader):
    """PackedLoader's batches, produced on `device` from a device-resident (or streamed) uint8 cache.

    Extra arguments: `memory_budget` (bytes the resident rows may take; None = half the free GPU memory,
    4 GiB on CPU), `chunk_bytes` (streaming chunk), `channels_last` (layout of the yielded batches).
    """

    def __init__(self, images, targets, indices, batch_size: int, *, memory_budget: Optional[int] = None,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, channels_last: bool = False, **kw):
        super().__init__(images, targets, indices, batch_size, **kw)
        self.channels_last = channels_last
        self.row_bytes = int(np.prod(images.shape[1:])) * images.dtype.itemsize
        budget = default_budget(self.device) if memory_budget is None else int(memory_budget)
        need = self.row_bytes * len(self.indices)
        self.resident = need <= budget
        self.chunk_batches = max(1, int(chunk_bytes) // (self.row_bytes * self.batch_size))
        self.targets_dev = torch.from_numpy(self.targets[self.indices]).to(self.device)
        self.data: Optional[torch.Tensor] = None
        if self.resident:
            self.data = self._upload(self.indices)
            log.info("device loader: %d rows (%.2f GB) resident on %s", len(self.indices), need / 1e9, self.device)
        else:
            log.info("device loader: %d rows (%.2f GB) exceed the %.2f GB budget: streaming %d-batch chunks to %s",
                     len(self.indices), need / 1e9, budget / 1e9, self.chunk_batches, self.device)

    def _host_rows(self, rows: np.ndarray) -> torch.Tensor:
        """uint8 rows of the cache in host memory (pinned when they go to a GPU)."""
        t = torch.from_numpy(np.ascontiguousarray(self.images[rows]))
        return t.pin_memory() if self.device.type == "cuda" else t

    def _upload(self, rows: np.ndarray) -> torch.Tensor:
        # one synchronous copy: pinning first would cost a second host copy of the whole set
        return torch.from_numpy(np.ascontiguousarray(self.images[rows])).to(self.device)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order, bounds, flips = epoch_plan(self, rng)
        # the only host -> device traffic of an epoch in resident mode: its order and flips
        order_dev = torch.from_numpy(order).to(self.device, non_blocking=True)
        flips_dev = torch.from_numpy(flips).to(self.device, non_blocking=True) if flips is not None else None
        if self.resident:  # a device gather of the batch's rows
            yield from self._batches(lambda a, b: self.data[order_dev[a:b]], order_dev, flips_dev, bounds)
        else:
            yield from self._streamed(order, order_dev, flips_dev, bounds)

    def _batches(self, rows_of, order_dev, flips_dev, bounds):
        for start, stop in bounds:
            flips = None if flips_dev is None else flips_dev[start:stop]
            yield flip_normalize(rows_of(start, stop), flips, self.channels_last), self.targets_dev[order_dev[start:stop]]

    def _streamed(self, order, order_dev, flips_dev, bounds):
        """Chunks of whole batches: chunk k+1 is gathered (thread) and copied (side stream) while k is used."""
        groups = [bounds[i:i + self.chunk_batches] for i in range(0, len(bounds), self.chunk_batches)]
        cuda = self.device.type == "cuda"
        copy_stream = torch.cuda.Stream(self.device) if cuda else None

        def fetch(group):
            host = self._host_rows(self.indices[order[group[0][0]:group[-1][1]]])
            if not cuda:
                return host
            with torch.cuda.stream(copy_stream):
                return host.to(self.device, non_blocking=True)

        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(fetch, groups[0]) if groups else None
            for k, group in enumerate(groups):
                chunk = pending.result()
                pending = pool.submit(fetch, groups[k + 1]) if k + 1 < len(groups) else None
                if cuda:
                    torch.cuda.current_stream(self.device).wait_stream(copy_stream)
                    chunk.record_stream(torch.cuda.current_stream(self.device))
                first = group[0][0]  # the chunk holds the group's rows in batch order: batches are slices
                yield from self._batches(lambda a, b, c=chunk, f=first: c[a - f:b - f], order_dev, flips_dev, group)


LOADERS = ("auto", "device", "packed")


def resolve_loader(kind: str, device: torch.device) -> str:
    """`train.loader`: auto = device-resident on CUDA, packed (host gather per batch) elsewhere."""
    if kind not in LOADERS:
        raise ConfigError(f"train.loader={kind!r} is not known; use one of {', '.join(LOADERS)}")
    if kind == "auto":
        return "device" if torch.device(device).type == "cuda" else "packed"
    return kind


def make_loader(kind: str, images, targets, indices, batch_size: int, *, device, memory_budget_gb=None,
                channels_last: bool = False, **kw) -> PackedLoader:
    """The training loader `kind` (see resolve_loader) with PackedLoader's arguments; both yield the same batches."""
    device = torch.device(device)
    if resolve_loader(kind, device) == "packed":
        return PackedLoader(images, targets, indices, batch_size, device=device, **kw)
    budget = None if memory_budget_gb is None else int(float(memory_budget_gb) * 1e9)
    return DeviceLoader(images, targets, indices, batch_size, device=device, memory_budget=budget,
                        channels_last=channels_last, **kw)


def resident_rows(images, rows: np.ndarray, device, memory_budget_gb=None) -> Optional[torch.Tensor]:
    """uint8 [len(rows), ...] copy of the cache rows on an accelerator (for evaluation in large batches),
    or None on CPU or when it would exceed the budget (the caller then reads the memory map per batch)."""
    device = torch.device(device)
    if device.type == "cpu":
        return None
    budget = default_budget(device) if memory_budget_gb is None else int(float(memory_budget_gb) * 1e9)
    need = int(np.prod(images.shape[1:])) * images.dtype.itemsize * len(rows)
    if need > budget:
        log.info("evaluation rows (%.2f GB) exceed the device budget (%.2f GB): read per batch", need / 1e9, budget / 1e9)
        return None
    return torch.from_numpy(np.ascontiguousarray(images[rows])).to(device)


def eval_inputs(kind: str, images, rows: dict, targets: np.ndarray, device, memory_budget_gb=None):
    """(images, rows per split, targets) for evaluating val and test during training.

    With the device loader on an accelerator the val and test rows go to the device once (within the
    budget), renumbered 0..n-1 (val first); otherwise the memory-mapped cache and its rows are returned
    unchanged and read batch by batch.
    """
    if resolve_loader(kind, device) != "device":
        return images, rows, targets
    both = np.concatenate([rows["val"], rows["test"]])
    resident = resident_rows(images, both, device, memory_budget_gb)
    if resident is None:
        return images, rows, targets
    n_val = len(rows["val"])
    return resident, {"val": np.arange(n_val), "test": n_val + np.arange(len(rows["test"]))}, targets[both]
