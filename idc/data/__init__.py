"""Data layer: synthetic generator, Kaggle index, patient split, PatchDataset, packed cache."""
from __future__ import annotations

import logging

import pandas as pd

from idc.errors import DataError
from idc.paths import RunPaths, require

log = logging.getLogger("idc")
PATCH_COLUMNS = ["image_id", "patient_id", "x", "y", "target", "split", "width", "height"]


def load_patches(paths: RunPaths) -> pd.DataFrame:
    """Read `data/patches.csv` (clear error naming `make data` when it is missing or malformed)."""
    path = require(paths.patches_csv)
    df = pd.read_csv(path)
    missing = [c for c in PATCH_COLUMNS[:6] if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks columns {missing}; it was not written by this version: re-run `make data`")
    log.info("read %s (%d patches)", path, len(df))
    return df
