"""Stage `make atlas`: attribution landscapes. Every patch of the chosen patients (default: every test
patient) is explained with `atlas.methods` (default Grad-CAM and integrated gradients, settings from
explain.*), and each patient's maps are stitched into its tissue at full resolution beside its P(IDC)
landscape, the ground truth outlined.

Reads data/patches.csv, the packed cache and model/best.pt. Writes atlas/patients/<pid>/{maps.npz,
index.csv, shard.json} (one per patient, `idc.atlas.shards`), then, once every patient is done and every
patch is present exactly once: atlas/index.csv, atlas/summary.json (methods, patients, the display scale
of each method), figures/atlas_<pid>.png and atlas/overlays/<pid>_<method>.jpg.

Scale-out (docs/scale-out.md): `atlas.num_shards=n atlas.shard_index=i` computes shard i's patients (a Hydra
multirun over shard_index, any launcher); the run that finds all patients done merges. Under
`torchrun --nproc_per_node=N` the shard is the rank, and rank 0 merges after a barrier (run.dir is rank 0's:
`idc.validate.RunDirCheck`).
"""
from __future__ import annotations

import logging
import time

import numpy as np
from tqdm import tqdm

from idc import distributed as D
from idc.atlas import canvas as C
from idc.atlas import figures as F
from idc.atlas.shards import (INDEX_COLUMNS, Work, assign, choose_patients, explain_patient, merge, patient_dir,
                              patient_maps, provenance)
from idc.errors import ConfigError
from idc.explain.driver import method_kwargs
from idc.explain.methods import METHODS
from idc.explain.shards import folder_done
from idc.inputs import load_run
from idc.paths import RunPaths
from idc.stitch import original_tiles
from idc.utils import write_csv_atomic, write_json_atomic, wrote
from idc.viz.style import save_figure_atomic

log = logging.getLogger("idc")


def shard_of(cfg, info) -> tuple:
    """(shard index, number of shards): the rank under torchrun, else atlas.shard_index / num_shards."""
    a = cfg.atlas
    for m in a.methods:  # an unknown method or setting fails before any work
        method_kwargs(m, cfg.explain)
    if not info.enabled:
        return int(a.shard_index), int(a.num_shards)
    if int(a.num_shards) != 1:
        raise ConfigError(f"atlas.num_shards={a.num_shards} under torchrun: there the shard is the rank; "
                          "leave atlas.num_shards at 1 (or run without torchrun)")
    return info.rank, info.world_size


def compute_shard(cfg, data, pids, prov, i: int, n: int) -> list:
    """Compute the patients of shard i of n that are not done yet; returns their shard.json paths."""
    patches, paths = data.patches, data.paths
    sizes = patches[patches["patient_id"].isin(pids)].groupby("patient_id").size()
    mine = sorted(p for p, s in assign({int(k): int(v) for k, v in sizes.items()}, n).items() if s == i)
    todo = [p for p in mine if not folder_done(patient_dir(paths, p), prov)]
    log.info("atlas: shard %d of %d: %d of %d patients (%d patches); %d already done from the same inputs",
             i, n, len(mine), len(pids), int(sizes[mine].sum()) if mine else 0, len(mine) - len(todo))
    if not todo:
        return []
    model = load_run(cfg, needs=("patches", "model")).model
    work = Work(cfg, paths, patches, data.images, model, data.device, prov)
    written = []
    for pid in tqdm(todo, desc=f"atlas shard {i} of {n}", unit="patient"):
        tic = time.perf_counter()
        written.append(explain_patient(work, pid))
        log.info("atlas: computed patient %d (%d patches, %s) in %.1f s", pid, int(sizes[pid]),
                 "+".join(cfg.atlas.methods), time.perf_counter() - tic)
    return written


def scales(paths: RunPaths, pids, methods, patches: int, sigma: float) -> dict:
    """One display scale per method for the whole atlas (99th percentile of the drawn evidence)."""
    stride = max(1, -(-patches * 2500 // C.SCALE_SAMPLES))
    samples = {m: [] for m in methods}
    for pid in pids:
        maps = patient_maps(paths, pid)
        for m in methods:
            samples[m].append(C.evidence(maps[m], sigma).ravel()[::stride])
    return {m: C.display_scale(v) for m, v in samples.items()}


def draw(cfg, data, index, pids, scale: dict) -> list:
    """figures/atlas_<pid>.png and (atlas.overlays) the full-resolution overlays of every patient."""
    a, paths, patches = cfg.atlas, data.paths, data.patches
    titles = {m: METHODS[m].title for m in a.methods}
    written = []
    for pid in tqdm(pids, desc="atlas: figures", unit="patient"):
        sub = index[index["patient_id"] == pid]
        rows = patches.index[patches["patient_id"] == pid].to_numpy()  # same order (checked by the merge)
        tiles = original_tiles(sub, np.asarray(data.images[rows]), cfg.data.root, cfg.data.patch_size)
        maps = patient_maps(paths, pid)
        shown = {m: C.evidence(maps[m], float(a.display_sigma)) for m in a.methods}
        truth = F.ground_truth(cfg.data.masks_dir, pid, sub)
        fig = F.patient_figure(pid, sub, tiles, shown, scale, titles, truth, str(a.target))
        written.append(save_figure_atomic(fig, paths.path("atlas_png", pid=pid)))
        if a.overlays:
            for m in a.methods:
                rgb = F.overlay_image(sub, tiles, shown[m], scale[m], truth[0])
                written.append(F.save_jpeg(rgb, paths.path("atlas_overlay", pid=pid, method=m)))
    log.info("atlas: wrote figures/atlas_<pid>.png%s for %d patients", " and atlas/overlays/" if a.overlays else "",
             len(pids))
    return written


def run(cfg) -> list:
    a = cfg.atlas
    info = D.init_distributed(cfg.train.dist_backend)
    i, n = shard_of(cfg, info)
    paths = RunPaths.from_cfg(cfg)
    data = load_run(cfg, needs=("patches", "images"))
    pids = choose_patients(data.patches, list(a.patients), a.split)
    prov = provenance(cfg, paths)
    written = [] if a.merge else compute_shard(cfg, data, pids, prov, i, n)
    if info.enabled:  # rank 0 alone merges, after every rank has written its patients
        D.barrier(info)
        if not info.is_main:
            return written
    index = merge(paths, data.patches, pids, prov)
    if index is None:
        if a.merge:
            raise ConfigError("atlas.merge=true but some patients are not done (see the log); run their shards first")
        return written
    scale = scales(paths, pids, list(a.methods), len(index), float(a.display_sigma))
    wrote(write_csv_atomic(index[INDEX_COLUMNS], paths.atlas_index_csv), f"{len(pids)} patients, {len(index)} patches")
    summary = {"methods": list(a.methods), "target": str(a.target), "patients": [int(p) for p in pids],
               "patches": int(len(index)), "scale": scale, "scale_percentile": C.PERCENTILE,
               "display_sigma": float(a.display_sigma),
               "patches_per_patient": {str(p): int((index["patient_id"] == p).sum()) for p in pids}}
    wrote(write_json_atomic(paths.atlas_summary_json, summary), "methods, patients, display scales")
    return written + draw(cfg, data, index, pids, scale)
