"""The evaluation cohort (idc.data.cohort, issue 23 "enough patients"): generated patients never trained on,
or on real data (and with data.cohort.patients=0) the test split."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from idc.data.cohort import GENERATED, build_cohort, cohort_data_cfg, generated, load_cohort
from idc.errors import DataError
from idc.paths import RunPaths
from tests.helpers import compose_cfg, copy_run


def _load(cfg, run_dir):
    from idc.inputs import load_run

    run = load_run(cfg, needs=("patches", "images"))
    return run, load_cohort(cfg, RunPaths(run_dir), run.patches, run.images)


def test_generated_cohort_is_other_patients_with_their_own_images_and_masks(tiny_prepared, tiny_data_dir):
    """make data writes data/cohort.csv: the tiny set's 5 generated patients, none of them in patches.csv."""
    cfg = compose_cfg(tiny_prepared, data_dir=tiny_data_dir)
    cohort = pd.read_csv(tiny_prepared / "data" / "cohort.csv")
    patches = pd.read_csv(tiny_prepared / "data" / "patches.csv")
    assert (cohort["split"] == GENERATED).all() and cohort["patient_id"].nunique() == cfg.data.cohort.patients == 5
    assert not set(cohort["patient_id"]) & set(patches["patient_id"])  # never trained on, never a test patient
    summary = json.loads((tiny_prepared / "data" / "summary.json").read_text())["cohort"]
    assert (summary["patients"], summary["patches"], summary["source"]) == (5, len(cohort), GENERATED)
    _, c = _load(cfg, tiny_prepared)
    assert c.source == "generated" and c.description == "the generated cohort (never trained on)"
    assert c.images.shape[0] == len(cohort) and (c.patches["row"] == np.arange(len(cohort))).all()
    assert c.masks_dir.is_dir() and c.masks_dir != cfg.data.masks_dir
    assert {p.stem for p in c.masks_dir.glob("*.npz")} >= {str(p) for p in cohort["patient_id"]}


def test_cohort_seed_must_differ_from_the_data_seed(tmp_path):
    cfg = compose_cfg(tmp_path, "data.cohort.seed=0", "data.seed=0")
    with pytest.raises(DataError, match="data.cohort.seed"):
        cohort_data_cfg(cfg.data)
    assert not generated(OmegaConf.merge(cfg.data, {"source": "kaggle"}))  # real data: always the test split


def test_without_generated_patients_the_cohort_is_the_test_split(tiny_prepared, tiny_data_dir, tmp_path):
    run_dir = copy_run(tiny_prepared, tmp_path / "run")
    cfg = compose_cfg(run_dir, "data.cohort.patients=0", data_dir=tiny_data_dir)
    patches = pd.read_csv(run_dir / "data" / "patches.csv")
    cohort = build_cohort(cfg, RunPaths(run_dir), patches)
    test = patches[patches["split"] == "test"]
    assert cohort["image_id"].tolist() == test["image_id"].tolist() and (cohort["split"] == "test").all()
    cohort.to_csv(run_dir / "data" / "cohort.csv", index=False)
    run, c = _load(cfg, run_dir)
    assert c.source == "test split" and c.images is run.images  # rows of the data set's own cache
    np.testing.assert_array_equal(c.patches["row"], np.flatnonzero(run.patches["split"] == "test"))


def test_leaderboard_split_val_scores_the_validation_patients(tiny_prepared, tiny_data_dir):
    """Where a default is chosen (`leaderboard.split=val`, docs/explain.md "IG's baseline"): the data set's own
    validation patients, never the cohort the board reports on."""
    from idc.errors import ConfigError
    from idc.leaderboard.stage import cohort_of

    run, _ = _load(compose_cfg(tiny_prepared, data_dir=tiny_data_dir), tiny_prepared)
    val = cohort_of(compose_cfg(tiny_prepared, "leaderboard.split=val", data_dir=tiny_data_dir), run)
    assert val.source == "val split" and (val.patches["split"] == "val").all() and len(val.patches)
    np.testing.assert_array_equal(val.patches["row"], np.flatnonzero(run.patches["split"] == "val"))
    with pytest.raises(ConfigError, match="leaderboard.split"):
        cohort_of(compose_cfg(tiny_prepared, "leaderboard.split=test", data_dir=tiny_data_dir), run)
