"""Data layer: synthetic generator, Kaggle index, patient split, PatchDataset, packed cache."""
from __future__ import annotations

import importlib
import logging

import numpy as np
import pandas as pd

from idc.errors import DataError
from idc.integrity import read_csv
from idc.paths import RunPaths, require

log = logging.getLogger("idc")

# The public API by name, imported on first use: `from idc.data import PatchDataset` works, while
# `import idc.data` alone (e.g. for `load_patches`) does not pay for torch and torchvision.
_EXPORTS = {
    "index_patches": "index", "index_with_report": "index", "parse_name": "index",
    "split_patients": "split", "split_patient_ids": "split", "assert_disjoint": "split",
    "PatchDataset": "dataset", "train_transform": "dataset", "eval_transform": "dataset",
    "MEAN": "dataset", "STD": "dataset",
    "normalize_batch": "dataset", "load_or_build_cache": "cache", "PackedLoader": "cache",
    "generate_synthetic": "synthetic",
}
__all__ = ["load_patches", "PATCH_COLUMNS", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"idc.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'idc.data' has no attribute {name!r}")


PATCH_COLUMNS = ["image_id", "patient_id", "x", "y", "target", "split", "width", "height"]


def load_patches(paths: RunPaths) -> pd.DataFrame:
    """Read `data/patches.csv`: one clear error naming `make data` when it is missing, empty, cut or
    lacks columns (written by an older version)."""
    path = require(paths.patches_csv)
    df = read_csv(path, PATCH_COLUMNS[:6])
    log.info("read %s (%d patches)", path, len(df))
    return df


def cache_rows(patches: pd.DataFrame, image_ids, source: str = "the input") -> "np.ndarray":
    """Row of each image id in patches.csv (= its row in the packed cache); stale ids are an error."""
    rows = pd.Series(np.arange(len(patches)), index=patches["image_id"].to_numpy()).reindex(list(image_ids))
    if rows.isna().any():
        missing = rows.index[rows.isna()][:3].tolist()
        raise DataError(f"{source} lists patches missing from data/patches.csv (e.g. {missing}): it is stale; "
                        "re-run the stage that wrote it (make evaluate / make explain) with the same run.dir")
    return rows.to_numpy().astype(np.int64)

