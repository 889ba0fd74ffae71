"""The atlas's unit of work is one patient: `atlas/patients/<pid>/` holds its maps (`maps.npz`: `<method>`
= float32 [n, 50, 50], channel-summed), its rows (`index.csv`: image id, position, label, P(IDC), the
explained class) and, written last, `shard.json` (`idc.explain.shards`: the sha256 of data/patches.csv and
model/best.pt, the atlas.* and explain.* values that shape maps, its image ids and file digests). A patient
is done only when shard.json exists and matches the current inputs, so a process killed mid-way leaves
nothing that counts, and the next run computes exactly the patients that are not done.

Shards: shard i of n computes the patients `assign` gives it (largest first, each to the least loaded shard:
a partition, so no patch is computed twice and none is padded in). The merge checks that every patch of
every chosen patient is present exactly once before anything is joined.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from idc.atlas.canvas import planar
from idc.errors import ConfigError, IntegrityError
from idc.explain.driver import compute_maps, dataset_reference, resolve_targets
from idc.explain.shards import finish_shard, problem, read_meta
from idc.integrity import check_finite, read_csv, read_npz
from idc.model import predict
from idc.paths import RunPaths
from idc.pipeline import expected_record
from idc.utils import write_csv_atomic, write_npz_atomic

log = logging.getLogger("idc")
SPLITS = ("test", "val", "train", "all")
# Grad-CAM keeps its values (the book scales each patch's map to [0, 1]): a landscape compares patches
OVERRIDES = {"gradcam": {"minmax": False}}
INDEX_COLUMNS = ["image_id", "patient_id", "x", "y", "width", "height", "target", "proba", "pred", "explained_class"]
# atlas.* keys that choose patients or shards or how maps are drawn, not how a patient's maps are made: a done
# patient stays done
SELECTION_KEYS = ("patients", "split", "num_shards", "shard_index", "merge", "overlays", "display_sigma")


def choose_patients(patches: pd.DataFrame, explicit, split: str) -> List[int]:
    """Explicit ids (checked against data/patches.csv), else every patient of `split` ("all": every one)."""
    known = sorted(int(p) for p in patches["patient_id"].unique())
    if explicit:
        missing = [int(p) for p in explicit if int(p) not in set(known)]
        if missing:
            raise ConfigError(f"atlas.patients={missing} not in data/patches.csv; known ids e.g. {known[:8]}")
        return list(dict.fromkeys(int(p) for p in explicit))
    if split not in SPLITS:
        raise ConfigError(f"atlas.split={split!r} is not known; use one of {', '.join(SPLITS)}")
    sub = patches if split == "all" else patches[patches["split"] == split]
    if sub.empty:
        raise ConfigError(f"atlas.split={split} has no patients in data/patches.csv; use another split or atlas.patients")
    return sorted(int(p) for p in sub["patient_id"].unique())


def assign(sizes: Dict[int, int], n: int) -> Dict[int, int]:
    """{patient: shard}: largest patient first, each to the shard with the fewest patches so far (ties: the
    lower shard, then the lower patient id), so shards get about equal work and every patient exactly one."""
    load = [0] * n
    out = {}
    for pid, size in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        shard = min(range(n), key=lambda s: (load[s], s))
        out[pid] = shard
        load[shard] += size
    return out


def patient_dir(paths: RunPaths, pid: int) -> Path:
    return paths.path("atlas_patient_dir", pid=int(pid))


def provenance(cfg, paths: RunPaths) -> dict:
    """What a patient's maps are made from: the atlas record's inputs and config without the keys that only
    choose patients or shards (so adding a patient or changing the number of shards redoes nothing)."""
    record = expected_record("atlas", cfg, paths)
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in record["config"].items()}
    for key in SELECTION_KEYS:
        config["atlas"].pop(key, None)
    return {"inputs": record["inputs"], "config": config}


@dataclass
class Work:
    """What the per-patient computation needs (the model is loaded once per process)."""

    cfg: object
    paths: RunPaths
    patches: pd.DataFrame
    images: object  # the packed cache
    model: object
    device: object
    prov: dict
    reference: object = None

    @property
    def explain_cfg(self):
        """explain.* (method settings) with the atlas's batch size."""
        return OmegaConf.merge(self.cfg.explain, {"batch_size": int(self.cfg.atlas.batch_size)})


def needs_reference(methods, e) -> bool:
    """RISE's mean fill and IG's expected baseline read the training split; nothing else does."""
    return ("rise" in methods and e.rise_fill == "mean") or \
        ("integrated_gradients" in methods and e.ig_baseline == "expected")


def explain_patient(w: Work, pid: int) -> Path:
    """Maps of every method for every patch of patient `pid`, written to atlas/patients/<pid>/ (maps and
    index atomically, then shard.json: from then on the patient counts as done)."""
    a = w.cfg.atlas
    sub = w.patches[w.patches["patient_id"] == pid]
    images = np.asarray(w.images[sub.index.to_numpy()])
    proba = predict(w.model, images, batch_size=int(a.batch_size), device=w.device, desc=None)[:, 1]
    pred = (proba >= 0.5).astype(int)
    targets = resolve_targets(a.target, sub["target"].to_numpy(), pred)
    if w.reference is None and needs_reference(a.methods, w.cfg.explain):
        e = w.cfg.explain
        w.reference = dataset_reference(w.images, w.patches, int(e.ig_expected_k), int(e.seed))
    maps = {}
    for m in a.methods:
        raw, _ = compute_maps(w.model, images, targets, [m], w.explain_cfg, w.device, reference=w.reference,
                              overrides=OVERRIDES.get(m))
        maps[m] = planar(raw[m])
    for m, values in maps.items():
        check_finite(values, f"atlas: the {m} maps of patient {pid}", "Check the model (make evaluate) or leave the method out.")
    index = sub.assign(width=sub["width"] if "width" in sub else 50, height=sub["height"] if "height" in sub else 50,
                       proba=proba, pred=pred, explained_class=targets)[INDEX_COLUMNS]
    folder = patient_dir(w.paths, pid)
    write_npz_atomic(folder / "maps.npz", maps)
    write_csv_atomic(index, folder / "index.csv")
    return finish_shard(folder, {"patient": int(pid)}, w.prov, index["image_id"])


REDO = "delete that folder and run `make atlas` again (only the patients that are not done are computed)"


def check_patient(paths: RunPaths, pid: int, expected: pd.Series, prov: dict) -> pd.DataFrame:
    """A done patient's index, after checking its shard against the current inputs and that it holds each of
    the patient's patches (`expected` image ids, patches.csv order) exactly once; else one clear error."""
    folder = patient_dir(paths, pid)
    why = problem(folder, read_meta(folder), prov)
    if why:
        raise IntegrityError(f"atlas patient {pid} ({folder}) {why}: it cannot be merged; {REDO}")
    index = read_csv(folder / "index.csv", INDEX_COLUMNS)
    ids = index["image_id"].astype(str)
    twice = ids[ids.duplicated()].tolist()
    missing = sorted(set(expected) - set(ids))
    extra = sorted(set(ids) - set(expected))
    if twice or missing or extra or ids.tolist() != list(expected):
        what = (f"holds {twice[0]} {ids.tolist().count(twice[0])} times" if twice else
                f"lacks {len(missing)} of its patches (e.g. {missing[0]})" if missing else
                f"holds {len(extra)} patches that are not the patient's (e.g. {extra[0]})" if extra else
                "holds its patches in another order than data/patches.csv")
        raise IntegrityError(f"atlas patient {pid} ({folder}) {what}: every patch must be present exactly once; "
                             f"{REDO}")
    return index


def merge(paths: RunPaths, patches: pd.DataFrame, pids: List[int], prov: dict) -> Optional[pd.DataFrame]:
    """The joined index of every chosen patient (patients in `pids` order), once all are done and each patch
    is present exactly once; None (and a log line) while some patient is not done yet."""
    missing = [p for p in pids if read_meta(patient_dir(paths, p)) is None]
    if missing:
        log.info("atlas: %d of %d patients done; merge once patient %d is (its shard is still running or "
                 "was stopped)", len(pids) - len(missing), len(pids), missing[0])
        return None
    ids = patches["image_id"].astype(str)
    parts = [check_patient(paths, p, ids[patches["patient_id"] == p], prov) for p in pids]
    index = pd.concat(parts, ignore_index=True)
    chosen = ids[patches["patient_id"].isin(pids)]
    if len(index) != len(chosen) or not index["image_id"].is_unique or set(index["image_id"]) != set(chosen):
        raise IntegrityError(f"atlas: the merged patients hold {len(index)} patches for {len(chosen)} chosen ones; "
                             f"delete {paths.atlas_dir / 'patients'} and run `make atlas` again")
    return index


def patient_maps(paths: RunPaths, pid: int) -> Dict[str, np.ndarray]:
    """{method: float32 [n, 50, 50]} of a done patient (rows = its atlas/patients/<pid>/index.csv)."""
    return read_npz(patient_dir(paths, pid) / "maps.npz", fix="run `make atlas` again (the patient is recomputed)")
