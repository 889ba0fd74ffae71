"""The evaluation cohort: the patients the sanity and leaderboard stages score (issue 23, "enough patients").

A verdict needs patients, not patches: the default synthetic set's test split has 5 patients, too few
for a calibrated "beats" or "pass" (`idc.scores.inference`). So on synthetic data `data.cohort.patients`
more patients are drawn by the same generator with every data.* value unchanged except the seed
(`data.cohort.seed`, disjoint from `data.seed`) and the folders: their own root and masks. The shortcut
set's cue rates are those of its test patients for every cohort patient (a test patient's, decorrelated
from the label). The cohort is indexed like the test split, never trained on, and packed into its own
cache; `data/cohort.csv` lists it (split `cohort`). With `data.cohort.patients=0`, and always on real
data, `data/cohort.csv` holds the test split's rows (split `test`), read from the main cache: on the
Kaggle set every test patient.

`build_cohort(cfg, paths, patches)` (prepare_data) writes it; `load_cohort(cfg, paths, patches, images)`
(the sanity and leaderboard stages) reads it with the images, the cache rows and the masks folder.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from idc.data import PATCH_COLUMNS, cache_rows
from idc.data.cache import load_or_build_cache
from idc.data.stain import normalizer_for
from idc.data.index import index_with_report
from idc.data.synthetic import generate_synthetic
from idc.errors import DataError
from idc.paths import RunPaths, require

log = logging.getLogger("idc")
GENERATED = "cohort"  # the split value of generated cohort patients in data/cohort.csv


def generated(data_cfg) -> bool:
    """True when the cohort is drawn from the generator (synthetic data, data.cohort.patients > 0)."""
    return str(data_cfg.source) == "synthetic" and int(data_cfg.cohort.patients) > 0


def cohort_data_cfg(data_cfg):
    """The data config that generates the cohort: the set's own, with the cohort's seed, size and folders."""
    c = data_cfg.cohort
    root = Path(str(data_cfg.root))
    base = root.parent.parent / f"{data_cfg.name}_cohort"
    out = OmegaConf.merge(data_cfg, {
        "seed": int(c.seed), "num_patients": int(c.patients),
        "root": str(c.root) if c.root else str(base / root.name),
        "masks_dir": str(c.masks_dir) if c.masks_dir else str(base / "masks"),
        # every cohort patient carries the cue as a test patient does (decorrelated from the label)
        "cue_train_positive": float(data_cfg.cue_test), "cue_train_negative": float(data_cfg.cue_test),
        # a site-shift cohort's generated patients are spread round-robin over every site, none held out
        "test_site": None,
    })
    if int(c.seed) == int(data_cfg.seed):
        raise DataError(f"data.cohort.seed={c.seed} equals data.seed: the cohort would repeat the training patients; "
                        "choose another data.cohort.seed")
    return out


def build_cohort(cfg, paths: RunPaths, patches: pd.DataFrame, stain=None) -> pd.DataFrame:
    """Write data/cohort.csv (and pack a generated cohort's cache, normalized by the data set's `stain`
    normalizer: its reference comes from the data set's training split); return it."""
    d = cfg.data
    if not generated(d):
        cohort = patches[patches["split"] == "test"]
        log.info("evaluation cohort: the test split (%d patients, %d patches)", cohort["patient_id"].nunique(), len(cohort))
    else:
        cd = cohort_data_cfg(d)
        root = Path(generate_synthetic(cd))
        cohort, _ = index_with_report(root, num_patients=None, max_coordinate=d.max_coordinate)
        shared = sorted(set(cohort["patient_id"]) & set(patches["patient_id"]))
        if shared:
            raise DataError(f"data.cohort.seed={cd.seed} draws patient ids that the data set also has ({shared[:5]}); "
                            "they are other patients, but would read as the same: choose another data.cohort.seed")
        cohort = cohort.assign(split=GENERATED)[PATCH_COLUMNS]
        load_or_build_cache(cohort, root, paths.cohort_cache_dir, size=d.patch_size, producer=True, stain=stain)
        log.info("evaluation cohort: %d generated patients (seed %d, never trained on), %d patches under %s",
                 cohort["patient_id"].nunique(), cd.seed, len(cohort), root)
    return cohort.reset_index(drop=True)


@dataclass
class Cohort:
    """The evaluation patches with their images: `patches` has `row` (into `images`)."""

    patches: pd.DataFrame
    images: np.ndarray
    masks_dir: Optional[Path]
    source: str  # "generated" | "test split": how the leaderboard and Table 5.2 name it
    root: Optional[Path] = None  # the patch PNGs (Kaggle layout): the counterfactuals redraw them

    @property
    def description(self) -> str:
        """Where the patients come from, e.g. "the generated cohort (never trained on)" or "the test split"."""
        return "the generated cohort (never trained on)" if self.source == "generated" else f"the {self.source}"


def split_cohort(cfg, patches: pd.DataFrame, images: np.ndarray, split: str) -> Cohort:
    """The patches of one split of the data set itself (`val`: where a default is chosen, never reported)."""
    sub = patches[patches["split"] == split]
    rows = np.flatnonzero(np.asarray(patches["split"]) == split)
    masks = Path(str(cfg.data.masks_dir)) if cfg.data.masks_dir else None
    return Cohort(sub.assign(row=rows), images, masks, f"{split} split", Path(str(cfg.data.root)))


def load_cohort(cfg, paths: RunPaths, patches: pd.DataFrame, images: np.ndarray) -> Cohort:
    """data/cohort.csv with each patch's image row, the images it indexes and the masks folder."""
    path = require(paths.cohort_csv)
    cohort = pd.read_csv(path)
    log.info("read %s (%d patches, %d patients)", path, len(cohort), cohort["patient_id"].nunique())
    if (cohort["split"] == GENERATED).any():
        cd = cohort_data_cfg(cfg.data)
        stain = normalizer_for(patches, cfg.data.root, cfg.data.stain_normalize, cfg.seed, paths.stain_reference_json,
                               cfg.data.patch_size)
        imgs = load_or_build_cache(cohort, cd.root, paths.cohort_cache_dir, size=cfg.data.patch_size, stain=stain)
        return Cohort(cohort.assign(row=np.arange(len(cohort))), imgs,
                      Path(str(cd.masks_dir)) if cfg.data.masks_dir else None, "generated", Path(str(cd.root)))
    rows = cache_rows(patches, cohort["image_id"], str(path))
    masks = Path(str(cfg.data.masks_dir)) if cfg.data.masks_dir else None
    return Cohort(cohort.assign(row=rows), images, masks, "test split", Path(str(cfg.data.root)))
