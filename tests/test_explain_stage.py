"""Patch selection and the explain stage end to end on the tiny run (figures, maps, shards)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from idc.errors import ConfigError
from idc.explain.select import book_pair, select_patches
from tests.helpers import compose_cfg, copy_run


def predictions():
    return pd.DataFrame({
        "image_id": [f"p{i}" for i in range(8)], "patient_id": 1,
        "target": [1, 1, 0, 0, 1, 0, 0, 1], "proba": [0.9, 0.6, 0.1, 0.45, 0.2, 0.7, 0.95, 0.51],
    }).assign(pred=lambda d: (d["proba"] >= 0.5).astype(int))


def test_selection_by_outcome_picks_the_most_confident():
    chosen = select_patches(predictions(), select={"tp": 1, "tn": 1, "fp": 1, "fn": 1})
    assert chosen["image_id"].tolist()[:2] == ["p2", "p0"]  # the book pair: confident TN, confident TP
    assert set(chosen["image_id"]) == {"p0", "p2", "p6", "p4"}
    assert dict(zip(chosen["image_id"], chosen["outcome"])) == {"p2": "tn", "p0": "tp", "p6": "fp", "p4": "fn"}
    assert book_pair(chosen) == [0, 1]


def test_explicit_rows_and_ids():
    assert select_patches(predictions(), rows=[3, 1])["image_id"].tolist() == ["p3", "p1"]
    assert select_patches(predictions(), image_ids=["p5"])["outcome"].tolist() == ["fp"]
    with pytest.raises(ConfigError, match=r"rows 0..7"):
        select_patches(predictions(), rows=[142, 41291])
    with pytest.raises(ConfigError, match="image_ids"):
        select_patches(predictions(), image_ids=["nope"])


BOOK_NAMES = ["lime_explanation", "vanilla_backprop", "guided_backprop", "integrated_gradients", "smooth_grad",
              "grad_cam", "guided_grad_cam", "gradcam_pp", "score_cam", "layer_cam", "rise"]


def test_explain_stage_writes_every_figure_and_map(tiny_evaluated, tiny_data_dir, tmp_path):
    from idc.explain import stage

    run = copy_run(tiny_evaluated, tmp_path / "run")
    stage.run(compose_cfg(run, data_dir=tiny_data_dir))
    for name in BOOK_NAMES:
        assert (run / "figures" / f"chapter_05_{name}.png").stat().st_size > 10000, name
    assert (run / "figures" / "explain_overview.png").exists()
    index = pd.read_csv(run / "explain" / "index.csv")
    with np.load(run / "explain" / "maps.npz") as z:
        assert z["gradcam/gray"].shape == (len(index), 50, 50)
        assert z["vanilla_backprop/raw"].shape == (len(index), 3, 50, 50)
        assert 0 <= z["rise/gray"].min() and z["rise/gray"].max() <= 1
    assert set(index["outcome"]) <= {"tp", "tn", "fp", "fn"}
    for name in ("activations", "filters_layer4", "gradcam_overlay"):
        assert (run / "explain" / "visualize" / f"{name}.png").exists(), name


def test_shards_merge_into_one_result(tiny_evaluated, tiny_data_dir, tmp_path):
    from idc.explain import stage

    run = copy_run(tiny_evaluated, tmp_path / "run")
    common = ["explain.methods=[vanilla_backprop,gradcam]", "explain.visualize=false", "explain.num_shards=2"]
    stage.run(compose_cfg(run, *common, "explain.shard_index=0", data_dir=tiny_data_dir))
    assert not (run / "explain" / "maps.npz").exists()
    stage.run(compose_cfg(run, *common, "explain.shard_index=1", data_dir=tiny_data_dir))
    merged = pd.read_csv(run / "explain" / "index.csv")
    whole = copy_run(tiny_evaluated, tmp_path / "whole")
    stage.run(compose_cfg(whole, "explain.methods=[vanilla_backprop,gradcam]", "explain.visualize=false", data_dir=tiny_data_dir))
    assert sorted(merged["image_id"]) == sorted(pd.read_csv(whole / "explain" / "index.csv")["image_id"])
    assert (run / "figures" / "chapter_05_grad_cam.png").exists()
