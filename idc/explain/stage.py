"""Stage `make explain`: attribution maps of every method for the selected test patches.

Reads model/best.pt, eval/predictions.csv, data/patches.csv and the packed cache. Writes
explain/maps.npz (`<method>/raw`, `<method>/gray`), explain/index.csv, explain/<method>/*.png,
figures/chapter_05_<method>.png (the book's 2x2 layout) and figures/explain_overview.png.
With explain.num_shards > 1 each shard writes explain/shards/<i>-of-<n>/ with its provenance
(`idc.explain.shards`); when all shards are there (or with explain.merge=true) they are joined, if made
from the same inputs, and the figures drawn. NaN or infinite maps are refused before anything is written.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from idc.data import cache_rows
from idc.errors import ConfigError
from idc.explain import chapter10
from idc.explain.driver import compute_maps, dataset_reference, resolve_targets, to_grayscale
from idc.explain.figures import book_figure, overview_grid, patch_png
from idc.explain.methods import METHODS
from idc.explain.select import book_pair, select_patches
from idc.explain.shards import empty_maps, finish_shard, is_done, merge_shards, provenance, shard_dir
from idc.inputs import load_run
from idc.integrity import check_finite, read_csv, read_npz
from idc.paths import RunPaths
from idc.utils import write_csv_atomic, write_npz_atomic, wrote

log = logging.getLogger("idc")
INDEX_COLUMNS = ["image_id", "patient_id", "target", "pred", "proba", "outcome", "explained_class"]


def save_maps(path: Path, index: pd.DataFrame, raws: dict, extras: dict) -> None:
    arrays = {}
    for m, raw in raws.items():
        check_finite(raw, f"explain: the {m} maps", "Check the model (make evaluate) or leave the method out.")
        arrays[f"{m}/raw"] = raw.astype(np.float32)
        arrays[f"{m}/gray"] = to_grayscale(raw) if len(raw) else np.zeros((0, *raw.shape[-2:]), np.float32)
    if extras.get("lime_vis"):
        arrays["lime/vis"] = np.stack(extras["lime_vis"]).astype(np.float32)
    write_npz_atomic(path, arrays)  # byte-identical for identical maps
    write_csv_atomic(index[INDEX_COLUMNS], path.with_name("index.csv"))


def draw(paths: RunPaths, patches: pd.DataFrame, images_all) -> list:
    """Figures from explain/maps.npz + index.csv (so merged shards draw exactly like one run)."""
    maps = read_npz(paths.maps_npz)
    index = read_csv(paths.explain_index_csv, ["image_id", "patient_id", "target", "outcome"])
    rows = cache_rows(patches, index["image_id"], str(paths.explain_index_csv))
    images = np.asarray(images_all[rows])
    methods = [m for m in METHODS if f"{m}/gray" in maps]
    lime_vis = maps.get("lime/vis")
    pair = book_pair(index)
    written = []
    for m in methods:
        gray = maps[f"{m}/gray"]
        if len(pair) == 2:
            fig_path = paths.figure(METHODS[m].figure)
            written.append(wrote(book_figure(m, index, images, gray, pair, fig_path,
                                             lime_vis if m == "lime" else None), METHODS[m].title))
        for i, rec in index.iterrows():
            name = f"{i:03d}_{rec['patient_id']}_{rec['outcome']}"
            patch_png(gray[i], paths.path("method_patch_png", method=m, name=name))
    if len(pair) < 2:
        log.warning("explain: the selection lacks an IDC-negative or an IDC-positive patch: no 2x2 book figures")
    written.append(wrote(overview_grid(methods, index, images, {m: maps[f"{m}/gray"] for m in methods},
                                       paths.figure("explain_overview"), lime_vis), "patches x methods"))
    log.info("explain: per-patch maps under %s/<method>/", paths.explain_dir)
    return written


def run(cfg) -> list:
    e = cfg.explain
    if e.num_shards < 1 or not 0 <= e.shard_index < e.num_shards:
        raise ConfigError(f"explain.shard_index={e.shard_index} must be in 0..explain.num_shards-1 ({e.num_shards})")
    paths, sharded = RunPaths.from_cfg(cfg), e.num_shards > 1
    prov = provenance(cfg, paths) if sharded or e.merge else None
    if e.merge or (sharded and is_done(paths, e.shard_index, e.num_shards, prov)):
        if not e.merge:
            log.info("explain: shard %d-of-%d is already done from the same inputs", e.shard_index, e.num_shards)
        run = load_run(cfg, needs=("patches", "images"))
        if merge_shards(paths, e.num_shards, prov):
            return draw(paths, run.patches, run.images)
        if e.merge:
            raise ConfigError("explain.merge=true but some shards are missing (see the log); run them first")
        return []
    run = load_run(cfg, needs=("patches", "images", "model", "predictions"))
    patches, images_all, model, device = run.patches, run.images, run.model, run.device
    chosen = select_patches(run.predictions, list(e.patches), list(e.image_ids), dict(e.select))
    chosen = chosen.iloc[e.shard_index::e.num_shards]
    targets = resolve_targets(e.target, chosen["target"], chosen["pred"])
    chosen = chosen.assign(explained_class=targets)
    log.info("explaining %d patches with %s (target=%s)", len(chosen), list(e.methods), e.target)
    rows = cache_rows(patches, chosen["image_id"], str(paths.predictions_csv))
    if len(chosen):
        reference = dataset_reference(images_all, patches, int(e.ig_expected_k), int(e.seed))
        raws, extras = compute_maps(model, np.asarray(images_all[rows]), targets, e.methods, e, device, reference=reference)
    else:  # more shards than patches: this one writes an empty, valid shard
        raws, extras = empty_maps(e.methods), {}
    if sharded:
        folder = shard_dir(paths, e.shard_index, e.num_shards)
        save_maps(folder / "maps.npz", chosen, raws, extras)
        wrote(finish_shard(folder, [e.shard_index, e.num_shards], prov, chosen["image_id"]),
              f"shard {e.shard_index} of {e.num_shards}, {len(chosen)} patches")
        if not merge_shards(paths, e.num_shards, prov):
            return [folder / "maps.npz"]
    else:
        save_maps(paths.maps_npz, chosen, raws, extras)
        wrote(paths.maps_npz, "raw and grey maps")
        wrote(paths.explain_index_csv)
    written = draw(paths, patches, images_all)
    if e.visualize and len(chosen):
        written += chapter10.draw(cfg, paths, model, np.asarray(images_all[rows]), chosen, device)
    return written
