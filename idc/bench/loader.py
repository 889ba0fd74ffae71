"""Bench section `loader`: the book's per-item PIL DataLoader vs. our packed uint8 cache, and stitching.

`prepared(quick)` (shared with the `train` section) composes the Hydra config and runs the data stage:
quick = `data=tiny` in a temporary run dir (removed at exit); full = the default synthetic set in
outputs/synthetic (kept: it is the run dir of `make data`).
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from torch.utils.data import DataLoader
from tqdm import tqdm

from idc import prepare_data
from idc.cli import CONFIG_DIR  # also registers the structured config schema
from idc.data.cache import PackedLoader, load_or_build_cache
from idc.data.dataset import PatchDataset, train_transform
from idc.markdown import markdown_table
from idc.paths import RunPaths
from idc.stitch import stitch_patches

log = logging.getLogger("idc")

BATCH = 64
TARGET_RATIO = 20.0
_PREPARED: dict = {}


@dataclass
class Prepared:
    cfg: object
    df: pd.DataFrame
    root: Path
    images: np.ndarray  # memory-mapped uint8 [N, 50, 50, 3], rows aligned with df
    targets: np.ndarray
    train_rows: np.ndarray
    label: str  # what data set this is, for the markdown


def command(section: str, quick: bool) -> str:
    return f"python -m idc.bench sections={section}" + (" quick=1" if quick else "")


def compose(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def prepared(quick: bool, overrides: tuple = ()) -> Prepared:
    """Prepare (or reuse) a bench data set once per process: the tiny or default set, or `overrides`'s."""
    key = (quick, tuple(overrides))
    if key in _PREPARED:
        return _PREPARED[key]
    if overrides:
        cfg = compose(["data.eda_figures=false", *overrides])
    elif quick:
        tmp = Path(tempfile.mkdtemp(prefix="idc-bench-"))
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        cfg = compose(["data=tiny", f"run.dir={tmp}/run", f"data.root={tmp}/data/IDC_regular_ps50_idx5",
                       f"data.masks_dir={tmp}/data/masks", "data.eda_figures=false"])
    else:
        cfg = compose(["run.dir=outputs/synthetic", "data.eda_figures=false"])
    _PREPARED[key] = p = prepare(cfg)
    return p


def prepare(cfg) -> Prepared:
    """Run the data stage for `cfg` (idempotent: reuses the generated set, the index and the packed cache)."""
    log.info("bench data: preparing %s in %s", cfg.data.name, cfg.run.dir)
    df = prepare_data.run(cfg)
    images = load_or_build_cache(df, cfg.data.root, RunPaths.from_cfg(cfg).cache_dir, size=cfg.data.patch_size)
    train_rows = np.flatnonzero(df["split"].to_numpy() == "train")
    label = (f"`data={cfg.data.name}` ({df['patient_id'].nunique()} patients, {len(df)} patches, "
             f"{len(train_rows)} train)")
    return Prepared(cfg, df, Path(str(cfg.data.root)), images, df["target"].to_numpy(dtype=np.int64), train_rows, label)


def load_note() -> str:
    """One sentence on the 1-minute load average vs. cores: numbers taken on an oversubscribed CPU say so."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    text = f"1-minute load average {load:.1f} on {cores} cores at the end of this section"
    if load > cores:
        text += (" (oversubscribed: other processes shared the CPU, and torch's multi-threaded kernels wait on "
                 "each other's threads, so the torch-side numbers are pessimistic)")
    return text + "."


def book_loader(p: Prepared):
    """The book's loader, verbatim: PatchDataset + train_transform, batch 64, shuffled, no workers."""
    train_df = p.df.iloc[p.train_rows].reset_index(drop=True)
    return DataLoader(PatchDataset(train_df, p.root, train_transform()), batch_size=BATCH, shuffle=True, num_workers=0)


def packed_loader(p: Prepared, **kw):
    return PackedLoader(p.images, p.targets, p.train_rows, BATCH, shuffle=True, flip=True, seed=int(p.cfg.seed), **kw)


def cycle(loader):
    """Endless batches, re-shuffling per epoch (set_epoch where the loader has it)."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def time_loader(loader, n_images: int, desc: str, min_seconds: float = 0.0) -> tuple[int, float]:
    """(images, seconds) over >= n_images (and >= min_seconds), the first batch (warm-up) excluded."""
    it = cycle(loader)
    next(it)  # warm-up
    seen, tic = 0, time.perf_counter()
    with tqdm(total=n_images, desc=desc, unit="img", leave=False) as bar:
        while seen < n_images or time.perf_counter() - tic < min_seconds:
            x, _ = next(it)
            seen += len(x)
            bar.update(len(x))
    return seen, time.perf_counter() - tic


def time_stitch(p: Prepared, reps: int = 5) -> dict:
    pid = int(p.df["patient_id"].value_counts().idxmax())
    sub = p.df[p.df["patient_id"] == pid]
    rows = sub.index.to_numpy()
    args = (sub["x"].to_numpy(), sub["y"].to_numpy())
    sizes = {"widths": sub.get("width"), "heights": sub.get("height")}
    times = []
    for _ in range(reps + 1):  # the first one (page faults of the cache rows) is warm-up
        tic = time.perf_counter()
        canvas = stitch_patches(np.asarray(p.images[rows]), *args, **sizes)
        times.append(time.perf_counter() - tic)
    return {"patient": pid, "patches": len(rows), "shape": canvas.shape[:2], "ms": 1e3 * float(np.median(times[1:]))}


def run(quick: bool) -> str:
    torch.manual_seed(0)
    p = prepared(quick)
    n_book = 1500 if quick else 3000
    log.info("timing the book's DataLoader over %d images", n_book)
    book_n, book_s = time_loader(book_loader(p), n_book, "book loader")
    log.info("timing PackedLoader over all %d train rows (repeated to >= 1 s)", len(p.train_rows))
    packed_n, packed_s = time_loader(packed_loader(p), len(p.train_rows), "packed loader", min_seconds=1.0)
    book_rate, packed_rate = book_n / book_s, packed_n / packed_s
    ratio = packed_rate / book_rate
    st = time_stitch(p)
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    return "\n".join([
        "## Data loading",
        "",
        f"Command: `{command('loader', quick)}`. Data: {p.label}. Batch {BATCH}, shuffled, random h/v flips, "
        "one process (`num_workers=0`), first batch excluded.",
        "",
        markdown_table(["Loader", "Images timed", "Seconds", "Images/s"], [
            ["book: `DataLoader(PatchDataset(..., train_transform()))`", book_n, f"{book_s:.2f}", f"{book_rate:,.0f}"],
            ["ours: `PackedLoader(..., shuffle=True, flip=True)`", packed_n, f"{packed_s:.2f}", f"{packed_rate:,.0f}"],
            ["**ratio ours / book**", "", "", f"**{ratio:.1f}x**"]], align="lrrr"),
        "",
        f"`stitch_patches` on the largest patient ({st['patient']}: {st['patches']} patches, "
        f"{st['shape'][0]}x{st['shape'][1]} px canvas): {st['ms']:.2f} ms (median of 5).",
        "",
        f"Target: the packed loader at least {TARGET_RATIO:.0f}x the book's loader; this run {verdict} it "
        f"({ratio:.1f}x). {load_note()}",
    ])
