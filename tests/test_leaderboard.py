"""Leaderboard: control verdicts on hand-built scores, and the stage on the tiny run."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from idc.errors import ConfigError
from idc.leaderboard import board as lb
from idc.leaderboard import stage
from idc.leaderboard.scoring import score_source, summarize
from idc.leaderboard.sources import RANDOMIZED_SUFFIX, MapSource, map_sources, parse_variant
from tests.helpers import compose_cfg, copy_run


def fake_scores(rng, method_mean: float) -> pd.DataFrame:
    """Per-patch scores of one method, its randomized-model row and a control over 12 patients x 4 patches."""
    frames = []
    for name, kind, mean in (("M", "method", method_mean), ("M" + RANDOMIZED_SUFFIX, "randomized", 0.5),
                             ("C", "control", 0.5)):
        frames.append(pd.DataFrame(dict(
            method=name, kind=kind, variant="positive", image_id=[f"p{i}" for i in range(48)],
            patient_id=np.repeat(np.arange(12), 4), relevance_rank=mean + rng.normal(0, 0.05, 48))))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("mean, beats", [(0.8, True), (0.5, False)])
def test_beats_controls_needs_a_paired_ci_above_zero(mean, beats):
    pp = fake_scores(np.random.default_rng(0), mean)
    kinds = dict(zip(pp["method"], pp["kind"]))
    controls = lb.controls_of("M", list(kinds), kinds)
    assert controls == ["C", "M" + RANDOMIZED_SUFFIX]
    assert lb.beats_controls(pp, "M", controls, "relevance_rank", n_boot=500, seed=0) is beats


def test_one_patient_gives_an_invalid_verdict_not_a_no(tmp_path):
    cfg = compose_cfg(tmp_path)
    pp = fake_scores(np.random.default_rng(0), 0.8)
    board = lb.build_leaderboard(cfg.leaderboard, pp, summarize(pp, n_boot=200), None)
    assert board.set_index("row").at["M", "beats every control"] == "yes"
    one = pp.assign(patient_id=0)  # the same scores from one patient: no clustered CI, so no verdict
    board = lb.build_leaderboard(cfg.leaderboard, one, summarize(one, n_boot=200), None)
    assert board.set_index("row").at["M", "beats every control"] == "invalid (1 patient: no CI)"
    md = lb.markdown(board, cfg.leaderboard, "tiny", 48, 1, {})
    assert "cannot be decided" in md and "Methods that beat every control" not in md


def test_summary_has_clustered_cis():
    pp = fake_scores(np.random.default_rng(0), 0.8).assign(pixel_auroc=0.5)
    table = summarize(pp, n_boot=200)
    row = table.set_index("method").loc["M"]
    assert row["relevance_rank_ci_low"] < row["relevance_rank"] < row["relevance_rank_ci_high"]
    assert row["n"] == 48


def test_variants_parse_and_reject_unknown_keys():
    assert parse_variant("gradcam:cam_layer=layer3") == ("gradcam", (("cam_layer", "layer3"),))
    # keys of explain the method does not read, no override, no value, a value of the wrong type
    for bad in ("gradcam:cam_layr=layer3", "gradcam:lime_kernel_size=2", "gradcam", "gradcam:cam_layer",
                "lime:lime_kernel_size=big"):
        with pytest.raises(ConfigError, match="leaderboard.variants"):
            parse_variant(bad)
    # a variant is an argument override: explain.<key> -> the method's keyword argument, typed by the schema
    assert MapSource("LIME (lime_kernel_size=2)", "method", "lime", (("lime_kernel_size", "2"),)).arguments() \
        == {"kernel_size": 2.0}
    kinds = [(s.title, s.kind) for s in map_sources(["gradcam"], ["gradcam:cam_layer=layer3"], True)]
    assert kinds[:4] == [("Grad-CAM", "method"), ("Grad-CAM (cam_layer=layer3)", "method"),
                         ("Grad-CAM" + RANDOMIZED_SUFFIX, "randomized"),
                         ("Grad-CAM (cam_layer=layer3)" + RANDOMIZED_SUFFIX, "randomized")]
    assert [k for _, k in kinds[4:]] == ["control"] * 3


def test_unknown_sort_or_variant_fails_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="leaderboard.sort one of"):  # no run dir, no model: nothing was read
        stage.run(compose_cfg(tmp_path, "leaderboard.sort=pointing"))


def test_wins_cell_counts_and_names_the_scores_won():
    scored = ["relevance_mass", "deletion", "insertion", "road"]
    assert lb.wins_cell(["relevance_mass", "deletion"], scored) == "2/4 (relevance mass, deletion AUC)"
    assert lb.wins_cell([], scored) == "0/4"


def test_randomization_cells_read_the_sanity_csv_or_say_not_run():
    rand = pd.DataFrame(dict(method=["gradcam"], test=["smprt"], value=[0.2], ci_low=[0.1], ci_high=[0.3],
                             n=[8], n_degenerate=[0], verdict=["pass"]))
    cells = lb.randomization_cells(rand, ["Grad-CAM", "gradcam"])
    assert cells["sMPRT"] == "pass (0.20 [0.10, 0.30])" and cells["eMPRT"] == "not run"
    assert set(lb.randomization_cells(None, ["gradcam"]).values()) == {"not run"}


@pytest.mark.slow
def test_leaderboard_stage_on_the_tiny_run(tiny_evaluated, tiny_data_dir, tmp_path):
    run_dir = copy_run(tiny_evaluated, tmp_path / "run")
    cfg = compose_cfg(run_dir, "leaderboard.methods=[gradcam,vanilla_backprop]",
                      'leaderboard.variants=["gradcam:cam_layer=layer3"]', "leaderboard.bootstrap=50",
                      "leaderboard.road=false", data_dir=tiny_data_dir)
    stage.run(cfg)
    md = (run_dir / "sanity" / "leaderboard.md").read_text()
    board = pd.read_csv(run_dir / "sanity" / "leaderboard.csv")
    assert len(board) == 3 * 2 + 3  # 3 method rows, their randomized rows, 3 controls
    assert "Grad-CAM (cam_layer=layer3)" in md and "not run" in md and "beats every control" in md
    assert (run_dir / "figures" / "chapter_05_method_leaderboard.png").stat().st_size > 1000
    per_patch = pd.read_csv(run_dir / "sanity" / "localization.csv")
    assert set(per_patch["variant"]) == {"positive", "absolute"}
    assert per_patch.loc[per_patch["variant"] == "positive", "deletion"].notna().all()


@pytest.mark.slow
def test_leaderboard_without_masks_scores_faithfulness_only(tiny_evaluated, tiny_data_dir, tmp_path):
    """The real set has no pixel ground truth: deletion / insertion against the same controls, sorted by deletion."""
    run_dir = copy_run(tiny_evaluated, tmp_path / "run")
    cfg = compose_cfg(run_dir, "leaderboard.methods=[vanilla_backprop]", "leaderboard.variants=[]",
                      "leaderboard.bootstrap=50", "leaderboard.road=false", "data.masks_dir=null", data_dir=tiny_data_dir)
    stage.run(cfg)
    board = pd.read_csv(run_dir / "sanity" / "leaderboard.csv")
    assert len(board) == 2 + 3  # the method, its randomized row, 3 controls
    assert lb.SCORE_TITLES["deletion"] in board and lb.SCORE_TITLES["insertion"] in board
    assert not any(lb.SCORE_TITLES[c] in board for c in ("pointing_game", "relevance_rank", "pixel_auroc"))
    deletion = board[lb.SCORE_TITLES["deletion"]].astype(str).str.split(" ").str[0].astype(float)
    assert deletion.is_monotonic_increasing  # lower deletion AUC is better: best first
    md = (run_dir / "sanity" / "leaderboard.md").read_text()
    assert "no pixel ground truth" in md and "Sorted by deletion AUC" in md
    per_patch = pd.read_csv(run_dir / "sanity" / "localization.csv")
    assert per_patch["mask_fraction"].isna().all() and per_patch["deletion"].notna().all()
    assert set(per_patch["variant"]) == {"positive"}  # the variant faithfulness is scored on
    assert "Faithfulness (no pixel ground truth)" in (run_dir / "sanity" / "localization.md").read_text()


def test_shortcut_mass_only_on_patches_that_carry_the_cue():
    from types import SimpleNamespace

    import torch

    s = SimpleNamespace(top_k_fraction=0.1, pointing_tolerance=0, deletion_fill="mean", blur_sigma=2.0,
                        road=False, road_patches=0, seed=0)
    masks = np.zeros((2, 10, 10), bool)
    masks[:, :5] = True  # evidence: top half
    cues = np.zeros((2, 10, 10), bool)
    cues[0, 8:, 8:] = True  # only patch 0 carries a 2x2 cue
    maps = np.zeros((2, 10, 10))
    maps[:, 8:, 8:] = 3.0  # all relevance on the cue corner ...
    maps[:, 0, :] = 0.1  # ... and a little on the evidence
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(300, 2))
    out = score_source(model, torch.zeros(2, 3, 10, 10), torch.ones(2, dtype=torch.long),
                       {"positive": maps, "absolute": maps}, masks, cues, s)
    pos = out["positive"]
    assert pos["cue_mass"][0] == pytest.approx(12 / 13) and np.isnan(pos["cue_mass"][1])
    assert pos["evidence_mass_cue_patches"][0] == pytest.approx(1 / 13)
    assert "cue_mass" not in out["absolute"] and "deletion" in pos
