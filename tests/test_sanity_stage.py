"""Sanity stage: Table 5.2 logic, patch selection, and the stage on the tiny run."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from idc.explain.select import select_balanced
from idc.leaderboard import stage as leaderboard
from idc.leaderboard.scoring import summarize
from idc.markdown import frame_table
from idc.sanity import stage as sanity
from tests.helpers import compose_cfg, copy_run


def test_select_balanced_is_reproducible_and_balanced():
    df = pd.DataFrame({"target": [0] * 30 + [1] * 5})
    a = select_balanced(df, 8, seed=1)
    assert len(a) == 8 and a["target"].sum() == 4
    assert a.index.equals(select_balanced(df, 8, seed=1).index)
    few_pos = select_balanced(df, 14, seed=0)
    assert few_pos["target"].sum() == 5 and len(few_pos) == 14
    only_pos = pd.DataFrame({"target": [1] * 6}, index=np.arange(10, 16))
    assert len(select_balanced(only_pos, 4, seed=0)) == 4


def test_localization_summary_sorted_with_baseline():
    per_patch = pd.DataFrame({
        "method": ["A", "A", "random map (baseline)", "random map (baseline)", "B", "B"],
        "pixel_auroc": [0.7, 0.9, 0.5, 0.52, 0.95, np.nan],
        "pointing_game": [1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
    })
    table = summarize(per_patch)
    assert list(table["method"]) == ["B", "A", "random map (baseline)"]
    assert table.loc[1, "pixel_auroc"] == pytest.approx(0.8) and table.loc[0, "n"] == 2
    md = frame_table(table)
    assert md.splitlines()[0] == "| method | n | pointing_game | pixel_auroc |"
    assert "| B | 2 | 1.000 | 0.950 |" in md


@pytest.mark.slow
def test_sanity_stage_on_the_tiny_run(tiny_evaluated, tiny_data_dir, tmp_path):
    """Both randomization tests, sMPRT, eMPRT and data randomization on the tiny run. TINY caps the
    random-label training at 1 epoch, so data randomization must come out "invalid", not pass/fail."""
    run_dir = copy_run(tiny_evaluated, tmp_path / "run")
    cfg = compose_cfg(run_dir, "sanity.methods=[vanilla_backprop,gradcam,rise]", "sanity.smprt_samples=2",
                      "sanity.smprt_patches=2", "sanity.random_labels_patches=32", "sanity.num_patches=5",
                      data_dir=tiny_data_dir)  # localization has its own tests (test_leaderboard, test_localization)
    out = sanity.run(cfg)
    sdir = run_dir / "sanity"
    verdicts = pd.read_csv(sdir / "randomization.csv")
    assert list(verdicts.columns) == ["method", "test", "value", "ci_low", "ci_high", "n", "n_patients", "n_degenerate",
                                      "verdict"]
    assert set(verdicts["test"]) == {"mprt_cascading", "mprt_independent", "smprt", "emprt", "data_randomization",
                                     "data_randomization_recipe"}
    assert len(verdicts) == 3 * 6
    # 5 patches of the tiny set's 5 generated cohort patients, one each; sMPRT's 2 patches: too few for a verdict
    mprt = verdicts[verdicts["test"] == "mprt_cascading"]
    assert (mprt["n"] == 5).all() and (mprt["n_patients"] == 5).all()
    assert verdicts.loc[verdicts["test"] == "smprt", "verdict"].str.startswith("too few patients (2 < 5)").all()
    model_tests = verdicts[~verdicts["test"].str.startswith("data_randomization")]
    ok = model_tests.dropna(subset=["ci_low"])
    assert ((ok["ci_low"] <= ok["value"] + 1e-12) & (ok["value"] <= ok["ci_high"] + 1e-12)).all()
    # no usable patch (every map pair constant, e.g. eMPRT of a CAM that is zero on the 1-epoch model):
    # "fail" by the documented rule, with n = 0; otherwise fewer than 5 patients means no verdict
    empty = model_tests["value"].isna()
    assert (model_tests.loc[empty, "verdict"] == "fail").all() and (model_tests.loc[empty, "n"] == 0).all()
    usable = model_tests[~empty]
    assert ((usable["verdict"].str.startswith("too few patients")) == (usable["n_patients"] < 5)).all()
    judged = usable[usable["n_patients"] >= 5]
    assert set(judged["verdict"]) <= {"pass", "fail"}
    sim = judged[judged["test"] != "emprt"]  # the rule in the docs and the table is the rule in the code
    assert ((sim["verdict"] == "pass") == (sim["ci_high"] < cfg.sanity.threshold)).all()
    record = out["random_labels"]
    assert not record["memorized"] and record["epochs"] == 1
    data = verdicts[verdicts["test"].str.startswith("data_randomization")]
    assert len(data) == 6 and (data["verdict"] == f"invalid (reached {100 * record['train_accuracy']:.1f}%)").all()
    recipe = out["recipe_control"]  # the same recipe on the true labels, as many epochs as the random-label model
    assert recipe["epochs"] == record["epochs"] and recipe["settings"]["labels"] == "true"
    assert (sdir / "recipe_control_model" / "model.pt").exists()
    table = (sdir / "table_5_2.md").read_text()
    assert "INVALID: reached" in table and "upper end of the CI is below 0.5" in table and "Recipe control" in table
    assert "| vanilla backprop | pass |" in table and "| RISE | - |" in table
    assert "5 patches from 5 patients of the generated cohort (never trained on)." in table
    # every randomized model moved its logits, and the table says how far
    logits = pd.read_csv(sdir / "logit_change.csv")
    assert len(logits[logits["test"] == "mprt_cascading"]) == len(cfg.sanity.cascade)
    assert (logits["mean_abs_logit_change"] > 0).all()
    assert "conv1+bn1" in table and "mean abs logit change" in table
    metrics = pd.read_csv(sdir / "metrics.csv")
    assert list(metrics.columns) == sanity.METRICS_COLUMNS
    full = metrics[(metrics["test"] == "mprt_cascading") & (metrics["depth"] == len(cfg.sanity.cascade))]
    # randomizing every block changes every gradient and CAM map. Not asserted for RISE: its map is the
    # seeded masks weighted by the model's score, and when the 1-epoch tiny model's score barely moves
    # under masking, both models' maps are the same mask-coverage pattern (Spearman ~1.0).
    assert (full.loc[full["method"] != "rise", "value"] < 0.999).all()
    for name in ("sanity_cascading_randomization", "sanity_independent_randomization",
                 "sanity_randomization_examples"):
        assert (run_dir / "figures" / f"{name}.png").stat().st_size > 1000
    timing = json.loads((sdir / "timing.json").read_text())  # wall seconds per phase, read by `make bench`
    assert timing["total"] == pytest.approx(sum(v for k, v in timing.items() if k not in ("total", "network_images")), abs=0.2)
    assert timing["network_images"]["images"] > timing["network_images"]["with_grad"] > 0  # maps need backward passes
    assert not (sdir / "localization.md").exists()  # the leaderboard stage's (`make leaderboard`)
    # seeded: a second run (reusing the random-label model) writes byte-identical numbers
    first = {f: (sdir / f).read_bytes() for f in ("metrics.csv", "randomization.csv", "logit_change.csv", "table_5_2.md")}
    mtimes = [(sdir / f).stat().st_mtime for f in ("random_labels.json", "recipe_control.json")]
    sanity.run(cfg)
    assert [(sdir / f).stat().st_mtime for f in ("random_labels.json", "recipe_control.json")] == mtimes
    assert all((sdir / f).read_bytes() == b for f, b in first.items())


def test_localization_skipped_when_disabled(tiny_evaluated, tiny_data_dir, tmp_path):
    """`leaderboard.enabled=false`: a note saying why, no scores. (Without masks the stage scores
    faithfulness only: tests/test_leaderboard.py.)"""
    run_dir = copy_run(tiny_evaluated, tmp_path / "run")
    cfg = compose_cfg(run_dir, "leaderboard.enabled=false", data_dir=tiny_data_dir)
    leaderboard.run(cfg)
    assert "Skipped: disabled by `leaderboard.enabled=false`" in (run_dir / "sanity" / "localization.md").read_text()
    assert not (run_dir / "sanity" / "localization.csv").exists()


def test_config_errors_name_the_key(tiny_evaluated, tiny_data_dir, tmp_path):
    from idc.errors import ConfigError

    with pytest.raises(ConfigError, match="sanity.cascade"):
        sanity.run(compose_cfg(tiny_evaluated, "sanity.cascade=[fc,layer9]", data_dir=tiny_data_dir))
    with pytest.raises(ConfigError, match="sanity.reinit"):
        sanity.run(compose_cfg(tiny_evaluated, "sanity.reinit=xavier", data_dir=tiny_data_dir))
    ecfg = sanity.explain_settings(compose_cfg(tmp_path, "sanity.rise_num_masks=7", "sanity.lime_num_samples=null"))
    assert ecfg.rise_num_masks == 7 and ecfg.lime_num_samples == 50  # capped at 7; no cap: TINY's explain value
    assert sanity.explain_settings(compose_cfg(tmp_path)).rise_num_masks == 64  # a cap never raises TINY's 64


def test_noisy_copies_are_seeded_and_scaled_by_the_patch_range():
    imgs = np.zeros((2, 50, 50, 3), np.uint8)
    imgs[0, :, :25] = 200  # range 200
    imgs[1] = 100  # flat: range 0, so no noise
    a = sanity.noisy_copies(imgs, 3, 0.1, seed=0)
    assert a.shape == (6, 50, 50, 3) and a.dtype == np.uint8
    assert np.array_equal(a, sanity.noisy_copies(imgs, 3, 0.1, seed=0))
    assert np.all(a[1::2] == 100)
    assert 15 < np.std(a[0::2].astype(float) - imgs[0].astype(float)) < 25  # sd 0.1 x 200, clipped at 0
