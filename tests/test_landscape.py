"""Landscape stage: three-panel figure per chosen patient, patient choice, clear errors."""
from __future__ import annotations

import pandas as pd
import pytest

from idc import landscape
from idc.errors import ConfigError
from tests.helpers import compose_cfg, copy_run


def test_landscape_stage_writes_book_figures(tiny_evaluated, tiny_data_dir, tmp_path):
    run = copy_run(tiny_evaluated, tmp_path / "run")
    written = landscape.run(compose_cfg(run, "landscape.num_patients=2", data_dir=tiny_data_dir))
    names = {p.name for p in written}
    assert {"chapter_05_patient1_breast_tissue_proba.png", "chapter_05_patient2_breast_tissue_proba.png"} <= names
    assert all(p.stat().st_size > 10000 for p in written)


def test_explicit_patient_outside_predictions_uses_the_model(tiny_evaluated, tiny_data_dir, tmp_path):
    run = copy_run(tiny_evaluated, tmp_path / "run")
    patches = pd.read_csv(run / "data" / "patches.csv")
    train_pid = int(patches.loc[patches["split"] == "train", "patient_id"].iloc[0])
    written = landscape.run(compose_cfg(run, f"landscape.patients=[{train_pid}]", data_dir=tiny_data_dir))
    assert (run / "figures" / f"landscape_{train_pid}.png") in written


def test_choose_patients_most_idc_first():
    df = pd.DataFrame({"patient_id": [1, 1, 2, 2, 2, 3], "target": [1, 0, 1, 1, 1, 0], "split": ["test"] * 6})
    assert landscape.choose_patients(df, [], 2, "test") == [2, 1]
    with pytest.raises(ConfigError, match="landscape.patients"):
        landscape.choose_patients(df, [99], 2, "test")
