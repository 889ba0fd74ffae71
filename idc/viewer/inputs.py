"""What the viewer reads from a run dir. Only data/patches.csv is required; every other input is
optional, and an absent one becomes a `Note` naming the make target that writes it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from idc.data import load_patches
from idc.integrity import read_csv, read_json, read_npz
from idc.paths import BY_KEY, RunPaths, make_target

log = logging.getLogger("idc")

OUTCOMES = {(1, 1): "TP", (0, 0): "TN", (0, 1): "FP", (1, 0): "FN"}  # (label, prediction)


@dataclass(frozen=True)
class Note:
    """An input that is absent: what is missing, the file looked for and the make target that adds it."""

    what: str
    path: str
    target: str

    def text(self) -> str:
        return f"{self.what}: {self.path} not found; run `{self.target}` to add it."


@dataclass
class RunInputs:
    patches: pd.DataFrame
    predictions: Optional[pd.DataFrame] = None
    explained: Optional[pd.DataFrame] = None  # explain/index.csv (+ `row` = its row in maps.npz)
    maps: Dict[str, np.ndarray] = field(default_factory=dict)  # method -> grey maps [n, 50, 50]
    leaderboard: Optional[pd.DataFrame] = None
    randomization: Optional[pd.DataFrame] = None
    atlas: Optional[dict] = None  # atlas/summary.json: methods, patients, display scales (make atlas)
    notes: List[Note] = field(default_factory=list)


def _optional_csv(paths: RunPaths, key: str, what: str, notes: List[Note]) -> Optional[pd.DataFrame]:
    """The artifact `key` if it exists, else None and a note naming the make target that writes it."""
    path = getattr(paths, key)
    if not path.exists():
        notes.append(Note(what, str(path), make_target(BY_KEY[key].stage)))
        return None
    log.info("read %s", path)
    return read_csv(path)


def load_inputs(paths: RunPaths) -> RunInputs:
    notes: List[Note] = []
    out = RunInputs(patches=load_patches(paths), notes=notes)
    out.predictions = _optional_csv(paths, "predictions_csv", "P(IDC) heat map, errors and the PR curve", notes)
    out.explained = _optional_csv(paths, "explain_index_csv", "Attribution maps", notes)
    if out.explained is not None:
        if not paths.maps_npz.exists():
            notes.append(Note("Attribution maps", str(paths.maps_npz), make_target(BY_KEY["maps_npz"].stage)))
            out.explained = None
        else:
            out.maps = {k[: -len("/gray")]: v for k, v in read_npz(paths.maps_npz).items() if k.endswith("/gray")}
            log.info("read %s (%d methods)", paths.maps_npz, len(out.maps))
            out.explained = out.explained.assign(row=np.arange(len(out.explained)))
    out.leaderboard = _optional_csv(paths, "leaderboard_csv", "Method scores (leaderboard)", notes)
    out.randomization = _optional_csv(paths, "randomization_csv", "Sanity verdicts", notes)
    if paths.atlas_summary_json.exists():
        out.atlas = read_json(paths.atlas_summary_json)
        log.info("read %s (%d patients, %s)", paths.atlas_summary_json, len(out.atlas["patients"]),
                 ", ".join(out.atlas["methods"]))
    else:
        notes.append(Note("Attribution landscapes", str(paths.atlas_summary_json), make_target("atlas")))
    return out


def viewer_patients(patches: pd.DataFrame, predictions: Optional[pd.DataFrame]) -> List[int]:
    """Every test patient, plus any other patient that has predictions, sorted by id."""
    pids = set(patches.loc[patches["split"] == "test", "patient_id"].astype(int))
    if predictions is not None:
        pids |= set(predictions["patient_id"].astype(int))
    return sorted(pids)


def patch_table(patches: pd.DataFrame, predictions: Optional[pd.DataFrame], explained: Optional[pd.DataFrame],
                pids: List[int]) -> pd.DataFrame:
    """One row per patch of the chosen patients (patches.csv order within each patient, patients
    in `pids` order) with its P(IDC), prediction and outcome where known, and the row of its
    attribution maps (`explain_row`, -1 when the patch was not explained)."""
    sub = patches[patches["patient_id"].isin(pids)].copy()
    sub["cache_row"] = sub.index.to_numpy()  # patches.csv row = packed-cache row
    order = {p: i for i, p in enumerate(pids)}
    sub = sub.assign(_o=sub["patient_id"].map(order)).sort_values("_o", kind="stable").drop(columns="_o")
    for col, size in (("width", 50), ("height", 50)):
        if col not in sub:
            sub[col] = size
    if predictions is not None:
        pred = predictions.drop_duplicates("image_id").set_index("image_id")
        sub["proba"] = pred["proba"].reindex(sub["image_id"]).to_numpy(dtype=float)
        sub["pred"] = pred["pred"].reindex(sub["image_id"]).to_numpy(dtype=float)
    else:
        sub["proba"], sub["pred"] = np.nan, np.nan
    known = ~np.isnan(sub["pred"].to_numpy())
    sub["outcome"] = [OUTCOMES[(int(t), int(p))] if k else "no prediction"
                      for t, p, k in zip(sub["target"], np.nan_to_num(sub["pred"]), known)]
    sub["explain_row"] = -1
    if explained is not None:
        rows = explained.drop_duplicates("image_id").set_index("image_id")["row"]
        sub["explain_row"] = rows.reindex(sub["image_id"]).fillna(-1).astype(int).to_numpy()
    return sub.reset_index(drop=True)
