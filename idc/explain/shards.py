"""Explain shards (`explain.num_shards` > 1): each shard writes `explain/shards/<i>-of-<n>/` with
`maps.npz`, `index.csv` and, last, `shard.json`: the shard's provenance (the sha256 of data/patches.csv,
model/best.pt and eval/predictions.csv and the explain.* values that shape maps: the same as the
stage record's), its image ids and the sha256 of its two files. A shard is done only when shard.json
exists; a shard already done from the same provenance is not computed again.

The merge joins the shards into explain/maps.npz and index.csv only when every shard is done, unchanged
since it was written, made from the current inputs, and every image id occurs once; otherwise one line
names the shard and the command that makes it again. A shard with no patches (more shards than patches)
is an empty, valid shard.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from idc.errors import IntegrityError
from idc.integrity import file_digest, read_csv, read_json, read_npz
from idc.paths import RunPaths
from idc.pipeline import describe_change, expected_record
from idc.utils import write_csv_atomic, write_json_atomic, write_npz_atomic

log = logging.getLogger("idc")
SHARD_FILES = ("maps.npz", "index.csv")


def shard_dir(paths: RunPaths, i: int, n: int) -> Path:
    return paths.explain_dir / "shards" / f"{i}-of-{n}"


def provenance(cfg, paths: RunPaths, stage: str = "explain") -> dict:
    """What the maps are made from: the inputs' sha256 and the stage's config values (sharding keys excluded).
    The atlas stage's per-patient shards use it too (`stage="atlas"`)."""
    record = expected_record(stage, cfg, paths)
    return {"inputs": record["inputs"], "config": record["config"]}


def finish_shard(folder: Path, label, prov: dict, image_ids) -> Path:
    """Write shard.json after the shard's maps and index: from now on the shard counts as done. `label`
    names the shard ([i, n] for explain, {"patient": pid} for the atlas)."""
    meta = {"shard": label, "provenance": prov, "image_ids": [str(x) for x in image_ids],
            "files": {name: file_digest(folder / name) for name in SHARD_FILES}}
    return write_json_atomic(folder / "shard.json", meta)


def read_meta(folder: Path) -> Optional[dict]:
    """A shard's shard.json, or None while the shard is not done; a damaged one is an error."""
    path = folder / "shard.json"
    if not path.exists():
        return None
    return read_json(path, fix=f"delete {folder} and run that shard again")


def problem(folder: Path, meta: dict, prov: dict) -> Optional[str]:
    """Why a done shard cannot be used with the current inputs, or None."""
    files = meta.get("files") or {}
    for name in SHARD_FILES:
        path = folder / name
        if not path.exists() or file_digest(path) != files.get(name):
            return f"has a {name} that was changed or removed after the shard wrote it"
    old = {"inputs": {}, "config": {}, **(meta.get("provenance") or {})}
    for rel in dict.fromkeys([*prov["inputs"], *old["inputs"]]):  # patches.csv, best.pt, predictions.csv
        if old["inputs"].get(rel) != prov["inputs"].get(rel):
            return f"was made from another {rel} than the current one (re-made since)"
    for key in sorted(set(old["config"]) | set(prov["config"])):
        if old["config"].get(key) != prov["config"].get(key):
            return f"was made with other settings ({describe_change(key, old['config'].get(key), prov['config'].get(key))})"
    return None


def folder_done(folder: Path, prov: dict) -> bool:
    """The shard in `folder` is done, unchanged since, and made from the inputs and settings `prov`."""
    meta = read_meta(folder)
    return meta is not None and problem(folder, meta, prov) is None


def is_done(paths: RunPaths, i: int, n: int, prov: dict) -> bool:
    return folder_done(shard_dir(paths, i, n), prov)


def empty_maps(methods) -> Dict[str, np.ndarray]:
    """The raw maps of a shard with no patches: an empty array per method."""
    return {m: np.zeros((0, 50, 50), np.float32) for m in methods}


def merge_shards(paths: RunPaths, n: int, prov: dict) -> bool:
    """Join every shard's maps and index into explain/; False while a shard is not done yet."""
    dirs = [shard_dir(paths, i, n) for i in range(n)]
    metas = [read_meta(d) for d in dirs]
    missing = [str(d) for d, m in zip(dirs, metas) if m is None]
    if missing:
        log.info("explain: %d of %d shards done; merge once %s is", n - len(missing), n, missing[0])
        return False
    for i, (folder, meta) in enumerate(zip(dirs, metas)):
        why = problem(folder, meta, prov)
        if why:
            raise IntegrityError(f"explain shard {i}-of-{n} {why}: the shards cannot be merged. Re-run it with "
                                 f"explain.num_shards={n} explain.shard_index={i} (same overrides)")
    parts = [read_npz(d / "maps.npz") for d in dirs]
    index = pd.concat([read_csv(d / "index.csv") for d in dirs], ignore_index=True)
    twice = index["image_id"][index["image_id"].duplicated()].tolist()
    if twice:
        raise IntegrityError(f"explain shards of {n} hold {twice[0]} more than once: delete {paths.explain_dir / 'shards'} "
                             "and run the shards again")
    write_npz_atomic(paths.maps_npz, join(parts))
    write_csv_atomic(index, paths.explain_index_csv)
    log.info("explain: merged %d shards (%d patches) into %s", n, len(index), paths.maps_npz)
    return True


def join(parts: List[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """Concatenate the shards' arrays key by key; empty shards (their arrays have no rows) add nothing."""
    full = [p for p in parts if any(len(v) for v in p.values())] or parts[:1]
    keys = [k for k in full[0] if all(k in p for p in full)]
    return {k: np.concatenate([p[k] for p in full]) for k in keys}
