"""prepare_data through Hydra compose on the tiny config: files, summary, split, figures, re-run."""
from __future__ import annotations

import json
import shutil

import pandas as pd

from idc import prepare_data
from tests.helpers import compose_cfg, stage_error

EDA = ["target_pc", "idc_positive_samples", "idc_negative_samples", "patient_tissue_slice",
       "patient_patch_dist", "train_val_test_splits"]


def test_prepare_data_outputs(tiny_prepared):
    df = pd.read_csv(tiny_prepared / "data" / "patches.csv")
    assert list(df.columns[:6]) == ["image_id", "patient_id", "x", "y", "target", "split"]
    assert df.groupby("patient_id")["split"].nunique().max() == 1
    summary = json.loads((tiny_prepared / "data" / "summary.json").read_text())
    assert summary["patches"] == len(df) and summary["source"] == "synthetic"
    assert sum(s["patches"] for s in summary["splits"].values()) == len(df)
    assert 0.15 < summary["positive_rate"] < 0.45
    assert len(list((tiny_prepared / "data" / "cache").glob("patches-*.npy"))) == 1
    for name in EDA:
        assert (tiny_prepared / "figures" / f"chapter_05_{name}.png").stat().st_size > 5000, name


def test_rerun_keeps_the_index_and_cache(tiny_prepared, tiny_data_dir, tmp_path):
    run = shutil.copytree(tiny_prepared, tmp_path / "run")
    csv = run / "data" / "patches.csv"
    cache = next((run / "data" / "cache").glob("*.npy"))
    before = (csv.stat().st_mtime_ns, cache.stat().st_mtime_ns)
    prepare_data.run(compose_cfg(run, "data.eda_figures=false", data_dir=tiny_data_dir))
    assert (csv.stat().st_mtime_ns, cache.stat().st_mtime_ns) == before


def test_missing_kaggle_root_is_one_clear_error(tmp_path, caplog):
    # through the entry layer (exit 2, one line); the scripts' own exit path: tests/test_reliability.py
    cfg = compose_cfg(tmp_path / "run", "data=kaggle", f"data.root={tmp_path / 'nowhere'}")
    line = stage_error("prepare_data", cfg, caplog)
    assert "does not exist" in line and "data.root=" in line
