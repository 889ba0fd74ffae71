"""Sanity stage: Table 5.2 logic, patch selection, and the stage on the tiny run."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from idc.sanity import stage as sanity
from idc.sanity.scoring import RANDOM_BASELINE, markdown_table, summarize

from tests.helpers import compose_cfg, copy_run


def fake_metrics(model_sims: dict, data_sims: dict, full_depth: int = 6) -> pd.DataFrame:
    rows = []
    for method, v in model_sims.items():
        rows.append(dict(method=method, test="cascading", depth=full_depth, metric="spearman_abs", value=v))
        rows.append(dict(method=method, test="cascading", depth=1, metric="spearman_abs", value=v + 0.2))
        rows.append(dict(method=method, test="cascading", depth=full_depth, metric="ssim", value=0.99))
        rows.append(dict(method=method, test="cascading", depth=0, metric="spearman_abs", value=1.0))
    for method, v in data_sims.items():
        rows.append(dict(method=method, test="data", depth=0, metric="spearman_abs", value=v))
    return pd.DataFrame(rows)


def test_verdict_pass_means_the_map_changed():
    assert sanity.verdict(0.1, 0.5) == "pass"
    assert sanity.verdict(0.5, 0.5) == "fail"
    assert sanity.verdict(-0.9, 0.5) == "pass"


def test_table_5_2_compares_with_the_books_verdicts():
    metrics = fake_metrics({"vanilla_backprop": 0.1, "guided_backprop": 0.2, "gradcam": 0.9},
                           {"vanilla_backprop": 0.3, "guided_backprop": 0.8})
    md = sanity.table_5_2(metrics, threshold=0.5, full_depth=6, train_accuracy=0.61)
    lines = {l.split(" | ")[0].strip("| "): l for l in md.splitlines() if l.startswith("| ")}
    # model randomization: the mean over the cascade (depth 1: v + 0.2, full depth: v) decides
    assert lines["vanilla backprop"] == "| vanilla backprop | pass | 0.200 | 0.100 | pass | yes | pass | 0.300 | pass | yes |"
    assert lines["guided backprop"] == "| guided backprop | fail | 0.300 | 0.200 | pass | no | fail | 0.800 | fail | yes |"
    assert lines["Grad-CAM"] == "| Grad-CAM | pass | 1.000 | 0.900 | fail | no | pass | not run | - | - |"
    assert "| SmoothGrad | fail | not run | - | - | - | pass | not run | - | - |" in md
    assert len([l for l in md.splitlines() if l.startswith("| ")]) == 1 + len(sanity.BOOK_TABLE_5_2)
    assert "61.0%" in md


def test_select_balanced_is_reproducible_and_balanced():
    df = pd.DataFrame({"target": [0] * 30 + [1] * 5})
    a = sanity.select_balanced(df, 8, seed=1)
    assert len(a) == 8 and a["target"].sum() == 4
    assert a.index.equals(sanity.select_balanced(df, 8, seed=1).index)
    few_pos = sanity.select_balanced(df, 14, seed=0)
    assert few_pos["target"].sum() == 5 and len(few_pos) == 14
    only_pos = pd.DataFrame({"target": [1] * 6}, index=np.arange(10, 16))
    assert len(sanity.select_balanced(only_pos, 4, seed=0)) == 4


def test_localization_summary_sorted_with_baseline():
    per_patch = pd.DataFrame({
        "method": ["A", "A", "random map (baseline)", "random map (baseline)", "B", "B"],
        "pixel_auroc": [0.7, 0.9, 0.5, 0.52, 0.95, np.nan],
        "pointing_game": [1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
    })
    table = summarize(per_patch)
    assert list(table["method"]) == ["B", "A", "random map (baseline)"]
    assert table.loc[1, "pixel_auroc"] == pytest.approx(0.8) and table.loc[0, "n"] == 2
    md = markdown_table(table)
    assert md.splitlines()[0] == "| method | n | pointing_game | pixel_auroc |"
    assert "| B | 2 | 1.000 | 0.950 |" in md


@pytest.mark.slow
def test_sanity_stage_on_the_tiny_run(tiny_evaluated, tiny_data_dir, tmp_path):
    run_dir = copy_run(tiny_evaluated, tmp_path / "run")
    cfg = compose_cfg(run_dir, "sanity.random_labels_max_batches=2", data_dir=tiny_data_dir)
    out = sanity.run(cfg)
    metrics = pd.read_csv(run_dir / "sanity" / "metrics.csv")
    assert list(metrics.columns) == sanity.METRICS_COLUMNS
    methods = list(cfg.sanity.methods)
    assert set(metrics["method"]) == set(methods)
    assert set(metrics["test"]) == {"cascading", "independent", "data"}
    # depth 0 compares the trained model with itself: every measure is exactly 1.
    original = metrics[(metrics["test"] == "cascading") & (metrics["depth"] == 0)]
    np.testing.assert_allclose(original["value"], 1.0, atol=1e-6)
    full = metrics[(metrics["depth"] == len(cfg.sanity.cascade)) & (metrics["test"] == "cascading")]
    assert (full["value"] < 0.999).all()  # randomizing every block changes every map
    table = (run_dir / "sanity" / "table_5_2.md").read_text()
    assert "agrees with book" in table and "training accuracy of" in table
    assert 0.0 <= out["random_labels"]["train_accuracy"] <= 1.0
    for name in ("sanity_cascading_randomization", "sanity_independent_randomization",
                 "sanity_randomization_examples"):
        assert (run_dir / "figures" / f"{name}.png").stat().st_size > 1000
    loc = (run_dir / "sanity" / "localization.md").read_text()
    assert RANDOM_BASELINE in loc
    assert (run_dir / "figures" / "sanity_localization_examples.png").exists()
    per_patch = pd.read_csv(run_dir / "sanity" / "localization.csv")
    assert set(per_patch["method"]) >= {RANDOM_BASELINE}
    # a second run reuses the random-label model instead of retraining it
    mtime = (run_dir / "sanity" / "random_labels.json").stat().st_mtime
    sanity.run(cfg)
    assert (run_dir / "sanity" / "random_labels.json").stat().st_mtime == mtime


@pytest.mark.slow
def test_localization_skipped_without_masks(tiny_evaluated, tiny_data_dir, tmp_path):
    run_dir = copy_run(tiny_evaluated, tmp_path / "run")
    cfg = compose_cfg(run_dir, "data.masks_dir=null", "sanity.methods=[gradcam]", "sanity.cascade=[fc]",
                      "sanity.random_labels_max_batches=1", data_dir=tiny_data_dir)
    sanity.run(cfg)
    assert "Skipped" in (run_dir / "sanity" / "localization.md").read_text()
    assert not (run_dir / "sanity" / "localization.csv").exists()


def test_unknown_block_is_a_config_error(tmp_path):
    from torch import nn

    from idc.errors import ConfigError
    from idc.sanity.randomization import randomize_cascading

    with pytest.raises(ConfigError, match="sanity.cascade"):
        sanity._randomized(randomize_cascading, nn.Sequential(nn.Linear(2, 2)), ["layer9"], 1, 0)
